"""Compute-optimal allocation (Snell et al. 2024) from per-problem search results.

Problems are binned by a difficulty *predicted from the prompt* (the budget head's predicted
thinking length: never the true level). On a selection half of the problems, each bin gets
the (strategy, N) that reaches a target accuracy with the fewest generated tokens; the
policy is then scored on the other half, against best-of-N with one N for every problem.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Outcome:
  """One problem under one configuration."""
  problem: int
  strategy: str
  n: int
  correct: bool
  tokens: float      # generated tokens for this problem


def difficulty_bins(predicted: Sequence[float], num_bins: int) -> np.ndarray:
  """Bin index per problem by quantiles of the predicted thinking length (0 = easiest)."""
  predicted = np.asarray(predicted, np.float64)
  edges = np.quantile(predicted, np.linspace(0, 1, num_bins + 1)[1:-1])
  return np.searchsorted(edges, predicted, side="right")


def _table(outcomes, problems):
  """(strategy, n) -> (accuracy, mean tokens) over `problems`."""
  chosen = set(problems)
  acc: dict = {}
  for o in outcomes:
    if o.problem in chosen:
      acc.setdefault((o.strategy, o.n), []).append((o.correct, o.tokens))
  return {k: (float(np.mean([c for c, _ in v])), float(np.mean([t for _, t in v])))
          for k, v in acc.items() if len(v) == len(chosen)}


def choose_per_bin(outcomes: Sequence[Outcome], bins: np.ndarray, select: Sequence[int],
                   target: float) -> dict[int, tuple[str, int]]:
  """Per bin, the cheapest configuration whose accuracy on the bin's selection problems is
  at least `target` (if none reaches it, the most accurate, then the cheapest)."""
  out = {}
  for b in sorted(set(bins[list(select)])):
    members = [p for p in select if bins[p] == b]
    table = _table(outcomes, members)
    ok = [(tok, k) for k, (a, tok) in table.items() if a >= target - 1e-9]
    if ok:
      out[int(b)] = min(ok)[1]
    else:
      out[int(b)] = max(table.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
  return out


def evaluate_policy(outcomes: Sequence[Outcome], bins: np.ndarray, evaluate: Sequence[int],
                    policy: dict[int, tuple[str, int]]) -> tuple[float, float]:
  """(accuracy, mean tokens) of running each problem with its bin's configuration."""
  index = {(o.problem, o.strategy, o.n): o for o in outcomes}
  picked = [index[(p, *policy[int(bins[p])])] for p in evaluate if int(bins[p]) in policy]
  return (float(np.mean([o.correct for o in picked])),
          float(np.mean([o.tokens for o in picked])))


def tokens_to_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
  """Tokens a single-strategy curve [(tokens, accuracy)] needs to reach `target`,
  interpolated linearly in log tokens between measured points; None if it never does."""
  points = sorted(points)
  for i, (tok, acc) in enumerate(points):
    if acc >= target - 1e-9:
      if i == 0:
        return tok
      t0, a0 = points[i - 1]
      if acc == a0:
        return tok
      frac = (target - a0) / (acc - a0)
      return float(np.exp(np.log(t0) + frac * (np.log(tok) - np.log(t0))))
  return None
