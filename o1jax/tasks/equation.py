"""Linear equations in x with an integer solution, solved one inverse operation per step.

  d1  x+5=13         x=13-5; x=8
  d2  2x+5=13        2x=13-5; 2x=8; x=8/2; x=4
  d3  5x+3=2x+15     5x-2x=15-3; 3x=12; x=12/3; x=4
  d4  3(x+4)+5=29    3(x+4)=29-5; 3(x+4)=24; x+4=24/3; x+4=8; x=8-4; x=4
  d5  2(3(x+4)-5)+7=45  2(3(x+4)-5)=45-7; 2(3(x+4)-5)=38; 3(x+4)-5=38/2; ...; x=4
      (level 5, "research": a bracket inside a bracket, ten steps, constants up to 999)

Every step is a rewrite whose arithmetic is one "column" of work: a digit added to or taken
from a number below 100, a one-digit product or quotient. The sampling ranges keep it so
(the constant that is moved across is a single digit, |x| <= 9), because a step such as
`x=23-16` asks a tiny model for two-digit subtraction in one go, which it learns far more
slowly than the one-column steps addition is written in. d4 undoes the outer operations
first instead of expanding the bracket, for the same reason.

Constants in prompts are positive (d1, d2 and the bracket of d4 also come with a minus),
x may be negative. A thinking step is accepted when it is a linear equation that holds at
the solution and pins x down (not an identity such as 12=12), so any valid algebraic route
counts, not only the reference one. Steps are read by a small recursive-descent parser
over exact rationals rather than eval, because they are untrusted model output.

The reflective check substitutes the candidate into the prompt's two sides, one operation a
step (`check x=4; 3*4=12; 12+5=17; 17 vs 17 ok`); a caught error is a slip in the last step.
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import numpy as np

from o1jax.tasks import reflection
from o1jax.tasks.base import INT_ANSWER_END, Problem, Task, parse_int, render

# Sampling ranges. The generator draws every parameter uniformly from these, then rejects
# draws whose right-hand constant leaves 1..MAX_RHS; max_text_len enumerates the same space.
_SIGNS = (1, -1)
_COEFS = tuple(range(2, 10))
_DIGITS = tuple(range(1, 10))
_XS = tuple(range(-9, 10))
_MAX_RHS = 99
_MAX_RHS_5 = 999
_SMALL_COEFS = (2, 3, 4, 5)
_SAMPLE_SPACE = {
    1: (_SIGNS, _DIGITS, tuple(range(1, 20))),  # sign, b, c: x±b=c
    2: (_COEFS, _XS, _SIGNS, _DIGITS),  # a, x, sign, b
    3: (tuple(range(4, 10)), tuple(range(2, 8)), _XS, _DIGITS),  # a, c, x, b
    4: (_COEFS, _SIGNS, _DIGITS, _DIGITS, _XS),  # a, sign, b, e, x
    5: (_SMALL_COEFS, _SMALL_COEFS, _SIGNS, _DIGITS, _SIGNS, _DIGITS, _DIGITS, _XS),
}

_N = r"([0-9]{1,6})"
_PROMPTS = {
    1: re.compile(rf"x([+-]){_N}={_N}"),
    2: re.compile(rf"{_N}x([+-]){_N}={_N}"),
    3: re.compile(rf"{_N}x\+{_N}={_N}x\+{_N}"),
    4: re.compile(rf"{_N}\(x([+-]){_N}\)\+{_N}={_N}"),
    5: re.compile(rf"{_N}\({_N}\(x([+-]){_N}\)([+-]){_N}\)\+{_N}={_N}"),
}
_SOLVED = re.compile(r"x=(-?[0-9]{1,6})")
_CANDIDATE = re.compile(r"-?[0-9]{1,6}")
_ANSWER = re.compile(r"\s*(?:x\s*=\s*)?([+-]?[0-9]{1,40})" + INT_ANSWER_END)


def _sign_char(sign: int) -> str:
  return "+" if sign > 0 else "-"


def _problem(difficulty: int, prompt: str, steps: list[str], x: int, params: tuple
             ) -> Problem:
  return Problem(task=EquationTask.name, difficulty=difficulty, prompt=prompt,
                 steps=tuple(steps), answer=str(x), data=(x,) + params)


def build(difficulty: int, params: tuple) -> Problem | None:
  """The problem with these prompt constants (see _PROMPTS for their order), or None if
  the solution is not an integer or the form is degenerate. data is (x, *params)."""
  if difficulty == 1:
    sign, b, c = params
    x = c - sign * b
    return _problem(1, f"x{_sign_char(sign)}{b}={c}",
                    [f"x={c}{_sign_char(-sign)}{b}", f"x={x}"], x, params)
  if difficulty == 2:
    a, sign, b, c = params
    ax = c - sign * b
    if a < 1 or ax % a:
      return None
    x = ax // a
    return _problem(2, f"{a}x{_sign_char(sign)}{b}={c}",
                    [f"{a}x={c}{_sign_char(-sign)}{b}", f"{a}x={ax}", f"x={ax}/{a}", f"x={x}"],
                    x, params)
  if difficulty == 3:
    a, b, c, e = params
    k, kx = a - c, e - b
    if c < 1 or k < 1 or kx % k:
      return None
    x = kx // k
    return _problem(3, f"{a}x+{b}={c}x+{e}",
                    [f"{a}x-{c}x={e}-{b}", f"{k}x={kx}", f"x={kx}/{k}", f"x={x}"], x, params)
  if difficulty == 4:
    a, sign, b, e, f = params
    g = f - e  # = a(x±b): undo the +e, then the factor a, then the ±b
    if a < 1 or g % a:
      return None
    h = g // a
    x = h - sign * b
    bracket = f"x{_sign_char(sign)}{b}"
    return _problem(4, f"{a}({bracket})+{e}={f}",
                    [f"{a}({bracket})={f}-{e}", f"{a}({bracket})={g}", f"{bracket}={g}/{a}",
                     f"{bracket}={h}", f"x={h}{_sign_char(-sign)}{b}", f"x={x}"], x, params)
  if difficulty == 5:
    a, b, sign1, c, sign2, d, e, f = params
    g = f - e  # = a(b(x±c)±d): undo +e, the factor a, ±d, the factor b, ±c
    if a < 1 or b < 1 or g % a or (g // a - sign2 * d) % b:
      return None
    j = g // a
    i = j - sign2 * d
    h = i // b
    x = h - sign1 * c
    inner = f"{b}(x{_sign_char(sign1)}{c})"
    outer = f"{a}({inner}{_sign_char(sign2)}{d})"
    middle = f"{inner}{_sign_char(sign2)}{d}"
    bracket = f"x{_sign_char(sign1)}{c}"
    return _problem(5, f"{outer}+{e}={f}",
                    [f"{outer}={f}-{e}", f"{outer}={g}", f"{middle}={g}/{a}", f"{middle}={j}",
                     f"{inner}={j}{_sign_char(-sign2)}{d}", f"{inner}={i}",
                     f"{bracket}={i}/{b}", f"{bracket}={h}",
                     f"x={h}{_sign_char(-sign1)}{c}", f"x={x}"], x, params)
  return None


def _apply(left: int, op: str, right: int) -> tuple[str, int]:
  value = {"+": left + right, "-": left - right, "*": left * right}[op]
  return f"{left}{op}{right}={value}", value


def substitution_check(difficulty: int, params: tuple, x: int) -> list[str]:
  """`check x=X`, the prompt's sides evaluated at X one operation a step, and the verdict."""
  steps = [f"{reflection.CHECK}x={x}"]

  def step(left, op, right):
    text, value = _apply(left, op, right)
    steps.append(text)
    return value

  sign = lambda s: "+" if s > 0 else "-"
  if difficulty == 1:
    s, b, c = params
    left, right = step(x, sign(s), b), c
  elif difficulty == 2:
    a, s, b, c = params
    left, right = step(step(a, "*", x), sign(s), b), c
  elif difficulty == 3:
    a, b, c, e = params
    left = step(step(a, "*", x), "+", b)
    right = step(step(c, "*", x), "+", e)
  elif difficulty == 4:
    a, s, b, e, f = params
    left, right = step(step(a, "*", step(x, sign(s), b)), "+", e), f
  else:
    a, b, s1, c, s2, d, e, f = params
    inner = step(b, "*", step(x, sign(s1), c))
    left, right = step(step(a, "*", step(inner, sign(s2), d)), "+", e), f
  return steps + [reflection.verdict(left, right)]


