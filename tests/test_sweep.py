"""launch/sweep.py end to end: every table it writes recomputes from its rows.csv."""

import csv
import json
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest


def _read(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("sweep")
  run = subprocess.run(
      [sys.executable, "launch/sweep.py", f"--out={out}", "--tasks=equation,addition",
       "--difficulties=1", "--num_problems=3", "--budgets=0,8,inf", "--batch_size=8"],
      capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  return out


def test_budget_curve_and_summary_recompute_from_rows(sweep_dir):
  rows = _read(sweep_dir / "rows.csv")
  summary = json.loads((sweep_dir / "summary.json").read_text())
  assert summary["num_problems"] == summary["distinct_prompts"] == 6  # no repeated prompt
  by_budget = defaultdict(list)
  for r in rows:
    if r["setting"].startswith("budget="):
      by_budget[r["setting"][len("budget="):]].append(r["correct"] == "True")
  table = {r["budget"]: r for r in _read(sweep_dir / "accuracy_vs_budget.csv")}
  assert set(table) == {"0", "8", "inf"}
  for budget, hits in by_budget.items():
    assert len(hits) == 6
    assert float(table[budget]["accuracy"]) == pytest.approx(np.mean(hits))
  assert summary["acc_0"] == pytest.approx(np.mean(by_budget["0"]))
  assert summary["acc_8"] == pytest.approx(np.mean(by_budget["8"]))
  assert summary["acc_inf"] == pytest.approx(np.mean(by_budget["inf"]))
  # thinking never exceeds the budget
  assert all(int(r["thinking_tokens"]) <= 8 for r in rows if r["setting"] == "budget=8")


def test_stop_rule_table_recomputes_from_rows(sweep_dir):
  rows = _read(sweep_dir / "rows.csv")
  table = _read(sweep_dir / "stop_rules.csv")
  by_rule = defaultdict(list)
  for r in rows:
    if r["setting"].startswith("rules="):
      by_rule[r["setting"][len("rules="):]].append(r)
  assert {t["setting"] for t in table} == set(by_rule)
  assert "certaindex (3 probes agree)" in by_rule and "converged W=50 >= 0.9 (article)" in by_rule
  ref = by_rule["natural+budget"]
  ref_tokens = np.mean([int(r["thinking_tokens"]) for r in ref])
  ref_acc = np.mean([r["correct"] == "True" for r in ref])
  for t in table:
    mine = by_rule[t["setting"]]
    tokens = np.mean([int(r["thinking_tokens"]) for r in mine])
    assert float(t["tokens_saved_pct"]) == pytest.approx(100 * (1 - tokens / ref_tokens))
    assert float(t["accuracy_delta_pts"]) == pytest.approx(
        100 * (np.mean([r["correct"] == "True" for r in mine]) - ref_acc))
  summary = json.loads((sweep_dir / "summary.json").read_text())["stop_rules"]
  assert 0 <= summary["oracle_saved_right_only_pct"] <= summary["oracle_saved_pct"] <= 100
  assert 0 <= summary["ece_probe"] <= 1


def test_verification_table_recomputes_from_rows(sweep_dir):
  rows = [r for r in _read(sweep_dir / "rows.csv") if r["setting"] == "budget=inf"]
  table = {(t["task"], t["difficulty"]): t for t in _read(sweep_dir / "verification.csv")}
  overall = table[("all", "all")]
  assert int(overall["n"]) == len(rows)
  assert float(overall["accuracy_first_candidate"]) == pytest.approx(
      np.mean([r["candidate_correct"] == "True" for r in rows]))
  assert int(overall["checks_said_wait"]) == sum(int(r["corrections"]) > 0 for r in rows)
  stated = [r for r in rows if r["tokens_to_candidate"]]
  after = sum(int(r["thinking_tokens"]) - int(r["tokens_to_candidate"]) for r in stated)
  total = sum(int(r["thinking_tokens"]) for r in stated)
  assert float(overall["thinking_after_candidate_pct"]) == pytest.approx(100 * after / total)
