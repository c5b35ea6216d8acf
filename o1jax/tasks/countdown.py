"""Countdown: reach a target from three (level 5: four) numbers by depth-first search.

Prompt `3 5 2 to 16`: three numbers 1..9 and a positive target. The numbers are used once
each in the given order, combined left to right as `(a op b) op c` with op in + - *. There
is no division: it would add fractions and a fourth branch per node, and long, irregular
traces are what a tiny model cannot learn.

The thinking is the depth-first search over the 3x3 operator choices, + - * in that order:
an internal node `3+5=8`, a leaf that sets its value beside the target and fails
`8+2=10 vs 16 no`, and the first successful leaf `8*2=16 vs 16`, which ends the search:

  3+5=8; 8+2=10 vs 16 no; 8-2=6 vs 16 no; 8*2=16 vs 16        answer (3+5)*2

So a trace shows branches being tried and abandoned. The leaf copies the target next to its
value because the decision to stop is a comparison: written out, it is between two adjacent
numbers; left implicit, it is between the value and the end of the prompt, and the tiny
model both stopped on misses and searched past hits (docs/RESULTS.md). Negative
intermediates are written plainly (`3-5=-2`). A two-digit number times a digit is written through its partial
products, `16*8=80+48=128`, so that every step is one-digit facts and a one-column sum (a
tiny model learns those; a two-digit product in one go it does not). Difficulty is where
the search first succeeds (leaf 0..8): d1 leaves 0-1, d2 2-3, d3 4-5, d4 6-8. Level 5
has four numbers, `((a op b) op c) op d`: internal nodes at two depths and 27 leaves, drawn
where the whole first branch fails (see LEVEL5_FIRST_LEAF), traces of 150-420 characters.
The reflective check recomputes the candidate expression (`check (3+5)*2; 3+5=8; 8*2=16;
16 vs 16 ok`); a caught error is a miss written as a hit, after which the search resumes.
"""

from __future__ import annotations

import collections
import functools
import itertools
import operator
import re
from fractions import Fraction

import numpy as np

from o1jax.tasks import reflection
from o1jax.tasks.base import Problem, Task, render

OPS = ("+", "-", "*")
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_NUMBERS = tuple(range(1, 10))
LEAF_BUCKETS = {1: range(0, 2), 2: range(2, 4), 3: range(4, 6), 4: range(6, 9)}
# Level 5 ("research"): four numbers, ((a op b) op c) op d, 27 leaves; drawn only where the
# whole first branch fails (first success at leaf 9 or later) and the target is at most
# LEVEL5_MAX_TARGET, with a plain trace of at most LEVEL5_MAX_THINKING characters (so a
# reflective trace with a correction fits the training rows).
LEVEL5_FIRST_LEAF = 9
LEVEL5_MAX_TARGET = 99
LEVEL5_MAX_THINKING = 420

_PROMPT = re.compile(r"([1-9]) ([1-9]) ([1-9])(?: ([1-9]))? to ([0-9]{1,6})")
# left op right = [tens part + units part =] result [vs target [no]]: groups 1-8.
_STEP = re.compile(r"(-?[0-9]{1,4})([-+*])(-?[0-9]{1,4})=(?:([0-9]{1,6})\+([0-9]{1,6})=)?"
                   r"(-?[0-9]{1,7})(?: vs ([0-9]{1,6})( no)?)?")
_EXPRESSION_CHARS = frozenset("0123456789+-*/() ")
_CANDIDATE = {3: re.compile(r"\(([1-9])([-+*])([1-9])\)([-+*])([1-9])"),
              4: re.compile(r"\(\(([1-9])([-+*])([1-9])\)([-+*])([1-9])\)([-+*])([1-9])")}


def difficulty_of_leaf(leaf: int) -> int:
  return next(d for d, leaves in LEAF_BUCKETS.items() if leaf in leaves)


def _leaf_values(numbers: tuple[int, ...]) -> list[int]:
  """The value of every leaf in search order (leaf index = the ops in base 3)."""
  values = [numbers[0]]
  for n in numbers[1:]:
    values = [_APPLY[op](v, n) for v in values for op in OPS]
  return values


def _first_success(*numbers_and_target: int) -> int | None:
  """The leaf index where the search succeeds (for three numbers, leaf 3*i+j is OPS[i]
  then OPS[j])."""
  *numbers, target = numbers_and_target
  for leaf, value in enumerate(_leaf_values(tuple(numbers))):
    if value == target:
      return leaf
  return None


def partial_products(left: int, right: int) -> tuple[int, int] | None:
  """(tens part, units part) of left*right for a two-digit-or-longer left, else None."""
  if left < 10:
    return None
  return (left - left % 10) * right, left % 10 * right


