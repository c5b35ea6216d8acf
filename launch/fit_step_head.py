"""Fits a confidence head read at step ends (`confidence_reads="step_ends"`) on the shipped
reasoner's own traces, and picks its threshold on a selection split.

  python launch/fit_step_head.py --out=o1jax/checkpoints/tiny_step_heads

Training and selection problems come from the tasks' train split (the sweep evaluates on the
eval split: no problem is shared); the selection problems are distinct prompts not among the
training ones. For each problem the policy thinks once, greedily; at every step end (a ";")
of its trace `</think>` is forced and a greedy answer decoded: label = that answer verifies,
feature = the hidden state of the ";" (what the loop holds when it reads the head there).
With --label=no_loss (the default) the head learns P(stopping here loses nothing): 1 where the
forced answer verifies or the full run ends wrong anyway (a stop cannot cost a run that ends
wrong), so a run that has settled on its answer can stop whether or not that answer is right.
The head is trained on the training prefixes; on the selection problems the rule "stop at
the first step end whose estimate reaches t" is replayed (exact at temperature 0: a stop at
prefix k answers what the forced answer there does) for every t on a grid, and the t that
saves the most thinking at no more than --max_loss_pts of accuracy lost is written beside
the head (confidence_head.json: "threshold"). launch/sweep.py --step_head_dir reads both.
--data_cache keeps the forced-stop data (minutes to compute) for reruns with other head
settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import sys
import time

from absl import app, flags, logging

_OUT = flags.DEFINE_string("out", "runs/step_head", "Output directory for the head.")
_TRAIN_N = flags.DEFINE_integer("train_problems_per_level", 32, "Training problems per task "
                                "and level.")
_SELECT_N = flags.DEFINE_integer("select_problems_per_level", 16, "Selection problems per "
                                 "task and level (before dropping any shared with training).")
_TRAIN_SEED = flags.DEFINE_integer("train_seed", 11, "Seed of the training draw.")
_SELECT_SEED = flags.DEFINE_integer("select_seed", 12, "Seed of the selection draw.")
# 0 by default: the evaluation allows a point, and on new problems the loss is noisier.
_MAX_LOSS = flags.DEFINE_float("max_loss_pts", 0.0, "Accuracy (points) the threshold may lose "
                               "on the selection split.")
_THRESHOLDS = flags.DEFINE_list("thresholds", [f"{t / 100:.2f}" for t in range(50, 100)],
                                "Threshold grid.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Head training steps.")
_HIDDEN = flags.DEFINE_integer("hidden_dim", 64, "Head hidden width.")
_SEED = flags.DEFINE_integer("seed", 0, "Head initialisation and minibatch seed.")
_LABEL = flags.DEFINE_enum("label", "no_loss", ["no_loss", "right"], "What the head "
                           "predicts at a step end: 'right', the forced answer there verifies "
                           "(the shipped head's label); 'no_loss', stopping there loses nothing "
                           "(the forced answer verifies, or the full run ends wrong anyway).")
_DATA_CACHE = flags.DEFINE_string("data_cache", None, "Directory to keep the forced-stop data.")
_TASKS = ("addition", "equation", "countdown")
_LEVELS = (1, 2, 3, 4, 5)


def _data(params, mc, base, problems, tok, cache_name):
  from o1jax.training import heads as heads_lib
  from o1jax.training import rollouts as rl
  path = _DATA_CACHE.value and os.path.join(_DATA_CACHE.value, cache_name)
  if path and os.path.exists(path):
    with open(path, "rb") as f:
      return pickle.load(f)
  data = heads_lib.confidence_data(params, mc, base, problems, batch_size=64, tokenizer=tok,
                                   step_end_ids=sorted(rl.step_delimiter_ids(tok)))
  if path:
    os.makedirs(_DATA_CACHE.value, exist_ok=True)
    with open(path, "wb") as f:
      pickle.dump(data, f)
  return data


def _keep_rollouts(data, keep):
  """The data of the rollouts where `keep` [R] holds, renumbered."""
  import numpy as np
  new_index = np.cumsum(keep) - 1
  rows = keep[data.rollout]
  per_run = lambda x: x[keep]
  return dataclasses.replace(
      data, features=data.features[rows], labels=data.labels[rows], probe=data.probe[rows],
      prefix=data.prefix[rows], rollout=new_index[data.rollout[rows]],
      prompt_features=per_run(data.prompt_features), natural=per_run(data.natural),
      correct=per_run(data.correct), needed=per_run(data.needed),
      problems=[p for p, k in zip(data.problems, keep) if k])


def _labels(data):
  """The head's target at every prefix (see --label)."""
  import numpy as np
  if _LABEL.value == "right":
    return data.labels
  # A run that ends wrong loses nothing by stopping anywhere.
  return np.maximum(data.labels, ~data.correct[data.rollout]).astype(np.float32)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  import numpy as np
  from o1jax import tasks
  from o1jax.analysis import stop_rules
  from o1jax.model.heads import HeadConfig, RewardModel, save_head
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config
  from o1jax.training import heads as heads_lib
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  try:
    thresholds = sorted(float(t) for t in _THRESHOLDS.value)
    for name, v in (("train_problems_per_level", _TRAIN_N.value),
                    ("select_problems_per_level", _SELECT_N.value), ("steps", _STEPS.value)):
      if v <= 0:
        raise ValueError(f"--{name} must be positive, got {v}")
    train_problems = tasks.distinct_problems(_TASKS, _LEVELS, _TRAIN_N.value, _TRAIN_SEED.value,
                                             split="train")
    select_problems = tasks.distinct_problems(_TASKS, _LEVELS, _SELECT_N.value,
                                              _SELECT_SEED.value, split="train")
  except ValueError as e:
    sys.exit(f"error: {e}")
  t0 = time.time()
  tok = CharTokenizer()
  params, mc, _ = load_params(embedded_checkpoint_dir())
  base = make_think_config(mc, tok)
  train = _data(params, mc, base, train_problems, tok,
                f"train_{_TRAIN_N.value}_{_TRAIN_SEED.value}.pkl")
  select = _data(params, mc, base, select_problems, tok,
                 f"select_{_SELECT_N.value}_{_SELECT_SEED.value}.pkl")
  seen = {p.prompt for p in train_problems}
  select = _keep_rollouts(select, np.array([p.prompt not in seen for p in select.problems]))
  print(f"[{time.time() - t0:.0f}s] step-end forced stops: {len(train.labels)} over "
        f"{len(train.natural)} training runs, {len(select.labels)} over {len(select.natural)} "
        "selection runs", flush=True)

  reads = train.prefix < train.natural[train.rollout]      # the full run's end is no read
  cfg = heads_lib.HeadTrainConfig(hidden_dim=_HIDDEN.value, steps=_STEPS.value, seed=_SEED.value)
  labels, select_labels = _labels(train), _labels(select)
  head, losses = heads_lib.train_head(train.features[reads], labels[reads], "confidence", cfg)
  probs = heads_lib.predict(head, select.features)
  sel_reads = select.prefix < select.natural[select.rollout]
  threshold, table = stop_rules.select_threshold(select, probs, thresholds, _MAX_LOSS.value)
  oracle, oracle_right_only = heads_lib.oracle_savings(select)
  for r in table:
    print(f"  t={r['threshold']:.2f}: saved {r['saved_pct']:5.1f}%  accuracy "
          f"{r['accuracy']:.3f} ({r['accuracy_delta_pts']:+.1f} pts)")
  info = {
      "trained_by": "python launch/fit_step_head.py " + " ".join(sys.argv[1:]),
      "policy": "embedded (o1jax/checkpoints/tiny)",
      "reads": "step_ends", "step_end_text": ";", "label": _LABEL.value,
      "threshold": threshold, "max_loss_pts": _MAX_LOSS.value,
      "train": {"problems": len(train.natural), "prefixes": int(reads.sum()),
                "positive": float(labels[reads].mean()), "split": "train",
                "seed": _TRAIN_SEED.value, "final_loss": float(np.mean(losses[-50:]))},
      "selection": {"problems": len(select.natural), "prefixes": int(sel_reads.sum()),
                    "split": "train", "seed": _SELECT_SEED.value,
                    "accuracy_full": float(np.mean(select.correct)),
                    "oracle_saved_pct": 100.0 * oracle,
                    "oracle_saved_right_only_pct": 100.0 * oracle_right_only,
                    "ece": heads_lib.ece(probs[sel_reads], select_labels[sel_reads]),
                    "auc": heads_lib.auc(probs[sel_reads], select_labels[sel_reads]),
                    "replay": table},
  }
  save_head(_OUT.value, RewardModel(HeadConfig(mc.embed_dim, _HIDDEN.value, "confidence"),
                                    head), info)
  print(f"threshold {threshold} (selection: saves the most at <= {_MAX_LOSS.value} pts lost; "
        f"oracle {100 * oracle:.1f}%); wrote {_OUT.value}/confidence_head.* in "
        f"{time.time() - t0:.0f}s")
  return 0


if __name__ == "__main__":
  app.run(main)
