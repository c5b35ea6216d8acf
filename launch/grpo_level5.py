r"""GRPO on level 5 with a held-out greedy evaluation between chunks of steps (issue 31).

  python launch/grpo_level5.py --config=configs/grpo.py:level5 --workdir=runs/l5_grpo_s0 \
      [--config.grpo.seed=1 --config.grpo.steps=60 --eval_every=10]
  python launch/grpo_level5.py --plot=runs/l5_grpo_s0,runs/l5_grpo_s1 \
      --out=docs/grpo/level5_rl        # writes level5_rl.csv and level5_rl.png

Training prompts come from the canonical split's training side (launch/grpo.py's loop,
o1jax/training/grpo_train.py, run in chunks of --eval_every steps; rerunning resumes). At step
0 and after every chunk the policy is evaluated greedily, with the training run's thinking
cap, on:
  level 5: problems held out by the canonical split AND by the prompt-hash split reasoner v2
           was trained on, with every permuted twin (tasks.registry.unseen_heldout_problems):
           --level5_problems per task (countdown level 5 has only 24 such problems);
  levels 1-4: --low_problems canonical held-out problems per task and level (the guard).
Every problem's result goes to <workdir>/evals.jsonl; --plot joins them with metrics.jsonl
(mean reward, zero-advantage fraction, thinking tokens of the sampled rollouts) and writes
accuracies with Wilson 95% intervals.
"""

import json
import math
import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo.py:level5", "GRPO config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", 10, "Steps between evaluations.")
_LEVEL5 = flags.DEFINE_integer("level5_problems", 96, "Level-5 problems per task.")
_LOW = flags.DEFINE_integer("low_problems", 16, "Held-out problems per task at levels 1-4.")
_EVAL_SEED = flags.DEFINE_integer("eval_seed", 31, "Seed of the evaluation draw.")
_PLOT = flags.DEFINE_list("plot", None, "Run directories to summarise (no training).")
_OUT = flags.DEFINE_string("out", "docs/grpo/level5_rl", "Summary path without extension.")
_METHOD = flags.DEFINE_enum("method", "grpo", ["grpo", "rft"], "grpo, or rejection-sampling "
                            "fine-tuning (STaR without rationalisation) at equal sampling "
                            "compute: per chunk, the same prompts and rollouts per prompt as "
                            "GRPO's steps, verified ones kept, a fine-tune on them.")
_BASELINE = flags.DEFINE_string("baseline_evals", None, "An evals.jsonl of the same start and "
                                 "evaluation flags: its step-0 rows are copied instead of "
                                 "evaluating the start again.")
_RFT_LR = flags.DEFINE_float("rft_lr", 1e-4, "RFT fine-tune learning rate.")
_RFT_ROWS = flags.DEFINE_integer("rft_batch", 32, "RFT fine-tune batch; steps per chunk are "
                                 "chosen so it sees as many rows as GRPO's updates do.")

TASKS = ("addition", "equation", "countdown")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
  if n == 0:
    return float("nan"), float("nan")
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return centre - half, centre + half


def eval_problems():
  from o1jax import tasks
  from o1jax.tasks import registry
  level5 = [p for t in TASKS
            for p in registry.unseen_heldout_problems(t, 5, _LEVEL5.value, _EVAL_SEED.value)]
  low = tasks.distinct_problems(TASKS, (1, 2, 3, 4), _LOW.value, _EVAL_SEED.value)
  return level5 + low


def evaluate(params, tokenizer, think_config, cfg, problems, step, path):
  from o1jax.rl.rollouts import sample_groups
  r = sample_groups(params, tokenizer, think_config, problems, [None] * len(problems), 1,
                    cfg.max_thinking, cfg.eval_seed, 0.0, slots=cfg.rollout_slots or None)
  with open(path, "a") as f:
    for p, ok, n, cut in zip(problems, r.correct, r.thinking_tokens, r.truncated):
      f.write(json.dumps({"step": step, "task": p.task, "level": p.difficulty,
                          "prompt": p.prompt, "correct": bool(ok), "thinking": int(n),
                          "truncated": bool(cut)}) + "\n")
  five = [bool(ok) for p, ok in zip(problems, r.correct) if p.difficulty == 5]
  low = [bool(ok) for p, ok in zip(problems, r.correct) if p.difficulty < 5]
  print(f"eval step {step}: level 5 {sum(five)}/{len(five)}, levels 1-4 {sum(low)}/{len(low)}",
        flush=True)


