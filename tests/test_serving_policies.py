"""Scheduling policies on the cost clock, with power: each check is shown to reject a
plausible wrong policy kept here (test-only), and the replay engine the benchmark grid runs
on is checked against the real engine."""

import math
import types

import numpy as np
import pytest

from o1jax.serving import Engine, Request, Scheduler, SchedulerConfig, cost_clock
from o1jax.serving import workload as wl
from o1jax.serving.predictor import ClassModel, otsu_split
from o1jax.serving.replay import Outcome, OutcomeCache, ReplayEngine
from o1jax.thinking.api import parse_budget
from o1jax.thinking.config import StopReason

COSTS = cost_clock.CostModel(step_s=1e-3, generate_call_s=1e-3, prefill_call_s=1e-3,
                             prefill_row_s=2e-4, insert_s=1e-4, view_s=1e-4, evict_s=5e-4,
                             resume_s=5e-4, free_s=1e-4)


class SynthCache:
  """Outcomes from a table: prompt -> (natural thinking, answer tokens, head prediction).
  A budget caps the thinking, a minimum forces it; the answer is right only when the
  thinking was not cut."""

  def __init__(self, table):
    self.table = table
    self.predicted = {p: (pred, 8) for p, (_, _, pred) in table.items()}
    self.engine = types.SimpleNamespace(
        config=types.SimpleNamespace(cache_len=4096), budget_head="head",
        validate=lambda r: None, kv_bytes_per_token=lambda: 1)

  def get(self, r: Request) -> Outcome:
    natural, answer, _ = self.table[r.prompt]
    budget = parse_budget(r.budget)
    thinking = max(min(natural, budget), r.min_thinking)
    stop = StopReason.BUDGET if budget < natural else StopReason.NATURAL
    return Outcome(thinking, answer, int(stop), True, thinking >= natural)


def _mix(n, seed, easy=(30, 88), hard=(500, 220), noise=0.35):
  """n requests, 10% hard: (natural thinking, mean head prediction) per class, the head's
  prediction log-normal around its class mean (the shipped head's spread on v2)."""
  rng = np.random.default_rng(seed)
  table, klass = {}, []
  for i in range(n):
    k = "hard" if rng.random() < 0.1 else "easy"
    think, pred = hard if k == "hard" else easy
    think = int(think * rng.uniform(0.8, 1.2))
    table[f"{k}{i}"] = (think, 8, float(pred * math.exp(noise * rng.normal())))
    klass.append(k)
  return table, klass


def _serve(cache, stream, policy, scheduler_cls=Scheduler, slots=8, **kw):
  clock = cost_clock.CostClock()
  engine = cost_clock.ClockedEngine(ReplayEngine(cache, slots), COSTS, clock)
  kw.setdefault("max_queue", 100_000)   # nothing rejected: every latency counts
  sched = scheduler_cls(engine, SchedulerConfig(policy=policy, **kw), clock=clock)
  done, span = wl.drive(sched, stream, clock=clock, time_limit_s=1e5)
  return {c.id: c for c in done}, span, sched


def _stream(table, klass, load, seed, capacity, arrivals="poisson"):
  times = np.cumsum(wl.gaps(len(klass), load * capacity, seed, arrivals))
  return [wl.Arrival(float(t), Request(p, id=p), k)
          for t, p, k in zip(times, table, klass)]


def _capacity(cache, table):
  clock = cost_clock.CostClock()
  engine = cost_clock.ClockedEngine(ReplayEngine(cache, 8), COSTS, clock)
  sched = Scheduler(engine, SchedulerConfig(), clock=clock)
  return wl.capacity(sched, [wl.Arrival(0, Request(p, id=p), "") for p in table], 64, clock)[0]


def _p99(done, stream, klass):
  return float(np.percentile([done[a.request.id].latency for a in stream if a.klass == klass],
                             99))


# -- wrong policies, test-only ---------------------------------------------------------------

class ElapsedPreempt(Scheduler):
  """Pauses the request that has thought longest (ranked by elapsed, not remaining work)."""

  def _remaining(self, t, view, slot):
    return float(view.thinking_tokens[slot])


def _easy_p99_over_fcfs(cache, stream, policy, **kw):
  """The goal's measure: the policy's easy p99 over FCFS's on the same stream."""
  fcfs, _, _ = _serve(cache, stream, "fcfs")
  got, _, _ = _serve(cache, stream, policy, **kw)
  return _p99(got, stream, "easy") / _p99(fcfs, stream, "easy")


# -- tests ------------------------------------------------------------------------------------

