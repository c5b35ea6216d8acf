"""The serving engine and its schedulers against think() on each request alone: same tokens
under every policy (preempted-and-resumed requests included), budgets per request, one
compiled program for any settings, bit-exact eviction, the queue bound and cancellation."""

import dataclasses

import jax
import numpy as np
import pytest

from o1jax import tasks
from o1jax.serving import (POLICIES, Engine, QueueFull, Request, Scheduler, SchedulerConfig)
from o1jax.serving.predictor import load_thinking_head
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import UNLIMITED, SpeculativeConfig, make_think_config, think_texts
from o1jax.thinking.state import Segment

TOK = CharTokenizer()


@pytest.fixture(scope="module")
def config(model):
  return make_think_config(model[1], TOK, max_answer_tokens=16)


def _stream():
  """Easy and hard prompts, mixed budgets and seeds: a small bimodal stream."""
  easy = [p.prompt for name in ("addition", "equation")
          for p in tasks.get_task(name).generate_problems(31, 1, 2, split="eval")]
  hard = [p.prompt for p in tasks.get_task("countdown").generate_problems(31, 4, 3, split="eval")]
  prompts = [hard[0], easy[0], easy[1], hard[1], easy[2], hard[2], easy[3]]
  budgets = [None, None, 6, 90, None, None, 3]
  return [Request(p, budget=b, seed=i, id=f"r{i}") for i, (p, b) in enumerate(zip(prompts,
                                                                                   budgets))]


def _alone(params, config, r: Request):
  """think() on the request alone: the reference every scheduled run must equal."""
  return think_texts(params, TOK, [r.prompt], config, budgets=[r.budget],
                     min_thinking=[r.min_thinking], seed=[r.seed], **r.settings)[0]


def _text(c, segment):
  return TOK.decode([t for t, s in zip(c.tokens, c.segments) if s == segment],
                    stop_at_eos=False)


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_gives_each_request_its_think_alone_output(model, config, policy):
  params, _ = model
  head, _ = load_thinking_head()
  engine = Engine(params, TOK, config, slots=3, budget_head=head)
  sched = Scheduler(engine, SchedulerConfig(policy=policy, preempt_after=8, steps_busy=3,
                                            fast_slots=2, hard_threshold=60))
  stream = _stream()
  # The two short requests (budgets 6 and 3) arrive together once the long thinkers hold
  # every slot, so preempt pauses one of those for them.
  short = [r for r in stream if r.budget in (3, 6)]
  for r in stream:
    if r not in short:
      sched.submit(r)
  done = sched.step()
  for r in short:
    sched.submit(r)
  done = {c.id: c for c in done + sched.run_until_idle()}
  assert set(done) == {r.id for r in stream}
  for r in stream:
    ref, got = _alone(params, config, r), done[r.id]
    assert _text(got, Segment.THINKING) == ref.thinking, (policy, r)
    assert _text(got, Segment.ANSWER).replace("\n", "") == ref.answer.replace("\n", "")
    assert (got.thinking_tokens, got.stop_reason) == (ref.thinking_tokens, ref.stop_reason)
    if r.budget is not None:
      assert got.thinking_tokens <= r.budget
  if policy == "preempt":
    assert sched.preemptions > 0 and any(c.preemptions for c in done.values())
  if policy in ("pools", "spf"):  # the head tells the countdown-4 prompts apart
    assert {done[r.id].predicted_class for r in stream} == {"easy", "hard"}
  assert sched.idle and not sched.live
  assert (engine.view().phase == 3).all()  # every slot is free


def test_one_program_serves_any_settings(model, config):
  params, _ = model
  engine = Engine(params, TOK, config, slots=2)
  # No budget head: each request's own budget is its prediction (unlimited: the context).
  sched = Scheduler(engine, SchedulerConfig(policy="preempt", preempt_after=4,
                                            fallback_predictor="budget", hard_threshold=15))
  prompts = [p.prompt for p in tasks.get_task("equation").generate_problems(32, 2, 8,
                                                                            split="eval")]
  settings = [dict(temperature=0.0), dict(temperature=0.8, top_k=5),
              dict(temperature=1.2, top_p=0.9), dict(max_answer_tokens=4)]

  def run(offset):
    for i, p in enumerate(prompts[offset:offset + 4]):
      sched.submit(Request(p, budget=[None, 10, 20, 3][i], seed=i + offset,
                           settings=settings[i], id=f"{offset}-{i}"))
    return sched.run_until_idle()

  run(0)
  warm = Engine.compilations()
  out = run(4)
  assert Engine.compilations() == warm, "a new request's settings recompiled something"
  for c in out:  # and each still equals think() on it alone, sampled ones included
    offset, i = map(int, c.id.split("-"))
    r = Request(prompts[offset + i], budget=[None, 10, 20, 3][i], seed=i + offset,
                settings=settings[i])
    assert _text(c, Segment.THINKING) == _alone(params, config, r).thinking


