r"""GRPO rollout throughput: one think() over every row (the path before) against one prefill
per prompt forked to its G rows with continuous batching in engine slots (o1jax/rl/rollouts.py).

  python launch/bench_rollouts.py --out=docs/grpo/rollouts_bench.csv

The group mix has a 10x thinking-length spread, forced through per-prompt controls on the
embedded reasoner: half the prompts (shuffled, fixed seed) get budget = min_thinking =
--short thinking tokens, the others --long, so every row thinks exactly that long, then
closes and answers (up to --max_answer tokens). Both paths decode the same rows with the
same keys; the script checks that their Rollouts are identical, so both generate the same
tokens, counted the same way (`Rollouts.generated`: thinking, close and answer tokens).
Rollout tokens/s is the best of --reps timed runs of each path after a warm-up run of each
(compilation excluded), interleaved. The load average is recorded: the machine is shared.
"""

from __future__ import annotations

import csv
import datetime
import os
import platform
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROMPTS = flags.DEFINE_integer("prompts", 16, "Prompts per batch (P).")
_GROUP = flags.DEFINE_integer("group", 8, "Samples per prompt (G).")
_SLOTS = flags.DEFINE_integer("slots", 0, "Engine slots; 0: the default (half the rows).")
_SHORT = flags.DEFINE_integer("short", 20, "Thinking tokens of the short half.")
_LONG = flags.DEFINE_integer("long", 200, "Thinking tokens of the long half.")
_MAX_ANSWER = flags.DEFINE_integer("max_answer", 16, "Answer cap (tokens).")
_CACHE_LEN = flags.DEFINE_integer("cache_len", 320, "Context (cache) length, as configs/grpo.py.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions (best reported).")
_SEED = flags.DEFINE_integer("seed", 0, "Problems, the length mix and the sampling keys.")
_OUT = flags.DEFINE_string("out", "runs/rollouts_bench.csv", "Output CSV ('' for none).")


def main(argv):
  del argv
  import numpy as np

  from o1jax import tasks as tasks_lib
  from o1jax.rl import rollouts
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  ckpt = embedded_checkpoint_dir()
  params, model_config, _ = load_params(ckpt)
  tok = CharTokenizer()
  config = make_think_config(model_config, tok, _CACHE_LEN.value, temperature=_TEMPERATURE.value,
                             max_answer_tokens=_MAX_ANSWER.value)
  p, g = _PROMPTS.value, _GROUP.value
  problems = tasks_lib.get_task("addition").generate_problems(_SEED.value, 3, p, split="eval")
  rng = np.random.default_rng(_SEED.value)
  lengths = [_SHORT.value if i < p // 2 else _LONG.value for i in range(p)]
  lengths = [int(x) for x in rng.permutation(lengths)]
  slots = _SLOTS.value or rollouts.default_slots(p * g, g)
  common = dict(params=params, tokenizer=tok, think_config=config, problems=problems,
                targets=[None] * p, group_size=g, budget=lengths, seed=_SEED.value,
                min_thinking=lengths)
  schedule = {}

  def one_batch():
    return rollouts.sample_groups_in_one_batch(**common)

  def engine():
    r, schedule["last"] = rollouts.sample_groups_with_schedule(**common, slots=slots)
    return r

  paths = {"one_batch": one_batch, "engine_slots": engine}
  warm = {name: fn() for name, fn in paths.items()}   # compiles; also the equality check
  a, b = warm["one_batch"], warm["engine_slots"]
  for field in ("tokens", "loss_mask", "thinking_ctx", "stop_reason", "thinking_tokens"):
    if not np.array_equal(getattr(a, field), getattr(b, field)):
      raise SystemExit(f"the two paths differ in {field}: the benchmark compares nothing")
  thinking = np.asarray(a.thinking_tokens).reshape(p, g)
  best = {name: float("inf") for name in paths}
  load_before = os.getloadavg()[0]
  for _ in range(_REPS.value):
    for name, fn in paths.items():
      start = time.perf_counter()
      r = fn()
      best[name] = min(best[name], time.perf_counter() - start)
  load_after = os.getloadavg()[0]
  tokens = a.generated
  # The one batch runs until its longest row ends, every step over every row.
  prompt_len = np.array([len(tok.encode_prompt(x)) for x in a.prompts])
  one_batch_steps = int(((a.tokens != tok.pad_id).sum(1) - prompt_len).max())
  sched = schedule["last"]
  rate = {name: tokens / best[name] for name in paths}
  speedup = rate["engine_slots"] / rate["one_batch"]
  date = datetime.date.today().isoformat()
  command = "python launch/bench_rollouts.py " + " ".join(sys.argv[1:])
  rows = [dict(path=name, prompts=p, group=g, rows=p * g,
               slots=slots if name == "engine_slots" else p * g,
               short=_SHORT.value, long=_LONG.value, tokens=tokens,
               best_s=round(best[name], 3), tokens_per_s=round(rate[name], 1),
               speedup=round(rate[name] / rate["one_batch"], 3),
               prefills=p if name == "engine_slots" else p * g,
               decode_steps=sched.steps if name == "engine_slots" else one_batch_steps,
               refills=sched.refills if name == "engine_slots" else 0)
          for name in paths]
  for row in rows:
    print(", ".join(f"{k}={v}" for k, v in row.items()))
  print(f"thinking tokens per prompt (its G rows): {thinking[:, 0].tolist()}; every row as "
        f"forced: {bool((thinking == thinking[:, :1]).all())}")
  print(f"speed-up {speedup:.2f}x (goal >= 1.5x); load average {load_before:.2f} -> "
        f"{load_after:.2f}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs")
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w", newline="") as f:
      f.write(f"# {date}; command: {command}; checkpoint: o1jax/checkpoints/tiny "
              f"(the embedded reasoner); best of {_REPS.value} after a warm-up; load average "
              f"{load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} CPUs\n")
      w = csv.DictWriter(f, fieldnames=list(rows[0]))
      w.writeheader()
      w.writerows(rows)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
