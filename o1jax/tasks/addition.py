"""Multi-digit addition with column-by-column thinking.

`347+285=` is answered `632` after the steps `7+5+0=12; 4+8+1=13; 3+2+1=6`: one step per
column from the least significant digit, each `a+b+c=s` with the column digits a and b,
the carry in c (written even when 0, so every step has the same shape) and the column sum
s. Difficulty d <= 4 means both operands have exactly d+1 digits; level 5 ("research") has
eight-digit operands (prompts of six to eight digits parse as level 5).

The scratchpad style (`trace_style="scratchpad"`, the format of Nye et al. 2021 that STaR's
arithmetic experiment used) writes what is left of each operand after every column, the
result so far and the carry, after a first step that restates the operands (as Nye's does):
`347+285=` is `347+285 r c0; 34+28 r2 c1; 3+2 r32 c1; 0+0 r632 c0`. Every step copies the
one before it minus a digit, where the column form must locate the digit of each column in
the prompt by its position.

The reflective check subtracts back, column by column: `12-5-0=7` is the candidate's digit
(plus ten when it borrows) minus b's digit minus the borrow in, and the verdict compares
the difference with a (o1jax/tasks/reflection.py).
"""

from __future__ import annotations

import re

import numpy as np

from o1jax.tasks import reflection
from o1jax.tasks.base import INT_ANSWER_END, Problem, Task, parse_int, render

LEVEL5_DIGITS = 8

_PROMPT = re.compile(r"([1-9][0-9]{0,7})\+([1-9][0-9]{0,7})=")
_STEP = re.compile(r"([0-9])\+([0-9])\+([0-9])=([0-9]{1,2})")
_SCRATCH = re.compile(r"([0-9]+)\+([0-9]+) r([0-9]*) c([01])")
_ANSWER = re.compile(r"\s*([+-]?[0-9]{1,40})" + INT_ANSWER_END)


def _num_digits(n: int) -> int:
  return len(str(n))


def _column_digit(n: int, column: int) -> int:
  return n // 10**column % 10


def difficulty_of_columns(columns: int) -> int | None:
  if 2 <= columns <= 5:
    return columns - 1
  return 5 if 6 <= columns <= LEVEL5_DIGITS else None


def column_steps(a: int, b: int, wrong_column: int | None = None, delta: int = 0
                 ) -> list[str]:
  """The column steps of a+b; `wrong_column` writes that column's sum off by `delta` and
  carries on from the sum as written (an arithmetic slip the rest of the work inherits)."""
  steps = []
  carry = 0
  for column in range(max(_num_digits(a), _num_digits(b))):
    da, db = _column_digit(a, column), _column_digit(b, column)
    total = da + db + carry + (delta if column == wrong_column else 0)
    steps.append(f"{da}+{db}+{carry}={total}")
    carry = 1 if total >= 10 else 0
  return steps


def sum_from_steps(steps) -> int | None:
  """The number the column steps as written give (digits of the sums, final carry)."""
  digits, carry = [], 0
  for text in steps:
    match = _STEP.fullmatch(text)
    if match is None:
      return None
    total = int(match.group(4))
    digits.append(total % 10)
    carry = 1 if total >= 10 else 0
  if not digits:
    return None
  if carry:
    digits.append(1)
  return int("".join(map(str, reversed(digits))))


def scratchpad_steps(a: int, b: int) -> list[str]:
  """The operands restated, then `rest_a+rest_b rRESULT cCARRY` after each column; the
  last step has `0+0` left and the answer is its result with the final carry in front."""
  steps, result, carry = [f"{a}+{b} r c0"], "", 0
  while a or b:
    total = a % 10 + b % 10 + carry
    result, carry = str(total % 10) + result, total // 10
    a, b = a // 10, b // 10
    steps.append(f"{a}+{b} r{result} c{carry}")
  return steps


def _scratchpad_step_ok(a: int, b: int, prev_steps: list[str], step: str) -> bool:
  """Whether `step` follows the previous scratchpad step as written (the operands at the
  start): a step is judged locally, so one slip does not condemn every later step."""
  if _SCRATCH.fullmatch(step) is None:
    return False
  if not prev_steps:
    return step == f"{a}+{b} r c0"
  prev = _SCRATCH.fullmatch(prev_steps[-1])
  if prev is None:
    return False
  rest_a, rest_b = int(prev.group(1)), int(prev.group(2))
  result, carry = prev.group(3), int(prev.group(4))
  if rest_a == 0 and rest_b == 0:
    return False  # nothing is left to add
  total = rest_a % 10 + rest_b % 10 + carry
  expected = f"{rest_a // 10}+{rest_b // 10} r{total % 10}{result} c{total // 10}"
  return step == expected


def scratchpad_answer(steps) -> str | None:
  """The answer the scratchpad steps as written give: the last result, carry in front."""
  match = _SCRATCH.fullmatch(steps[-1].strip()) if steps else None
  if match is None or not match.group(3):
    return None
  return ("1" if match.group(4) == "1" else "") + match.group(3)


