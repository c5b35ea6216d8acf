"""Serving benchmark: the article's 90/10 traffic through each scheduling policy.

  python launch/bench_serving.py --out=docs/serving
  python launch/bench_serving.py --policies=fcfs,spf --loads=0.8 --duration_s=10 --out=/tmp/s

Measures the capacity first (a closed-loop run of the same mix), then for each load (a share
of that capacity) one Poisson stream of held-out prompts that every policy serves in real
time. Writes OUT/serving.csv (policy, load, class rows), OUT/serving.png (latency
distributions per class and policy), OUT/impact.csv (the article's serving-impact table)
and OUT/summary.json (capacity, engine vs think() tokens/s, compilations, the goals).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time

import jax
from absl import app, flags

_POLICIES = flags.DEFINE_list("policies", ["static", "fcfs", "preempt", "pools", "spf"],
                              "Policies (static: think() on batches, the pre-engine baseline).")
_LOADS = flags.DEFINE_list("loads", ["0.5", "0.8", "0.95"], "Shares of measured capacity.")
_DURATION = flags.DEFINE_float("duration_s", 20.0, "Seconds of arrivals per (policy, load).")
_SLOTS = flags.DEFINE_integer("slots", 8, "Engine slots.")
_SEED = flags.DEFINE_integer("seed", 0, "Prompt draw and arrival times.")
_OUT = flags.DEFINE_string("out", "out/serving", "Output directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "o1jax checkpoint (default: embedded).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory instead.")
_HARD_THRESHOLD = flags.DEFINE_float("hard_threshold", 100.0,
                                     "Predicted thinking tokens from which a request is hard.")
_PREEMPT_AFTER = flags.DEFINE_integer("preempt_after", 48, "preempt: thinking tokens before a "
                                      "request may be paused.")
_FAST_SLOTS = flags.DEFINE_integer("fast_slots", 5, "pools: slots of the fast pool (hard "
                                   "requests carry about a third of the tokens: 3 of 8).")
_CLOCK = flags.DEFINE_enum("clock", "cost", ["cost", "wall"], "cost: time from a cost model "
                           "of the engine's calls measured first (reproducible on a VM whose "
                           "speed drifts; every token is still decoded); wall: real time.")
_CAPACITY_REQUESTS = flags.DEFINE_integer("capacity_requests", 0, "Closed-loop requests for "
                                          "the capacity run (0: 60 per slot).")


def _load():
  if _HF_DIR.value:
    from o1jax.hf import load_hf
    params, model_config, tokenizer = load_hf(_HF_DIR.value)
    return params, model_config, tokenizer, None
  from o1jax.serving.predictor import load_thinking_head
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  params, model_config, _ = load_params(_CHECKPOINT.value or embedded_checkpoint_dir())
  head = None if _CHECKPOINT.value else load_thinking_head()[0]
  return params, model_config, CharTokenizer(), head


def _engine_vs_think(params, tokenizer, config, prompts, slots, rounds: int = 5):
  """tokens/s of the engine with every slot full against think() on the same batch:
  `rounds` alternating runs of each after a compiling one, medians (the VM's speed drifts)."""
  import numpy as np
  from o1jax.serving import Engine, Request
  from o1jax.thinking import think_texts
  prompts = prompts[:slots]
  think_s, engine_s, decode_s = [], [], []
  for r in range(rounds + 1):
    t = time.perf_counter()
    out = think_texts(params, tokenizer, prompts, config, seed=list(range(slots)))
    think_s.append(time.perf_counter() - t)
    engine = Engine(params, tokenizer, config, slots)
    t = time.perf_counter()
    prefixes = engine.prefill_batch([Request(p, seed=slot) for slot, p in enumerate(prompts)])
    for slot, prefix in enumerate(prefixes):
      engine.insert(prefix, slot)
    jax.block_until_ready(engine.state)
    t_decode = time.perf_counter()
    while engine.generate(64) == 64:   # the scheduler's k when every slot is busy
      pass
    view = engine.view()
    engine_s.append(time.perf_counter() - t)
    decode_s.append(time.perf_counter() - t_decode)
  med = lambda xs: float(np.median(xs[1:]))
  think_tokens = sum(o.thinking_tokens + o.answer_tokens + 1 for o in out)
  engine_tokens = int(view.num_generated.sum())
  return dict(rounds=rounds, think_tokens_per_s=think_tokens / med(think_s),
              engine_tokens_per_s=engine_tokens / med(engine_s),
              engine_decode_tokens_per_s=engine_tokens / med(decode_s),
              engine_over_think=(engine_tokens / med(engine_s)) / (think_tokens / med(think_s)),
              engine_decode_over_think=(engine_tokens / med(decode_s)) /
              (think_tokens / med(think_s)),
              same_tokens=engine_tokens == think_tokens)


def _plot(rows_by_run, out_png):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  loads = sorted({load for _, load in rows_by_run})
  fig, axes = plt.subplots(1, len(loads), figsize=(5 * len(loads), 4), squeeze=False)
  for ax, load in zip(axes[0], loads):
    for (policy, l), lat in sorted(rows_by_run.items()):
      if l != load:
        continue
      for klass, style in (("easy", "-"), ("hard", "--")):
        xs = np.sort(lat[klass])
        if len(xs):
          ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), style,
                  label=f"{policy} {klass}")
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (s)")
    ax.set_ylabel("share of requests")
    ax.set_title(f"load {load:.0%} of capacity")
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_png, dpi=110)


