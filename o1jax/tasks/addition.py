"""Multi-digit addition with column-by-column thinking.

`347+285=` is answered `632` after the steps `7+5+0=12; 4+8+1=13; 3+2+1=6`: one step per
column from the least significant digit, each `a+b+c=s` with the column digits a and b,
the carry in c (written even when 0, so every step has the same shape) and the column sum
s. Difficulty d means both operands have exactly d+1 digits.
"""

from __future__ import annotations

import re

import numpy as np

from o1jax.tasks.base import INT_ANSWER_END, Problem, Task, parse_int, render

_PROMPT = re.compile(r"([1-9][0-9]{0,5})\+([1-9][0-9]{0,5})=")
_STEP = re.compile(r"([0-9])\+([0-9])\+([0-9])=([0-9]{1,2})")
_ANSWER = re.compile(r"\s*([+-]?[0-9]{1,40})" + INT_ANSWER_END)


def _num_digits(n: int) -> int:
  return len(str(n))


def _column_digit(n: int, column: int) -> int:
  return n // 10**column % 10


def build(a: int, b: int) -> Problem | None:
  """The problem `a+b=`; None unless the longer operand has 2..5 digits.

  Operands of different lengths (only from user prompts) are treated as if the shorter
  one were padded with leading zeros; the difficulty follows the longer one.
  """
  if a < 1 or b < 1:
    return None
  columns = max(_num_digits(a), _num_digits(b))
  difficulty = columns - 1
  if difficulty not in AdditionTask.difficulties:
    return None
  steps = []
  carry = 0
  for column in range(columns):
    da, db = _column_digit(a, column), _column_digit(b, column)
    total = da + db + carry
    steps.append(f"{da}+{db}+{carry}={total}")
    carry = 1 if total >= 10 else 0
  return Problem(task=AdditionTask.name, difficulty=difficulty, prompt=f"{a}+{b}=",
                 steps=tuple(steps), answer=str(a + b), data=(a, b))


class AdditionTask(Task):
  name = "addition"

  def _sample(self, rng: np.random.Generator, difficulty: int) -> Problem | None:
    low, high = 10**difficulty, 10**(difficulty + 1)  # exactly difficulty+1 digits
    a, b = (int(v) for v in rng.integers(low, high, size=2))
    return build(a, b)

  def _parse_prompt(self, prompt: str) -> Problem | None:
    match = _PROMPT.fullmatch("".join(prompt.split()))
    if match is None:
      return None
    return build(int(match.group(1)), int(match.group(2)))

  def _check_answer(self, problem: Problem, answer: str) -> bool:
    a, b = problem.data
    return parse_int(_ANSWER, answer) == a + b

  def _check_step(self, problem: Problem, prev_steps: list[str], step: str) -> bool:
    a, b = problem.data
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
    nines = 10**(difficulty + 1) - 1
    return len(render(build(nines, nines)))
