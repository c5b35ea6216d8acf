"""The o1 article's table of thinking budgets by problem type, a pure swappable function.

`budget="auto"` reads the prompt with the trained budget head (o1jax/training/heads.py,
`head_budgets`): that is what a user without the answer key has. This table is the
`budget="article"` variant: the article's thinking tokens by problem type, times a scale
factor for models much smaller than o1, indexed by the task's *true* difficulty label, an
oracle no user has (kept to reproduce the article's table, and labelled as such).
"""

from __future__ import annotations

from typing import Callable

# The article: simple 50, moderate 500, complex 2000, research 10000 thinking tokens.
ARTICLE_BUDGETS = {"simple": 50, "moderate": 500, "complex": 2000, "research": 10000}
# Our tasks' difficulty levels 1..5 in the article's order of problem types: level 5 is the
# "research" level of issue 19; levels 3 and 4 both count as complex.
LEVEL_NAMES = {1: "simple", 2: "moderate", 3: "complex", 4: "complex", 5: "research"}

BudgetPolicy = Callable[[int], int]


def article_budget(difficulty: int | str, scale: float = 1.0) -> int:
  """Budget for a difficulty level (1..5) or name ('simple' .. 'research')."""
  name = LEVEL_NAMES.get(difficulty, difficulty) if isinstance(difficulty, int) else difficulty
  if name not in ARTICLE_BUDGETS:
    raise ValueError(f"unknown difficulty {difficulty!r}; expected 1..5 or one of "
                     f"{', '.join(ARTICLE_BUDGETS)}")
  if scale <= 0:
    raise ValueError(f"budget scale must be positive, got {scale}")
  return max(1, round(ARTICLE_BUDGETS[name] * scale))


def scaled_policy(scale: float) -> BudgetPolicy:
  return lambda difficulty: article_budget(difficulty, scale)
