"""`budget="auto"`: difficulty estimate -> thinking budget, a pure swappable function.

The default is the o1 article's table of thinking tokens by problem type, times a scale
factor for models much smaller than o1. The difficulty comes from the task's label when it
is known; a trained difficulty predictor plugs in by supplying its own estimate.
"""

from __future__ import annotations

from typing import Callable

# The article: simple 50, moderate 500, complex 2000, research 10000 thinking tokens.
ARTICLE_BUDGETS = {"simple": 50, "moderate": 500, "complex": 2000, "research": 10000}
# Our tasks' difficulty levels 1..4, in the article's order of problem types.
LEVEL_NAMES = {1: "simple", 2: "moderate", 3: "complex", 4: "research"}

BudgetPolicy = Callable[[int], int]


def article_budget(difficulty: int | str, scale: float = 1.0) -> int:
  """Budget for a difficulty level (1..4) or name ('simple' .. 'research')."""
  name = LEVEL_NAMES.get(difficulty, difficulty) if isinstance(difficulty, int) else difficulty
  if name not in ARTICLE_BUDGETS:
    raise ValueError(f"unknown difficulty {difficulty!r}; expected 1..4 or one of "
                     f"{', '.join(ARTICLE_BUDGETS)}")
  if scale <= 0:
    raise ValueError(f"budget scale must be positive, got {scale}")
  return max(1, round(ARTICLE_BUDGETS[name] * scale))


def scaled_policy(scale: float) -> BudgetPolicy:
  return lambda difficulty: article_budget(difficulty, scale)
