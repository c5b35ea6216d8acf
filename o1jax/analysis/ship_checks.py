"""Issue 31's ship checks for a reasoner candidate, read from per-problem rows.

Inputs are the rows launch/sweep.py writes (rows.csv: forced budgets 0..inf, levels 1-5)
and those launch/eval_budget.py writes (budget_rows.csv: `forcing` and `conditioned` at each
target N), both on the same held-out draw. Each check is a verdict on the point estimates, as
the issue states them, with its interval beside it so a pass by one problem reads as such:

  full_levels_1_4   accuracy at budget inf on levels 1-4 >= 99%
  no_forced_dip     accuracy non-decreasing along 0/8/16/32/64/128/256/inf (each step's
                    change and its paired bootstrap interval are reported)
  conditioned_gain  `[budget N]` accuracy >= forcing + 20 points at N = 8, 16, 32
  closes_within     >= 95% of `[budget N]` runs close their thinking themselves within N,
                    at every N evaluated
  level5_goal       accuracy at budget inf on level 5 >= 80% (the goal beyond the checks)
"""

from __future__ import annotations

import csv
import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np

from o1jax.analysis import sweep
from o1jax.analysis.intervals import bootstrap_ci, wilson

FORCED_ORDER = ("0", "8", "16", "32", "64", "128", "256", "inf")
_EPS = 1e-9   # 0.5 - 0.3 is 0.19999999999999996: a threshold met exactly is met


@dataclasses.dataclass(frozen=True)
class Check:
  name: str
  passed: bool
  value: str     # the measured number(s), as the closing note quotes them
  detail: str    # what was compared, with intervals


def _truthy(x) -> bool:
  return x is True or str(x) in ("True", "true", "1")


def read_rows(path: str) -> list[dict]:
  with open(path) as f:
    return list(csv.DictReader(f))


def _accuracy(rows: Sequence[dict]) -> tuple[int, int]:
  return sum(_truthy(r["correct"]) for r in rows), len(rows)


def _fmt(k: int, n: int) -> str:
  lo, hi = wilson(k, n)
  return f"{k}/{n} = {k / n:.1%} [{lo:.1%}, {hi:.1%}]"


def _paired_delta(a: dict, b: dict, seed: int = 0) -> tuple[float, float, float]:
  """Mean of b - a over the problems both hold (keyed by prompt), with a bootstrap CI."""
  keys = sorted(set(a) & set(b))
  x = np.array([float(b[k]) - float(a[k]) for k in keys])
  if len(x) < 2:
    return float(x.mean()) if len(x) else math.nan, math.nan, math.nan
  lo, hi = bootstrap_ci(lambda v: float(np.mean(v)), x, seed=seed)
  return float(x.mean()), lo, hi


def _correct_by_prompt(rows: Iterable[dict]) -> dict:
  return {(r["task"], r["difficulty"], r["prompt"]): _truthy(r["correct"]) for r in rows}


def _forced_label(row: dict) -> str:
  """The row's forced budget as the sweep labels it: "inf" for no budget (rows.csv stores
  the loop's UNLIMITED, 2**30)."""
  b = str(row["budget"])
  return b if b == "inf" else sweep.budget_label(int(b))


