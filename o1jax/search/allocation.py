"""Compute-optimal allocation (Snell et al. 2024) from per-problem search results.

Problems are binned by a difficulty *predicted from the prompt* (the budget head's predicted
thinking length: never the true level). The problems are split into a selection half and an
evaluation half, and nothing of the evaluation half reaches a choice: the bin edges are
quantiles of the selection half's predictions, the targets are the baseline's accuracies on
the selection half, and each bin's (strategy, N) is the cheapest that reaches the target on
the selection half's problems of that bin. The policy is then run on the evaluation half and
compared with the baseline's curve there, a curve that starts at N = 1.
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


def difficulty_edges(predicted: Sequence[float], num_bins: int) -> np.ndarray:
  """Bin edges: the inner quantiles of `predicted` (pass the selection half's only)."""
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  return np.quantile(np.asarray(predicted, np.float64), np.linspace(0, 1, num_bins + 1)[1:-1])


def assign_bins(predicted: Sequence[float], edges: np.ndarray) -> np.ndarray:
  """Bin index per problem (0 = easiest)."""
  return np.searchsorted(edges, np.asarray(predicted, np.float64), side="right")


def _table(outcomes, problems):
  """(strategy, n) -> (accuracy, mean tokens) over `problems` (configurations that ran on
  every one of them)."""
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
  for b in sorted(set(int(x) for x in bins[list(select)])):
    members = [p for p in select if bins[p] == b]
    table = _table(outcomes, members)
    ok = [(tok, k) for k, (a, tok) in table.items() if a >= target - 1e-9]
    if ok:
      out[b] = min(ok)[1]
    else:
      out[b] = max(table.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[0]
  return out


def evaluate_policy(outcomes: Sequence[Outcome], bins: np.ndarray, evaluate: Sequence[int],
                    policy: dict[int, tuple[str, int]]) -> tuple[float, float]:
  """(accuracy, mean tokens) of running each problem with its bin's configuration. A bin
  the selection half left empty takes the nearest chosen bin's configuration."""
  index = {(o.problem, o.strategy, o.n): o for o in outcomes}
  chosen = sorted(policy)
  nearest = lambda b: policy[min(chosen, key=lambda c: (abs(c - b), c))]
  picked = [index[(p, *nearest(int(bins[p])))] for p in evaluate]
  return (float(np.mean([o.correct for o in picked])),
          float(np.mean([o.tokens for o in picked])))


def curve(outcomes: Sequence[Outcome], strategy: str, problems: Sequence[int]
          ) -> list[tuple[int, float, float]]:
  """[(n, mean tokens, accuracy)] of one strategy over `problems`, by N."""
  table = _table([o for o in outcomes if o.strategy == strategy], problems)
  return sorted((n, tok, acc) for (_, n), (acc, tok) in table.items())


def tokens_to_reach(points: Sequence[tuple[float, float]], target: float) -> float | None:
  """Tokens a single-strategy curve [(tokens, accuracy)] needs to reach `target`,
  interpolated linearly in log tokens between measured points; None if it never does.
  The curve's cheapest point is its floor: a target at or below it costs that point."""
  points = sorted(points)
  for i, (tok, acc) in enumerate(points):
    if acc >= target - 1e-9:
      if i == 0:
        return tok
      t0, a0 = points[i - 1]
      if acc == a0 or a0 >= target:
        return tok
      frac = (target - a0) / (acc - a0)
      return float(np.exp(np.log(t0) + frac * (np.log(tok) - np.log(t0))))
  return None


def compute_optimal(outcomes: Sequence[Outcome], predicted: Sequence[float],
                    select: Sequence[int], evaluate: Sequence[int], baseline: str,
                    num_bins: int, exclude: Sequence[str] = ()) -> list[dict]:
  """One row per N of the baseline: the selection half's baseline accuracy at N is the
  target; the per-bin policy reaching it on the selection half is scored on the evaluation
  half, against the baseline's evaluation-half curve (from N = 1). `exclude`: strategies
  the policy may not choose (e.g. greedy, reported as its own point)."""
  select, evaluate = sorted(select), sorted(evaluate)
  if set(select) & set(evaluate):
    raise ValueError("the selection and evaluation halves share problems")
  predicted = np.asarray(predicted, np.float64)
  edges = difficulty_edges(predicted[select], num_bins)
  bins = assign_bins(predicted, edges)
  pool = [o for o in outcomes if o.strategy not in exclude]
  targets = curve(pool, baseline, select)
  evaluation = curve(pool, baseline, evaluate)
  if not targets or [n for n, *_ in targets] != [n for n, *_ in evaluation]:
    raise ValueError(f"the baseline {baseline!r} must have run on every problem")
  points = [(tok, acc) for _, tok, acc in evaluation]
  rows = []
  for (n, _, target), (_, tok_base, acc_base) in zip(targets, evaluation):
    policy = choose_per_bin(pool, bins, select, target)
    acc, tok = evaluate_policy(pool, bins, evaluate, policy)
    need = tokens_to_reach(points, acc)
    rows.append(dict(
        n=n, select_target=round(target, 4), baseline_accuracy=round(acc_base, 4),
        baseline_tokens=round(tok_base, 1), optimal_accuracy=round(acc, 4),
        optimal_tokens=round(tok, 1),
        baseline_tokens_at_that_accuracy=None if need is None else round(need, 1),
        ratio=None if need is None or tok == 0 else round(need / tok, 3),
        policy=";".join(f"bin{b}={s}@{k}" for b, (s, k) in sorted(policy.items())),
        edges=";".join(f"{e:.1f}" for e in edges),
        select_problems=len(select), eval_problems=len(evaluate)))
  return rows