def step_text(left: int, op: str, right: int, result: int | None = None) -> str:
  """`left op right = result`, a product of a number >= 10 through its partial products.
  `result` overrides the value written (an injected slip)."""
  parts = partial_products(left, right) if op == "*" else None
  middle = f"{parts[0]}+{parts[1]}=" if parts else ""
  value = _APPLY[op](left, right) if result is None else result
  return f"{left}{op}{right}={middle}{value}"


def _expression(numbers: tuple[int, ...], ops: tuple[str, ...]) -> str:
  text = str(numbers[0])
  for op, n in zip(ops, numbers[1:]):
    text = f"({text}{op}{n})"
  return text[1:-1]  # the outermost pair is redundant


def _search_steps(numbers: tuple[int, ...], target: int
                  ) -> tuple[list[str], list[int], int, str] | None:
  """(steps, the step index of every leaf, index of the successful leaf, answer) of the
  depth-first search, or None if no leaf reaches the target."""
  success = _first_success(*numbers, target)
  if success is None:
    return None
  depth = len(numbers) - 1                         # operations on a path
  steps, leaf_steps = [], []
  values = [numbers[0]] + [0] * depth
  for leaf in range(success + 1):
    ops = [OPS[leaf // 3**(depth - 1 - i) % 3] for i in range(depth)]
    # A new internal node at every level whose op changed (all of them at leaf 0).
    first_changed = next((i for i in range(depth - 1) if leaf % 3**(depth - 1 - i) == 0), None)
    for i in range(0 if leaf == 0 else (first_changed if first_changed is not None else depth - 1),
                   depth - 1):
      values[i + 1] = _APPLY[ops[i]](values[i], numbers[i + 1])
      steps.append(step_text(values[i], ops[i], numbers[i + 1]))
    value = _APPLY[ops[-1]](values[depth - 1], numbers[depth])
    mark = "" if leaf == success else " no"
    leaf_steps.append(len(steps))
    steps.append(f"{step_text(values[depth - 1], ops[-1], numbers[depth])} vs {target}{mark}")
  ops = tuple(OPS[success // 3**(depth - 1 - i) % 3] for i in range(depth))
  return steps, leaf_steps, success, _expression(numbers, ops)


def search(numbers: tuple[int, ...], target: int) -> tuple[list[str], str, int] | None:
  """(steps, answer, index of the successful leaf) of the depth-first search, or None."""
  found = _search_steps(tuple(numbers), target)
  if found is None:
    return None
  steps, _, success, answer = found
  return steps, answer, success


def build(numbers: tuple[int, ...], target: int) -> Problem | None:
  """The problem, or None if the target is not positive or the search cannot reach it.
  Three numbers give levels 1-4 (by where the search succeeds), four give level 5."""
  if target <= 0 or len(numbers) not in (3, 4):
    return None
  found = search(numbers, target)
  if found is None:
    return None
  steps, answer, leaf = found
  difficulty = 5 if len(numbers) == 4 else difficulty_of_leaf(leaf)
  return Problem(task=CountdownTask.name, difficulty=difficulty,
                 prompt=f"{' '.join(map(str, numbers))} to {target}", steps=tuple(steps),
                 answer=answer, data=tuple(numbers) + (target,))


def recompute_check(numbers: tuple[int, ...], ops: tuple[str, ...], target: int) -> list[str]:
  """`check EXPR`, the expression recomputed one operation a step, and the verdict."""
  steps = [f"{reflection.CHECK}{_expression(numbers, ops)}"]
  value = numbers[0]
  for op, n in zip(ops, numbers[1:]):
    steps.append(step_text(value, op, n))
    value = _APPLY[op](value, n)
  return steps + [reflection.verdict(value, target)]


class _BadExpression(Exception):
  pass


class _ExpressionParser:
  """expr := term (('+'|'-') term)*; term := atom (('*'|'/') atom)*;
  atom := number | '(' expr ')'. Exact rationals; records the numbers it reads.
  No unary minus: a countdown answer only combines the given numbers."""

  def __init__(self, text: str):
    self.tokens = re.findall(r"[0-9]+|[-+*/()]", text)
    # Spaces only separate tokens ("3 5" is two numbers, which the grammar then rejects).
    if "".join(self.tokens) != text.replace(" ", ""):
      raise _BadExpression("unexpected characters")
    self.pos = 0
    self.numbers: list[int] = []

  def _peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def _take(self) -> str:
    token = self._peek()
    if token is None:
      raise _BadExpression("unexpected end")
    self.pos += 1
    return token

  def parse(self) -> Fraction:
    value = self._expr()
    if self._peek() is not None:
      raise _BadExpression("trailing tokens")
    return value

  def _expr(self) -> Fraction:
    value = self._term()
    while self._peek() in ("+", "-"):
      value = value + self._term() if self._take() == "+" else value - self._term()
    return value

  def _term(self) -> Fraction:
    value = self._atom()
    while self._peek() in ("*", "/"):
      op = self._take()
      other = self._atom()
      if op == "*":
        value *= other
      elif other == 0:
        raise _BadExpression("division by zero")
      else:
        value /= other
    return value

  def _atom(self) -> Fraction:
    token = self._take()
    if token == "(":
      value = self._expr()
      if self._take() != ")":
        raise _BadExpression("expected ')'")
      return value
    if token.isdigit() and len(token) <= 3:
      self.numbers.append(int(token))
      return Fraction(int(token))
    raise _BadExpression(f"unexpected {token!r}")


def evaluate_answer(text: str) -> tuple[Fraction, list[int]] | None:
  """(value, numbers used) of an arithmetic expression, or None if it is not one."""
  try:
    parser = _ExpressionParser(text)
    return parser.parse(), parser.numbers
  except (_BadExpression, RecursionError):
    return None


class CountdownTask(Task):
  name = "countdown"
  difficulties = (1, 2, 3, 4, 5)

  def _sample(self, rng: np.random.Generator, difficulty: int) -> Problem | None:
    # Every prompt of the level is in a table built once, so a draw is one index: the
    # rejection sampling this replaced cost ~7 ms a problem on the training data threads.
    prompts = _prompts_by_difficulty(difficulty)
    numbers, target = prompts[int(rng.integers(len(prompts)))]
    return build(numbers, target)

  def canonical_key(self, problem: Problem) -> str:
    # The same numbers in another order ask for the same target: a search over a permuted
    # order (often of another level) with the same arithmetic facts. The key is the prompt
    # with the numbers sorted (itself a prompt, maybe unsolvable in that order), so every
    # permutation lies on one side of the split.
    *numbers, target = problem.data
    return f"{' '.join(map(str, sorted(numbers)))} to {target}"

  def _parse_prompt(self, prompt: str) -> Problem | None:
    match = _PROMPT.fullmatch(" ".join(prompt.split()))
    if match is None:
      return None
    *numbers, target = (int(g) for g in match.groups() if g is not None)
    return build(tuple(numbers), target)

  def _check_answer(self, problem: Problem, answer: str) -> bool:
    # Tolerate trailing text such as "(3+5)*2 = 16" by reading the longest prefix made
    # of expression characters.
    end = 0
    while end < len(answer) and answer[end] in _EXPRESSION_CHARS:
      end += 1
    evaluated = evaluate_answer(answer[:end].strip())
    if evaluated is None:
      return False
    value, used = evaluated
    *numbers, target = problem.data
    return value == target and collections.Counter(used) == collections.Counter(numbers)

  def _replay(self, problem: Problem, prev_steps) -> tuple[dict, dict, object] | None:
    """(value at each written depth, op at each depth, the kind of the last step: None,
    an internal depth or "leaf") of the search as written, or None if it already ended or
    a step is unreadable. A step that compares with the target (` vs T`) is a leaf; an
    unmarked leaf is the success that ends the search."""
    numbers = problem.data[:-1]
    values, ops, last = {0: numbers[0]}, {}, None
    for text in prev_steps:
      parsed = _STEP.fullmatch(text)
      if parsed is None:
        return None
      if parsed.group(7) is None:
        depth = self._internal_depth(numbers, values, last, parsed)
        if depth is None:
          return None
        values = {k: v for k, v in values.items() if k < depth}
        values[depth], ops[depth], last = int(parsed.group(6)), parsed.group(2), depth
      elif parsed.group(8) is None:
        return None  # nothing may follow the success
      else:
        ops[len(numbers) - 1], last = parsed.group(2), "leaf"
    return values, ops, last

  @staticmethod
  def _internal_depth(numbers, values, last, parsed) -> int | None:
    """Which internal level a written node `L op R` is: the deepest level d whose operands
    are (the value at d-1, the d-th number), directly after its parent or a sibling's
    subtree (never twice running at one level)."""
    left, right = int(parsed.group(1)), int(parsed.group(3))
    for depth in range(len(numbers) - 2, 0, -1):
      if (depth - 1 in values and (left, right) == (values[depth - 1], numbers[depth])
          and last != depth and (depth == 1 or last is not None)):
        return depth
    return None

  def _check_step(self, problem: Problem, prev_steps: list[str], step: str) -> bool:
    numbers, target = problem.data[:-1], problem.data[-1]
    replayed = self._replay(problem, prev_steps)
    if replayed is None:
      return False
    values, _, last = replayed
    parsed = _STEP.fullmatch(step)
    if parsed is None:
      return False
    left, op, right = int(parsed.group(1)), parsed.group(2), int(parsed.group(3))
    result = int(parsed.group(6))
    if _APPLY[op](left, right) != result:
      return False
    if parsed.group(4) is not None:  # partial products, if written, must be the right ones
      if (op, int(parsed.group(4)), int(parsed.group(5))) != ("*",) + (
          partial_products(left, right) or (None, None)):
        return False
    if parsed.group(7) is None:  # an internal node
      return self._internal_depth(numbers, values, last, parsed) is not None
    leaf_parent = len(numbers) - 2
    return (leaf_parent in values and last in (leaf_parent, "leaf")
            and (left, right) == (values[leaf_parent], numbers[-1])
            and int(parsed.group(7)) == target and bool(parsed.group(8)) == (result != target))

  def _max_text_len(self, difficulty: int) -> int:
    # Exhaustive over the table, i.e. every prompt the generator can produce.
    return max(len(render(build(numbers, target)))
               for numbers, target in _prompts_by_difficulty(difficulty))

  # ---- reflective traces ----

  def candidate(self, problem: Problem, solve_steps) -> str | None:
    replayed = self._replay(problem, solve_steps[:-1]) if solve_steps else None
    last = _STEP.fullmatch(solve_steps[-1]) if solve_steps else None
    if replayed is None or last is None or last.group(7) is None or last.group(8):
      return None  # `so` follows a leaf that hit the target
    _, ops, _ = replayed
    numbers = problem.data[:-1]
    ops = dict(ops)
    ops[len(numbers) - 1] = last.group(2)
    if sorted(ops) != list(range(1, len(numbers))):
      return None
    return _expression(numbers, tuple(ops[d] for d in range(1, len(numbers))))

  def check_steps(self, problem: Problem, candidate: str) -> list[str] | None:
    numbers, target = problem.data[:-1], problem.data[-1]
    match = _CANDIDATE[len(numbers)].fullmatch(candidate)
    if match is None:
      return None
    groups = match.groups()
    if tuple(int(g) for g in groups[::2]) != numbers:
      return None
    return recompute_check(numbers, groups[1::2], target)

  def erroneous_solve(self, problem: Problem, rng: np.random.Generator):
    # A slip that turns a miss into a false hit: its check recomputes, finds the miss, and
    # the search resumes at the next leaf.
    numbers, target = problem.data[:-1], problem.data[-1]
    steps, leaf_steps, success, _ = _search_steps(numbers, target)
    if success == 0:
      return None
    leaf = int(rng.integers(success))
    at = leaf_steps[leaf]
    parsed = _STEP.fullmatch(steps[at])
    slip = step_text(int(parsed.group(1)), parsed.group(2), int(parsed.group(3)), target)
    return steps[:at] + [f"{slip} vs {target}"], at, steps[at + 1:]

  def resume(self, problem: Problem, solve_steps: list[str]) -> list[str]:
    # The search goes on from the leaf the check refuted, now marked a miss.
    return solve_steps[:-1] + [solve_steps[-1] + " no"] if solve_steps else []


@functools.cache
def _prompts_by_difficulty(difficulty: int) -> tuple[tuple[tuple[int, ...], int], ...]:
  """Every (numbers, positive target) of a level, in a fixed order (so a seeded draw is
  the same everywhere): levels 1-4 by where the three-number search first succeeds, level 5
  the four-number searches described at LEVEL5_FIRST_LEAF."""
  if difficulty == 5:
    return _level5_prompts()
  table = []
  for numbers in itertools.product(_NUMBERS, repeat=3):
    for target in sorted(t for t in set(_leaf_values(numbers)) if t > 0):
      if difficulty_of_leaf(_first_success(*numbers, target)) == difficulty:
        table.append((numbers, target))
  return tuple(table)


def _level5_prompts() -> tuple[tuple[tuple[int, ...], int], ...]:
  table = []
  for numbers in itertools.product(_NUMBERS, repeat=4):
    leaves = _leaf_values(numbers)
    first = {}
    for leaf, value in enumerate(leaves):
      first.setdefault(value, leaf)
    for target in sorted(t for t, leaf in first.items()
                         if 0 < t <= LEVEL5_MAX_TARGET and leaf >= LEVEL5_FIRST_LEAF):
      steps, _, _, _ = _search_steps(numbers, target)
      if len("; ".join(steps)) <= LEVEL5_MAX_THINKING:
        table.append((numbers, target))
  return tuple(table)