def copy_or_evaluate_start(params, tokenizer, think_config, cfg, problems, path):
  if not _BASELINE.value:
    evaluate(params, tokenizer, think_config, cfg, problems, 0, path)
    return
  with open(_BASELINE.value) as f:
    start = [line for line in f if json.loads(line)["step"] == 0]
  if [json.loads(line)["prompt"] for line in start] != [p.prompt for p in problems]:
    raise ValueError(f"{_BASELINE.value} evaluated other problems at step 0")
  with open(path, "a") as f:
    f.writelines(start)


def train(argv):
  del argv
  from o1jax.training import grpo, grpo_train
  cfg = grpo.GRPOConfig.from_config_dict(_CONFIG.value.grpo)
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  policy = grpo_train.load_policy(cfg.base)
  params, model_config, tokenizer = policy
  think_config = grpo.think_config_for(cfg, model_config, tokenizer)
  problems = eval_problems()
  path = os.path.join(workdir, "evals.jsonl")
  done = set()
  if os.path.exists(path):
    with open(path) as f:
      done = {json.loads(line)["step"] for line in f}
  if 0 not in done:
    copy_or_evaluate_start(params, tokenizer, think_config, cfg, problems, path)
  for stop in range(_EVAL_EVERY.value, cfg.steps + 1, _EVAL_EVERY.value):
    if stop in done:
      continue
    params, _, _ = grpo_train.train(cfg, workdir, policy=policy, stop_after=stop)
    evaluate(params, tokenizer, think_config, cfg, problems, stop, path)


