"""Answer verifiers for RL rewards: `exact`, `numeric` and `math`, by name.

A verifier is `(gold, answer) -> bool`: `gold` is a problem set's reference answer, `answer`
the text a rollout wrote after thinking (for a thinking model, what follows `</think>`; the
loop's ANSWER segment, see o1jax/thinking). Model output is untrusted: a verifier returns a
bool for any string and never raises. Gold answers are trusted but checked when a problem set
loads (`check_gold`), so a record that could never score 1 fails early, naming its line.

- exact:   the stripped strings are equal.
- numeric: the last number in the answer (thousands commas, fractions like 3/4, decimals,
           scientific notation) is within a relative 1e-6 of the gold number (exactly 0
           for a gold of 0). Compared as exact rationals, so large values do not overflow.
- math:    Hugging Face's math-verify: both sides parsed to SymPy (LaTeX, `\\boxed{}`,
           plain expressions) and compared symbolically and numerically. A gold without
           `\\boxed` or `$` is read as if boxed ("x^2+1", "\\frac{3}{4}", "3/4").

Built-in task problems (o1jax.tasks) keep their task's own verifier; `verify_problem`
dispatches.
"""

from __future__ import annotations

import fractions
import functools
import re
import threading
from typing import Callable

from o1jax import tasks as tasks_lib
from o1jax.tasks.base import Problem

Verifier = Callable[[str, str], bool]

# Answers are read from their end (where a final answer is written); this bounds the work a
# verifier does on a long or adversarial answer (1,024 tokens are ~4-5k characters).
MAX_ANSWER_CHARS = 8192
NUMERIC_RTOL = fractions.Fraction(1, 10**6)
MATH_TIMEOUT_S = 5  # math-verify's own per-call limit (SymPy can hang on adversarial input)

_MINUS = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-"})
# A number not glued to a word or another number: thousands-grouped, an integer fraction, or
# a decimal with an optional (bounded) exponent. The fraction comes first so "3/4" is one match.
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])"
    r"|\d{1,400}/\d{1,400}"
    r"|(?:\d{1,400}(?:\.\d{0,400})?|\.\d{1,400})(?:[eE][-+]?\d{1,3})?)")


def exact(gold: str, answer: str) -> bool:
  if not isinstance(answer, str):
    return False
  return answer.strip() == gold.strip()


def parse_number(text: str) -> fractions.Fraction | None:
  """`text` (stripped) as one number, or None."""
  if not isinstance(text, str):
    return None
  text = text.strip().translate(_MINUS)
  return _to_fraction(text) if _NUMBER.fullmatch(text) else None


def last_number(text: str) -> fractions.Fraction | None:
  """The last number written in `text`, or None."""
  if not isinstance(text, str):
    return None
  found = list(_NUMBER.finditer(text[-MAX_ANSWER_CHARS:].translate(_MINUS)))
  return _to_fraction(found[-1].group()) if found else None


def _to_fraction(s: str) -> fractions.Fraction | None:
  try:
    return fractions.Fraction(s.replace(",", ""))
  except (ValueError, ZeroDivisionError):  # "1/0", or past int()'s digit limit
    return None


def numeric(gold: str, answer: str) -> bool:
  g, a = parse_number(gold), last_number(answer)
  if g is None or a is None:
    return False
  return abs(a - g) <= NUMERIC_RTOL * abs(g)


def _math_verify():
  try:
    import math_verify
  except ImportError as e:
    raise ImportError("the 'math' verifier needs Hugging Face's math-verify; install it with: "
                      "pip install 'o1jax[rl]'") from e
  return math_verify


def _timeout() -> int | None:
  # math-verify times out with SIGALRM, which only the main thread may set.
  return MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _delimited(gold: str) -> str:
  """A math gold as LaTeX math-verify finds: boxed unless already boxed or in $...$."""
  return gold if ("\\boxed" in gold or "$" in gold) else f"\\boxed{{{gold}}}"


@functools.lru_cache(maxsize=65536)
def _parse_gold(gold: str) -> tuple:
  return tuple(_math_verify().parse(_delimited(gold), parsing_timeout=_timeout()))


def math_equal(gold: str, answer: str) -> bool:
  if not isinstance(answer, str):
    return False
  mv = _math_verify()
  g = _parse_gold(gold)
  a = mv.parse(answer[-MAX_ANSWER_CHARS:], parsing_timeout=_timeout())
  if not g or not a:
    return False
  return bool(mv.verify(list(g), a, timeout_seconds=_timeout()))


VERIFIERS: dict[str, Verifier] = {"exact": exact, "numeric": numeric, "math": math_equal}


def check_name(name: str) -> str:
  if name not in VERIFIERS:
    raise ValueError(f"unknown verifier {name!r}; known: {', '.join(VERIFIERS)}")
  return name


def get_verifier(name: str) -> Verifier:
  return VERIFIERS[check_name(name)]


def check_gold(name: str, gold: str) -> str | None:
  """Why `gold` cannot be a reference answer for verifier `name` (None: it can): it must
  score 1 against itself, so a numeric gold must be a number and a math gold must parse."""
  verifier = get_verifier(name)
  if name == "numeric" and parse_number(gold) is None:
    return f"answer {gold!r} is not a number (the 'numeric' verifier)"
  if name == "math" and not _parse_gold(gold):
    return f"answer {gold!r} is not an expression math-verify can parse (the 'math' verifier)"
  written = _delimited(gold) if name == "math" else gold  # as a model would write it
  if not verifier(gold, written):
    return f"answer {gold!r} does not match itself ({written!r}) under the {name!r} verifier"
  return None


def verify_problem(problem: Problem, answer: str) -> bool:
  """Whether `answer` is correct for `problem`: its built-in task's verifier where it has a
  task, else its `verifier` (problems loaded from JSONL, o1jax/rl/data.py)."""
  if problem.task:
    return tasks_lib.get_task(problem.task).verify(problem, answer)
  return get_verifier(getattr(problem, "verifier", "exact"))(problem.answer, answer)
