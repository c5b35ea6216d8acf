"""STaR against its two baselines: the comparison table (docs/star/star.csv) and its plot.

The three runs share everything but the one thing each removes (o1jax/training/star.py):
`star` (verified rationales plus rationalisation with the answer as a hint),
`star_no_rationalisation` (verified rationales only) and `answers_only` (the same problems,
fine-tuned on their answers with no rationale). Each fine-tunes the base for the same number
of steps at the same batch size every iteration, so the fine-tuning compute is equal.

star.csv has one row per run, iteration and (task, level): held-out greedy accuracy, the
rationales kept that iteration by direct sampling (`kept`) and by rationalisation
(`rationalised`), and the examples the iteration fine-tuned on (`examples`: every iteration's
kept set so far, or for answers_only every answer so far). Iteration 0 is the base.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

RUNS = ("star", "star_no_rationalisation", "answers_only")
COLUMNS = ("run", "iteration", "task", "difficulty", "accuracy", "kept", "rationalised",
           "examples")


def variants(cfg) -> dict:
  """The three runs' configs from one StarConfig, by run name (which of them `cfg` itself
  is does not matter: each sets what distinguishes it)."""
  runs = (dataclasses.replace(cfg, method="rationales", rationalize=True),
          dataclasses.replace(cfg, method="rationales", rationalize=False),
          dataclasses.replace(cfg, method="answers_only"))
  return {c.run_name: c for c in runs}


def csv_rows(run: str, table: Sequence[dict], tasks: Sequence[str],
             difficulties: Sequence[int]) -> list[dict]:
  """star.csv rows of one run from its per-iteration table (run_star's rows)."""
  if run not in RUNS:
    raise ValueError(f"run must be one of {RUNS}, got {run!r}")
  out = []
  for row in table:
    for t in tasks:
      for d in difficulties:
        out.append({"run": run, "iteration": int(row["iteration"]), "task": t,
                    "difficulty": int(d), "accuracy": round(float(row[f"acc/{t}/{d}"]), 4),
                    "kept": int(row.get(f"kept/{t}/{d}", 0)),
                    "rationalised": int(row.get(f"ratio/{t}/{d}", 0)),
                    "examples": int(row.get(f"examples/{t}/{d}", 0))})
  return out


def write_csv(path: str, rows: Sequence[dict]) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)


def read_csv(path: str) -> list[dict]:
  with open(path) as f:
    rows = list(csv.DictReader(f))
  if not rows or tuple(rows[0]) != COLUMNS:
    raise ValueError(f"{path} is not a STaR comparison table (columns {COLUMNS})")
  for r in rows:
    r["iteration"], r["difficulty"] = int(r["iteration"]), int(r["difficulty"])
    r["accuracy"] = float(r["accuracy"])
    for k in ("kept", "rationalised", "examples"):
      r[k] = int(r[k])
  return rows


def held_back_accuracy(rows: Sequence[dict], held_back: Sequence[int]) -> dict:
  """{run: [mean accuracy over the held-back levels at iteration 0, 1, ...]}."""
  out: dict[str, dict[int, list[float]]] = {}
  for r in rows:
    if r["difficulty"] in held_back:
      out.setdefault(r["run"], {}).setdefault(r["iteration"], []).append(r["accuracy"])
  return {run: [sum(v) / len(v) for _, v in sorted(its.items())] for run, its in out.items()}


def gains(rows: Sequence[dict], held_back: Sequence[int]) -> dict:
  """Final-minus-base held-back accuracy per run, and STaR's final margin over each
  baseline (accuracy points, as fractions)."""
  curves = held_back_accuracy(rows, held_back)
  out = {f"gain/{run}": c[-1] - c[0] for run, c in curves.items()}
  if "star" in curves:
    for base in ("star_no_rationalisation", "answers_only"):
      if base in curves:
        out[f"star_minus/{base}"] = curves["star"][-1] - curves[base][-1]
  return out


def plot(rows: Sequence[dict], held_back: Sequence[int], path: str, title: str) -> None:
  """Held-back accuracy per iteration for each run (left), and per level for STaR (right)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
  for run, curve in held_back_accuracy(rows, held_back).items():
    left.plot(range(len(curve)), [100 * a for a in curve], "o-", lw=2 if run == "star" else 1,
              label=run)
  left.set_title(f"mean of the held-back levels {', '.join(map(str, held_back))}")
  levels = sorted({(r["task"], r["difficulty"]) for r in rows})
  for t, d in levels:
    pts = sorted((r["iteration"], r["accuracy"]) for r in rows
                 if r["run"] == "star" and (r["task"], r["difficulty"]) == (t, d))
    style = "o-" if d in held_back else "o:"
    right.plot([p[0] for p in pts], [100 * p[1] for p in pts], style, label=f"{t} level {d}")
  right.set_title("star, per level (dotted: levels not held back)")
  for ax in (left, right):
    ax.set_xlabel("STaR iteration (0: base)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
