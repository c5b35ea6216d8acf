"""STaR (Zelikman et al. 2022): bootstrap reasoning from the model's own verified rationales.

Each iteration: sample K rationales per training problem with think() at a temperature,
keep those whose answers verify (deduplicated); for problems with none, *rationalise*: sample
again with the answer given as a hint in the prompt, and keep verified rationales with the
hint removed (the example is rebuilt from the problem's own prompt, so no hint ever reaches
a training example); fine-tune on what was kept; evaluate on held-out problems; repeat.

`curriculum` > 0 follows the paper's curriculum over difficulty: iteration i samples from
the first `curriculum + i - 1` levels of `difficulties`, adding the next harder level once the
model has been trained on the one below it. `method="answers_only"` is the baseline the
paper compares with: the same problems, fine-tuned on their answers alone (no rationale) at
the same number of steps.

As in the paper the fine-tune restarts from the base model each iteration on everything kept
so far (`restart_from_base`, `accumulate`), which keeps errors from compounding; continuing
from the previous iteration is the other setting. Every iteration is checkpointed and a
killed run resumes at the first unfinished iteration (seeds are per iteration, so the rerun
is the same computation).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
import warnings
from typing import Callable

import ml_collections
import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.tasks.base import Problem
from o1jax.thinking import make_think_config
from o1jax.training import rollouts as rl
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params, save_pretrained
# Re-exported: star.Example, star.filter_rationales, star.finetune, ... are the public names.
from o1jax.training.rationales import (Example, StarError, answer_examples,  # noqa: F401
                                       filter_rationales, finetune, hinted_prompt)


METHODS = ("rationales", "answers_only")


@dataclasses.dataclass(frozen=True)
class StarConfig:
  base: str                                   # checkpoint dir or workdir ("": embedded)
  iterations: int = 4
  tasks: tuple[str, ...] = ("addition",)
  difficulties: tuple[int, ...] = (1, 2, 3, 4)
  problems_per_level: int = 64                # fresh training problems per (task, level)
  samples: int = 4                            # K rationales per problem
  temperature: float = 1.0
  # Thinking tokens below which the close is suppressed while sampling. 0 is plain STaR; a
  # base that learned to answer some levels without thinking otherwise rarely writes a
  # rationale there at all.
  min_thinking: int = 0
  require_thinking: bool = True               # an empty rationale is not kept
  # Also drop rationales with a step the task's checker rejects (right answer, wrong
  # reasoning): STaR filtered by a process verifier instead of the answer alone. Off: STaR.
  require_correct_steps: bool = False
  rationalize: bool = True
  rationalize_samples: int = 2
  hint_template: str = " [hint: {answer}]"
  restart_from_base: bool = True
  accumulate: bool = True                     # fine-tune on every iteration's kept set
  finetune_steps: int = 250                   # at most this many steps ...
  finetune_epochs: float = 0.0                # ... and, if > 0, at most this many epochs:
  # a few hundred kept rationales are memorised (and the rest forgotten) long before 250
  # steps, so the fine-tune is sized by the data, as STaR's own step schedule is.
  finetune_batch_size: int = 32
  finetune_lr: float = 1e-3
  seq_len: int = 96
  cache_len: int = 128
  max_answer_tokens: int = 16
  eval_problems: int = 32                     # held-out problems per (task, level)
  eval_seed: int = 1234
  curriculum: int = 0                         # > 0: levels at iteration i (see above)
  method: str = "rationales"                  # or "answers_only" (the baseline)
  on_empty: str = "error"                     # "error" or "skip" (warn, keep the model)
  batch_size: int = 256                       # think() batch
  seed: int = 0

  def __post_init__(self):
    for t in self.tasks:
      task = tasks_lib.get_task(t)
      for d in self.difficulties:
        task.check_difficulty(d)
    if "{answer}" not in self.hint_template:
      raise ValueError(f"hint_template must contain '{{answer}}', got {self.hint_template!r}")
    if self.method not in METHODS:
      raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
    if not 0 <= self.curriculum <= len(self.difficulties):
      raise ValueError(f"curriculum must be in [0, {len(self.difficulties)}] (levels at the "
                       f"first iteration; 0: all), got {self.curriculum}")
    if self.on_empty not in ("error", "skip"):
      raise ValueError(f"on_empty must be 'error' or 'skip', got {self.on_empty!r}")
    for name in ("iterations", "problems_per_level", "samples", "finetune_steps",
                 "finetune_batch_size", "batch_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

  @property
  def run_name(self) -> str:
    """The run's name in docs/star/star.csv."""
    if self.method == "answers_only":
      return "answers_only"
    return "star" if self.rationalize else "star_no_rationalisation"

  def levels_at(self, iteration: int) -> tuple[int, ...]:
    """The levels iteration `iteration` (>= 1) samples training problems from."""
    if not self.curriculum:
      return self.difficulties
    return self.difficulties[:min(len(self.difficulties), self.curriculum + iteration - 1)]

  @classmethod
  def from_config_dict(cls, c: ml_collections.ConfigDict) -> "StarConfig":
    d = c.to_dict()
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def evaluate_heldout(params, think_config, heldout: dict[tuple[str, int], list[Problem]],
                     batch_size: int = 256) -> tuple[dict[str, float], float]:
  """Greedy think() accuracy per "task/level" (plus "mean") and mean thinking tokens."""
  keys = list(heldout)
  flat = [p for k in keys for p in heldout[k]]
  thoughts = rl.continue_thinking(params, think_config, [p.prompt for p in flat],
                                  batch_size=min(batch_size, len(flat)))
  ok = [rl.verify(p, th.answer) for p, th in zip(flat, thoughts)]
  table, i = {}, 0
  for t, d in keys:
    n = len(heldout[(t, d)])
    table[f"{t}/{d}"] = float(np.mean(ok[i:i + n]))
    i += n
  table["mean"] = float(np.mean([table[f"{t}/{d}"] for t, d in keys]))
  return table, float(np.mean([th.thinking_tokens for th in thoughts]))


