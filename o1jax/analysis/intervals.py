"""Confidence intervals for the docs' tables (issue 34): Wilson for accuracies, a
percentile bootstrap for everything else (savings, p99 latencies, ratios).

Both are numpy only and deterministic (the bootstrap takes a seed), so a regenerated table
prints the same interval for the same data."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np


def z_for(confidence: float) -> float:
  """The two-sided normal quantile: 1.959964 for 0.95."""
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
  """Wilson score interval for k successes in n trials (95% at the default z).

  Unlike the normal interval it stays inside [0, 1] and is not empty at k = 0 or k = n,
  which the docs' cells (24 problems, often all right) hit constantly."""
  if n <= 0:
    raise ValueError(f"n must be positive, got {n}")
  if not 0 <= k <= n:
    raise ValueError(f"k must be in [0, n={n}], got {k}")
  if z <= 0:
    raise ValueError(f"z must be positive, got {z}")
  p = k / n
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
  # At k = 0 (k = n) the lower (upper) end is exactly 0 (1); rounding can leave 1e-17.
  lo = 0.0 if k == 0 else max(0.0, centre - half)
  hi = 1.0 if k == n else min(1.0, centre + half)
  return lo, hi


def bootstrap_ci(stat_fn: Callable[..., float], samples, n_boot: int = 2000,
                 seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of stat_fn over `samples`, resampled with replacement.

  samples: one array (resampled along axis 0), or a tuple of arrays of equal length that are
  resampled together, row by row (paired data: a problem's tokens with and without a stop
  rule), and passed to stat_fn as separate arguments; stat_fn returns a float."""
  if n_boot < 100:
    raise ValueError(f"n_boot must be >= 100 for a percentile interval, got {n_boot}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  paired = isinstance(samples, tuple)
  arrays = [np.asarray(a) for a in (samples if paired else (samples,))]
  n = len(arrays[0])
  if n < 2:
    raise ValueError(f"need at least 2 samples, got {n}")
  if any(len(a) != n for a in arrays):
    raise ValueError(f"paired samples differ in length: {[len(a) for a in arrays]}")
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, n, size=(n_boot, n))
  stats = np.array([stat_fn(*(a[i] for a in arrays)) for i in idx], dtype=np.float64)
  alpha = (1 - confidence) / 2
  lo, hi = np.quantile(stats, [alpha, 1 - alpha])
  return float(lo), float(hi)


def ratio_of_means(a: Sequence[float], b: Sequence[float]) -> float:
  """mean(a) / mean(b): e.g. tokens with a stop rule over tokens without, per problem."""
  return float(np.mean(a) / np.mean(b))


def saving(with_rule: Sequence[float], without: Sequence[float]) -> float:
  """Fraction of `without`'s total that `with_rule` saves (paired per problem)."""
  return float(1.0 - np.sum(with_rule) / np.sum(without))


def p99(x: Sequence[float]) -> float:
  return float(np.quantile(np.asarray(x, dtype=np.float64), 0.99))


def format_pct_ci(k: int, n: int) -> str:
  """'87.5% [69.0-95.7], n=24': an accuracy as the docs print it."""
  lo, hi = wilson(k, n)
  return f"{100 * k / n:.1f}% [{100 * lo:.1f}-{100 * hi:.1f}], n={n}"


# ------------------------------------------------------- intervals for the sweep's tables

REFERENCE_RULE = "rules=natural+budget"


def _wilson_row(table, setting, scope, correct, method="wilson") -> dict:
  k, n = int(np.sum(correct)), len(correct)
  lo, hi = wilson(k, n)
  return {"table": table, "setting": setting, "scope": scope, "metric": "accuracy",
          "estimate": k / n, "lo": lo, "hi": hi, "n": n, "method": method}


def _boot_row(table, setting, scope, metric, fn, pair, n_boot, seed) -> dict:
  lo, hi = bootstrap_ci(fn, pair, n_boot=n_boot, seed=seed)
  return {"table": table, "setting": setting, "scope": scope, "metric": metric,
          "estimate": fn(*pair), "lo": lo, "hi": hi, "n": len(pair[0]),
          "method": f"paired bootstrap, {n_boot} resamples, seed {seed}"}


def sweep_intervals(rows: Sequence[dict], n_boot: int = 2000, seed: int = 0) -> list[dict]:
  """95% intervals for the tables launch/sweep.py writes, from its rows.csv (as dicts):
  Wilson for every accuracy (by budget overall and per task, by task and level at budgets 0
  and unlimited, by level at every budget, per stop rule), and a bootstrap over problems,
  paired with the natural+budget run of the same prompt, for each stop rule's tokens saved
  (%) and accuracy change (points), and for acc(8) - acc(0)."""
  by_setting: dict[str, dict[tuple, dict]] = {}
  for r in rows:
    by_setting.setdefault(r["setting"], {})[(r["task"], str(r["difficulty"]), r["prompt"])] = r

  def correct(rs):
    return np.array([str(r["correct"]) == "True" for r in rs], dtype=np.float64)

  out = []
  budgets = [s for s in by_setting if s.startswith("budget=")]
  for s in budgets:
    rs = list(by_setting[s].values())
    out.append(_wilson_row("accuracy_vs_budget", s, "all", correct(rs)))
    for task in sorted({r["task"] for r in rs}):
      out.append(_wilson_row("accuracy_vs_budget", s, task,
                             correct([r for r in rs if r["task"] == task])))
    for level in sorted({str(r["difficulty"]) for r in rs}, key=int):
      out.append(_wilson_row("accuracy_by_level", s, f"level {level}",
                             correct([r for r in rs if str(r["difficulty"]) == level])))
  for s in ("budget=inf", "budget=0"):
    if s not in by_setting:
      continue
    cells = sorted({(k[0], k[1]) for k in by_setting[s]})
    for task, level in cells:
      rs = [r for k, r in by_setting[s].items() if (k[0], k[1]) == (task, level)]
      out.append(_wilson_row("tokens_by_difficulty", s, f"{task} {level}", correct(rs)))
  if "budget=8" in by_setting and "budget=0" in by_setting:
    keys = sorted(by_setting["budget=0"])
    pair = (correct([by_setting["budget=8"][k] for k in keys]),
            correct([by_setting["budget=0"][k] for k in keys]))
    out.append(_boot_row("budget_goal", "acc(8) - acc(0)", "all", "accuracy_delta_pts",
                         lambda a, b: 100.0 * float(np.mean(a) - np.mean(b)), pair, n_boot,
                         seed))
  ref = by_setting.get(REFERENCE_RULE)
  for s in (s for s in by_setting if s.startswith("rules=") and ref is not None):
    keys = sorted(ref)
    rule = [by_setting[s][k] for k in keys]
    base = [ref[k] for k in keys]
    tokens = (np.array([float(r["thinking_tokens"]) for r in rule]),
              np.array([float(r["thinking_tokens"]) for r in base]))
    out.append(_wilson_row("stop_rules", s, "all", correct(rule)))
    out.append(_boot_row("stop_rules", s, "all", "tokens_saved_pct",
                         lambda a, b: 100.0 * saving(a, b), tokens, n_boot, seed))
    out.append(_boot_row("stop_rules", s, "all", "accuracy_delta_pts",
                         lambda a, b: 100.0 * float(np.mean(a) - np.mean(b)),
                         (correct(rule), correct(base)), n_boot, seed))
  return out


def star_intervals(rows: Sequence[dict], eval_problems: int) -> list[dict]:
  """Wilson intervals for launch/star.py's star.csv (run, iteration, task, difficulty,
  accuracy): each accuracy is k of `eval_problems` held-out problems, so k is recovered and
  must be a whole number; plus levels 3 and 4 together per run and iteration (the
  experiment's headline cells)."""
  out, pooled = [], {}
  for r in rows:
    k = float(r["accuracy"]) * eval_problems
    if abs(k - round(k)) > 0.02:
      raise ValueError(f"star.csv accuracy {r['accuracy']} is not k/{eval_problems}: "
                       f"wrong eval_problems?")
    k = int(round(k))
    setting = f"{r['run']} iteration {r['iteration']}"
    out.append(_wilson_row("star", setting, f"{r['task']} {r['difficulty']}",
                           np.arange(eval_problems) < k))
    if str(r["difficulty"]) in ("3", "4"):
      pooled.setdefault(setting, []).append(k)
  for setting, ks in pooled.items():
    n = eval_problems * len(ks)
    out.append(_wilson_row("star", setting, "levels 3-4", np.arange(n) < sum(ks)))
  return out