def test_evict_and_resume_are_bit_exact(model, config):
  params, _ = model
  prompts = [p.prompt for p in tasks.get_task("countdown").generate_problems(33, 3, 2,
                                                                             split="eval")]
  reqs = [Request(p, seed=7 + i, settings=dict(temperature=0.7)) for i, p in enumerate(prompts)]

  def run(evict_after):
    engine = Engine(params, TOK, config, slots=2)
    for slot, r in enumerate(reqs):
      engine.insert(engine.prefill(r), slot)
    saved = None
    if evict_after is not None:
      engine.generate(evict_after)
      saved = engine.evict(0)
      engine.generate(5)                # the other slot goes on meanwhile
      engine.resume(jax.tree.map(np.copy, saved), 0)
    engine.generate(UNLIMITED)
    return engine.view(), saved, engine

  plain, _, _ = run(None)
  view, saved, engine = run(9)
  np.testing.assert_array_equal(view.tokens, plain.tokens)
  np.testing.assert_array_equal(view.thinking_tokens, plain.thinking_tokens)
  # The saved row is the slot, on host, whole: KV cache and controller.
  assert saved.cache.k[0].shape == (1, config.cache_len) + saved.cache.k[0].shape[2:]
  assert int(saved.num_generated[0]) == 9
  with pytest.raises(ValueError, match="slot 5 is out of range"):
    engine.evict(5)


def test_bad_requests_queue_bound_and_cancellation(model, config):
  params, _ = model
  engine = Engine(params, TOK, config, slots=1)
  sched = Scheduler(engine, SchedulerConfig(max_queue=2, steps_busy=2, steps_idle=2))
  with pytest.raises(ValueError, match=r"does not fit the context \(704 tokens\).*needs"):
    sched.submit(Request("12+34=", budget=800))
  with pytest.raises(ValueError, match="non-negative"):
    sched.submit(Request("12+34=", budget=-1))
  hard = tasks.get_task("countdown").generate_problems(34, 4, 1, split="eval")[0].prompt
  sched.submit(Request(hard, id="long"))
  sched.submit(Request("12+34=", id="short"))
  with pytest.raises(QueueFull, match="queue is full"):
    sched.submit(Request("1+2=", id="third"))
  assert dict(sched.rejected) == {"invalid": 2, "queue_full": 1}
  sched.step()
  assert [t.request.id for t in sched.live.values()] == ["long"]
  sched.cancel("long")
  done = sched.step()                 # freed at the start of this round; "short" takes it
  assert [c.id for c in done] == ["long"] and done[0].cancelled
  assert [t.request.id for t in sched.live.values()] == ["short"]
  rest = sched.run_until_idle()
  assert [c.id for c in rest] == ["short"] and _text(rest[0], Segment.ANSWER).startswith("46")


def test_sharded_serving_on_8_devices_matches_one_device(model, config):
  # Slots over `data` (4), KV heads over `tensor` (2), with preemption and sampling: the
  # same tokens as one device (conftest.py gives the session 8 simulated CPU devices).
  from o1jax import parallel
  params, _ = model
  prompts = [p.prompt for d in (1, 3)
             for p in tasks.get_task("countdown").generate_problems(35, d, 5, split="eval")]

  def run(mesh):
    engine = Engine(params, TOK, config, slots=4, mesh=mesh)
    sched = Scheduler(engine, SchedulerConfig(policy="preempt", preempt_after=8,
                                              fallback_predictor="budget", hard_threshold=32))
    requests = [Request(p, seed=i, budget=None if i % 3 else 6,
                        settings=dict(temperature=[0.0, 0.9][i % 2]), id=str(i))
                for i, p in enumerate(prompts)]
    # The long thinkers first; the short ones (budget 6) once they hold every slot.
    for r in requests[1::3] + requests[2::3]:
      sched.submit(r)
    done = [c for _ in range(4) for c in sched.step()]
    for r in requests[0::3]:
      sched.submit(r)
    return {c.id: c.tokens for c in done + sched.run_until_idle()}, sched

  one, _ = run(None)
  many, sched = run(parallel.make_mesh((4, 1, 2)))
  assert one == many
  assert sched.engine.state.cache.k[0].sharding.spec[0] == "data"
  assert sched.preemptions > 0


def test_cost_clock_advances_by_the_modelled_cost_of_each_call(model, config):
  # The benchmark's time: each call moves the clock by its modelled cost, whatever the
  # machine did meanwhile, and the scheduler's latencies are read off that clock.
  from o1jax.serving.cost_clock import ClockedEngine, CostClock, CostModel
  params, _ = model
  costs = CostModel(step_s=1.0, generate_call_s=10.0, prefill_call_s=100.0, prefill_row_s=1000.0,
                    insert_s=1e4, view_s=1e5, evict_s=1e6, resume_s=1e7, free_s=1e8)
  clock = CostClock()
  engine = ClockedEngine(Engine(params, TOK, config, slots=2), costs, clock)
  prefixes = engine.prefill_batch([Request("12+34="), Request("5+6=")])
  assert clock() == 100 + 2 * 1000
  engine.insert(prefixes[0], 0)
  steps = engine.generate(3)
  assert steps == 3 and clock() == 2100 + 1e4 + 10 + 3
  clock = CostClock()
  sched = Scheduler(ClockedEngine(Engine(params, TOK, config, slots=2), costs, clock),
                    clock=clock)
  sched.submit(Request("12+34=", id="a"))
  (done,) = sched.run_until_idle()
  # Arrived at 0; done after one prefill, one insert, its steps, the views and its free.
  assert done.arrival == 0.0 and done.latency == clock() >= 1100 + 1e4 + 1e5 + 1e8
  assert _text(done, Segment.ANSWER).startswith("46")


def test_engine_refuses_speculative_decoding_by_name(model, config):
  """The slot step is the plain one-token step: a speculative config is refused at
  construction, naming the field, rather than served without speculation."""
  spec = dataclasses.replace(config, speculative=SpeculativeConfig(gamma=2, draft_layers=1))
  with pytest.raises(ValueError, match=r"ThinkConfig\.speculative"):
    Engine(model[0], TOK, spec, slots=1)