def forced_checks(sweep_rows: Sequence[dict], *, min_low: float = 0.99,
                  level5_goal: float = 0.80) -> list[Check]:
  by_budget = {}
  for r in sweep_rows:
    by_budget.setdefault(_forced_label(r), []).append(r)
  missing = [b for b in FORCED_ORDER if b not in by_budget]
  if missing:
    raise ValueError(f"sweep rows lack forced budgets {missing}; the dip check needs "
                     f"all of {FORCED_ORDER}")
  full = by_budget["inf"]
  low = [r for r in full if int(r["difficulty"]) <= 4]
  five = [r for r in full if int(r["difficulty"]) == 5]
  if not low or not five:
    raise ValueError("sweep rows need levels 1-4 and level 5 at budget inf")
  k, n = _accuracy(low)
  out = [Check("full_levels_1_4", k / n >= min_low - _EPS, f"{k / n:.1%}",
               f"levels 1-4 at full thinking: {_fmt(k, n)} (check >= {min_low:.0%})")]
  steps, worst = [], None
  for a, b in zip(FORCED_ORDER, FORCED_ORDER[1:]):
    ka, na = _accuracy(by_budget[a])
    kb, nb = _accuracy(by_budget[b])
    delta, lo, hi = _paired_delta(_correct_by_prompt(by_budget[a]),
                                  _correct_by_prompt(by_budget[b]))
    steps.append(f"{a}->{b}: {ka / na:.1%}->{kb / nb:.1%} ({delta * 100:+.1f} "
                 f"[{lo * 100:+.1f}, {hi * 100:+.1f}])")
    if kb / nb < ka / na - _EPS and (worst is None or kb / nb - ka / na < worst[0]):
      worst = (kb / nb - ka / na, f"{a}->{b}")
  out.append(Check("no_forced_dip", worst is None,
                   "no dip" if worst is None else f"{worst[0] * 100:+.1f} points at {worst[1]}",
                   "; ".join(steps)))
  k, n = _accuracy(five)
  out.append(Check("level5_goal", k / n >= level5_goal - _EPS, f"{k / n:.1%}",
                   f"level 5 at full thinking: {_fmt(k, n)} (goal >= {level5_goal:.0%})"))
  return out


def conditioned_checks(budget_rows: Sequence[dict], *, gain_budgets=(8, 16, 32),
                       min_gain: float = 0.20, min_within: float = 0.95) -> list[Check]:
  cells = {}
  for r in budget_rows:
    cells.setdefault((r["method"], int(r["budget"])), []).append(r)
  budgets = sorted({b for m, b in cells if m == "conditioned"})
  missing = [b for b in gain_budgets if ("conditioned", b) not in cells or ("forcing", b)
             not in cells]
  if missing:
    raise ValueError(f"budget rows lack forcing or conditioned at N = {missing}")
  gains, worst_gain = [], None
  for b in gain_budgets:
    kc, nc = _accuracy(cells[("conditioned", b)])
    kf, nf = _accuracy(cells[("forcing", b)])
    delta, lo, hi = _paired_delta(_correct_by_prompt(cells[("forcing", b)]),
                                  _correct_by_prompt(cells[("conditioned", b)]))
    gains.append(f"N={b}: {kc / nc:.1%} vs forcing {kf / nf:.1%} = {delta * 100:+.1f} "
                 f"[{lo * 100:+.1f}, {hi * 100:+.1f}] points")
    gain = kc / nc - kf / nf
    if worst_gain is None or gain < worst_gain[0]:
      worst_gain = (gain, b)
  within, worst_within = [], None
  for b in budgets:
    rows = cells[("conditioned", b)]
    k, n = sum(_truthy(r["within_budget"]) for r in rows), len(rows)
    within.append(f"N={b}: {_fmt(k, n)}")
    if worst_within is None or k / n < worst_within[0]:
      worst_within = (k / n, b)
  return [
      Check("conditioned_gain", worst_gain[0] >= min_gain - _EPS,
            f"least {worst_gain[0] * 100:+.1f} points at N={worst_gain[1]}",
            "; ".join(gains) + f" (check >= {min_gain * 100:+.0f} at each)"),
      Check("closes_within", worst_within[0] >= min_within - _EPS,
            f"least {worst_within[0]:.1%} at N={worst_within[1]}",
            "; ".join(within) + f" (check >= {min_within:.0%} at every N)")]


def format_report(checks: Sequence[Check]) -> str:
  lines = []
  for c in checks:
    lines.append(f"{'PASS' if c.passed else 'MISS'} {c.name}: {c.value}\n    {c.detail}")
  return "\n".join(lines)
