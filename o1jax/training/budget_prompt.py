"""Budget-conditioned prompts (L1-style): the target thinking budget written into the prompt.

`with_budget("347+285=", 32)` is `"[budget 32] 347+285="`: printable ASCII (the character
tokenizer encodes it), and a prefix no task's prompt parser accepts (each parses the whole
prompt with `fullmatch`), so a budgeted prompt is never mistaken for a different problem.
`parse_budget_prompt` undoes it. Bad budgets (negative, not an integer, above
MAX_TARGET_BUDGET) raise a ValueError that names the problem.
"""

from __future__ import annotations

import numbers
import re

MAX_TARGET_BUDGET = 100_000  # far beyond any context here: a larger "target" is a mistake
_PREFIX = "[budget "
_MARKER = re.compile(r"\[budget ([^\]]*)\] ")


def check_target_budget(budget) -> int:
  """The budget as an int, or a ValueError saying what is wrong with it."""
  if isinstance(budget, str):
    text = budget.strip()
    if not re.fullmatch(r"[+-]?[0-9]+", text):
      raise ValueError(f"target budget must be a non-negative integer, got {budget!r}")
    budget = int(text)
  if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
    if isinstance(budget, float) and budget.is_integer():
      budget = int(budget)
    else:
      raise ValueError(f"target budget must be a non-negative integer, got {budget!r}")
  budget = int(budget)
  if budget < 0:
    raise ValueError(f"target budget must be non-negative, got {budget}")
  if budget > MAX_TARGET_BUDGET:
    raise ValueError(f"target budget {budget} is absurdly large (the limit is "
                     f"{MAX_TARGET_BUDGET} thinking tokens)")
  return budget


def with_budget(prompt: str, budget) -> str:
  """`prompt` asking for about `budget` thinking tokens."""
  if not isinstance(prompt, str) or not prompt:
    raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
  if prompt.startswith(_PREFIX):
    raise ValueError(f"prompt {prompt[:40]!r} already carries a budget")
  return f"{_PREFIX}{check_target_budget(budget)}] {prompt}"


def parse_budget_prompt(text: str) -> tuple[str, int | None]:
  """(prompt, budget) from a budgeted prompt; (text, None) for a prompt without a marker.
  A marker with a bad budget ("[budget -3] ...", "[budget 1e9] ...") raises ValueError."""
  if not isinstance(text, str):
    raise ValueError(f"prompt must be a string, got {type(text).__name__}")
  if not text.startswith(_PREFIX):
    return text, None
  match = _MARKER.match(text)
  if match is None:
    raise ValueError(f"malformed budget marker in {text[:40]!r}: expected "
                     f"'{_PREFIX}N] prompt'")
  prompt = text[match.end():]
  if not prompt:
    raise ValueError(f"budget marker {text!r} is followed by no prompt")
  return prompt, check_target_budget(match.group(1))
