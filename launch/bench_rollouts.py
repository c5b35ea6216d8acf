r"""GRPO rollout throughput: one think() over every row (the path before) against one prefill
per prompt forked to its G rows with continuous batching in engine slots (o1jax/rl/rollouts.py).

  python launch/bench_rollouts.py --out=docs/grpo/rollouts_bench.csv

The group mix has a 10x thinking-length spread, forced through per-prompt controls on the
embedded reasoner: half the prompts (shuffled, fixed seed) get budget = min_thinking =
--short thinking tokens, the others --long, so every row thinks exactly that long, then
closes and answers (up to --max_answer tokens). Both paths decode the same rows with the
same keys; the script checks that their Rollouts are identical, so both generate the same
tokens, counted the same way (`Rollouts.generated`: thinking, close and answer tokens).
A third path is the control for batch size: think() over batches of the engine's slot count
(whole groups), each padded to its own longest row. Rollout tokens/s is the best of --reps
timed runs of each path after a warm-up run of each
(compilation excluded), interleaved. With --uniform (default) the same is measured on a mix
with no spread (every prompt at the mean length), the control: there no row waits for a
longer one, and fewer slots only cost. The load average is recorded: the machine is shared.
"""

from __future__ import annotations

import csv
import dataclasses
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
_UNIFORM = flags.DEFINE_bool("uniform", True, "Also measure a mix with no spread (every "
                              "prompt at the mean length): the control.")
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
  slots = _SLOTS.value or rollouts.default_slots(p * g, g)
  command = "python launch/bench_rollouts.py " + " ".join(sys.argv[1:])
  loads = [os.getloadavg()[0]]

  def measure(mix: str, short: int, long: int) -> list[dict]:
    rng = np.random.default_rng(_SEED.value)
    lengths = [int(x) for x in rng.permutation([short] * (p // 2) + [long] * (p - p // 2))]
    common = dict(params=params, tokenizer=tok, think_config=config, problems=problems,
                  targets=[None] * p, group_size=g, budget=lengths, seed=_SEED.value,
                  min_thinking=lengths)
    schedule = {}

    def engine():
      r, schedule["last"] = rollouts.sample_groups_with_schedule(**common, slots=slots)
      return r

    def think_in_slot_sized_batches():
      # The control: think() batches as small as the engine's slots (whole groups), each
      # padded to its own longest row: a smaller batch without refills (its rows are keyed
      # from 0 in each batch: other draws, the same forced thinking lengths).
      per = max(1, slots // g)
      out = [rollouts.sample_groups_in_one_batch(
          **{**common, "problems": problems[i:i + per], "targets": [None] * len(
              problems[i:i + per]), "budget": lengths[i:i + per],
             "min_thinking": lengths[i:i + per]}) for i in range(0, p, per)]
      return dataclasses.replace(out[0], generated=sum(r.generated for r in out))

    paths = {"one_batch": lambda: rollouts.sample_groups_in_one_batch(**common),
             "slot_sized_batches": think_in_slot_sized_batches,
             "engine_slots": engine}
    warm = {name: fn() for name, fn in paths.items()}   # compiles; also the equality check
    a, b = warm["one_batch"], warm["engine_slots"]
    for field in ("tokens", "loss_mask", "thinking_ctx", "stop_reason", "thinking_tokens"):
      if not np.array_equal(getattr(a, field), getattr(b, field)):
        raise SystemExit(f"the two paths differ in {field}: the benchmark compares nothing")
    thinking = np.asarray(a.thinking_tokens).reshape(p, g)
    best = {name: float("inf") for name in paths}
    for _ in range(_REPS.value):
      for name, fn in paths.items():
        start = time.perf_counter()
        fn()
        best[name] = min(best[name], time.perf_counter() - start)
    loads.append(os.getloadavg()[0])
    # The one batch runs until its longest row ends, every step over every row.
    prompt_len = np.array([len(tok.encode_prompt(x)) for x in a.prompts])
    one_batch_steps = int(((a.tokens != tok.pad_id).sum(1) - prompt_len).max())
    sched = schedule["last"]
    rate = {name: warm[name].generated / best[name] for name in paths}
    print(f"{mix}: thinking tokens per prompt (its G rows): {thinking[:, 0].tolist()}; "
          f"every row as forced: {bool((thinking == thinking[:, :1]).all())}")
    engine_row = lambda name, value, default: value if name == "engine_slots" else default
    batch = {"one_batch": p * g, "slot_sized_batches": max(1, slots // g) * g,
             "engine_slots": slots}
    return [dict(mix=mix, path=name, prompts=p, group=g, rows=p * g,
                 batch_rows=batch[name], short=short, long=long,
                 tokens=warm[name].generated, best_s=round(best[name], 3),
                 tokens_per_s=round(rate[name], 1),
                 speedup=round(rate[name] / rate["one_batch"], 3),
                 prefills=engine_row(name, sched.prefilled, p * g),
                 decode_steps=engine_row(name, sched.steps,
                                         one_batch_steps if name == "one_batch" else ""),
                 rounds=engine_row(name, sched.rounds, 1 if name == "one_batch" else ""),
                 refills=engine_row(name, sched.refills, 0))
            for name in paths]

  rows = measure("10x spread", _SHORT.value, _LONG.value)
  if _UNIFORM.value:  # the same tokens with no spread: what fewer slots cost when nothing waits
    mid = (_SHORT.value + _LONG.value) // 2
    rows += measure("uniform", mid, mid)
  for row in rows:
    print(", ".join(f"{k}={v}" for k, v in row.items()))
  speedup = rows[2]["speedup"]
  print(f"speed-up on the 10x spread {speedup:.2f}x (goal >= 1.5x); load average "
        f"{' -> '.join(f'{x:.2f}' for x in loads)}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs")
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w", newline="") as f:
      f.write(f"# {datetime.date.today().isoformat()}; command: {command}; checkpoint: "
              f"o1jax/checkpoints/tiny (the embedded reasoner); best of {_REPS.value} after a "
              f"warm-up; load average {' -> '.join(f'{x:.2f}' for x in loads)} on "
              f"{os.cpu_count()} CPUs\n")
      w = csv.DictWriter(f, fieldnames=list(rows[0]))
      w.writeheader()
      w.writerows(rows)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