def _write_json(path: str, obj) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)  # atomic: a kill never leaves half a file that looks complete


def write_table(workdir: str, rows: list[dict]) -> None:
  """table.json and table.csv (one row per iteration; eval columns are "acc/task/level")."""
  _write_json(os.path.join(workdir, "table.json"), rows)
  columns = []
  for r in rows:
    columns += [k for k in r if k not in columns]
  with open(os.path.join(workdir, "table.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


def format_table(rows: list[dict]) -> str:
  acc_cols = [k for k in rows[0] if k.startswith("acc/")] if rows else []
  head = ["iter", "problems", "kept", "rationalized", "solved", "train_ex"] + [
      c[4:] for c in acc_cols] + ["think_tok"]
  lines = [" ".join(f"{h:>12}" for h in head)]
  for r in rows:
    cells = [r["iteration"], r["problems"], r["rationales_kept"], r["rationalized"],
             r["problems_solved"], r["finetune_examples"]] + [
                 f"{r[c]:.3f}" for c in acc_cols] + [f"{r['thinking_tokens']:.1f}"]
    lines.append(" ".join(f"{c:>12}" for c in cells))
  return "\n".join(lines)


def _iter_dir(workdir: str, it: int) -> str:
  return os.path.join(workdir, f"iter_{it:02d}")


def _completed(workdir: str) -> list[int]:
  if not os.path.isdir(workdir):
    return []
  done = []
  for name in sorted(os.listdir(workdir)):
    if name.startswith("iter_") and os.path.exists(os.path.join(workdir, name, "row.json")):
      done.append(int(name[5:]))
  return done


def run_star(cfg: StarConfig, workdir: str, log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or resumes) STaR; returns the per-iteration rows (iteration 0 is the base)."""
  os.makedirs(workdir, exist_ok=True)
  base_params, model_config, _ = load_params(cfg.base or embedded_checkpoint_dir())
  sample_cfg = make_think_config(model_config, rl.TOK, cfg.cache_len,
                                 temperature=cfg.temperature,
                                 max_answer_tokens=cfg.max_answer_tokens)
  greedy_cfg = dataclasses.replace(sample_cfg, temperature=0.0)
  # Distinct prompts drawn without replacement (a small level's generator repeats some).
  heldout = {}
  for p in tasks_lib.distinct_problems(cfg.tasks, cfg.difficulties, cfg.eval_problems,
                                       cfg.eval_seed):
    heldout.setdefault((p.task, p.difficulty), []).append(p)
  _write_json(os.path.join(workdir, "star_config.json"), dataclasses.asdict(cfg))

  done = _completed(workdir)
  rows, kept_all, policy = [], [], base_params
  for it in done:
    with open(os.path.join(_iter_dir(workdir, it), "row.json")) as f:
      rows.append(json.load(f))
    path = os.path.join(_iter_dir(workdir, it), "examples.jsonl")
    if os.path.exists(path):
      kept_all += [Example(**json.loads(line)) for line in open(path)]
  if done:
    policy, _, _ = load_params(_iter_dir(workdir, done[-1]), model_config)
    log(f"resuming after iteration {done[-1]} ({len(kept_all)} examples kept so far)")
  else:
    acc, think_tok = evaluate_heldout(base_params, greedy_cfg, heldout, cfg.batch_size)
    row = _row(0, acc, think_tok, problems=0)
    os.makedirs(_iter_dir(workdir, 0), exist_ok=True)
    save_pretrained(_iter_dir(workdir, 0), base_params, model_config, {"star_iteration": 0})
    _write_json(os.path.join(_iter_dir(workdir, 0), "row.json"), row)
    rows.append(row)
    log(format_table(rows))

  seen = {(e.prompt, *_split(e.text)) for e in kept_all}
  for it in range(max(done, default=0) + 1, cfg.iterations + 1):
    t0 = time.time()
    problems = [p for t in cfg.tasks for d in cfg.levels_at(it)
                for p in tasks_lib.get_task(t).generate_problems(
                    cfg.seed * 1000 + it, d, cfg.problems_per_level, split="train")]
    if cfg.method == "answers_only":
      kept, rationalized = [], []
      new = answer_examples(problems)
    else:
      kept, rationalized = _rationales(cfg, policy, sample_cfg, problems, it, seen)
      new = kept + rationalized
    kept_all += new
    train_set = kept_all if cfg.accumulate else new
    if not new:
      message = (f"STaR iteration {it}: the sampler produced no verified rationale for any of "
                 f"{len(problems)} problems ({cfg.samples} samples each"
                 f"{', plus hinted rationalisation' if cfg.rationalize else ''})")
      if cfg.on_empty == "error":
        raise StarError(message + "; nothing new to fine-tune on. Raise samples or "
                        "temperature, lower min_thinking, or set on_empty='skip' to carry on.")
      warnings.warn(message + ("; fine-tuning on the earlier iterations' examples only"
                               if train_set else "; no examples at all: the model is kept"))
    policy, losses = _finetune_iteration(cfg, it, base_params, policy, model_config, train_set)
    acc, think_tok = evaluate_heldout(policy, greedy_cfg, heldout, cfg.batch_size)
    rows.append(_finish_iteration(workdir, it, policy, model_config, new, acc, think_tok,
                                  problems, kept, rationalized, train_set, losses, t0))
    log(format_table(rows))
  write_table(workdir, rows)
  return rows


def _rationales(cfg: StarConfig, policy, sample_cfg, problems, it: int, seen: set
                ) -> tuple[list[Example], list[Example]]:
  """(kept, rationalised): verified rationales sampled for `problems`, then for the problems
  none was kept for, verified rationales sampled with the answer as a hint (hint removed)."""
  samples = rl.sample_rollouts(policy, sample_cfg, problems, cfg.samples,
                               seed=cfg.seed * 1000 + it, batch_size=cfg.batch_size,
                               min_thinking=cfg.min_thinking)
  kept = filter_rationales([r for rs in samples for r in rs], hint_template=cfg.hint_template,
                           require_thinking=cfg.require_thinking,
                           require_correct_steps=cfg.require_correct_steps, seen=seen)
  solved = {e.prompt for e in kept}
  failed = [p for p in problems if p.prompt not in solved]
  if not (cfg.rationalize and failed):
    return kept, []
  hinted = rl.sample_rollouts(policy, sample_cfg, failed, cfg.rationalize_samples,
                              prompts=[hinted_prompt(p, cfg.hint_template) for p in failed],
                              seed=cfg.seed * 1000 + it + 500, batch_size=cfg.batch_size,
                              min_thinking=cfg.min_thinking)
  rationalized = filter_rationales([r for rs in hinted for r in rs], rationalized=True,
                                   hint_template=cfg.hint_template,
                                   require_thinking=cfg.require_thinking,
                                   require_correct_steps=cfg.require_correct_steps, seen=seen)
  return kept, rationalized


def _finetune_iteration(cfg, it, base_params, policy, model_config, train_set):
  """Fine-tunes for iteration `it` on `train_set`, from the base (or the last policy).
  Returns (policy, losses); with nothing to train on, the policy unchanged."""
  if not train_set:
    return policy, []
  start = base_params if cfg.restart_from_base else policy
  steps = cfg.finetune_steps
  if cfg.finetune_epochs > 0:
    steps = max(1, min(steps, math.ceil(cfg.finetune_epochs * len(train_set)
                                        / cfg.finetune_batch_size)))
  return finetune(start, model_config, train_set, steps=steps,
                  batch_size=cfg.finetune_batch_size, learning_rate=cfg.finetune_lr,
                  seq_len=cfg.seq_len, seed=cfg.seed * 1000 + it)


def _finish_iteration(workdir, it, policy, model_config, new, acc, think_tok, problems, kept,
                      rationalized, train_set, losses, t0) -> dict:
  """Saves the iteration (checkpoint, its new examples, then row.json, which marks it done)
  and the table so far; returns the row."""
  it_dir = _iter_dir(workdir, it)
  os.makedirs(it_dir, exist_ok=True)
  row = _row(it, acc, think_tok, problems=len(problems), kept=kept, rationalized=rationalized,
             train=train_set, losses=losses, elapsed=time.time() - t0)
  save_pretrained(it_dir, policy, model_config, {"star_iteration": it})
  with open(os.path.join(it_dir, "examples.jsonl"), "w") as f:
    for e in new:
      f.write(json.dumps(dataclasses.asdict(e)) + "\n")
  _write_json(os.path.join(it_dir, "row.json"), row)  # last: marks the iteration done
  rows = [json.load(open(os.path.join(_iter_dir(workdir, i), "row.json")))
          for i in _completed(workdir)]
  write_table(workdir, rows)
  return row


def _split(text: str) -> tuple[str, str]:
  thinking, answer = tasks_lib.split_thinking(text)
  return (thinking or "").strip(), answer.strip()


def _row(it, acc, think_tok, *, problems, kept=(), rationalized=(), train=(), losses=(),
         elapsed=0.0) -> dict:
  row = {"iteration": it, "problems": problems, "rationales_kept": len(kept),
         "problems_solved": len({e.prompt for e in kept}),
         "rationalized": len(rationalized),
         "steps_correct_frac": (float(np.mean([e.steps_correct for e in [*kept, *rationalized]]))
                                if kept or rationalized else float("nan")),
         "finetune_examples": len(train), "finetune_steps": len(losses),
         "finetune_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
         "thinking_tokens": think_tok, "elapsed_s": round(elapsed, 1)}
  levels = sorted({(e.task, e.difficulty) for e in [*kept, *rationalized, *train]})
  for t, d in levels:
    row[f"kept/{t}/{d}"] = sum(e.task == t and e.difficulty == d for e in kept)
    row[f"ratio/{t}/{d}"] = sum(e.task == t and e.difficulty == d for e in rationalized)
    row[f"examples/{t}/{d}"] = sum(e.task == t and e.difficulty == d for e in train)
  row.update({f"acc/{k}": v for k, v in acc.items()})
  return row