def train_rft(argv):
  """STaR without rationalisation, chunk by chunk: sample group_size rollouts of every prompt
  GRPO's steps in the chunk would draw (same sampler temperature, thinking cap via the cache),
  keep the verified, deduplicated ones, fine-tune the current policy on them for as many rows
  as GRPO's updates see, evaluate."""
  del argv
  import dataclasses
  import numpy as np
  from o1jax.thinking import make_think_config
  from o1jax.training import grpo, grpo_train, star
  from o1jax.training import rollouts as rl
  cfg = grpo.GRPOConfig.from_config_dict(_CONFIG.value.grpo)
  workdir = _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "grpo_config.json"), "w") as f:
    json.dump({**dataclasses.asdict(cfg), "method": "rft"}, f)
  params, model_config, tokenizer = grpo_train.load_policy(cfg.base)
  think_config = grpo.think_config_for(cfg, model_config, tokenizer)
  sample_config = make_think_config(model_config, tokenizer, cfg.cache_len,
                                    temperature=cfg.temperature,
                                    max_answer_tokens=cfg.max_answer_tokens)
  problems = eval_problems()
  path = os.path.join(workdir, "evals.jsonl")
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  for f in (path, metrics_path):  # no resume: a rerun starts over
    if os.path.exists(f):
      os.remove(f)
  copy_or_evaluate_start(params, tokenizer, think_config, cfg, problems, path)
  seen = set()
  every = _EVAL_EVERY.value
  for stop in range(every, cfg.steps + 1, every):
    chunk = [p for s in range(stop - every + 1, stop + 1) for p in grpo.step_problems(cfg, s)[0]]
    rollouts = rl.sample_rollouts(params, sample_config, chunk, cfg.group_size,
                                  seed=grpo.step_seed(cfg.seed, stop), batch_size=128)
    flat = [r for rs in rollouts for r in rs]
    kept = star.filter_rationales(flat, seen=seen)
    correct = np.array([[r.correct for r in rs] for rs in rollouts])
    steps = max(1, every * cfg.rows // _RFT_ROWS.value)
    losses = []
    if kept:
      params, losses = star.finetune(params, model_config, kept, steps=steps,
                                     batch_size=_RFT_ROWS.value, learning_rate=_RFT_LR.value,
                                     seq_len=cfg.cache_len, seed=cfg.seed * 1000 + stop)
    record = {"step": stop, "reward": float(correct.mean()), "accuracy": float(correct.mean()),
              "zero_advantage_fraction": float(np.mean(correct.all(1) | ~correct.any(1))),
              "thinking_tokens": float(np.mean([r.thinking_tokens for r in flat])),
              "kept": len(kept), "finetune_steps": steps if kept else 0,
              "loss": float(np.mean(losses[-10:])) if losses else None}
    with open(metrics_path, "a") as f:
      f.write(json.dumps(record) + "\n")
    print(f"rft chunk to step {stop}: sampled acc {record['reward']:.3f}, kept {len(kept)}, "
          f"{record['finetune_steps']} fine-tune steps", flush=True)
    evaluate(params, tokenizer, think_config, cfg, problems, stop, path)


def summarise(runs, out):
  """One row per run and step: the sampled rollouts' metrics of that step (GRPO) or chunk
  (RFT), and where the policy was evaluated, the held-out greedy accuracies."""
  import csv
  import numpy as np
  rows = []
  for run in runs:
    with open(os.path.join(run, "grpo_config.json")) as f:
      saved = json.load(f)
    seed, method = saved["seed"], saved.get("method", "grpo")
    metrics, evals = {}, {}
    if os.path.exists(os.path.join(run, "metrics.jsonl")):
      with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
          m = json.loads(line)
          metrics[m["step"]] = m
    with open(os.path.join(run, "evals.jsonl")) as f:
      for line in f:
        e = json.loads(line)
        evals.setdefault(e["step"], []).append(e)
    for step in sorted(set(metrics) | set(evals)):
      row = {"run": os.path.basename(run.rstrip("/")), "method": method, "seed": seed,
             "step": step}
      m = metrics.get(step, {})
      for key in ("reward", "zero_advantage_fraction", "thinking_tokens", "truncation_rate",
                  "kl"):
        row[f"train_{key}"] = m.get(key)
      es = evals.get(step, [])
      for name, keep in (("level5", lambda e: e["level"] == 5),
                         ("levels1_4", lambda e: e["level"] < 5),
                         *[(f"{t}5", lambda e, t=t: e["level"] == 5 and e["task"] == t)
                           for t in TASKS]):
        sel = [e for e in es if keep(e)]
        k = sum(e["correct"] for e in sel)
        lo, hi = wilson(k, len(sel))
        row.update({f"{name}_acc": k / len(sel) if sel else None,
                    f"{name}_lo": lo if sel else None, f"{name}_hi": hi if sel else None,
                    f"{name}_n": len(sel)})
      five = [e["thinking"] for e in es if e["level"] == 5]
      row["level5_eval_thinking"] = float(np.mean(five)) if five else None
      # Paired against the start: level-5 problems this step solves that step 0 did not
      # (gained), and the reverse (lost); a sign test on these is sharper than two intervals.
      start = {e["prompt"]: e["correct"] for e in evals.get(0, []) if e["level"] == 5}
      now = {e["prompt"]: e["correct"] for e in es if e["level"] == 5}
      paired = [(start[q], c) for q, c in now.items() if q in start] if step else []
      row["level5_gained"] = sum(c and not s for s, c in paired) if paired else None
      row["level5_lost"] = sum(s and not c for s, c in paired) if paired else None
      rows.append(row)
  with open(out + ".csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 5, figsize=(21, 3.6))
  for i, run in enumerate(sorted({r["run"] for r in rows})):
    color = f"C{i}"  # one colour per run in every panel
    rs = [r for r in rows if r["run"] == run]
    ev = [r for r in rs if r["level5_n"]]
    for name, style in (("level5", "-o"), ("levels1_4", "--s")):
      steps = [r["step"] for r in ev]
      axes[0].errorbar(steps, [r[f"{name}_acc"] for r in ev],
                       yerr=[[r[f"{name}_acc"] - r[f"{name}_lo"] for r in ev],
                             [r[f"{name}_hi"] - r[f"{name}_acc"] for r in ev]],
                       fmt=style, capsize=3, color=color, label=f"{run} {name}")
    tr = [r for r in rs if r["train_reward"] is not None]
    steps = [r["step"] for r in tr]
    axes[1].plot(steps, [r["train_reward"] for r in tr], "-o", color=color, label=run)
    axes[2].plot(steps, [r["train_zero_advantage_fraction"] for r in tr], "-o", color=color,
                 label=run)
    axes[3].plot(steps, [r["train_thinking_tokens"] for r in tr], "-o", color=color,
                 label=f"{run} sampled")
    axes[3].plot([r["step"] for r in ev], [r["level5_eval_thinking"] for r in ev], "x",
                 color=color, label=f"{run} greedy level 5")
    kl = [r for r in tr if r["train_kl"] is not None]  # runs with a reference (kl_coef > 0)
    if kl:
      axes[4].plot([r["step"] for r in kl], [r["train_kl"] for r in kl], "-o", color=color,
                   label=run)
  for ax, title in zip(axes, ("held-out greedy accuracy (Wilson 95%)", "mean sampled reward",
                              "zero-advantage fraction", "mean thinking tokens",
                              "k3 KL to the start, per token (before the step)")):
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(out + ".png", dpi=110)
  print("wrote", out + ".csv", out + ".png")


def main(argv):
  logging.set_verbosity(logging.WARNING)
  if _PLOT.value:
    summarise(_PLOT.value, _OUT.value)
  elif not _WORKDIR.value:
    raise app.UsageError("--workdir is required to train")
  else:
    (train_rft if _METHOD.value == "rft" else train)(argv)


if __name__ == "__main__":
  app.run(main)