def _from_draw(difficulty: int, draw: tuple) -> Problem | None:
  """Turns one draw from _SAMPLE_SPACE into a problem, or None to reject it."""
  if difficulty == 1:
    return build(1, draw)
  if difficulty == 2:
    a, x, sign, b = draw
    c = a * x + sign * b
    return build(2, (a, sign, b, c)) if 1 <= c <= _MAX_RHS else None
  if difficulty == 3:
    a, c, x, b = draw
    e = (a - c) * x + b
    # a-c >= 2 keeps "1x=..." out of the training data.
    return build(3, (a, b, c, e)) if a - c >= 2 and 1 <= e <= _MAX_RHS else None
  if difficulty == 4:
    a, sign, b, e, x = draw
    f = a * (x + sign * b) + e
    return build(4, (a, sign, b, e, f)) if 1 <= f <= _MAX_RHS else None
  a, b, sign1, c, sign2, d, e, x = draw
  f = a * (b * (x + sign1 * c) + sign2 * d) + e
  return build(5, (a, b, sign1, c, sign2, d, e, f)) if 1 <= f <= _MAX_RHS_5 else None


class _NotLinear(Exception):
  """The step is malformed, not linear in x, or divides by zero."""


class _LinearParser:
  """Recursive descent over `expr = expr` where each side is linear in x.

  A value is (coefficient of x, constant) in exact rationals. Grammar:
    expr   := term (('+'|'-') term)*
    term   := unary (('*'|'/') unary | implicit)*   implicit: "3x", "3(x+4)"
    unary  := ('+'|'-')* primary
    primary:= number | 'x' | '(' expr ')'
  """

  _TOKEN = re.compile(r"\s*(?:([0-9]+)|([-+*/()=x]))")

  def __init__(self, text: str):
    self.tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
      match = self._TOKEN.match(text, pos)
      if match is None:
        raise _NotLinear(f"unexpected character at {pos}")
      self.tokens.append(match.group(1) or match.group(2))
      pos = match.end()
    self.pos = 0

  def _peek(self) -> str | None:
    return self.tokens[self.pos] if self.pos < len(self.tokens) else None

  def _take(self) -> str:
    token = self._peek()
    if token is None:
      raise _NotLinear("unexpected end")
    self.pos += 1
    return token

  def equation(self) -> tuple[Fraction, Fraction]:
    """(coefficient, constant) of lhs - rhs."""
    lhs = self._expr()
    if self._take() != "=":
      raise _NotLinear("expected '='")
    rhs = self._expr()
    if self._peek() is not None:
      raise _NotLinear("trailing tokens")
    return lhs[0] - rhs[0], lhs[1] - rhs[1]

  def _expr(self):
    value = self._term()
    while self._peek() in ("+", "-"):
      op = self._take()
      coef, const = self._term()
      value = (value[0] + coef, value[1] + const) if op == "+" else (
          value[0] - coef, value[1] - const)
    return value

  def _term(self):
    value = self._unary()
    while True:
      token = self._peek()
      if token in ("*", "/"):
        self._take()
        other = self._unary()
      elif token in ("x", "("):  # implicit multiplication
        other = self._unary()
      else:
        return value
      if token == "/":
        if other[0] != 0 or other[1] == 0:
          raise _NotLinear("division by an x term or by zero")
        value = (value[0] / other[1], value[1] / other[1])
      else:
        if value[0] != 0 and other[0] != 0:
          raise _NotLinear("x times x")
        value = (value[0] * other[1] + other[0] * value[1], value[1] * other[1])

  def _unary(self):
    negate = False
    while self._peek() in ("+", "-"):
      negate ^= self._take() == "-"
    coef, const = self._primary()
    return (-coef, -const) if negate else (coef, const)

  def _primary(self):
    token = self._take()
    if token == "x":
      return Fraction(1), Fraction(0)
    if token == "(":
      value = self._expr()
      if self._take() != ")":
        raise _NotLinear("expected ')'")
      return value
    if token.isdigit():
      return Fraction(0), Fraction(int(token))
    raise _NotLinear(f"unexpected {token!r}")


