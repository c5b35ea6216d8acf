"""Accuracy against thinking budget on held-out problems (the o1 article's headline curve),
thinking tokens by task and difficulty, and what each early-stop rule saves.

  python launch/sweep.py --out=docs/sweep            # the embedded tiny reasoner
  python launch/sweep.py --budgets=0,8,32,inf --tasks=addition --num_problems=50
  python launch/sweep.py --kv_dtype=int8 --nostop_rule_sweep   # the same with an int8 KV cache
  python launch/sweep.py --thinking_kv_budget=40 --nostop_rule_sweep  # thinking-KV eviction
Writes accuracy_vs_budget.{csv,png}, tokens_by_difficulty.csv, stop_rules.csv and
rows.csv (every problem at every setting) into --out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app, flags, logging

_BUDGETS = flags.DEFINE_list("budgets", ["0", "8", "16", "32", "64", "128", "inf"],
                             "Thinking budgets; 'inf' means unlimited.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 24, "Held-out problems per task and "
                                     "difficulty.")
_TASKS = flags.DEFINE_list("tasks", ["addition", "equation", "countdown"], "Tasks to sweep.")
_DIFFICULTIES = flags.DEFINE_list("difficulties", ["1", "2", "3", "4"], "Difficulty levels.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the held-out draw and of sampling.")
_OUT = flags.DEFINE_string("out", "runs/sweep", "Output directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint dir or training workdir "
                                  "(default: the embedded tiny reasoner).")
_STOP_RULE_SWEEP = flags.DEFINE_bool("stop_rule_sweep", True, "Also measure the early-stop "
                                     "rules at unlimited budget.")
_PROBE_EVERY = flags.DEFINE_integer("probe_every", 8, "Probe period for the confidence rule.")
_CONV_WINDOW = flags.DEFINE_integer("converge_window", 8, "Window W of the converged rule.")
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax import tasks
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
  problems = [p for name in _TASKS.value for d in difficulties
              for p in tasks.get_task(name).generate_problems(_SEED.value + 1000, d,
                                                              _NUM_PROBLEMS.value, split="eval")]
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

  if _STOP_RULE_SWEEP.value:
    settings = {
        "natural+budget": ("natural", "budget"),
        "+confidence": ("natural", "budget", "confidence"),
        "+converged": ("natural", "budget", "converged"),
        "+confidence+converged": ("natural", "budget", "confidence", "converged"),
    }
    rule_rows = {}
    for name, rules in settings.items():
      config = dataclasses.replace(base, stop_rules=rules, probe_every=_PROBE_EVERY.value,
                                   converge_window=_CONV_WINDOW.value)
      rule_rows[name] = sweep.run(params, tokenizer, problems, config, UNLIMITED,
                                  f"rules={name}", _SEED.value, _BATCH_SIZE.value)
      rows += rule_rows[name]
    rule_table = sweep.stop_rule_table(rule_rows, "natural+budget")
    print("\nEarly-stop rules at unlimited budget (vs natural+budget)\n"
          + sweep.format_table(rule_table))
    sweep.save(_OUT.value, "stop_rules", rule_table)

  sweep.save(_OUT.value, "rows", [dataclasses.asdict(r) for r in rows])
  with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
    json.dump({"accuracy_vs_budget": acc_table, "tokens_by_difficulty": diff_table,
               "num_problems": len(problems), "seed": _SEED.value,
               "kv_dtype": _KV_DTYPE.value, "thinking_kv_budget": _KV_BUDGET.value,
               "kv_importance_weight": _KV_WEIGHT.value, "kv_evict_policy": _KV_POLICY.value,
               "kv_evict_window": _KV_WINDOW.value,
               "wall_s": time.time() - t0}, f, indent=2)
  print(f"\nwrote {_OUT.value}/ (csv, png) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
  app.run(main)
