"""Budget forcing (s1) vs budget-conditioned thinking (L1) on held-out problems.

  python launch/eval_budget.py --policy=runs/l1_grpo/final --out=docs/grpo

For each budget N: `forcing` is the base model (default: the embedded reasoner v2) on the
plain prompt with think()'s hard budget N; `conditioned` is --policy on `[budget N] prompt`
with the same hard budget (o1jax/analysis/budget_eval.py). Greedy. Held-out problems are
distinct prompts (tasks.distinct_problems, split "eval", seed --seed + 1000, as
launch/sweep.py draws them). Writes budget.csv (method,budget,accuracy,thinking_tokens,
within_budget), budget_by_level.csv, budget_rows.csv (every problem) and budget.png into --out.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

_POLICY = flags.DEFINE_string("policy", None, "The budget-conditioned policy (checkpoint dir "
                              "or training workdir).", required=True)
_BASE = flags.DEFINE_string("base", None, "The model budget forcing is applied to (default: "
                            "the embedded reasoner v2).")
_BUDGETS = flags.DEFINE_list("budgets", ["8", "16", "32", "64", "128", "256"],
                             "Thinking budgets.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 24, "Held-out problems per task and level.")
_TASKS = flags.DEFINE_list("tasks", ["addition", "equation", "countdown"], "Tasks.")
_DIFFICULTIES = flags.DEFINE_list("difficulties", ["1", "2", "3", "4"], "Difficulty levels.")
_METHODS = flags.DEFINE_list("methods", ["forcing", "conditioned"], "Methods to run.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the held-out draw.")
_SPLIT_KEY = flags.DEFINE_enum("split_key", "prompt", ["prompt", "canonical"], "Which split's "
                                 "held-out side to draw from: \"prompt\" (v2 was trained on its "
                                 "other side) or \"canonical\" (no permuted twin in training: v3).")
_OUT = flags.DEFINE_string("out", "runs/eval_budget", "Output directory.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 96, "Prompts per compiled batch.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  import dataclasses
  from o1jax import tasks
  from o1jax.analysis import budget_eval
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config
  from o1jax.training import budget_prompt
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  try:
    budgets = sorted({budget_prompt.check_target_budget(b) for b in _BUDGETS.value})
    bad = [m for m in _METHODS.value if m not in budget_eval.METHODS]
    if bad:
      raise ValueError(f"unknown methods {bad}; known: {budget_eval.METHODS}")
    if _NUM_PROBLEMS.value <= 0:
      raise ValueError(f"--num_problems must be positive, got {_NUM_PROBLEMS.value}")
    problems = tasks.distinct_problems(_TASKS.value, [int(d) for d in _DIFFICULTIES.value],
                                       _NUM_PROBLEMS.value, _SEED.value + 1000, split="eval",
                                       split_key=_SPLIT_KEY.value)
    models = {"forcing": load_params(_BASE.value or embedded_checkpoint_dir()),
              "conditioned": load_params(_POLICY.value)}
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  tokenizer = CharTokenizer()
  os.makedirs(_OUT.value, exist_ok=True)
  print(f"{len(problems)} held-out problems x {len(budgets)} budgets x "
        f"{len(_METHODS.value)} methods", flush=True)
  rows, t0 = [], time.time()
  for method in _METHODS.value:
    params, model_config, _ = models[method]
    config = make_think_config(model_config, tokenizer)
    for b in budgets:
      part = budget_eval.run(params, tokenizer, problems, config, method, b, _SEED.value,
                             _BATCH_SIZE.value)
      rows += part
      line = budget_eval.summary(part)[0]
      print(f"{method} budget {b}: accuracy {line['accuracy']:.3f} thinking "
            f"{line['thinking_tokens']:.1f} within {line['within_budget']:.3f} "
            f"({time.time() - t0:.0f}s)", flush=True)
  table = budget_eval.summary(rows)
  budget_eval.write_csv(os.path.join(_OUT.value, "budget.csv"), table)
  budget_eval.write_csv(os.path.join(_OUT.value, "budget_by_level.csv"),
                        budget_eval.summary(rows, by_level=True))
  budget_eval.write_csv(os.path.join(_OUT.value, "budget_rows.csv"),
                        [dataclasses.asdict(r) for r in rows])
  budget_eval.plot(table, os.path.join(_OUT.value, "budget.png"),
                   f"s1 budget forcing vs L1 budget conditioning, held-out\n"
                   f"({len(problems)} problems: {', '.join(_TASKS.value)}, levels "
                   f"{','.join(_DIFFICULTIES.value)})")
  with open(os.path.join(_OUT.value, "budget_summary.json"), "w") as f:
    json.dump({"table": table, "num_problems": len(problems),
               "problems_per_level": _NUM_PROBLEMS.value, "policy": _POLICY.value,
               "base": _BASE.value or "embedded reasoner v2", "seed": _SEED.value,
               "split_key": _SPLIT_KEY.value,
               "wall_s": time.time() - t0, "load_avg": os.getloadavg()}, f, indent=2)
  print("\n".join(f"{x['method']:>11} {x['budget']:>4} acc {x['accuracy']:.3f} think "
                  f"{x['thinking_tokens']:6.1f} within {x['within_budget']:.3f}" for x in table))
  print(f"wrote {_OUT.value}/budget.csv, budget.png ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
  app.run(main)
