"""Bimodal reasoning traffic, driven through a scheduler, and its metrics.

Two mixes of 90% easy requests (level 1-2 prompts of every task) and 10% hard (level-4
countdown: the longest traces the embedded reasoner writes), held-out prompts:
  real     thinking as the model decides (on reasoner v2 about 88 tokens easy, 230 hard).
  article  the o1 article's ratio: easy requests capped at 24 thinking tokens, hard ones
           forced to think a length drawn from 450, 500, ..., 650 (budget = minimum = that length),
           so a hard request generates >= 15x an easy one (the article: 700 vs 10,500).
Two arrival processes at a rate set from the capacity a closed-loop run measures:
  poisson  exponential gaps.
  bursty   gamma gaps with a coefficient of variation of 3 (bursts, then lulls).
A stream's requests (which prompt, which class, which forced length) depend only on its
seed, and its arrival times on the seed and the process, so every load and process of one
seed serves the same requests, and every policy the same stream.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.serving.engine import Request
from o1jax.serving.scheduler import Completion, QueueFull, Scheduler, percentiles

CSV_COLUMNS = ("mix", "arrivals", "seed", "clock", "policy", "load", "class", "requests",
               "p50_s", "p99_s", "ttfa_p50_s",
               "ttfa_p99_s", "throughput_rps", "tokens_per_s", "thinking_tokens", "kv_bytes",
               "preemptions", "accuracy", "budget_cut")
EASY = [(name, d) for name in ("addition", "equation", "countdown") for d in (1, 2)]
HARD = [("countdown", 4)]
MIXES = ("real", "article")
ARRIVALS = ("poisson", "bursty")
ARTICLE_EASY_BUDGET = 24
ARTICLE_HARD_THINKING = (450, 650, 50)   # low, high, step
BURSTY_CV = 3.0


@dataclasses.dataclass(frozen=True)
class Arrival:
  time: float          # seconds after the start
  request: Request
  klass: str           # the true class, for reporting only (schedulers never see it)


def prompt_pools(seed: int, per_cell: int = 400) -> dict[str, list[str]]:
  """Distinct held-out prompts per class, shuffled. Small cells (equation level 1 has a few
  dozen distinct prompts) contribute what they have."""
  rng = np.random.default_rng(seed)
  pools = {}
  for klass, cells in (("easy", EASY), ("hard", HARD)):
    prompts = sorted({p.prompt for name, d in cells for p in
                      tasks_lib.get_task(name).generate_problems(seed, d, per_cell,
                                                                 split="eval")})
    pools[klass] = [prompts[i] for i in rng.permutation(len(prompts))]
  return pools


def article_stream(n: int, rate: float, seed: int, hard_fraction: float = 0.1,
                   pools: dict[str, list[str]] | None = None) -> list[Arrival]:
  """The real mix with Poisson arrivals (kept for the server's load test)."""
  return stream("real", n, rate, seed, "poisson", hard_fraction, pools)


def gaps(n: int, rate: float, seed: int, arrivals: str = "poisson") -> np.ndarray:
  """n inter-arrival times of mean 1/rate (all 0 at rate 0: a closed burst)."""
  if arrivals not in ARRIVALS:
    raise ValueError(f"arrivals must be one of {ARRIVALS}, got {arrivals!r}")
  if rate <= 0:
    return np.zeros(n)
  rng = np.random.default_rng([seed, 1 + ARRIVALS.index(arrivals)])
  if arrivals == "poisson":
    return rng.exponential(1.0 / rate, n)
  shape = 1.0 / BURSTY_CV ** 2          # gamma: CV = 1 / sqrt(shape), mean shape * scale
  return rng.gamma(shape, 1.0 / (rate * shape), n)


def stream(mix: str, n: int, rate: float, seed: int, arrivals: str = "poisson",
           hard_fraction: float = 0.1, pools: dict[str, list[str]] | None = None
           ) -> list[Arrival]:
  """n arrivals at `rate` per second; each request hard with `hard_fraction`. Prompts are
  drawn without replacement from each class's pool; a pool that runs out is reshuffled and
  drawn again (reported by `stream_stats`)."""
  if mix not in MIXES:
    raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
  rng = np.random.default_rng(seed)
  pools = pools or prompt_pools(seed)
  cursor = {k: 0 for k in pools}
  times = np.cumsum(gaps(n, rate, seed, arrivals))
  lo, hi, step = ARTICLE_HARD_THINKING
  out = []
  for i in range(n):
    klass = "hard" if rng.random() < hard_fraction else "easy"
    # Drawn for every request, so both mixes make the same draws; on a 50-token grid, so
    # the distinct requests to decode stay few.
    forced = lo + step * int(rng.integers(0, (hi - lo) // step + 1))
    pool = pools[klass]
    prompt = pool[cursor[klass] % len(pool)]
    cursor[klass] += 1
    if mix == "article" and klass == "hard":
      request = Request(prompt, budget=forced, min_thinking=forced, seed=i, id=f"s{seed}q{i}")
    elif mix == "article":
      request = Request(prompt, budget=ARTICLE_EASY_BUDGET, seed=i, id=f"s{seed}q{i}")
    else:
      request = Request(prompt, seed=i, id=f"s{seed}q{i}")
    out.append(Arrival(float(times[i]), request, klass))
  return out


def stream_stats(stream: Sequence[Arrival], pools) -> dict:
  counts = {k: sum(a.klass == k for a in stream) for k in pools}
  return {f"{k}_requests": counts[k] for k in pools} | {
      f"{k}_pool": len(pools[k]) for k in pools} | {
      f"{k}_distinct": len({a.request.prompt for a in stream if a.klass == k}) for k in pools}


def drive(scheduler: Scheduler, stream: Sequence[Arrival],
          clock: Callable[[], float] = time.monotonic, time_limit_s: float = 600.0,
          log=None) -> tuple[list[Completion], float]:
  """Submits each arrival at its time (its scheduled time is its arrival, so a late submit
  is queueing the request saw) and steps the scheduler until everything has completed.
  `clock` is the wall clock or a CostClock (o1jax/serving/cost_clock.py; the scheduler must
  read the same one). Returns (completions, seconds on that clock); requests the bounded
  queue rejected are counted in `scheduler.rejected["queue_full"]`."""
  start = clock()
  pending = list(stream)
  done: list[Completion] = []
  next_log = 5.0
  while pending or not scheduler.idle:
    now = clock() - start
    if now > time_limit_s:
      raise RuntimeError(f"the stream did not drain within {time_limit_s} s")
    while pending and pending[0].time <= now:
      a = pending.pop(0)
      try:
        scheduler.submit(a.request, arrival=start + a.time)
      except QueueFull:
        pass  # counted by the scheduler; the benchmark reports it
    if scheduler.idle and pending:
      wait = pending[0].time - (clock() - start)
      if hasattr(clock, "advance"):   # a cost clock: jump to the next arrival
        clock.advance(wait)
      else:
        time.sleep(max(0.0, min(wait, 0.05)))
      continue
    done += scheduler.step()
    if log and now >= next_log:
      log(f"  t={now:5.1f}s done {len(done)}/{len(stream)} queue {scheduler.queue_depth} "
          f"live {len(scheduler.live)}")
      next_log += 5.0
  return done, clock() - start


def capacity(scheduler: Scheduler, stream: Sequence[Arrival], concurrency: int,
             clock: Callable[[], float] = time.monotonic) -> tuple[float, int, float]:
  """Closed-loop throughput: `concurrency` requests in the system at all times (a new one
  is submitted as each completes), so the scheduler runs the rounds it runs under a
  sustained load. Returns (requests/s, requests, wall seconds)."""
  pending = list(stream)
  start = clock()
  for a in pending[:concurrency]:
    scheduler.submit(a.request)
  pending = pending[concurrency:]
  done = 0
  while not scheduler.idle:
    finished = scheduler.step()
    done += len(finished)
    for _ in finished:
      if pending:
        scheduler.submit(pending.pop(0).request)
  wall = clock() - start
  return done / wall, done, wall


def summarize(policy: str, load: float, stream: Sequence[Arrival], done: Sequence[Completion],
              wall_s: float, kv_bytes_per_token: int, *, mix: str = "real",
              arrivals: str = "poisson", seed: int = 0, clock: str = "cost",
              correct: dict | None = None) -> list[dict]:
  """One CSV row per class and one for all (CSV_COLUMNS). `correct`: request id -> whether
  its answer was right (None: not scored)."""
  klass = {a.request.id: a.klass for a in stream}
  asked = {a.request.id: a.request.budget for a in stream}
  correct = correct or {}
  rows = []
  for name in ("easy", "hard", "all"):
    cs = [c for c in done if name == "all" or klass[c.id] == name]
    lat = [c.latency for c in cs]
    ttfa = [c.first_answer - c.arrival for c in cs if c.first_answer is not None]
    tokens = sum(len(c.tokens) for c in cs)
    scored = [correct[c.id] for c in cs if correct.get(c.id) is not None]
    p50, p99 = percentiles(lat)
    t50, t99 = percentiles(ttfa)
    rows.append(dict(
        mix=mix, arrivals=arrivals, seed=seed, clock=clock,
        policy=policy, load=load, **{"class": name}, requests=len(cs), p50_s=p50, p99_s=p99,
        ttfa_p50_s=t50, ttfa_p99_s=t99, throughput_rps=len(cs) / wall_s,
        tokens_per_s=tokens / wall_s,
        thinking_tokens=float(np.mean([c.thinking_tokens for c in cs])) if cs else math.nan,
        kv_bytes=float(np.mean([(c.prompt_tokens + len(c.tokens)) * kv_bytes_per_token
                                for c in cs])) if cs else math.nan,
        preemptions=sum(c.preemptions for c in cs),
        accuracy=float(np.mean(scored)) if scored else math.nan,
        budget_cut=float(np.mean([c.budget != asked[c.id] for c in cs])) if cs else math.nan))
  return rows


def impact_rows(stream: Sequence[Arrival], done: Sequence[Completion],
                kv_bytes_per_token: int, slots: int) -> list[dict]:
  """The article's "o1 serving impact" table, per true class: thinking tokens, total
  generation, latency, KV cache per query, slot-seconds per query, and the throughput one
  slot gives that class (1 / slot-seconds)."""
  klass = {a.request.id: a.klass for a in stream}
  rows = []
  for name in ("easy", "hard"):
    cs = [c for c in done if klass[c.id] == name]
    slot_s = float(np.mean([c.slot_seconds for c in cs]))
    rows.append(dict(
        **{"class": name}, requests=len(cs),
        thinking_tokens=float(np.mean([c.thinking_tokens for c in cs])),
        generated_tokens=float(np.mean([len(c.tokens) for c in cs])),
        latency_p50_s=percentiles([c.latency for c in cs])[0],
        kv_bytes=float(np.mean([(c.prompt_tokens + len(c.tokens)) * kv_bytes_per_token
                                for c in cs])),
        slot_seconds=slot_s, requests_per_s_per_slot=1.0 / slot_s,
        requests_per_s_all_slots=slots / slot_s))
  return rows
