"""The article's headline experiment on our models: accuracy against thinking budget,
thinking tokens by task and difficulty, and what each early-stop rule saves and costs."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.tasks import reflection
from o1jax.thinking import UNLIMITED, ThinkConfig, think_texts


@dataclasses.dataclass
class Row:
  setting: str          # which sweep point: "budget=16", "rules=confidence", ...
  budget: int           # UNLIMITED for no budget
  task: str
  difficulty: int
  prompt: str
  correct: bool
  thinking_tokens: int
  answer_tokens: int
  stop_reason: str
  # Reflective traces (o1jax/tasks/reflection.py): whether the first candidate the thinking
  # states (`so X`, before any check) is right (None: it states none), how many checks
  # said `wait`, and the thinking tokens up to the end of that first candidate.
  candidate_correct: bool | None = None
  corrections: int = 0
  tokens_to_candidate: int | None = None


def reflection_fields(problem, thinking: str) -> dict:
  """The Row fields read off a reflective trace (character tokens: characters = tokens)."""
  task = tasks_lib.get_task(problem.task)
  steps = thinking.split(tasks_lib.STEP_SEP)
  fields = {"corrections": sum(s.strip().endswith(reflection.WAIT) for s in steps)}
  for i, step in enumerate(steps):
    if step.strip().startswith(reflection.SO) and (
        i + 1 < len(steps) or thinking.endswith(step)):
      fields["candidate_correct"] = task.verify(problem, step.strip()[len(reflection.SO):])
      fields["tokens_to_candidate"] = len(tasks_lib.STEP_SEP.join(steps[:i + 1]))
      break
  return fields


def budget_label(budget: int) -> str:
  return "inf" if budget >= UNLIMITED else str(budget)


def run(params, tokenizer, problems: Sequence[tasks_lib.Problem], config: ThinkConfig,
        budget: int, setting: str, seed: int = 0, batch_size: int = 64, heads=None
        ) -> list[Row]:
  thoughts = think_texts(params, tokenizer, [p.prompt for p in problems], config,
                         budgets=budget, seed=seed, batch_size=min(batch_size, len(problems)),
                         heads=heads)
  return [Row(setting, budget, p.task, p.difficulty, p.prompt,
              tasks_lib.get_task(p.task).verify(p, t.answer), t.thinking_tokens,
              t.answer_tokens, t.stop_reason, **reflection_fields(p, t.thinking))
          for p, t in zip(problems, thoughts)]


def _mean(rows: Iterable[Row], attr: str) -> float:
  values = [float(getattr(r, attr)) for r in rows]
  return float(np.mean(values)) if values else float("nan")


def accuracy_by_budget(rows: Sequence[Row]) -> list[dict]:
  """One line per budget: overall accuracy, per-task accuracy and mean thinking tokens."""
  by_budget = defaultdict(list)
  for r in rows:
    by_budget[r.budget].append(r)
  out = []
  for budget in sorted(by_budget):
    rs = by_budget[budget]
    line = {"budget": budget_label(budget), "accuracy": _mean(rs, "correct"),
            "thinking_tokens": _mean(rs, "thinking_tokens"), "n": len(rs)}
    for task in sorted({r.task for r in rs}):
      line[f"acc_{task}"] = _mean([r for r in rs if r.task == task], "correct")
    out.append(line)
  return out


def tokens_by_difficulty(rows: Sequence[Row], baseline: Sequence[Row]) -> list[dict]:
  """The article's "thinking tokens by problem type": unlimited-budget thinking per task and
  difficulty, its accuracy, and the cost relative to answering with no thinking."""
  base = {(r.task, r.difficulty, r.prompt): r for r in baseline}
  groups = defaultdict(list)
  for r in rows:
    groups[(r.task, r.difficulty)].append(r)
  out = []
  for (task, d), rs in sorted(groups.items()):
    b = [base[(r.task, r.difficulty, r.prompt)] for r in rs if (r.task, r.difficulty, r.prompt) in base]
    # Cost in decoded tokens, relative to answering with no thinking at all (budget 0).
    decoded = _mean(rs, "thinking_tokens") + _mean(rs, "answer_tokens")
    no_thinking = _mean(b, "thinking_tokens") + _mean(b, "answer_tokens")
    out.append({"task": task, "difficulty": d, "thinking_tokens": _mean(rs, "thinking_tokens"),
                "accuracy": _mean(rs, "correct"), "accuracy_no_thinking": _mean(b, "correct"),
                "cost_vs_no_thinking": decoded / no_thinking if no_thinking else float("nan"),
                "n": len(rs)})
  return out


def stop_rule_table(rule_rows: dict[str, list[Row]], reference: str) -> list[dict]:
  """Thinking tokens saved by each early-stop setting against `reference`, and the accuracy
  it costs (in points)."""
  ref = rule_rows[reference]
  ref_tokens, ref_acc = _mean(ref, "thinking_tokens"), _mean(ref, "correct")
  out = []
  for name, rs in rule_rows.items():
    tokens, acc = _mean(rs, "thinking_tokens"), _mean(rs, "correct")
    reasons = defaultdict(int)
    for r in rs:
      reasons[r.stop_reason] += 1
    out.append({"setting": name, "thinking_tokens": tokens, "accuracy": acc,
                "tokens_saved_pct": 100.0 * (1 - tokens / ref_tokens) if ref_tokens else 0.0,
                "accuracy_delta_pts": 100.0 * (acc - ref_acc),
                "stop_reasons": " ".join(f"{k}:{v}" for k, v in sorted(reasons.items()))})
  return out


def verification_table(rows: Sequence[Row]) -> list[dict]:
  """What the check part of reflective traces does, per task and level (one setting's rows):
  accuracy of the final answer and of the first candidate (the answer without the check),
  how often a check said `wait` and the answer changed, right or wrong, and the share of
  thinking spent after the first candidate (what stopping at it would save)."""
  groups = defaultdict(list)
  for r in rows:
    groups[(r.task, r.difficulty)].append(r)
    groups[("all", 0)].append(r)
  out = []
  for (task, d), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
    with_candidate = [r for r in rs if r.candidate_correct is not None]
    corrected = [r for r in rs if r.corrections > 0]
    thinking = sum(r.thinking_tokens for r in with_candidate)
    after = sum(r.thinking_tokens - r.tokens_to_candidate for r in with_candidate)
    out.append({
        "task": task, "difficulty": d if d else "all", "n": len(rs),
        "accuracy": _mean(rs, "correct"),
        "accuracy_first_candidate": float(np.mean(
            [bool(r.candidate_correct) for r in rs])) if rs else float("nan"),
        "with_candidate": len(with_candidate), "checks_said_wait": len(corrected),
        "wait_then_right": sum(r.correct for r in corrected),
        "wait_fixed_wrong_candidate": sum(r.correct and not r.candidate_correct
                                          for r in corrected),
        "wait_broke_right_candidate": sum((not r.correct) and bool(r.candidate_correct)
                                          for r in corrected),
        "thinking_after_candidate_pct": 100.0 * after / thinking if thinking else float("nan")})
  return out


def write_csv(path: str, rows: Sequence[dict]) -> None:
  if not rows:
    return
  keys = list(rows[0].keys())
  for r in rows[1:]:
    keys += [k for k in r if k not in keys]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)


def format_table(rows: Sequence[dict], floats: str = "{:.3f}") -> str:
  if not rows:
    return "(empty)"
  keys = list(rows[0].keys())
  cell = lambda v: floats.format(v) if isinstance(v, float) else str(v)
  widths = [max(len(k), *(len(cell(r.get(k, ""))) for r in rows)) for k in keys]
  lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths))]
  lines += ["  ".join(cell(r.get(k, "")).rjust(w) for k, w in zip(keys, widths)) for r in rows]
  return "\n".join(lines)


def plot_accuracy_vs_budget(table: Sequence[dict], path: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  labels = [r["budget"] for r in table]
  # Budget 0 and "inf" have no place on a log axis: plot them at the ends.
  finite = [int(b) for b in labels if b != "inf"]
  top = max(finite) * 2 if finite else 1
  xs = [top if b == "inf" else max(int(b), 0.5) for b in labels]
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  tasks = [k[4:] for k in table[0] if k.startswith("acc_")]
  for task in tasks:
    ax.plot(xs, [100 * r[f"acc_{task}"] for r in table], "o--", alpha=0.6, label=task)
  ax.plot(xs, [100 * r["accuracy"] for r in table], "o-", color="black", lw=2, label="all")
  if all("n" in r for r in table):
    # The claim is about "all": its Wilson 95% band (o1jax/analysis/intervals.py).
    from o1jax.analysis.intervals import wilson
    bands = [wilson(round(r["accuracy"] * int(r["n"])), int(r["n"])) for r in table]
    ax.fill_between(xs, [100 * lo for lo, _ in bands], [100 * hi for _, hi in bands],
                    color="black", alpha=0.15, lw=0, label="all, Wilson 95%")
  ax.set_xscale("log", base=2)
  ax.set_xticks(xs, ["0" if b == "0" else b for b in labels])
  ax.set_xlabel("thinking budget (tokens)")
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def save(out_dir: str, name: str, rows: Sequence[dict]) -> str:
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}.csv")
  write_csv(path, rows)
  return path
