"""Budget forcing (s1) against budget-conditioned thinking (L1) at the same hard budget.

For a budget N, both methods run the library's `think()` with a hard thinking budget of N
(the cap forces `</think>` once N thinking tokens are written):

  forcing      the base model on the plain prompt: it thinks as it always does and is cut
               at N (s1-style budget forcing, what launch/sweep.py measures);
  conditioned  the budget-trained policy on `[budget N] <prompt>`: it is asked for N and
               is meant to close by itself before the cap.

A row is one problem at one (method, budget): the verifier's verdict, the thinking tokens,
think()'s stop reason, and `within_budget`: the model closed its thinking itself (stop
reason "natural") with at most N thinking tokens. `summary` is one line per (method,
budget): accuracy, mean thinking tokens, fraction within budget.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import defaultdict
from typing import Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.tasks.base import Problem
from o1jax.thinking import ThinkConfig, think_texts
from o1jax.training import budget_prompt

METHODS = ("forcing", "conditioned")
SUMMARY_COLUMNS = ("method", "budget", "accuracy", "thinking_tokens", "within_budget")


@dataclasses.dataclass
class Row:
  method: str
  budget: int
  task: str
  difficulty: int
  prompt: str            # the problem's prompt (without any budget marker)
  correct: bool
  thinking_tokens: int
  stop_reason: str
  within_budget: bool
  thinking: str
  answer: str


def is_within_budget(stop_reason: str, thinking_tokens: int, budget: int) -> bool:
  """The model closed its own thinking (not the cap or the cache) with <= budget tokens."""
  return stop_reason == "natural" and thinking_tokens <= budget


def method_prompt(method: str, prompt: str, budget: int) -> str:
  if method == "forcing":
    return prompt
  if method == "conditioned":
    return budget_prompt.with_budget(prompt, budget)
  raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def run(params, tokenizer, problems: Sequence[Problem], config: ThinkConfig, method: str,
        budget: int, seed: int = 0, batch_size: int = 96) -> list[Row]:
  """Rows of `method` at hard budget `budget` (greedy unless `config` samples)."""
  budget = budget_prompt.check_target_budget(budget)
  prompts = [method_prompt(method, p.prompt, budget) for p in problems]
  thoughts = think_texts(params, tokenizer, prompts, config, budgets=budget, seed=seed,
                         batch_size=min(batch_size, len(prompts)))
  return [Row(method, budget, p.task, p.difficulty, p.prompt,
              bool(tasks_lib.get_task(p.task).verify(p, t.answer)), int(t.thinking_tokens),
              t.stop_reason, is_within_budget(t.stop_reason, t.thinking_tokens, budget),
              t.thinking, t.answer)
          for p, t in zip(problems, thoughts)]


def summary(rows: Sequence[Row], by_level: bool = False) -> list[dict]:
  """One line per (method, budget) (and task, difficulty with `by_level`), in METHODS order
  then increasing budget."""
  groups = defaultdict(list)
  for r in rows:
    key = (METHODS.index(r.method), r.budget) + ((r.task, r.difficulty) if by_level else ())
    groups[key].append(r)
  out = []
  for key in sorted(groups):
    rs = groups[key]
    line = {"method": METHODS[key[0]], "budget": key[1]}
    if by_level:
      line.update(task=key[2], difficulty=key[3])
    line.update(accuracy=float(np.mean([r.correct for r in rs])),
                thinking_tokens=float(np.mean([r.thinking_tokens for r in rs])),
                within_budget=float(np.mean([r.within_budget for r in rs])))
    if by_level:
      line["n"] = len(rs)
    out.append(line)
  return out


def write_csv(path: str, lines: Sequence[dict]) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(lines[0]))
    w.writeheader()
    for line in lines:
      w.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in line.items()})


def plot(lines: Sequence[dict], path: str, title: str) -> None:
  """Accuracy against budget (log x) for each method, within-budget fraction dashed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for method, color in zip(METHODS, ("tab:gray", "tab:blue")):
    ls = [x for x in lines if x["method"] == method]
    if not ls:
      continue
    b = [x["budget"] for x in ls]
    ax.plot(b, [x["accuracy"] for x in ls], "o-", color=color,
            label=f"{method}: accuracy")
    ax.plot(b, [x["within_budget"] for x in ls], "x--", color=color, alpha=0.6,
            label=f"{method}: closed within budget")
  ax.set_xscale("log", base=2)
  ticks = sorted({x["budget"] for x in lines})
  ax.set_xticks(ticks, [str(t) for t in ticks])
  ax.minorticks_off()
  ax.set_xlabel("thinking budget N (tokens; hard cap for both, target in the prompt for "
                "conditioned)", fontsize=8)
  ax.set_ylabel("fraction of held-out problems")
  ax.set_ylim(-0.02, 1.02)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