def linear_equation(text: str) -> tuple[Fraction, Fraction] | None:
  """(p, q) with `text` equivalent to p*x + q = 0, or None if it is not a linear equation."""
  try:
    return _LinearParser(text).equation()
  except (_NotLinear, RecursionError):
    return None


class EquationTask(Task):
  name = "equation"
  difficulties = (1, 2, 3, 4, 5)

  def _sample(self, rng: np.random.Generator, difficulty: int) -> Problem | None:
    draw = tuple(space[int(rng.integers(len(space)))] for space in _SAMPLE_SPACE[difficulty])
    return _from_draw(difficulty, draw)

  def canonical_key(self, problem: Problem) -> str:
    # The prompt is the equation's normal form already: the generator and the parser write
    # each equation one way (x term first, constants after, the factor before its bracket,
    # level 3's larger coefficient on the left), so no other prompt is the same equation
    # reordered (tests/test_canonical_split.py checks that commuted forms do not parse).
    return problem.prompt

  def _parse_prompt(self, prompt: str) -> Problem | None:
    text = "".join(prompt.split())
    for difficulty, pattern in _PROMPTS.items():
      match = pattern.fullmatch(text)
      if match is None:
        continue
      params = tuple(
          (1 if g == "+" else -1) if g in ("+", "-") else int(g) for g in match.groups())
      return build(difficulty, params)
    return None

  def _check_answer(self, problem: Problem, answer: str) -> bool:
    return parse_int(_ANSWER, answer) == problem.data[0]

  def _check_step(self, problem: Problem, prev_steps: list[str], step: str) -> bool:
    # Every linear equation with a nonzero x coefficient has exactly one root, so holding
    # at the solution makes the step equivalent to the original equation whatever came
    # before it.
    parsed = linear_equation(step)
    if parsed is None:
      return False
    coef, const = parsed
    return coef != 0 and coef * problem.data[0] + const == 0

  def _max_text_len(self, difficulty: int) -> int:
    # Exhaustive over every draw the generator can make (~25k for difficulty 4, ~890k for
    # level 5: a few seconds, once a process).
    longest = 0
    for draw in itertools.product(*_SAMPLE_SPACE[difficulty]):
      problem = _from_draw(difficulty, draw)
      if problem is not None:
        longest = max(longest, len(render(problem)))
    return longest

  # ---- reflective traces ----

  def candidate(self, problem: Problem, solve_steps) -> str | None:
    match = _SOLVED.fullmatch(solve_steps[-1]) if solve_steps else None
    return match.group(1) if match else None

  def check_steps(self, problem: Problem, candidate: str) -> list[str] | None:
    if not _CANDIDATE.fullmatch(candidate):
      return None
    return substitution_check(problem.difficulty, problem.data[1:], int(candidate))

  def erroneous_solve(self, problem: Problem, rng: np.random.Generator):
    # A slip in the last step's arithmetic, which substitution then exposes.
    wrong = problem.data[0] + int(rng.choice((-1, 1)))
    steps = list(problem.steps[:-1]) + [f"x={wrong}"]
    return steps, len(steps) - 1, list(problem.steps)
