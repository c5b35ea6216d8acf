"""Countdown: reach a target from three numbers, thinking by depth-first search.

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
the search first succeeds (leaf 0..8): d1 leaves 0-1, d2 2-3, d3 4-5, d4 6-8.
"""

from __future__ import annotations

import collections
import functools
import itertools
import operator
import re
from fractions import Fraction

import numpy as np

from o1jax.tasks.base import Problem, Task, render

OPS = ("+", "-", "*")
_APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_NUMBERS = tuple(range(1, 10))
LEAF_BUCKETS = {1: range(0, 2), 2: range(2, 4), 3: range(4, 6), 4: range(6, 9)}

_PROMPT = re.compile(r"([1-9]) ([1-9]) ([1-9]) to ([0-9]{1,6})")
# left op right = [tens part + units part =] result [vs target [no]]: groups 1-8.
_STEP = re.compile(r"(-?[0-9]{1,4})([-+*])(-?[0-9]{1,4})=(?:([0-9]{1,6})\+([0-9]{1,6})=)?"
                   r"(-?[0-9]{1,7})(?: vs ([0-9]{1,6})( no)?)?")
_EXPRESSION_CHARS = frozenset("0123456789+-*/() ")


def difficulty_of_leaf(leaf: int) -> int:
  return next(d for d, leaves in LEAF_BUCKETS.items() if leaf in leaves)


def _first_success(a: int, b: int, c: int, target: int) -> int | None:
  """The leaf index where the search succeeds (leaf 3*i+j is OPS[i] then OPS[j])."""
  for i, op1 in enumerate(OPS):
    first = _APPLY[op1](a, b)
    for j, op2 in enumerate(OPS):
      if _APPLY[op2](first, c) == target:
        return 3 * i + j
  return None


def partial_products(left: int, right: int) -> tuple[int, int] | None:
  """(tens part, units part) of left*right for a two-digit-or-longer left, else None."""
  if left < 10:
    return None
  return (left - left % 10) * right, left % 10 * right


def step_text(left: int, op: str, right: int) -> str:
  """`left op right = result`, a product of a number >= 10 through its partial products."""
  parts = partial_products(left, right) if op == "*" else None
  middle = f"{parts[0]}+{parts[1]}=" if parts else ""
  return f"{left}{op}{right}={middle}{_APPLY[op](left, right)}"


def search(numbers: tuple[int, int, int], target: int) -> tuple[list[str], str, int] | None:
  """(steps, answer, index of the successful leaf) of the depth-first search, or None."""
  a, b, c = numbers
  success = _first_success(a, b, c, target)
  if success is None:
    return None
  steps = []
  for leaf in range(success + 1):
    op1, op2 = OPS[leaf // 3], OPS[leaf % 3]
    first = _APPLY[op1](a, b)
    if leaf % 3 == 0:  # entering a new depth-one branch
      steps.append(step_text(a, op1, b))
    mark = "" if leaf == success else " no"
    steps.append(f"{step_text(first, op2, c)} vs {target}{mark}")
  op1, op2 = OPS[success // 3], OPS[success % 3]
  return steps, f"({a}{op1}{b}){op2}{c}", success


def build(numbers: tuple[int, int, int], target: int) -> Problem | None:
  """The problem, or None if the target is not positive or the search cannot reach it."""
  if target <= 0:
    return None
  found = search(numbers, target)
  if found is None:
    return None
  steps, answer, leaf = found
  a, b, c = numbers
  return Problem(task=CountdownTask.name, difficulty=difficulty_of_leaf(leaf),
                 prompt=f"{a} {b} {c} to {target}", steps=tuple(steps), answer=answer,
                 data=(a, b, c, target))


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

  def _sample(self, rng: np.random.Generator, difficulty: int) -> Problem | None:
    # Every prompt of the level is in a table built once, so a draw is one index: the
    # rejection sampling this replaced cost ~7 ms a problem on the training data threads.
    prompts = _prompts_by_difficulty()[difficulty]
    numbers, target = prompts[int(rng.integers(len(prompts)))]
    return build(numbers, target)

  def _parse_prompt(self, prompt: str) -> Problem | None:
    match = _PROMPT.fullmatch(" ".join(prompt.split()))
    if match is None:
      return None
    a, b, c, target = (int(g) for g in match.groups())
    return build((a, b, c), target)

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

  def _check_step(self, problem: Problem, prev_steps: list[str], step: str) -> bool:
    n0, n1, n2, target = problem.data
    # Replay the history as written to find the latest internal node and whether the
    # search already ended: a step that compares with the target (` vs T`) is a leaf, and an
    # unmarked leaf is the success that ends the search.
    last_kind = None  # None before any step, then "internal" or "leaf"
    internal_result = None
    for text in prev_steps:
      parsed = _STEP.fullmatch(text)
      if parsed is None:
        return False
      if parsed.group(7) is None:
        last_kind, internal_result = "internal", int(parsed.group(6))
      elif parsed.group(8) is None:
        return False  # nothing may follow the success
      else:
        last_kind = "leaf"

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
    if parsed.group(7) is None:  # an internal node: the first two numbers, not twice running
      return (left, right) == (n0, n1) and last_kind != "internal"
    return (internal_result is not None and (left, right) == (internal_result, n2)
            and int(parsed.group(7)) == target and bool(parsed.group(8)) == (result != target))

  def _max_text_len(self, difficulty: int) -> int:
    # Exhaustive over the table, i.e. every prompt the generator can produce.
    return max(len(render(build(numbers, target)))
               for numbers, target in _prompts_by_difficulty()[difficulty])


@functools.cache
def _prompts_by_difficulty() -> dict[int, tuple[tuple[tuple[int, int, int], int], ...]]:
  """Every reachable (numbers, positive target), grouped by the difficulty of its search,
  in a fixed order (so a seeded draw is the same everywhere)."""
  table = {d: [] for d in LEAF_BUCKETS}
  for numbers in itertools.product(_NUMBERS, repeat=3):
    targets = {_APPLY[op2](_APPLY[op1](numbers[0], numbers[1]), numbers[2])
               for op1, op2 in itertools.product(OPS, repeat=2)}
    for target in sorted(t for t in targets if t > 0):
      leaf = _first_success(*numbers, target)
      table[difficulty_of_leaf(leaf)].append((numbers, target))
  return {d: tuple(v) for d, v in table.items()}
