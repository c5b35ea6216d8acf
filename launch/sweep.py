"""Accuracy against thinking budget on held-out problems (the o1 article's headline curve),
thinking tokens by task and difficulty, and what each early-stop rule saves.

  python launch/sweep.py --out=docs/sweep            # the embedded tiny reasoner, levels 1-5
  python launch/sweep.py --budgets=0,8,32,inf --tasks=addition --num_problems=50
  python launch/sweep.py --kv_dtype=int8 --nostop_rule_sweep   # the same with an int8 KV cache
  python launch/sweep.py --thinking_kv_budget=40 --nostop_rule_sweep  # thinking-KV eviction
Writes accuracy_vs_budget.{csv,png}, tokens_by_difficulty.csv, verification.csv (what the
checks of reflective traces change), stop_rules.csv and stop_rules_by_level.csv (every rule
against the oracle ceiling, in summary.json with the probe's and head's calibration) and
rows.csv (every problem at every setting: each table recomputes from it) into --out.
Held-out problems are distinct prompts drawn without replacement; summary.json gives the
counts and the held-out pool size of each level.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app, flags, logging

_BUDGETS = flags.DEFINE_list("budgets", ["0", "8", "16", "32", "64", "128", "256", "inf"],
                             "Thinking budgets; 'inf' means unlimited.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 24, "Held-out problems per task and "
                                     "difficulty.")
_TASKS = flags.DEFINE_list("tasks", ["addition", "equation", "countdown"], "Tasks to sweep.")
_DIFFICULTIES = flags.DEFINE_list("difficulties", ["1", "2", "3", "4", "5"],
                                  "Difficulty levels.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the held-out draw and of sampling.")
_SPLIT_KEY = flags.DEFINE_enum("split_key", "prompt", ["prompt", "canonical"], "Which split's "
                                 "held-out side to draw from: \"prompt\" (v2 was trained on its "
                                 "other side) or \"canonical\" (no permuted twin in training: v3).")
_OUT = flags.DEFINE_string("out", "runs/sweep", "Output directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint dir or training workdir "
                                  "(default: the embedded tiny reasoner).")
_STOP_RULE_SWEEP = flags.DEFINE_bool("stop_rule_sweep", True, "Also measure the early-stop "
                                     "rules at unlimited budget.")
_PROBE_EVERY = flags.DEFINE_integer("probe_every", 8, "Probe period for the confidence rule "
                                    "(and the oracle's prefix grid).")
_HEAD_EVERY = flags.DEFINE_integer("head_every", 4, "Thinking tokens between confidence-head "
                                   "reads (a read costs no forward pass).")
_HEADS_DIR = flags.DEFINE_string("heads_dir", None, "Confidence head for the stop-rule sweep "
                                 "(default: the heads/ beside the checkpoint, if any).")
_STEP_HEAD_DIR = flags.DEFINE_string("step_head_dir", None, "Confidence head read at step "
                                     "ends, with the threshold its selection split picked "
                                     "(launch/fit_step_head.py; default: "
                                     "o1jax/checkpoints/tiny_step_heads with the embedded "
                                     "checkpoint, none otherwise).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Prompts per compiled batch.")
_KV_DTYPE = flags.DEFINE_enum("kv_dtype", None, ["int8"], "KV cache storage (default: the "
                              "model's compute dtype); int8 stores per-token, per-head scales.")
_KV_BUDGET = flags.DEFINE_integer("thinking_kv_budget", None, "Thinking-KV eviction: thinking "
                                  "tokens kept in the KV cache (default: all).")
_KV_WEIGHT = flags.DEFINE_float("kv_importance_weight", 0.1, "Eviction: R-KV's lambda "
                                "(importance vs redundancy).")
_KV_WINDOW = flags.DEFINE_integer("kv_evict_window", 8, "Eviction: most recent thinking tokens "
                                  "never evicted.")
_KV_POLICY = flags.DEFINE_enum("kv_evict_policy", "rkv", ["rkv", "oldest"], "Eviction policy.")


def _confidence_head(model_config):
  """The confidence head params for the head rule, or None if there is none to use."""
  heads_dir = _HEADS_DIR.value
  if heads_dir is None:
    from o1jax.training.checkpoint import embedded_checkpoint_dir
    heads_dir = os.path.join(_CHECKPOINT.value or embedded_checkpoint_dir(), "heads")
  if not os.path.exists(os.path.join(heads_dir, "confidence_head.json")):
    print(f"no confidence head in {heads_dir}: the head rule is left out", flush=True)
    return None
  from o1jax.model.heads import load_head
  model, _ = load_head(heads_dir, "confidence")
  if model.separate or model.head_config.embed_dim != model_config.embed_dim:
    sys.exit(f"error: the confidence head in {heads_dir} does not sit on this model's trunk")
  return model.head


def _rule_heads(config, head, step_head):
  """The heads a stop rule's config reads: none, the periodic head or the step-end head."""
  if not (config.rule("confidence") and config.confidence_estimate == "head"):
    return None
  return {"confidence": step_head if config.confidence_reads == "step_ends" else head}


