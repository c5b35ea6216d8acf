"""o1jax/analysis/intervals.py against independent references: scipy's Wilson interval
(float64) on a grid of counts, and the bootstrap's coverage measured by brute force on a
distribution whose mean is known. Each check is shown to reject plausible wrong variants."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from o1jax.analysis import intervals

GRID = [(k, n) for n in (1, 2, 5, 16, 24, 48, 360) for k in sorted({0, 1, n // 3, n // 2, n - 1, n})
        if 0 <= k <= n]


def scipy_wilson(k, n, confidence=0.95):
  ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
  return float(ci.low), float(ci.high)


def wald(k, n, z=1.959963984540054):            # wrong: the normal interval
  p = k / n
  h = z * math.sqrt(p * (1 - p) / n)
  return max(0.0, p - h), min(1.0, p + h)


def agresti_coull(k, n, z=1.959963984540054):   # wrong: close to Wilson, not Wilson
  nt = n + z * z
  pt = (k + z * z / 2) / nt
  h = z * math.sqrt(pt * (1 - pt) / nt)
  return max(0.0, pt - h), min(1.0, pt + h)


def matches_scipy(fn, confidence=0.95, tol=1e-9):
  z = intervals.z_for(confidence)
  return all(np.allclose(fn(k, n, z), scipy_wilson(k, n, confidence), atol=tol, rtol=0)
             for k, n in GRID)


@pytest.mark.parametrize("confidence", [0.95, 0.90, 0.99])
def test_wilson_matches_scipy(confidence):
  assert matches_scipy(intervals.wilson, confidence)


def test_the_scipy_comparison_rejects_wrong_intervals():
  assert not matches_scipy(wald)
  assert not matches_scipy(agresti_coull)
  # Wilson at the wrong z (a 90% interval reported as 95%).
  assert not matches_scipy(lambda k, n, z: intervals.wilson(k, n, intervals.z_for(0.90)))


def test_wilson_edges_and_bad_input():
  assert intervals.wilson(0, 24)[0] == 0.0 and intervals.wilson(24, 24)[1] == 1.0
  assert intervals.wilson(24, 24)[0] < 1.0          # never an empty interval at k = n
  for bad, field in [((1, 0), "n"), ((5, 4), "k"), ((-1, 4), "k"), ((1, 4, 0.0), "z")]:
    with pytest.raises(ValueError, match=field):
      intervals.wilson(*bad)
  assert intervals.format_pct_ci(21, 24) == "87.5% [69.0-95.7], n=24"


def coverage(ci_fn, trials=200, n=40, seed=1):
  """How often the interval for the mean of n Exp(1) draws contains the true mean 1."""
  rng = np.random.default_rng(seed)
  hits = 0
  for t in range(trials):
    lo, hi = ci_fn(rng.exponential(1.0, size=n), t)
    hits += lo <= 1.0 <= hi
  return hits / trials


def test_bootstrap_coverage_on_a_known_distribution():
  ours = coverage(lambda x, t: intervals.bootstrap_ci(np.mean, x, n_boot=400, seed=t))
  # The percentile bootstrap under-covers a little on a skewed law at n = 40 (~0.92).
  assert 0.87 <= ours <= 0.99, ours

  def no_replacement(x, t):        # wrong: a permutation's mean is the mean: width 0
    rng = np.random.default_rng(t)
    stats = [np.mean(rng.permutation(x)) for _ in range(400)]
    return tuple(np.quantile(stats, [0.025, 0.975]))

  def interquartile(x, t):         # wrong: a 50% interval reported as 95%
    return intervals.bootstrap_ci(np.mean, x, n_boot=400, seed=t, confidence=0.5)

  def half_sample(x, t):           # wrong: resamples n/8 rows (too wide, over-covers)...
    rng = np.random.default_rng(t)
    stats = [np.mean(x[rng.integers(0, len(x), len(x) // 8)]) for _ in range(400)]
    return tuple(np.quantile(stats, [0.025, 0.975]))

  assert coverage(no_replacement) < 0.2
  assert coverage(interquartile) < 0.7
  assert coverage(half_sample) > 0.995       # ...so the upper bound above has power too


def test_bootstrap_matches_the_normal_interval_for_a_mean():
  x = np.random.default_rng(0).normal(3.0, 2.0, size=400)
  lo, hi = intervals.bootstrap_ci(np.mean, x, n_boot=4000, seed=0)
  half = 1.959964 * x.std(ddof=1) / math.sqrt(len(x))
  assert abs(lo - (x.mean() - half)) < 0.1 * half and abs(hi - (x.mean() + half)) < 0.1 * half


def test_bootstrap_resamples_pairs_together_and_is_deterministic():
  a = np.random.default_rng(2).exponential(100.0, size=30)
  # Paired with itself the ratio is exactly 1 in every resample; resampled apart it is not.
  assert intervals.bootstrap_ci(intervals.ratio_of_means, (a, a)) == (1.0, 1.0)
  b = a * np.random.default_rng(3).uniform(0.5, 0.7, size=30)
  lo, hi = intervals.bootstrap_ci(intervals.saving, (b, a), seed=5)
  assert 0.3 < lo < intervals.saving(b, a) < hi < 0.5
  assert intervals.bootstrap_ci(intervals.saving, (b, a), seed=5) == (lo, hi)
  assert intervals.bootstrap_ci(intervals.saving, (b, a), seed=6) != (lo, hi)
  assert intervals.p99(np.arange(101.0)) == 99.0
  with pytest.raises(ValueError, match="length"):
    intervals.bootstrap_ci(intervals.saving, (a, a[:-1]))
  with pytest.raises(ValueError, match="n_boot"):
    intervals.bootstrap_ci(np.mean, a, n_boot=10)


def read_csv(path):
  import csv
  with open(path) as f:
    return list(csv.DictReader(f))


def test_sweep_intervals_match_the_sweep_tables_and_the_shipped_file():
  """The intervals' point estimates are the sweep's own numbers (so they describe the same
  runs), every interval holds its estimate, and docs/sweep/intervals.csv is what
  launch/intervals.py computes from docs/sweep/rows.csv."""
  import pathlib
  docs = pathlib.Path(__file__).resolve().parents[1] / "docs" / "sweep"
  table = intervals.sweep_intervals(read_csv(docs / "rows.csv"))
  got = {(r["table"], r["setting"], r["scope"], r["metric"]): r for r in table}
  for row in read_csv(docs / "accuracy_vs_budget.csv"):
    r = got["accuracy_vs_budget", f"budget={row['budget']}", "all", "accuracy"]
    assert r["estimate"] == pytest.approx(float(row["accuracy"]), abs=1e-12)
    assert r["n"] == int(row["n"])
    assert (r["lo"], r["hi"]) == intervals.wilson(round(r["estimate"] * r["n"]), r["n"])
  for row in read_csv(docs / "stop_rules.csv"):
    for metric in ("tokens_saved_pct", "accuracy_delta_pts"):
      r = got["stop_rules", f"rules={row['setting']}", "all", metric]
      assert r["estimate"] == pytest.approx(float(row[metric]), abs=1e-9)
  for row in read_csv(docs / "tokens_by_difficulty.csv"):
    r = got["tokens_by_difficulty", "budget=inf", f"{row['task']} {row['difficulty']}",
            "accuracy"]
    assert r["estimate"] == pytest.approx(float(row["accuracy"]), abs=1e-12)
  for r in table:
    assert r["lo"] - 1e-12 <= r["estimate"] <= r["hi"] + 1e-12, r
  shipped = read_csv(docs / "intervals.csv")
  assert len(shipped) == len(table)
  for s, r in zip(shipped, table):
    assert (s["table"], s["setting"], s["scope"], s["metric"]) == (
        r["table"], r["setting"], r["scope"], r["metric"])
    for k in ("estimate", "lo", "hi"):
      assert float(s[k]) == pytest.approx(r[k], rel=1e-5, abs=1e-9), (s, r)


def test_star_intervals_match_the_shipped_file_and_refuse_a_wrong_n():
  import pathlib
  docs = pathlib.Path(__file__).resolve().parents[1] / "docs" / "star"
  rows = read_csv(docs / "star.csv")
  table = intervals.star_intervals(rows, 32)
  got = {(r["setting"], r["scope"]): r for r in table}
  r = got["star iteration 10", "levels 3-4"]
  assert (r["n"], round(r["estimate"] * 64)) == (64, 26)          # 26 + 0 of 2 x 32
  assert (r["lo"], r["hi"]) == intervals.wilson(26, 64)
  assert [(s["setting"], s["scope"], float(s["lo"])) for s in read_csv(docs / "intervals.csv")] \
      == [(t["setting"], t["scope"], pytest.approx(t["lo"], rel=1e-5, abs=1e-9)) for t in table]
  with pytest.raises(ValueError, match="eval_problems"):
    intervals.star_intervals(rows, 30)           # 0.8125 is 26/32, not k/30