def test_otsu_split_is_the_best_two_way_split():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(3, 0.3, 90), rng.normal(5.5, 0.3, 10)])
  boundary, lo, hi = otsu_split(x)
  # Brute force in float64: every cut of the sorted values, the within-class sum of squares.
  xs = np.sort(x)
  sse = [((xs[:i] - xs[:i].mean()) ** 2).sum() + ((xs[i:] - xs[i:].mean()) ** 2).sum()
         for i in range(1, len(xs))]
  i = int(np.argmin(sse)) + 1
  assert xs[i - 1] < boundary < xs[i]
  assert lo == pytest.approx(xs[:i].mean()) and hi == pytest.approx(xs[i:].mean())
  assert otsu_split([2.0, 2.0]) is None


def test_classes_act_only_when_hard_requests_cost_many_easy_ones():
  rng = np.random.default_rng(1)
  for ratio, acts in ((2.5, False), (15.0, True)):
    m = ClassModel(min_ratio=4.0)
    for i in range(400):
      hard = rng.random() < 0.1
      m.observe(float(np.exp(rng.normal(np.log(220 if hard else 88), 0.2))))
      work = (30 * ratio if hard else 30) * rng.uniform(0.8, 1.2)
      m.record(m.side(220.0 if hard else 88.0), int(work), work * 1e-3)
    assert 88 < m.boundary() < 220
    assert m.separable() is acts, ratio
    assert m.work_ratio() == pytest.approx(ratio, rel=0.15)
  assert ClassModel(threshold=64).separable()   # a constant threshold always acts


def test_policies_never_lose_to_fcfs_and_the_check_rejects_a_constant_threshold():
  # The embedded reasoner's own mix: hard requests think 2.5x longer, the head's
  # predictions overlap. Calibrated classes do not act, so no policy loses.
  table, klass = _mix(600, 0, easy=(88, 88), hard=(220, 220))
  cache = SynthCache(table)
  stream = _stream(table, klass, 0.9, 0, _capacity(cache, table))
  for policy in ("spf", "pools", "preempt"):
    assert _easy_p99_over_fcfs(cache, stream, policy) <= 1.10, policy
  # Wrong: pools behind the constant threshold 64 (the old serve default) labels most easy
  # requests hard and queues them for the few thinking slots (38x here); spf behind a
  # constant 120 puts the easy requests the head overrates behind the rest (1.6x).
  assert _easy_p99_over_fcfs(cache, stream, "pools", hard_threshold=64.0, fast_slots=5) > 1.10
  assert _easy_p99_over_fcfs(cache, stream, "spf", hard_threshold=120.0) > 1.10


def test_article_mix_policies_beat_fcfs_and_preempt_ranks_by_remaining_work():
  # The article's ratio: hard requests generate ~17x an easy one.
  table, klass = _mix(600, 1, easy=(24, 24), hard=(550, 550), noise=0.1)
  cache = SynthCache(table)
  capacity = _capacity(cache, table)
  stream = _stream(table, klass, 0.95, 3, capacity)
  fcfs, fcfs_span, _ = _serve(cache, stream, "fcfs")
  for policy in ("spf", "pools", "preempt"):
    got, span, sched = _serve(cache, stream, policy)
    assert sched.classes.separable()
    assert _p99(got, stream, "easy") <= 1.10 * _p99(fcfs, stream, "easy"), policy
    assert span <= 1.05 * fcfs_span, policy                       # throughput kept
  # (got: preempt's, the last of the loop)
  assert _p99(got, stream, "easy") <= 0.5 * _p99(fcfs, stream, "easy")
  assert max(c.preemptions for c in got.values()) > 1             # paused again after resuming
  assert _p99(got, stream, "hard") <= 1.5 * _p99(fcfs, stream, "hard")


def test_preemption_pauses_the_request_with_most_predicted_work_left():
  # Two slots, two hard requests: A (600 tokens) started about 200 steps before B (600).
  # When an easy request arrives, A has about 250 left and B 450: B must be paused, not A.
  table = {"A": (600, 8, 600.0), "B": (600, 8, 600.0), "e": (20, 8, 20.0)}
  cache = SynthCache(table)
  arrival = lambda t, p: wl.Arrival(t, Request(p, id=p), "")
  stream = [arrival(0.0, "A"), arrival(0.3, "B"), arrival(0.45, "e")]
  for cls, paused in ((Scheduler, "B"), (ElapsedPreempt, "A")):
    done, _, _ = _serve(cache, stream, "preempt", cls, slots=2, hard_threshold=100.0)
    assert {k for k, c in done.items() if c.preemptions} == {paused}, cls.__name__