def _step_head(model_config):
  """(head params, threshold) of the step-end confidence head, or (None, None)."""
  heads_dir = _STEP_HEAD_DIR.value
  if heads_dir is None and _CHECKPOINT.value is None:
    from o1jax.training.checkpoint import embedded_checkpoint_dir
    heads_dir = os.path.join(os.path.dirname(embedded_checkpoint_dir()), "tiny_step_heads")
  if heads_dir is None or not os.path.exists(os.path.join(heads_dir, "confidence_head.json")):
    return None, None
  from o1jax.model.heads import load_head
  model, info = load_head(heads_dir, "confidence")
  if model.separate or model.head_config.embed_dim != model_config.embed_dim:
    sys.exit(f"error: the step-end head in {heads_dir} does not sit on this model's trunk")
  if info.get("threshold") is None:
    sys.exit(f"error: the step-end head in {heads_dir} has no selected threshold")
  return model.head, float(info["threshold"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax import tasks
  from o1jax.tasks.registry import pool_size
  from o1jax.analysis import sweep
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import UNLIMITED, make_think_config, parse_budget
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  try:
    budgets = sorted({parse_budget(b) for b in _BUDGETS.value})
    difficulties = [int(d) for d in _DIFFICULTIES.value]
    for name in _TASKS.value:
      task = tasks.get_task(name)
      bad = [d for d in difficulties if d not in task.difficulties]
      if bad:
        raise ValueError(f"task {name!r} has no difficulty {bad}; levels: {task.difficulties}")
    if _NUM_PROBLEMS.value <= 0:
      raise ValueError(f"--num_problems must be positive, got {_NUM_PROBLEMS.value}")
    params, model_config, _ = load_params(_CHECKPOINT.value or embedded_checkpoint_dir())
    model_config = model_config.replace(kv_dtype=_KV_DTYPE.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  tokenizer = CharTokenizer()
  try:
    problems = tasks.distinct_problems(_TASKS.value, difficulties, _NUM_PROBLEMS.value,
                                       _SEED.value + 1000, split="eval",
                                       split_key=_SPLIT_KEY.value)
  except ValueError as e:
    sys.exit(f"error: {e}")
  pools = {f"{name}/{d}": pool_size(name, d, split_key=_SPLIT_KEY.value)
           for name in _TASKS.value for d in difficulties}
  try:
    base = make_think_config(model_config, tokenizer, thinking_kv_budget=_KV_BUDGET.value,
                             kv_importance_weight=_KV_WEIGHT.value,
                             kv_evict_window=_KV_WINDOW.value,
                             kv_evict_policy=_KV_POLICY.value)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if _KV_BUDGET.value is not None and _STOP_RULE_SWEEP.value:
    sys.exit("error: --thinking_kv_budget needs --nostop_rule_sweep (the stop-rule sweep's "
             "confidence probes do not combine with eviction)")
  os.makedirs(_OUT.value, exist_ok=True)
  print(f"{len(problems)} held-out problems x {len(budgets)} budgets", flush=True)

  rows: list = []
  by_budget = {}
  t0 = time.time()
  for i, b in enumerate(budgets):
    # The budget is data in the loop carry: every point reuses one compiled program.
    by_budget[b] = sweep.run(params, tokenizer, problems, base, b, f"budget={sweep.budget_label(b)}",
                             _SEED.value, _BATCH_SIZE.value)
    rows += by_budget[b]
    acc = sum(r.correct for r in by_budget[b]) / len(problems)
    print(f"[{i + 1}/{len(budgets)}] budget {sweep.budget_label(b)}: accuracy {acc:.1%} "
          f"({time.time() - t0:.0f}s)", flush=True)

  acc_table = sweep.accuracy_by_budget(rows)
  print("\nAccuracy by thinking budget\n" + sweep.format_table(acc_table))
  sweep.save(_OUT.value, "accuracy_vs_budget", acc_table)
  sweep.plot_accuracy_vs_budget(acc_table, os.path.join(_OUT.value, "accuracy_vs_budget.png"),
                                "Held-out accuracy vs thinking budget")

  unlimited = by_budget.get(UNLIMITED) or by_budget[max(budgets)]
  no_thinking = by_budget.get(0)
  if no_thinking is None:
    no_thinking = sweep.run(params, tokenizer, problems, base, 0, "budget=0", _SEED.value,
                            _BATCH_SIZE.value)
  diff_table = sweep.tokens_by_difficulty(unlimited, no_thinking)
  print("\nThinking tokens by task and difficulty (unlimited budget)\n"
        + sweep.format_table(diff_table))
  sweep.save(_OUT.value, "tokens_by_difficulty", diff_table)

  verification = sweep.verification_table(unlimited)
  print("\nVerification (unlimited budget): the first candidate vs the checked answer\n"
        + sweep.format_table(verification))
  sweep.save(_OUT.value, "verification", verification)

  stop_summary = {}
  if _STOP_RULE_SWEEP.value:
    from o1jax.analysis import stop_rules
    from o1jax.training.rollouts import step_delimiter_ids
    head = _confidence_head(model_config)
    step_head, step_threshold = _step_head(model_config)
    configs = stop_rules.settings(base, _PROBE_EVERY.value, _HEAD_EVERY.value, head is not None,
                                  step_threshold, tuple(sorted(step_delimiter_ids(tokenizer))))
    # The reference is the unlimited-budget run itself (the same program and inputs).
    rule_rows = {"natural+budget": [dataclasses.replace(r, setting="rules=natural+budget")
                                    for r in unlimited]}
    rows += rule_rows["natural+budget"]
    for name, config in configs.items():
      if name in rule_rows:
        continue
      rule_rows[name] = sweep.run(params, tokenizer, problems, config, UNLIMITED,
                                  f"rules={name}", _SEED.value, _BATCH_SIZE.value,
                                  heads=_rule_heads(config, head, step_head))
      rows += rule_rows[name]
      print(f"  {name}: {time.time() - t0:.0f}s", flush=True)
    rule_table = sweep.stop_rule_table(rule_rows, "natural+budget")
    stop_summary = stop_rules.oracle_and_calibration(
        params, model_config, base, problems, _PROBE_EVERY.value, head, _BATCH_SIZE.value)
    if step_head is not None:
      stop_summary["step_head_threshold"] = step_threshold   # picked on its selection split
    best = stop_rules.best_within(rule_table)
    stop_summary["best_within_1pt"] = best
    print("\nEarly-stop rules at unlimited budget (vs natural+budget)\n"
          + sweep.format_table(rule_table))
    print("oracle and calibration: " + json.dumps(
        {k: v for k, v in stop_summary.items() if k != "best_within_1pt"}))
    sweep.save(_OUT.value, "stop_rules", rule_table)
    sweep.save(_OUT.value, "stop_rules_by_level", stop_rules.by_level(rule_rows,
                                                                      "natural+budget"))

  sweep.save(_OUT.value, "rows", [dataclasses.asdict(r) for r in rows])
  with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
    by = {r["budget"]: r["accuracy"] for r in acc_table}
    json.dump({"accuracy_vs_budget": acc_table, "tokens_by_difficulty": diff_table,
               "acc_0": by.get("0"), "acc_8": by.get("8"), "acc_inf": by.get("inf"),
               "verification": verification, "stop_rules": stop_summary,
               "num_problems": len(problems), "problems_per_level": _NUM_PROBLEMS.value,
               "distinct_prompts": len({p.prompt for p in problems}),
               "heldout_pool_sizes": pools, "seed": _SEED.value, "split_key": _SPLIT_KEY.value,
               "kv_dtype": _KV_DTYPE.value, "thinking_kv_budget": _KV_BUDGET.value,
               "kv_importance_weight": _KV_WEIGHT.value, "kv_evict_policy": _KV_POLICY.value,
               "kv_evict_window": _KV_WINDOW.value,
               "wall_s": time.time() - t0}, f, indent=2)
  print(f"\nwrote {_OUT.value}/ (csv, png) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
