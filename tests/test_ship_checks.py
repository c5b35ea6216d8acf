"""Ship checks (o1jax/analysis/ship_checks.py) on constructed per-problem rows: each check
passes on data that meets it and misses on data one problem short, and plausible wrong
implementations (only acc(8) >= acc(0) for the dip; the mean closing rate instead of every
N; a gain measured at one budget) accept data the real checks reject."""

import pytest

from o1jax.analysis import ship_checks as sc

BUDGETS = sc.FORCED_ORDER


def sweep_rows(acc_by_budget, low_wrong=0, five_right=80, n_low=100, n_five=100):
  """Rows for every forced budget: acc_by_budget[b] right answers out of n_low + n_five,
  except at inf where levels 1-4 have `low_wrong` wrong and level 5 `five_right` right."""
  rows = []
  for b in BUDGETS:
    for i in range(n_low + n_five):
      level = 1 + i % 4 if i < n_low else 5
      if b == "inf":
        ok = (i >= low_wrong) if i < n_low else (i - n_low < five_right)
      else:
        ok = i < acc_by_budget[b]
      # As rows.csv stores them: no budget is the loop's UNLIMITED, not "inf".
      stored = str(2**30) if b == "inf" else b
      rows.append({"budget": stored, "task": "addition", "difficulty": str(level),
                   "prompt": f"p{i}", "correct": str(ok)})
  return rows


RISING = {"0": 20, "8": 30, "16": 60, "32": 100, "64": 140, "128": 170, "256": 175}


def verdicts(checks):
  return {c.name: c.passed for c in checks}


def test_forced_checks_pass_and_miss_by_one_problem():
  assert verdicts(sc.forced_checks(sweep_rows(RISING, low_wrong=1))) == {
      "full_levels_1_4": True, "no_forced_dip": True, "level5_goal": True}
  # 98/100 on levels 1-4: 98% < 99%; 79/100 on level 5.
  v = verdicts(sc.forced_checks(sweep_rows(RISING, low_wrong=2, five_right=79)))
  assert v == {"full_levels_1_4": False, "no_forced_dip": True, "level5_goal": False}


def test_a_dip_anywhere_is_a_miss_and_is_located():
  late_dip = dict(RISING, **{"128": 139})   # 64 -> 128 falls by one problem
  checks = {c.name: c for c in sc.forced_checks(sweep_rows(late_dip))}
  assert not checks["no_forced_dip"].passed
  assert "64->128" in checks["no_forced_dip"].value
  # Wrong variant: the example (acc(8) >= acc(0)) read as the whole check.
  assert late_dip["8"] >= late_dip["0"]
  # The step into inf counts too: inf has 99 + 80 = 179 right of 200, 256 then 180.
  rows = sweep_rows(dict(RISING, **{"256": 180}), low_wrong=1)
  assert "256->inf" in {c.name: c for c in sc.forced_checks(rows)}["no_forced_dip"].value


def budget_rows(cond_right, forcing_right, within, n=100):
  rows = []
  for b in sorted(cond_right):
    for i in range(n):
      rows.append({"method": "forcing", "budget": str(b), "task": "equation",
                   "difficulty": "2", "prompt": f"q{i}", "correct": str(i < forcing_right[b]),
                   "within_budget": "False"})
      rows.append({"method": "conditioned", "budget": str(b), "task": "equation",
                   "difficulty": "2", "prompt": f"q{i}", "correct": str(i < cond_right[b]),
                   "within_budget": str(i < within[b])})
  return rows


def test_conditioned_checks():
  cond = {8: 50, 16: 60, 32: 80, 64: 90}
  forcing = {8: 30, 16: 40, 32: 60, 64: 85}
  within = {8: 95, 16: 97, 32: 99, 64: 100}
  assert verdicts(sc.conditioned_checks(budget_rows(cond, forcing, within))) == {
      "conditioned_gain": True, "closes_within": True}
  # One problem short of +20 at N=16 only: wrong variant "gain at N=8" would pass it.
  v = sc.conditioned_checks(budget_rows({**cond, 16: 59}, forcing, within))
  assert not v[0].passed and "N=16" in v[0].value
  # 94% closes at N=8 while the mean over N is 97.5%: wrong variant "mean rate" passes.
  low = {**within, 8: 94}
  assert sum(low.values()) / len(low) >= 95
  v = sc.conditioned_checks(budget_rows(cond, forcing, low))
  assert not v[1].passed and "N=8" in v[1].value


def test_missing_cells_are_named():
  rows = [r for r in sweep_rows(RISING) if r["budget"] != "64"]
  with pytest.raises(ValueError, match="64"):
    sc.forced_checks(rows)
  with pytest.raises(ValueError, match="32"):
    sc.conditioned_checks(budget_rows({8: 1, 16: 1}, {8: 1, 16: 1}, {8: 1, 16: 1}))