def test_policies_that_need_a_prediction_refuse_an_engine_without_a_head():
  cache = SynthCache({"x": (10, 2, 10.0)})
  engine = ReplayEngine(cache, 2, with_head=False)
  for policy in ("spf", "pools", "preempt"):
    with pytest.raises(ValueError, match="budget_head"):
      Scheduler(engine, SchedulerConfig(policy=policy))
  sched = Scheduler(engine, SchedulerConfig(policy="spf", fallback_predictor="budget"))
  sched.submit(Request("x", budget=4, id="x"))
  assert sched.run_until_idle()[0].predicted_thinking == 4.0   # its own budget
  with pytest.raises(ValueError, match="fallback_predictor"):
    SchedulerConfig(fallback_predictor="oracle")


def test_slo_mode_holds_p99_where_fcfs_does_not():
  table, klass = _mix(600, 2, easy=(88, 88), hard=(220, 220))
  cache = SynthCache(table)
  capacity = _capacity(cache, table)
  stream = _stream(table, klass, 1.5, 4, capacity)
  slo = 1.0
  fcfs, _, _ = _serve(cache, stream, "fcfs")
  got, _, sched = _serve(cache, stream, "fcfs", slo_p99_s=slo)
  p99 = lambda d: float(np.percentile([c.latency for c in d.values()], 99))
  assert p99(fcfs) > 2 * slo                 # the load is past capacity: FCFS's queue grows
  assert p99(got) <= slo
  cut = [c for c in got.values() if c.budget is not None]
  assert 0 < len(cut) < len(got)             # budgets shrink only as the queue grows
  assert all(c.thinking_tokens <= c.budget for c in cut)


@pytest.mark.parametrize("arrivals,cv", [("poisson", 1.0), ("bursty", 3.0)])
def test_arrival_processes_have_their_rate_and_burstiness(arrivals, cv):
  g = wl.gaps(40_000, 5.0, 0, arrivals)
  assert np.mean(g) == pytest.approx(0.2, rel=0.05)
  assert np.std(g) / np.mean(g) == pytest.approx(cv, rel=0.1)
  # Wrong: a gamma with shape = CV (not 1 / CV^2) has CV 0.58, which the check rejects.
  wrong = np.random.default_rng(0).gamma(3.0, 0.2 / 3.0, 40_000)
  assert not np.std(wrong) / np.mean(wrong) == pytest.approx(3.0, rel=0.1)


def test_article_mix_streams_share_requests_across_loads_and_arrivals():
  pools = {"easy": [f"e{i}" for i in range(50)], "hard": [f"h{i}" for i in range(10)]}
  a = wl.stream("article", 300, 4.0, 0, "poisson", pools=pools)
  b = wl.stream("article", 200, 9.0, 0, "bursty", pools=pools)
  assert [x.request for x in a[:200]] == [x.request for x in b]
  for x in a:
    r = x.request
    if x.klass == "hard":
      assert r.budget == r.min_thinking and 450 <= r.budget <= 650 and r.budget % 50 == 0
    else:
      assert r.budget == wl.ARTICLE_EASY_BUDGET and r.min_thinking == 0


def test_replay_engine_times_a_stream_as_the_engine_does(model):
  from o1jax import tasks
  from o1jax.serving.predictor import load_thinking_head
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config
  params, model_config = model
  tok = CharTokenizer()
  config = make_think_config(model_config, tok, cache_len=128, max_answer_tokens=8)
  prompts = [p.prompt for d in (1, 4) for p in
             tasks.get_task("countdown").generate_problems(5, d, 3, split="eval")]
  budgets = [None, 6, 40, 30, 8, 50]
  # The long thinkers first, the short ones (budgets 6 and 8) once every slot is taken:
  # they wait, and the long thinker with the most predicted work left is paused.
  stream = [wl.Arrival(0.03 if b in (6, 8) else 0.0, Request(
      p, budget=b, min_thinking=min(b or 0, 20), id=str(i)), "")
            for i, (p, b) in enumerate(zip(prompts, budgets))]
  stream.sort(key=lambda a: a.time)
  engine = Engine(params, tok, config, 3, budget_head=load_thinking_head()[0])
  cache = OutcomeCache(engine)
  cache.fill([a.request for a in stream], batch_size=8)

  def serve(eng):
    clock = cost_clock.CostClock()
    sched = Scheduler(cost_clock.ClockedEngine(eng, COSTS, clock),
                      SchedulerConfig(policy="preempt", hard_threshold=25.0,
                                      preempt_ratio=1.0, steps_busy=3), clock=clock)
    done, _ = wl.drive(sched, stream, clock=clock)
    return {c.id: (c.latency, c.first_answer, c.thinking_tokens, c.answer_tokens,
                   c.preemptions) for c in done}, sched

  real, real_sched = serve(Engine(params, tok, config, 3, budget_head=engine.budget_head))
  replayed, _ = serve(ReplayEngine(cache, 3))
  assert real_sched.preemptions > 0
  assert replayed == real
