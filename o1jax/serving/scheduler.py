"""Scheduling a bimodal reasoning load over the engine's slots.

Policies (`SchedulerConfig.policy`):
  static   what `think()` on a batch does: admit a batch of up to S requests only when every
           slot is free, run it to its end; a request arriving meanwhile waits for the whole
           batch, its hardest member included (the article's head-of-line blocking).
  fcfs     first come, first served into any free slot (continuous batching): the baseline.
  spf      predicted-short first: requests predicted easy go before those predicted hard
           (first come, first served within a class).
  pools    a thinking pool for the hard class, sized from the measured slot-time share of
           hard requests; easy requests take any free slot, hard ones only a thinking slot.
  preempt  spf, and while an easy request waits with no slot free, the live request with
           the most predicted work left is paused (`Engine.evict`, bit for bit, resumed by
           `Engine.resume`), as often as that happens: its remaining work must be at least
           `preempt_ratio` times the waiting request's.
The classes come from `predictor.ClassModel`: the 2-means split of the budget head's own
predictions on the traffic (no constant threshold), and they act only while the requests
predicted hard measurably cost `min_class_ratio` times the easy ones; otherwise spf, pools
and preempt serve first come, first served (they cannot lose to it by misjudging requests
that cost about the same). A prediction is the head's, read at `<think>` from the hidden
state prefill computed anyway, bounded by the request's own budget and minimum thinking.

SLO mode (`slo_p99_s`, any policy): each arrival gets the largest thinking budget level
whose estimated wait plus thinking fits the SLO (o1jax/serving/slo.py).

Adaptive batching: each round is one `generate(k)` call that also returns as soon as a
request finishes (its completion is reported, its slot refilled, at once). k is small while
a slot is free (an arrival during the call is admitted within k steps) or work waits, and
large when every slot is busy and nothing waits (fewer calls, less dispatch). New arrivals
are prefilled at the start of each round, between calls.

The scheduler is driven by one thread calling `step()`; `submit` and `cancel` may be called
from others.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Callable

import numpy as np

from o1jax.serving.engine import Engine, Prefix, Request, SavedSlot
from o1jax.serving.predictor import ClassModel
from o1jax.serving.slo import SloBudgeter, work_of
from o1jax.thinking.api import UNLIMITED, parse_budget
from o1jax.thinking.config import Phase, StopReason

from o1jax.serving.scheduler_config import (FALLBACK_PREDICTORS, POLICIES, PREDICTED,
                                            Completion, QueueFull, SchedulerConfig)

__all__ = ["FALLBACK_PREDICTORS", "POLICIES", "PREDICTED", "Completion", "QueueFull",
           "Scheduler", "SchedulerConfig", "percentiles"]


@dataclasses.dataclass
class _Tracked:
  request: Request
  arrival: float
  on_event: Callable | None
  prefix: Prefix | None = None
  prompt_tokens: int = 0
  predicted: float = math.nan
  klass: str = "easy"              # the class the policy acted on
  side: str | None = None          # the side of the boundary (kept when classes don't act)
  slot: int | None = None
  saved: SavedSlot | None = None
  read: int = 0                    # tokens already passed on
  first_answer: float | None = None
  preemptions: int = 0
  slot_since: float = 0.0
  slot_seconds: float = 0.0


class Scheduler:

  def __init__(self, engine: Engine, config: SchedulerConfig = SchedulerConfig(),
               clock: Callable[[], float] = time.monotonic):
    self.engine, self.config, self.clock = engine, config, clock
    n = engine.slots
    if (config.policy in PREDICTED and getattr(engine, "budget_head", None) is None
        and config.fallback_predictor is None):
      raise ValueError(
          f"policy {config.policy!r} schedules by predicted thinking, but the engine has no "
          "budget_head: pass Engine(..., budget_head=o1jax.serving.predictor."
          "load_thinking_head()[0]) or SchedulerConfig(fallback_predictor='budget') (each "
          "request's own thinking budget as its prediction)")
    fast = config.fast_slots
    if fast is not None and config.policy == "pools" and not 1 <= fast < n:
      raise ValueError(f"pools needs 1 <= fast_slots < slots, got {config.fast_slots} of {n}")
    self.classes = ClassModel(min_ratio=config.min_class_ratio, threshold=config.hard_threshold)
    self.slo = SloBudgeter(config.slo_p99_s) if config.slo_p99_s is not None else None
    self._lock = threading.Lock()
    self._arrivals: collections.deque[_Tracked] = collections.deque()
    self._cancelled: set[str] = set()
    self.waiting: list[_Tracked] = []      # prefilled, not yet in a slot
    self.paused: list[_Tracked] = []       # evicted (preempt)
    self.live: dict[int, _Tracked] = {}
    self.preemptions = 0
    self._last_view = None
    self.rejected = collections.Counter()
    self.generated_tokens = 0
    self._mean_work = 0.0                  # generated tokens per finished request (EWMA)

  # -- from any thread --------------------------------------------------------------------

  def submit(self, request: Request, on_event: Callable | None = None,
             arrival: float | None = None) -> None:
    """Queues a request. Raises ValueError for a bad request (prompt plus budget beyond the
    context, ...) and QueueFull when the queue is at its bound; both before any compute.
    `on_event(kind, payload)` is called from the driving thread with ("tokens",
    (token_ids, segments)) as tokens are read and ("done", Completion) at the end.
    `arrival` (clock time) defaults to now; a load generator passes the scheduled time."""
    try:
      self.engine.validate(request)
    except ValueError:
      self.rejected["invalid"] += 1
      raise
    with self._lock:
      if len(self._arrivals) + len(self.waiting) + len(self.paused) >= self.config.max_queue:
        self.rejected["queue_full"] += 1
        raise QueueFull(f"queue is full ({self.config.max_queue} requests waiting)")
      self._arrivals.append(_Tracked(request, self.clock() if arrival is None else arrival,
                                     on_event))

  def cancel(self, request_id: str) -> None:
    """The request is dropped at the start of the next round (its slot freed)."""
    with self._lock:
      self._cancelled.add(request_id)

  @property
  def queue_depth(self) -> int:
    return len(self._arrivals) + len(self.waiting) + len(self.paused)

  @property
  def idle(self) -> bool:
    return not (self._arrivals or self.waiting or self.paused or self.live)

  def step(self) -> list[Completion]:
    """One round: cancellations, prefills, admissions (and preemptions), one generate(k),
    then the tokens read back. Returns the requests that completed in it."""
    start = self.clock()
    done = self._apply_cancellations()
    self._prefill_arrivals()
    self._admit()
    if not self.live:
      return done
    # A free slot: keep the call short, an arrival during it can start within k steps.
    # Every slot busy: a long call, since it returns as soon as a request finishes anyway
    # (that is when waiting work can be admitted).
    short = not self.config.adaptive or len(self.live) < self.engine.slots
    k = self.config.steps_busy if short else self.config.steps_idle
    if (self.config.policy == "preempt" and any(t.klass == "hard" for t in self.live.values())
        and self.classes.separable()):
      # An easy arrival is seen (and a hard request paused for it) within k steps.
      k = min(k, self.config.steps_preempt)
    steps = self.engine.generate(k, return_on_finish=self.config.adaptive)
    done += self._read_back()
    if self.slo is not None:
      self.slo.observe_round(self.clock() - start, steps)
    return done

  def run_until_idle(self, max_rounds: int = 1_000_000) -> list[Completion]:
    out = []
    for _ in range(max_rounds):
      if self.idle:
        return out
      out += self.step()
    raise RuntimeError(f"not idle after {max_rounds} rounds")

  # -- internals --------------------------------------------------------------------------

  def _apply_cancellations(self) -> list[Completion]:
    with self._lock:
      cancelled, self._cancelled = self._cancelled, set()
      arrivals = [t for t in self._arrivals if t.request.id in cancelled]
      self._arrivals = collections.deque(t for t in self._arrivals
                                         if t.request.id not in cancelled)
    out = [self._finish(t, None) for t in arrivals]
    for group in (self.waiting, self.paused):
      for t in [t for t in group if t.request.id in cancelled]:
        group.remove(t)
        out.append(self._finish(t, None))
    for slot, t in list(self.live.items()):
      if t.request.id in cancelled:
        self.engine.free(slot)
        del self.live[slot]
        t.slot_seconds += self.clock() - t.slot_since
        out.append(self._finish(t, None))
    return out

  def _predict(self, request: Request, head: float) -> float:
    """The head's prediction bounded by the request's own limits: it thinks at least
    `min_thinking` and at most its budget (the fallback: the budget, or the context)."""
    budget = parse_budget(request.budget)
    cap = min(budget, self.engine.config.cache_len)
    if not math.isfinite(head):
      head = float(cap) if self.config.fallback_predictor == "budget" else math.nan
    return float(np.clip(head, request.min_thinking, cap)) if math.isfinite(head) else head

  def _work_ahead(self) -> float:
    """Generated tokens still to come in the slots and the queue (SLO mode's estimate)."""
    view, answer = self._last_view, self.slo.answer_tokens
    total = 0.0
    for slot, t in self.live.items():
      done = int(view.num_generated[slot]) if view is not None else 0
      total += max(self._work(t) + answer - done, 0.0)
    for t in self.waiting + self.paused:
      total += self._work(t) + answer
    return total

  def _work(self, t: _Tracked) -> float:
    if math.isfinite(t.predicted):
      return work_of(t.predicted, _budget_or_none(t.request.budget))
    return work_of(self._mean_work, _budget_or_none(t.request.budget))

  def _prefill_arrivals(self) -> None:
    # One prefill call per round, of at most 2x slots arrivals (more than could start in
    # this round; the rest wait for the next), so a burst never compiles a huge batch.
    with self._lock:
      n = min(len(self._arrivals), 2 * self.engine.slots)
      arrivals = [self._arrivals.popleft() for _ in range(n)]
    if not arrivals:
      return
    if self.slo is not None:   # budgets first: the budget is part of the prefilled state
      ahead = self._work_ahead()
      for t in arrivals:
        own = _budget_or_none(t.request.budget)
        budget = self.slo.budget(ahead, self.engine.slots, own)
        if budget != own:
          t.request = dataclasses.replace(t.request, budget=budget,
                                           min_thinking=min(t.request.min_thinking, budget))
        ahead += work_of(self._mean_work, budget) + self.slo.answer_tokens
    for t, prefix in zip(arrivals, self.engine.prefill_batch([t.request for t in arrivals])):
      t.prefix, t.prompt_tokens = prefix, prefix.prompt_tokens
      t.predicted = self._predict(t.request, prefix.predicted_thinking)
      self.classes.observe(t.predicted)
      t.side = self.classes.side(t.predicted)
      t.klass = t.side if (t.side and self.classes.separable()) else "easy"
      self.waiting.append(t)

  def _free_slots(self) -> list[int]:
    return [s for s in range(self.engine.slots) if s not in self.live]

  def _hard_slots(self) -> int:
    """pools: how many slots hard requests may hold: the measured slot-time share of the
    hard class, rounded, plus one (so the pool is not full at its mean); at most S - 1."""
    n = self.engine.slots
    if self.config.fast_slots is not None:
      return n - self.config.fast_slots
    share = self.classes.hard_share()
    if share is None:
      return n - 1
    return int(min(n - 1, max(1, round(share * n) + 1)))

  def _next(self) -> _Tracked | None:
    policy = self.config.policy
    queue = self.paused + self.waiting
    if not queue:
      return None
    first_come = lambda t: t.arrival
    if self.config.max_wait_s is not None and policy in ("spf", "preempt"):
      now = self.clock()
      starved = [t for t in queue if now - t.arrival > self.config.max_wait_s]
      if starved:
        return min(starved, key=first_come)
    if policy in ("fcfs", "static") or not self.classes.separable():
      return min(queue, key=first_come)
    easy = [t for t in queue if t.klass == "easy"]
    if easy:
      return min(easy, key=first_come)
    if policy == "pools":
      hard_live = sum(t.klass == "hard" for t in self.live.values())
      if hard_live >= self._hard_slots():
        return None
    return min(queue, key=first_come)

  def _admit(self) -> None:
    if self.config.policy == "preempt":
      self._preempt()
    if self.config.policy == "static" and self.live:
      return   # the running batch ends before the next one starts
    for slot in self._free_slots():
      t = self._next()
      if t is None:
        break
      if t.saved is not None:
        self.paused.remove(t)
        self.engine.resume(t.saved, slot)
        t.saved = None
      else:
        self.waiting.remove(t)
        self.engine.insert(t.prefix, slot)
        t.prefix = None          # its one-row cache is in the slot now
      t.slot = slot
      t.slot_since = self.clock()
      self.live[slot] = t

  def _preempt(self) -> None:
    """Pauses the live requests with the most predicted work left while easy requests wait
    and no slot is free; a request may be paused again after it resumed."""
    if self._last_view is None or not self.classes.separable():
      return
    waiting = sorted((t for t in self.waiting if t.klass == "easy"), key=lambda t: t.arrival)
    if not waiting:
      return
    # The last read-back is current for every live slot: all were in place for the last
    # generate, and nothing has run since (a fresh view would cost a transfer per round).
    view = self._last_view
    # Slots already answering free within a few steps anyway (an answer is short): they
    # take waiting requests without a pause.
    soon = sum(view.phase[s] != Phase.THINKING for s in self.live)
    waiting = waiting[:max(0, len(waiting) - len(self._free_slots()) - soon)]
    if not waiting:
      return
    ratio = self.config.preempt_ratio or self.config.min_class_ratio
    left = sorted(((self._remaining(t, view, s), s) for s, t in self.live.items()
                   if view.phase[s] == Phase.THINKING and
                   view.thinking_tokens[s] >= self.config.preempt_after), reverse=True)
    for t_wait, (remaining, slot) in zip(waiting, left):
      if remaining < ratio * max(self._work(t_wait), 1.0):
        break
      t = self.live.pop(slot)
      self._read_slot(t, view, slot)   # pass on what it produced before the pause
      t.saved = self.engine.evict(slot)
      t.slot_seconds += self.clock() - t.slot_since
      t.slot = None
      t.preemptions += 1
      self.preemptions += 1
      self.paused.append(t)

  def _remaining(self, t: _Tracked, view, slot: int) -> float:
    """Predicted thinking still to come (a request past its prediction: 0, it may be
    about to stop)."""
    return work_of(t.predicted, _budget_or_none(t.request.budget),
                   int(view.thinking_tokens[slot]))

  def _read_slot(self, t: _Tracked, view, slot: int) -> None:
    n = int(view.num_generated[slot])
    if n > t.read:
      tokens = view.tokens[slot, t.read:n].tolist()
      segments = view.segments[slot, t.read:n].tolist()
      self.generated_tokens += n - t.read
      t.read = n
      if t.first_answer is None and int(view.answer_tokens[slot]) > 0:
        t.first_answer = self.clock()
      if t.on_event is not None:
        t.on_event("tokens", (tokens, segments))

  def _read_back(self) -> list[Completion]:
    view = self._last_view = self.engine.view()
    out = []
    for slot, t in list(self.live.items()):
      self._read_slot(t, view, slot)
      if view.phase[slot] == Phase.DONE:
        self.engine.free(slot)
        del self.live[slot]
        t.slot_seconds += self.clock() - t.slot_since
        c = self._finish(t, view, slot)
        generated = len(c.tokens)
        self.classes.record(t.side, generated, t.slot_seconds)
        self._mean_work = generated if not self._mean_work else (
            0.95 * self._mean_work + 0.05 * generated)
        if self.slo is not None:
          self.slo.observe_done(c.latency, c.answer_tokens)
        out.append(c)
    return out

  def _finish(self, t: _Tracked, view, slot: int | None = None) -> Completion:
    if view is None:  # cancelled
      c = Completion(t.request.id, t.prompt_tokens, [], [], 0, 0, "cancelled", False,
                     t.predicted, t.klass, t.arrival, t.first_answer, self.clock(),
                     t.preemptions, cancelled=True, slot_seconds=t.slot_seconds,
                     budget=_budget_or_none(t.request.budget))
    else:
      n = int(view.num_generated[slot])
      c = Completion(
          id=t.request.id, prompt_tokens=t.prompt_tokens,
          tokens=view.tokens[slot, :n].tolist(), segments=view.segments[slot, :n].tolist(),
          thinking_tokens=int(view.thinking_tokens[slot]),
          answer_tokens=int(view.answer_tokens[slot]),
          stop_reason=StopReason(int(view.stop_reason[slot])).name.lower(),
          finished=bool(view.finished[slot]), predicted_thinking=t.predicted,
          predicted_class=t.klass, arrival=t.arrival, first_answer=t.first_answer,
          end=self.clock(), preemptions=t.preemptions, slot_seconds=t.slot_seconds,
          budget=_budget_or_none(t.request.budget))
    if t.on_event is not None:
      t.on_event("done", c)
    return c


def _budget_or_none(budget) -> int | None:
  b = parse_budget(budget)
  return None if b >= UNLIMITED else b


def percentiles(values, qs=(50, 99)) -> list[float]:
  return [float(np.percentile(values, q)) if len(values) else math.nan for q in qs]
