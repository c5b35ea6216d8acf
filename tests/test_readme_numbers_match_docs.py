"""Every number the README quotes from a docs table equals that table's value, rounded as
the README prints it (issue 34, item 5). The table below pairs a README phrase (a regex whose
groups are the numbers) with the docs data it comes from; a README rewording that drops a
phrase fails too, so the pairing cannot silently go stale.

Not covered, because no docs data file records them: the load-test figures (p50/p99,
tokens/s of launch/load_test.py), the ship check (99.5% of 384, a sweep not kept under
docs/) and reasoner v1's training accuracy (99.7%)."""

import csv
import decimal
import json
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rows(rel):
  with open(ROOT / "docs" / rel) as f:
    return list(csv.DictReader(line for line in f if not line.startswith("#")))


def pick(rel, column, **where):
  hits = [r for r in rows(rel) if all(r[k] == str(v) for k, v in where.items())]
  assert len(hits) == 1, (rel, where, len(hits))
  return float(hits[0][column])


def sweep_acc(budget):
  return 100 * pick("sweep/accuracy_vs_budget.csv", "accuracy", budget=budget)


def budget_acc(method, budget):
  return 100 * pick("grpo/budget.csv", "accuracy", method=method, budget=budget)


def star_levels_3_4(run, iteration):
  return 100 * sum(pick("star/star.csv", "accuracy", run=run, iteration=iteration,
                        task="addition", difficulty=d) for d in (3, 4)) / 2


def level5_full_thinking():
  return 100 * sum(float(r["accuracy"]) for r in rows("sweep/tokens_by_difficulty.csv")
                   if r["difficulty"] == "5") / 3


def conditioned_within_budget():
  # Every budget has the same problems (budget_by_level.csv's n), so the mean over budgets
  # is the share of all runs.
  by_level = [r for r in rows("grpo/budget_by_level.csv") if r["method"] == "conditioned"]
  assert len({r["n"] for r in by_level}) == 1
  vals = [float(r["within_budget"]) for r in rows("grpo/budget.csv")
          if r["method"] == "conditioned"]
  return 100 * sum(vals) / len(vals)


# (README phrase with one group per number, the values it must show, in order)
CLAIMS = [
  (r"accuracy by budget: (\d+)% at 0, (\d+)% at 8, (\d+)% at 32, (\d+)% at 128, (\d+)% "
   r"unlimited on the sweep's (\d+) problems",
   lambda: [sweep_acc(0), sweep_acc(8), sweep_acc(32), sweep_acc(128), sweep_acc("inf"),
            pick("sweep/accuracy_vs_budget.csv", "n", budget="inf")]),
  (r"such thinking \((\d+)% of it\)",
   lambda: [pick("sweep/verification.csv", "thinking_after_candidate_pct", task="all")]),
  (r"head at the article's 0\.95 saves (\d+)% of the thinking for (-?[\d.]+) points",
   lambda: [pick("sweep/stop_rules.csv", c, setting="head >= 0.95 (article)")
            for c in ("tokens_saved_pct", "accuracy_delta_pts")]),
  (r"read only at step ends .{0,90} saves (\d+)% for (-?[\d.]+) points, against an oracle "
   r"ceiling of (\d+)%",
   lambda: [pick("sweep/stop_rules.csv", c, setting="step-end head >= 0.92 (selected)")
            for c in ("tokens_saved_pct", "accuracy_delta_pts")] + [oracle_saved()]),
  (r"with full thinking, (\d+)% on level 5", lambda: [level5_full_thinking()]),
  (r"it answers (\d+)%, (\d+)% and (\d+)% of held-out problems against (\d+)%, (\d+)% and "
   r"(\d+)% for s1-style budget forcing",
   lambda: [budget_acc(m, b) for m in ("conditioned", "forcing") for b in (8, 16, 32)]),
  (r"within the target in (\d+)% of runs", lambda: [conditioned_within_budget()]),
  (r"lift the held-out mean of those levels from (\d+)% to (\d+)% \(\+(\d+) points; the "
   r"baselines \+(\d+) and \+(\d+)\), all of it on 4-digit problems \((\d+)% -> (\d+)%\)",
   lambda: [star_levels_3_4("star", 0), star_levels_3_4("star", 10),
            star_levels_3_4("star", 10) - star_levels_3_4("star", 0),
            star_levels_3_4("star_no_rationalisation", 10) - star_levels_3_4("star", 0),
            star_levels_3_4("answers_only", 10) - star_levels_3_4("star", 0),
            100 * pick("star/star.csv", "accuracy", run="star", iteration=0,
                       task="addition", difficulty=3),
            100 * pick("star/star.csv", "accuracy", run="star", iteration=10,
                       task="addition", difficulty=3)]),
]


def shown(value: float, text: str) -> bool:
  """Whether `text` (as the README prints it) is `value` rounded half away from zero to
  text's decimals (297/360 = 82.5% prints as 83%); float noise below 1e-9 is dropped
  first so that 82.49999999999999 counts as the tie it is."""
  decimals = len(text.split(".")[1]) if "." in text else 0
  exact = decimal.Decimal(repr(round(value, 9)))
  return str(exact.quantize(decimal.Decimal(1).scaleb(-decimals), decimal.ROUND_HALF_UP)) == text


def oracle_saved():
  with open(ROOT / "docs/sweep/summary.json") as f:
    return json.load(f)["stop_rules"]["oracle_saved_pct"]


def mismatches(readme: str) -> list[str]:
  flat = " ".join(readme.split())
  out = []
  for pattern, expected in CLAIMS:
    m = re.search(pattern, flat)
    if m is None:
      out.append(f"README no longer says: {pattern!r}")
      continue
    values = expected()
    assert len(values) == len(m.groups()), pattern
    for text, value in zip(m.groups(), values):
      if not shown(value, text):
        out.append(f"README says {text} where the docs give {value:.4g}: {m.group(0)!r}")
  return out


def test_readme_numbers_match_the_docs_tables():
  problems = mismatches((ROOT / "README.md").read_text())
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("old, new", [
    ("44% at 32", "45% at 32"),                       # a number edited by hand
    ("(+36 points;", "(+35 points;"),
    ("for -0.6 points", "for -0.5 points"),
    ("for -1.1 points", "for -1.0 points"),
    ("in 98% of runs", "in 97% of runs"),
    ("unlimited on the sweep's 360", "unlimited on the sweep's 384"),
    ("such thinking (43% of it)", "such thinking (about 43% of it)"),   # reworded
])
def test_a_changed_readme_number_is_caught(old, new):
  readme = (ROOT / "README.md").read_text()
  flat = " ".join(readme.split())
  assert old in flat
  assert mismatches(flat.replace(old, new))


def test_rounding_rule():
  assert shown(17.29, "17") and shown(-0.5556, "-0.6") and not shown(17.6, "17")
  assert shown(100 * 297 / 360, "83") and not shown(100 * 297 / 360, "82")
  assert shown(42.85, "43") and not shown(0.4285, "43")
