r"""Search throughput: step-level beam search at N=16 against 16 independent think() calls.

  python launch/bench_search.py --out=docs/search/bench_search.json

On the same held-out problems at the same temperature, in one process, interleaved:
  * independent: `think_texts` on every prompt repeated N times (N prefills per problem,
    one compiled loop to the end, no scoring): what 16 separate requests cost;
  * sample: the search module's best-of-N rows (one prefill, N rows forked by gather, PRM and
    ORM read in the loop);
  * beam: step-level beam search (N rows, width 4; one host round trip per step).
Problems/s and generated tokens/s are medians of --reps timed runs after a warm-up run
(compilation excluded). The machine's load average is recorded: CPU timings drift with it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_N = flags.DEFINE_integer("n", 16, "Samples / beam rows per problem.")
_PROBLEMS = flags.DEFINE_integer("problems", 16, "Held-out countdown problems (level 3).")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.5, "Sampling temperature.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions (median reported).")
_OUT = flags.DEFINE_string("out", "runs/bench_search.json", "Output JSON.")


def main(argv):
  del argv
  import jax
  import numpy as np

  from o1jax import tasks as tasks_lib
  from o1jax.model.heads import load_head
  from o1jax.search import SearchConfig, search
  from o1jax.serving.predictor import SHIPPED_DIR
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config, think_texts
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  params, model_config, _ = load_params(embedded_checkpoint_dir())
  tok = CharTokenizer()
  config = make_think_config(model_config, tok, model_config.max_seq_len, max_answer_tokens=16)
  heads = {k: load_head(SHIPPED_DIR, k)[0].head for k in ("prm", "orm")}
  prompts = sorted({p.prompt for p in tasks_lib.get_task("countdown").generate_problems(
      0, 3, 4 * _PROBLEMS.value, split="eval")})[:_PROBLEMS.value]
  n, rows = _N.value, _N.value * len(prompts)

  def independent():
    out = think_texts(params, tok, [p for p in prompts for _ in range(n)], config,
                      seed=list(range(rows)), batch_size=min(rows, 256),
                      temperature=_TEMPERATURE.value)
    return sum(t.thinking_tokens + t.answer_tokens + 1 for t in out)

  def searched(strategy):
    def run():
      res = search(params, tok, prompts, config,
                   SearchConfig(strategy=strategy, n=n, beam_width=4,
                                temperature=_TEMPERATURE.value, rows_per_batch=256),
                   heads=heads)
      return sum(c.generated_tokens for c in res.compute)
    return run

  variants = {"independent": independent, "sample": searched("sample"),
              "beam": searched("beam")}
  for fn in variants.values():   # warm-up: compile
    fn()
  times = {k: [] for k in variants}
  tokens = {}
  load_before = os.getloadavg()
  for _ in range(_REPS.value):
    for name, fn in variants.items():
      start = time.perf_counter()
      tokens[name] = fn()
      times[name].append(time.perf_counter() - start)
  results = {}
  for name in variants:
    t = statistics.median(times[name])
    results[name] = dict(seconds=round(t, 3), problems_per_s=round(len(prompts) / t, 3),
                         generated_tokens=int(tokens[name]),
                         tokens_per_s=round(tokens[name] / t, 1))
    print(f"{name:<12} {results[name]['problems_per_s']:8.3f} problems/s "
          f"{results[name]['tokens_per_s']:10.1f} tokens/s ({tokens[name]:,} tokens, {t:.2f}s)")
  base = results["independent"]["problems_per_s"]
  for name in ("sample", "beam"):
    results[name]["vs_independent"] = round(results[name]["problems_per_s"] / base, 2)
  report = dict(n=n, problems=len(prompts), temperature=_TEMPERATURE.value,
                reps=_REPS.value, results=results, machine=platform.processor() or
                platform.machine(), cpus=os.cpu_count(), jax=jax.__version__,
                load_average_before=load_before, load_average_after=os.getloadavg(),
                date=time.strftime("%Y-%m-%d"))
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report["results"], indent=1))


if __name__ == "__main__":
  app.run(main)