def build(a: int, b: int) -> Problem | None:
  """The problem `a+b=`; None unless the longer operand has 2..5 or 6..8 digits.

  Operands of different lengths (only from user prompts) are treated as if the shorter
  one were padded with leading zeros; the difficulty follows the longer one.
  """
  if a < 1 or b < 1:
    return None
  difficulty = difficulty_of_columns(max(_num_digits(a), _num_digits(b)))
  if difficulty is None:
    return None
  return Problem(task=AdditionTask.name, difficulty=difficulty, prompt=f"{a}+{b}=",
                 steps=tuple(column_steps(a, b)), answer=str(a + b), data=(a, b))


def subtraction_check(total: int, a: int, b: int) -> list[str]:
  """`check total-b`, one step per column of total (borrowing), and the verdict vs a."""
  steps = [f"{reflection.CHECK}{total}-{b}"]
  borrow = 0
  for column in range(_num_digits(total)):
    top, db = _column_digit(total, column), _column_digit(b, column)
    borrow_out = 1 if top - db - borrow < 0 else 0
    top += 10 * borrow_out
    steps.append(f"{top}-{db}-{borrow}={top - db - borrow}")
    borrow = borrow_out
  return steps + [reflection.verdict(total - b, a)]


class AdditionTask(Task):
  name = "addition"
  difficulties = (1, 2, 3, 4, 5)

  def _sample(self, rng: np.random.Generator, difficulty: int) -> Problem | None:
    digits = LEVEL5_DIGITS if difficulty == 5 else difficulty + 1
    low, high = 10**(digits - 1), 10**digits  # exactly that many digits
    a, b = (int(v) for v in rng.integers(low, high, size=2))
    return build(a, b)

  def canonical_key(self, problem: Problem) -> str:
    # a+b and b+a are one problem to learn: the key is the prompt with the smaller operand
    # first, so the split sends both to the same side.
    a, b = sorted(problem.data)
    return f"{a}+{b}="

  def _parse_prompt(self, prompt: str) -> Problem | None:
    match = _PROMPT.fullmatch("".join(prompt.split()))
    if match is None:
      return None
    return build(int(match.group(1)), int(match.group(2)))

  def _check_answer(self, problem: Problem, answer: str) -> bool:
    a, b = problem.data
    return parse_int(_ANSWER, answer) == a + b

  def scratchpad_steps(self, problem: Problem) -> list[str]:
    return scratchpad_steps(*problem.data)

  def _check_step(self, problem: Problem, prev_steps: list[str], step: str) -> bool:
    a, b = problem.data
    if _SCRATCH.fullmatch(step) or (prev_steps and _SCRATCH.fullmatch(prev_steps[-1])):
      return _scratchpad_step_ok(a, b, prev_steps, step)
    column = len(prev_steps)
    if column >= max(_num_digits(a), _num_digits(b)):
      return False
    match = _STEP.fullmatch(step)
    if match is None:
      return False
    da, db, carry_in = (int(match.group(i)) for i in (1, 2, 3))
    written_sum = match.group(4)
    if (da, db) != (_column_digit(a, column), _column_digit(b, column)):
      return False
    # The carry must follow from the previous step as written, so a step is judged
    # locally even when an earlier step already went wrong.
    expected_carry = 0
    if prev_steps:
      prev = _STEP.fullmatch(prev_steps[-1])
      if prev is None:
        return False
      expected_carry = 1 if int(prev.group(4)) >= 10 else 0
    return carry_in == expected_carry and written_sum == str(da + db + carry_in)

  def _max_text_len(self, difficulty: int) -> int:
    # The prompt length is fixed by the difficulty; each step is one character longer when
    # its column sum reaches 10, and the answer one digit longer with a final carry. All-9
    # operands maximise every one of these at once, so their text is the longest.
    nines = 10**(LEVEL5_DIGITS if difficulty == 5 else difficulty + 1) - 1
    return len(render(build(nines, nines)))

  # ---- reflective traces ----

  def candidate(self, problem: Problem, solve_steps) -> str | None:
    total = sum_from_steps(solve_steps)
    return None if total is None else str(total)

  def check_steps(self, problem: Problem, candidate: str) -> list[str] | None:
    if not candidate.isdigit() or len(candidate) > LEVEL5_DIGITS + 1:
      return None
    a, b = problem.data
    return subtraction_check(int(candidate), a, b)

  def erroneous_solve(self, problem: Problem, rng: np.random.Generator):
    a, b = problem.data
    column = int(rng.integers(max(_num_digits(a), _num_digits(b))))
    delta = int(rng.choice((-1, 1)))
    steps = column_steps(a, b, column, delta)
    if sum_from_steps(steps) in (None, a + b) or "-" in steps[column].split("=")[1]:
      return None  # a sum of -1 is no slip a column adds up to
    return steps, column, list(problem.steps)
