"""Serving benchmark: bimodal reasoning traffic through each scheduling policy, and SLO mode.

  python launch/bench_serving.py --out=docs/serving
  python launch/bench_serving.py --mix=article --arrivals=poisson --loads=0.95 --seeds=0 \
      --policies=fcfs,preempt --out=/tmp/s

Grid: every (mix, arrivals, load, seed) point is one stream (o1jax/serving/workload.py)
that every policy serves. Time is on the cost clock (o1jax/serving/cost_clock.py): the
engine's calls are timed once on this machine and each call then costs its median. The
requests' outcomes are decoded once by the real model and replayed (o1jax/serving/
replay.py; `--validate_replay` checks the replay against the engine on one point). The
`--wall` points are served again by the real engine on the wall clock, with the same
arrival schedule, and both are reported. `--slo_p99_s`: SLO mode against FCFS from 0.5x to
2x capacity, with the accuracy of the answers.

Writes OUT/serving.csv (one row per point, policy, class and clock), OUT/pooled.csv (seeds
pooled, bootstrap intervals, ratios to FCFS), OUT/slo.csv, OUT/serving.png, OUT/slo.png and
OUT/summary.json (capacities, cost model, validation, wall-vs-cost gaps, the goals).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time

import numpy as np
from absl import app, flags

_MIX = flags.DEFINE_list("mix", ["real", "article"], "Mixes (workload.MIXES).")
_ARRIVALS = flags.DEFINE_list("arrivals", ["poisson", "bursty"], "Arrival processes.")
_LOADS = flags.DEFINE_list("loads", ["0.5", "0.8", "0.95"], "Shares of measured capacity.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Stream seeds.")
_POLICIES = flags.DEFINE_list("policies", ["fcfs", "spf", "pools", "preempt"], "Policies.")
_REQUESTS = flags.DEFINE_integer("requests", 1200, "Requests per point.")
_SLOTS = flags.DEFINE_integer("slots", 8, "Engine slots.")
_WALL = flags.DEFINE_list("wall", ["article:poisson:0:0.8"],
                          "Points (mix:arrivals:seed:load) also served by the real engine on "
                          "the wall clock, every policy, with the same arrival schedule.")
_WALL_REQUESTS = flags.DEFINE_integer("wall_requests", 300, "Requests of a wall point (the "
                                      "first ones of its stream; its cost point reruns them).")
_WALL_POLICIES = flags.DEFINE_list("wall_policies", ["fcfs", "preempt"], "Policies of the "
                                   "wall points.")
_SLO = flags.DEFINE_float("slo_p99_s", None, "SLO mode's p99 target (seconds); 0: 1.5x FCFS's "
                          "p99 at the first SLO load; none: no SLO curve.")
_SLO_LOADS = flags.DEFINE_list("slo_loads", ["0.5", "0.75", "1.0", "1.25", "1.5", "2.0"],
                               "SLO curve: offered load as a share of FCFS capacity.")
_SLO_MIX = flags.DEFINE_string("slo_mix", "real", "SLO curve's mix.")
_SLO_REQUESTS = flags.DEFINE_integer("slo_requests", 1000, "Requests per SLO point.")
_REAL_POOL = flags.DEFINE_list("real_pool", ["256", "64"], "Easy and hard prompts the real "
                                "mix draws from.")
_ARTICLE_POOL = flags.DEFINE_list("article_pool", ["256", "16"], "Easy and hard prompts the "
                                   "article mix draws from (its hard thinking is forced).")
_VALIDATE = flags.DEFINE_string("validate_replay", "article:poisson:0:0.95:preempt",
                                "mix:arrivals:seed:load:policy served by the engine and by "
                                "the replay on the cost clock (first 200 requests); '' skips.")
_OUT = flags.DEFINE_string("out", "out/serving", "Output directory.")
_CACHE = flags.DEFINE_string("cache", "", "Outcome cache file (JSON; reused when it exists).")
_COST_MODEL = flags.DEFINE_string("cost_model", "", "A summary.json (or cost model JSON) of an "
                                  "earlier run whose cost model to reuse; '': measure it now.")
_ENGINE_VS_THINK = flags.DEFINE_bool("engine_vs_think", False, "Also time the engine with "
                                     "every slot full against think() on the same batch.")
_DECODE_ONLY = flags.DEFINE_bool("decode_only", False, "Decode the outcomes into --cache, exit.")


def _load():
  from o1jax.serving.predictor import load_thinking_head
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  params, model_config, _ = load_params(embedded_checkpoint_dir())
  return params, model_config, CharTokenizer(), load_thinking_head()[0]


def _engine_vs_think(params, tokenizer, config, prompts, slots, rounds: int = 5):
  """tokens/s of the engine with every slot full against think() on the same batch:
  `rounds` alternating runs of each after a compiling one, medians (the VM's speed drifts)."""
  from o1jax.serving import Engine, Request
  import jax
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



def _point(spec: str):
  mix, arrivals, seed, load, *rest = spec.split(":")
  return (mix, arrivals, int(seed), float(load), *rest)


def main(argv):
  del argv
  from o1jax.serving import Engine, Scheduler, SchedulerConfig, cost_clock
  from o1jax.serving import replay, report
  from o1jax.serving import workload as wl
  from o1jax.thinking import make_think_config
  os.makedirs(_OUT.value, exist_ok=True)
  t_start = time.perf_counter()
  params, model_config, tokenizer, head = _load()
  config = make_think_config(model_config, tokenizer)
  slots = _SLOTS.value
  seeds = [int(s) for s in _SEEDS.value]
  loads = [float(x) for x in _LOADS.value]
  # One set of held-out prompts, in another order per seed (the decoded outcomes are shared).
  # The real mix draws from the first `real_pool` easy and hard prompts of it (requests
  # repeat prompts; outcomes depend on the prompt only, and the decoding fits the machine).
  base = wl.prompt_pools(0)
  real = {k: v[:n] for (k, v), n in zip(base.items(), map(int, _REAL_POOL.value))}
  article = {k: v[:n] for (k, v), n in zip(base.items(), map(int, _ARTICLE_POOL.value))}
  order = lambda pool, s: pool if s == 0 else {
      k: [v[i] for i in np.random.default_rng([s, 7]).permutation(len(v))]
      for k, v in pool.items()}
  all_seeds = set(seeds) | {0, 1000}
  mix_pools = {("article", s): order(article, s) for s in all_seeds} | {
      ("real", s): order(real, s) for s in all_seeds}
  pools = {0: base}
  engine = Engine(params, tokenizer, config, slots, budget_head=head)
  engine.warm_up(pools[0]["easy"] + pools[0]["hard"])
  cache = replay.OutcomeCache(engine, _CACHE.value or None)

  def scheduler(policy, real=False, wall=False, **kw):
    clock = time.monotonic if wall else cost_clock.CostClock()
    eng = Engine(params, tokenizer, config, slots, budget_head=head) if real else \
        replay.ReplayEngine(cache, slots)
    if not wall:
      eng = cost_clock.ClockedEngine(eng, costs, clock)
    return Scheduler(eng, SchedulerConfig(policy=policy, **kw), clock=clock), clock

  def correct_of(stream, done):
    by_id = {a.request.id: a.request for a in stream}
    def asked(c):   # the request as it ran (SLO mode may have cut its budget)
      r = by_id[c.id]
      if c.budget == r.budget:
        return r
      return dataclasses.replace(r, budget=c.budget, min_thinking=min(r.min_thinking, c.budget))
    return {c.id: cache.get(asked(c)).correct for c in done}

  def run(policy, stream, real=False, wall=False, **kw):
    sched, clock = scheduler(policy, real, wall, **kw)
    done, span = wl.drive(sched, stream, clock=clock, time_limit_s=3600)
    return sched, done, span

  # Decode every request the grid serves, once (the streams of one seed share requests).
  todo = []
  for mix in _MIX.value:
    for s in seeds:
      todo += [a.request for a in wl.stream(mix, _REQUESTS.value, 1.0, s, pools=mix_pools[mix, s])]
    todo += [a.request for a in wl.stream(mix, 60 * slots, 0.0, 1000, pools=mix_pools[mix, 0])]
  if _SLO.value is not None:
    from o1jax.serving.slo import LEVELS
    for a in wl.stream(_SLO_MIX.value, _SLO_REQUESTS.value, 1.0, 0,
                        pools=mix_pools[_SLO_MIX.value, 0]):
      todo += [a.request] + [dataclasses.replace(a.request, budget=b, min_thinking=min(
          a.request.min_thinking, b)) for b in LEVELS]
  t = time.perf_counter()
  decoded = cache.fill(todo, log=print)
  print(f"decoded {decoded} request outcomes in {time.perf_counter() - t:.0f} s")
  if _DECODE_ONLY.value:
    return
  if _COST_MODEL.value:
    with open(_COST_MODEL.value) as f:
      data = json.load(f)
    costs = cost_clock.CostModel(**data.get("cost_model", data))
  else:
    costs = cost_clock.CostModel.measure(engine, pools[0]["hard"])
  print("cost model (ms): " + ", ".join(f"{k} {v * 1e3:.3f}"
                                       for k, v in dataclasses.asdict(costs).items()))

  # Capacity per mix: a closed loop of FCFS (8 requests per slot in the system).
  capacity = {}
  for mix in _MIX.value + ([_SLO_MIX.value] if _SLO.value is not None else []):
    if mix in capacity:
      continue
    sched, clock = scheduler("fcfs")
    cap_stream = wl.stream(mix, 60 * slots, 0.0, 1000, pools=mix_pools[mix, 0])
    capacity[mix] = wl.capacity(sched, cap_stream,
                                concurrency=8 * slots, clock=clock)[0]
    print(f"capacity {mix}: {capacity[mix]:.2f} requests/s (cost clock)")

  validation = {}
  if _VALIDATE.value:   # the replay against the engine, both on the cost clock
    mix, arr, s, load, policy = _point(_VALIDATE.value)
    stream = wl.stream(mix, 200, load * capacity[mix], s, arr, pools=mix_pools[mix, s])
    _, real_done, _ = run(policy, stream, real=True)
    _, rep_done, _ = run(policy, stream)
    a = {c.id: (c.latency, c.thinking_tokens, c.preemptions) for c in real_done}
    b = {c.id: (c.latency, c.thinking_tokens, c.preemptions) for c in rep_done}
    diff = max(abs(a[k][0] - b[k][0]) for k in a)
    validation = dict(point=_VALIDATE.value, requests=len(a),
                      same_thinking=all(a[k][1] == b[k][1] for k in a),
                      same_preemptions=all(a[k][2] == b[k][2] for k in a),
                      max_latency_diff_s=diff)
    print(f"replay vs engine: {validation}")

  rows, lat, impact = [], {}, {}
  for mix in _MIX.value:
    for arr in _ARRIVALS.value:
      for load in loads:
        for s in seeds:
          stream = wl.stream(mix, _REQUESTS.value, load * capacity[mix], s, arr,
                             pools=mix_pools[mix, s])
          t = time.perf_counter()
          for policy in _POLICIES.value:
            sched, done, span = run(policy, stream)
            rows += wl.summarize(policy, load, stream, done, span,
                                 sched.engine.kv_bytes_per_token(), mix=mix, arrivals=arr,
                                 seed=s, correct=correct_of(stream, done))
            if policy == "fcfs" and load == min(loads) and s == seeds[0] and arr == "poisson":
              impact[mix] = wl.impact_rows(stream, done, sched.engine.kv_bytes_per_token(),
                                           slots)
            by_id = {c.id: c.latency for c in done}
            for a in stream:
              lat.setdefault((mix, arr, load, policy, a.klass, s), []).append(by_id[a.request.id])
          e = {r["policy"]: r["p99_s"] for r in rows[-3 * len(_POLICIES.value):]
               if r["class"] == "easy"}
          print(f"{mix} {arr} load {load} seed {s}: easy p99 " +
                " ".join(f"{p} {v:.3f}" for p, v in e.items()) +
                f" ({time.perf_counter() - t:.1f} s)")

  # The wall clock: the real engine, the same arrival schedule (the first wall_requests).
  wall = []
  for spec in _WALL.value:
    mix, arr, s, load = _point(spec)
    if mix not in capacity:
      continue
    stream = wl.stream(mix, _WALL_REQUESTS.value, load * capacity[mix], s, arr,
                       pools=mix_pools[mix, s])
    for policy in _WALL_POLICIES.value:
      out = {}
      for clock in ("cost", "wall"):
        sched, done, span = run(policy, stream, real=clock == "wall", wall=clock == "wall")
        out[clock] = wl.summarize(policy, load, stream, done, span,
                                  sched.engine.kv_bytes_per_token(), mix=mix, arrivals=arr,
                                  seed=s, clock=clock, correct=correct_of(stream, done))
      rows += out["wall"]
      for c_row, w_row in zip(out["cost"], out["wall"]):
        wall.append(dict(point=spec, policy=policy, **{"class": c_row["class"]},
                         requests=c_row["requests"], cost_p50_s=c_row["p50_s"],
                         wall_p50_s=w_row["p50_s"], cost_p99_s=c_row["p99_s"],
                         wall_p99_s=w_row["p99_s"], gap_p99=w_row["p99_s"] / c_row["p99_s"]))
      print(f"wall {spec} {policy}: easy p99 cost {out['cost'][0]['p99_s']:.3f} s, wall "
            f"{out['wall'][0]['p99_s']:.3f} s")

  slo_rows, slo_s = [], _SLO.value
  if slo_s is not None:
    mix = _SLO_MIX.value
    for load in map(float, _SLO_LOADS.value):
      stream = wl.stream(mix, _SLO_REQUESTS.value, load * capacity[mix], 0, "poisson",
                         pools=mix_pools[mix, 0])
      for mode in ("fcfs", "slo"):
        sched, done, span = run("fcfs", stream, **(dict(slo_p99_s=slo_s) if mode == "slo"
                                                   else {}))
        ok = correct_of(stream, done)
        lats = [c.latency for c in done]
        scored = [v for v in ok.values() if v is not None]
        acc = report.wilson(sum(scored), len(scored))
        slo_rows.append(dict(
            mode=mode, load=load, offered=len(stream), served=len(done),
            rejected=sched.rejected["queue_full"], p50_s=float(np.percentile(lats, 50)),
            p99_s=float(np.percentile(lats, 99)), accuracy=acc[0], accuracy_low=acc[1],
            accuracy_high=acc[2], thinking_tokens=float(np.mean([c.thinking_tokens
                                                                 for c in done])),
            budget_cut=float(np.mean([c.budget is not None for c in done])),
            throughput_rps=len(done) / span))
        if not slo_s:   # auto: 1.5x FCFS's p99 at the first load
          slo_s = 1.5 * slo_rows[-1]["p99_s"]
          print(f"SLO: {slo_s:.3f} s")
        print(f"slo curve {mode} load {load}: p99 {slo_rows[-1]['p99_s']:.3f} s, accuracy "
              f"{acc[0]:.3f}, served {len(done)}/{len(stream)}")

  _write(os.path.join(_OUT.value, "serving.csv"), rows, wl.CSV_COLUMNS)
  pooled = _pooled(lat, rows, report)
  _write(os.path.join(_OUT.value, "pooled.csv"), pooled)
  if wall:
    _write(os.path.join(_OUT.value, "wall_vs_cost.csv"), wall)
  _write(os.path.join(_OUT.value, "impact.csv"),
         [dict(mix=m, **r) for m, rs in impact.items() for r in rs])
  if slo_rows:
    _write(os.path.join(_OUT.value, "slo.csv"), slo_rows)
  goals = _goals(pooled, slo_rows, slo_s)
  with open(os.path.join(_OUT.value, "tables.md"), "w") as f:
    f.write(_markdown(pooled, slo_rows, wall, capacity))
  _plot(pooled, slo_rows, slo_s, _OUT.value)
  versus = None
  if _ENGINE_VS_THINK.value:
    versus = _engine_vs_think(params, tokenizer, config, base["easy"][:slots // 2] +
                              base["hard"][:slots], slots)
    print(f"engine at full slots over think(): {versus['engine_over_think']:.2f}x")
  summary = dict(clock="cost", engine_vs_think=versus, cost_model=dataclasses.asdict(costs), slots=slots,
                 capacity_rps=capacity, requests_per_point=_REQUESTS.value, seeds=seeds,
                 replay_validation=validation, wall_vs_cost=wall, goals=goals,
                 compilations=Engine.compilations(),
                 bench_wall_s=time.perf_counter() - t_start)
  with open(os.path.join(_OUT.value, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(json.dumps(goals, indent=2))
  print(f"wrote {_OUT.value} in {time.perf_counter() - t_start:.0f} s")


def _write(path, rows, columns=None):
  if not rows:
    return
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(columns or rows[0]))
    w.writeheader()
    w.writerows(rows)


def _pooled(lat, rows, report):
  """Seeds pooled per (mix, arrivals, load, policy, class): p50, p99 with intervals, the
  p99 ratio to FCFS (paired), throughput relative to FCFS."""
  out = []
  keys = sorted({k[:4] for k in lat})
  for mix, arr, load, policy in keys:
    thr = lambda p: np.mean([r["throughput_rps"] for r in rows if r["clock"] == "cost" and
                             (r["mix"], r["arrivals"], r["load"], r["policy"], r["class"]) ==
                             (mix, arr, load, p, "all")])
    for klass in ("easy", "hard", "all"):
      def by_seed(p):
        seeds = sorted({k[5] for k in lat if k[:4] == (mix, arr, load, p)})
        cls = ("easy", "hard") if klass == "all" else (klass,)
        return [np.concatenate([lat[(mix, arr, load, p, c, s)] for c in cls
                                if (mix, arr, load, p, c, s) in lat]) for s in seeds]
      xs = by_seed(policy)
      p99, lo, hi = report.p_with_ci(xs, 99)
      r = dict(mix=mix, arrivals=arr, load=load, policy=policy, **{"class": klass},
               requests=int(sum(len(x) for x in xs)), p50_s=report.pooled(xs, 50),
               p99_s=p99, p99_low=lo, p99_high=hi)
      if ("fcfs" in {k[3] for k in keys}):
        ratio = report.ratio_with_ci(xs, by_seed("fcfs"), 99)
        r.update(p99_over_fcfs=ratio[0], ratio_low=ratio[1], ratio_high=ratio[2],
                 throughput_over_fcfs=thr(policy) / thr("fcfs"))
      out.append(r)
  return out


def _goals(pooled, slo_rows, slo_s):
  goals = {}
  get = lambda **kw: [r for r in pooled if all(r[k] == v for k, v in kw.items())]
  easy = [r for r in get(**{"class": "easy"}) if r["policy"] != "fcfs"]
  if easy and "p99_over_fcfs" in easy[0]:
    worst = max(easy, key=lambda r: r["p99_over_fcfs"])
    goals["no_policy_10pct_above_fcfs"] = dict(
        met=all(r["p99_over_fcfs"] <= 1.10 for r in easy),
        failures=[f"{r['mix']} {r['arrivals']} {r['load']} {r['policy']}: "
                  f"{r['p99_over_fcfs']:.2f}x [{r['ratio_low']:.2f}, {r['ratio_high']:.2f}]"
                  for r in easy if r["p99_over_fcfs"] > 1.10],
        worst=f"{worst['mix']} {worst['arrivals']} {worst['load']} {worst['policy']}: "
              f"{worst['p99_over_fcfs']:.2f}x")
  for arr in sorted({r["arrivals"] for r in pooled}):
    cands = get(mix="article", arrivals=arr, load=0.95, **{"class": "easy"})
    base = get(mix="article", arrivals=arr, load=0.5, policy="fcfs", **{"class": "easy"})
    fcfs_hard = get(mix="article", arrivals=arr, load=0.95, policy="fcfs", **{"class": "hard"})
    if not (cands and base and fcfs_hard):
      continue
    best = min((r for r in cands if r["policy"] != "fcfs"), key=lambda r: r["p99_s"],
               default=None)
    if best is None:
      continue
    hard = get(mix="article", arrivals=arr, load=0.95, policy=best["policy"],
               **{"class": "hard"})[0]
    g = dict(best=best["policy"], easy_p99_s=best["p99_s"], target_s=2 * base[0]["p50_s"],
             throughput_over_fcfs=best["throughput_over_fcfs"],
             hard_p99_over_fcfs=hard["p99_s"] / fcfs_hard[0]["p99_s"])
    g["met"] = (g["easy_p99_s"] <= g["target_s"] and g["throughput_over_fcfs"] >= 0.95 and
                g["hard_p99_over_fcfs"] <= 1.5)
    goals[f"article_0.95_{arr}"] = g
  if slo_rows:
    slo = [r for r in slo_rows if r["mode"] == "slo" and r["load"] <= 1.5]
    goals["slo_within_to_1.5x"] = dict(
        slo_s=slo_s, met=all(r["p99_s"] <= slo_s for r in slo),
        p99_s={r["load"]: r["p99_s"] for r in slo},
        accuracy={r["load"]: r["accuracy"] for r in slo_rows if r["mode"] == "slo"},
        fcfs_accuracy={r["load"]: r["accuracy"] for r in slo_rows if r["mode"] == "fcfs"})
  return goals


def _markdown(pooled, slo_rows, wall, capacity) -> str:
  """The tables docs/SERVING.md shows, from the rows above (pasted, never hand-edited)."""
  out = []
  for mix in sorted({r["mix"] for r in pooled}):
    out.append(f"\n**{mix} mix** (capacity {capacity[mix]:.2f} requests/s; seeds pooled, "
               "p99 with 95% bootstrap intervals; ratio: p99 over FCFS's on the same requests, "
               "paired bootstrap)\n")
    out.append("| arrivals | load | policy | easy p50 s | easy p99 s | easy p99 / FCFS | "
               "hard p99 s | hard p99 / FCFS | throughput / FCFS |")
    out.append("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in sorted((r for r in pooled if r["mix"] == mix and r["class"] == "easy"),
                    key=lambda r: (r["arrivals"], r["load"], r["policy"] != "fcfs",
                                   r["policy"])):
      h = next(x for x in pooled if (x["mix"], x["arrivals"], x["load"], x["policy"],
                                     x["class"]) == (mix, r["arrivals"], r["load"],
                                                     r["policy"], "hard"))
      out.append(f"| {r['arrivals']} | {r['load']:.2f} | {r['policy']} | {r['p50_s']:.3f} | "
                 f"{r['p99_s']:.3f} [{r['p99_low']:.3f}, {r['p99_high']:.3f}] | "
                 f"{r['p99_over_fcfs']:.2f} [{r['ratio_low']:.2f}, {r['ratio_high']:.2f}] | "
                 f"{h['p99_s']:.3f} [{h['p99_low']:.3f}, {h['p99_high']:.3f}] | "
                 f"{h['p99_over_fcfs']:.2f} [{h['ratio_low']:.2f}, {h['ratio_high']:.2f}] | "
                 f"{r['throughput_over_fcfs']:.3f} |")
  if wall:
    out.append("\n| point | policy | class | requests | cost p50 s | wall p50 s | cost p99 s | "
               "wall p99 s | wall / cost (p99) |")
    out.append("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in wall:
      out.append(f"| {r['point']} | {r['policy']} | {r['class']} | {r['requests']} | "
                 f"{r['cost_p50_s']:.3f} | {r['wall_p50_s']:.3f} | {r['cost_p99_s']:.3f} | "
                 f"{r['wall_p99_s']:.3f} | {r['gap_p99']:.2f} |")
  if slo_rows:
    out.append("\n| offered load (x capacity) | mode | served / offered | rejected | p50 s | "
               "p99 s | accuracy [Wilson 95%] | thinking tokens | budget cut |")
    out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in slo_rows:
      out.append(f"| {r['load']:.2f} | {r['mode']} | {r['served']}/{r['offered']} | "
                 f"{r['rejected']} | {r['p50_s']:.3f} | {r['p99_s']:.3f} | "
                 f"{r['accuracy']:.3f} [{r['accuracy_low']:.3f}, {r['accuracy_high']:.3f}] | "
                 f"{r['thinking_tokens']:.1f} | {r['budget_cut']:.2f} |")
  return "\n".join(out) + "\n"


def _plot(pooled, slo_rows, slo_s, out):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = sorted({(r["mix"], r["arrivals"]) for r in pooled})
  fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False)
  for j, (mix, arr) in enumerate(panels):
    for i, klass in enumerate(("easy", "hard")):
      ax = axes[i][j]
      for policy in sorted({r["policy"] for r in pooled}):
        rs = sorted((r for r in pooled if (r["mix"], r["arrivals"], r["policy"], r["class"]) ==
                     (mix, arr, policy, klass)), key=lambda r: r["load"])
        ax.errorbar([r["load"] for r in rs], [r["p99_s"] for r in rs],
                    yerr=[[r["p99_s"] - r["p99_low"] for r in rs],
                          [r["p99_high"] - r["p99_s"] for r in rs]], marker="o", capsize=3,
                    label=policy)
      ax.set_yscale("log")
      ax.set_title(f"{mix} mix, {arr}: {klass} p99")
      ax.set_xlabel("load (share of FCFS capacity)")
      ax.set_ylabel("p99 latency (s, cost clock)")
      ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "serving.png"), dpi=100)
  if slo_rows:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in ("fcfs", "slo"):
      rs = [r for r in slo_rows if r["mode"] == mode]
      a1.plot([r["load"] for r in rs], [r["p99_s"] for r in rs], marker="o", label=mode)
      a2.errorbar([r["load"] for r in rs], [r["accuracy"] for r in rs],
                  # max(0, .): at accuracy 1.0 Wilson's upper end rounds just below it.
                  yerr=[[max(0.0, r["accuracy"] - r["accuracy_low"]) for r in rs],
                        [max(0.0, r["accuracy_high"] - r["accuracy"]) for r in rs]],
                  marker="o",
                  capsize=3, label=mode)
    a1.axhline(slo_s, color="gray", ls="--", label="SLO")
    a1.set_yscale("log")
    a1.set_xlabel("offered load (x FCFS capacity)")
    a1.set_ylabel("p99 latency (s, cost clock)")
    a2.set_xlabel("offered load (x FCFS capacity)")
    a2.set_ylabel("accuracy (Wilson 95%)")
    for a in (a1, a2):
      a.grid(alpha=0.3)
      a.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "slo.png"), dpi=100)


if __name__ == "__main__":
  app.run(main)