def main(argv):
  del argv
  from o1jax.serving import Engine, Scheduler, SchedulerConfig, cost_clock
  from o1jax.serving import workload as wl
  from o1jax.thinking import make_think_config
  os.makedirs(_OUT.value, exist_ok=True)
  bench_start = time.perf_counter()
  params, model_config, tokenizer, head = _load()
  config = make_think_config(model_config, tokenizer)
  slots = _SLOTS.value
  pools = wl.prompt_pools(_SEED.value)

  costs = None

  def scheduler(policy):
    """A fresh engine and scheduler, and the clock both read."""
    engine = Engine(params, tokenizer, config, slots, budget_head=head)
    clock = time.monotonic
    if costs is not None:
      clock = cost_clock.CostClock()
      engine = cost_clock.ClockedEngine(engine, costs, clock)
    cfg = SchedulerConfig(policy=policy, hard_threshold=_HARD_THRESHOLD.value,
                          preempt_after=_PREEMPT_AFTER.value,
                          fast_slots=min(_FAST_SLOTS.value, slots - 1))
    return Scheduler(engine, cfg, clock=clock), clock

  # Compile everything once (every prefill batch and width bucket of the mix, evict and
  # resume), so no run below pays for it.
  sched, _ = scheduler("preempt")
  sched.engine.warm_up(pools["easy"] + pools["hard"])
  wl.drive(sched, wl.article_stream(2 * slots, 0.0, _SEED.value + 1, pools=pools))
  if _CLOCK.value == "cost":
    costs = cost_clock.CostModel.measure(sched.engine, pools["hard"])
    print("cost model (ms): " + ", ".join(f"{k} {v * 1e3:.3f}"
                                         for k, v in dataclasses.asdict(costs).items()))
  n_cap = _CAPACITY_REQUESTS.value or 60 * slots
  cap_stream = wl.article_stream(n_cap, 0.0, _SEED.value + 2, pools=pools)
  # Saturation: 8 requests per slot in the system, so a slot never waits for work.
  sched, clock = scheduler("fcfs")
  capacity, _, cap_wall = wl.capacity(sched, cap_stream, concurrency=8 * slots, clock=clock)
  print(f"capacity: {capacity:.2f} requests/s ({n_cap} requests in {cap_wall:.1f} s, "
        f"{slots} slots, {8 * slots} in the system at all times)")
  versus = _engine_vs_think(params, tokenizer, config, pools["easy"][:slots // 2] +
                            pools["hard"][:slots], slots)
  print(f"engine at full slots: {versus['engine_tokens_per_s']:.0f} tokens/s with prefill, "
        f"{versus['engine_decode_tokens_per_s']:.0f} decoding; think() "
        f"{versus['think_tokens_per_s']:.0f}: {versus['engine_over_think']:.2f}x, "
        f"{versus['engine_decode_over_think']:.2f}x")
  compiles_before = Engine.compilations()

  rows, latencies, impact, streams, rejected = [], {}, None, {}, {}
  for load in map(float, _LOADS.value):
    rate = load * capacity
    stream = wl.article_stream(max(1, round(rate * _DURATION.value)), rate, _SEED.value,
                               pools=pools)
    streams[load] = wl.stream_stats(stream, pools)
    for policy in _POLICIES.value:
      print(f"{policy} at {load:.0%} ({rate:.2f} requests/s, {len(stream)} requests)")
      sched, clock = scheduler(policy)
      done, wall = wl.drive(sched, stream, clock=clock, log=print)
      kv = sched.engine.kv_bytes_per_token()
      rows += wl.summarize(policy, load, stream, done, wall, kv)
      rejected[f"{policy}@{load}"] = sched.rejected["queue_full"]
      klass = {a.request.id: a.klass for a in stream}
      latencies[(policy, load)] = {k: [c.latency for c in done if klass[c.id] == k]
                                   for k in ("easy", "hard")}
      if policy == "fcfs" and impact is None:
        impact = wl.impact_rows(stream, done, kv, slots)

  with open(os.path.join(_OUT.value, "serving.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=wl.CSV_COLUMNS)
    w.writeheader()
    w.writerows(rows)
  if impact:
    with open(os.path.join(_OUT.value, "impact.csv"), "w", newline="") as f:
      w = csv.DictWriter(f, fieldnames=list(impact[0]))
      w.writeheader()
      w.writerows(impact)
  _plot(latencies, os.path.join(_OUT.value, "serving.png"))

  print(f"\n{'policy':8} {'load':>5} {'class':5} {'n':>4} {'p50_s':>7} {'p99_s':>7} "
        f"{'ttfa50':>7} {'ttfa99':>7} {'rps':>6} {'tok/s':>7} {'think':>6} {'preempt':>7}")
  for r in rows:
    print(f"{r['policy']:8} {r['load']:5.2f} {r['class']:5} {r['requests']:4d} "
          f"{r['p50_s']:7.2f} {r['p99_s']:7.2f} {r['ttfa_p50_s']:7.2f} {r['ttfa_p99_s']:7.2f} "
          f"{r['throughput_rps']:6.2f} {r['tokens_per_s']:7.0f} {r['thinking_tokens']:6.1f} "
          f"{r['preemptions']:7d}")

  goals = {}
  pick = lambda p, load, k: next((r for r in rows if (r["policy"], r["load"], r["class"]) ==
                                  (p, load, k)), None)
  if "fcfs" in _POLICIES.value and 0.8 in map(float, _LOADS.value):
    fcfs_easy, fcfs_all = pick("fcfs", 0.8, "easy"), pick("fcfs", 0.8, "all")
    others = [p for p in _POLICIES.value if p not in ("fcfs", "static")]
    if others:
      best = min(others, key=lambda p: pick(p, 0.8, "easy")["p99_s"])
      goals = dict(
          best_policy=best,
          easy_p99_ratio=fcfs_easy["p99_s"] / pick(best, 0.8, "easy")["p99_s"],
          throughput_ratio=pick(best, 0.8, "all")["throughput_rps"] / fcfs_all["throughput_rps"])
      goals["met_p99_5x"] = goals["easy_p99_ratio"] >= 5
      goals["met_throughput_95"] = goals["throughput_ratio"] >= 0.95
  goals["met_engine_90"] = versus["engine_over_think"] >= 0.9
  summary = dict(clock=_CLOCK.value,
                 cost_model=dataclasses.asdict(costs) if costs is not None else None,
                 slots=slots, capacity_rps=capacity, capacity_requests=n_cap,
                 duration_s=_DURATION.value, seed=_SEED.value, streams=streams,
                 rejected_queue_full=rejected,
                 engine_vs_think=versus, compilations_after_warmup=compiles_before,
                 compilations_at_end=Engine.compilations(), goals=goals,
                 impact=impact, bench_wall_s=time.perf_counter() - bench_start)
  with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps(goals, indent=2))
  print(f"compilations: {Engine.compilations()} (after warm-up: {compiles_before})")
  print(f"wrote {_OUT.value}/serving.csv, serving.png, impact.csv, summary.json in "
        f"{time.perf_counter() - bench_start:.0f} s")


if __name__ == "__main__":
  app.run(main)
