"""Scheduling a bimodal reasoning load over the engine's slots.

Policies (`SchedulerConfig.policy`):
  static   what `think()` on a batch does: admit a batch of up to S requests only when every
           slot is free, run it to its end; a request arriving meanwhile waits for the whole
           batch, its hardest member included (the article's head-of-line blocking).
  fcfs     first come, first served into any free slot (continuous batching): the baseline.
  preempt  fcfs, but when new work waits and no slot is free, the live request that has
           thought longest (past `preempt_after` tokens) is paused: its KV cache and
           controller go to host (`Engine.evict`) and come back bit for bit
           (`Engine.resume`) once no new work waits; never recomputed.
  pools    slots split into a fast pool and a thinking pool; a request goes to the pool of
           its predicted class, so hard requests never occupy the fast slots.
  spf      shortest predicted thinking first.
The prediction comes from the prompt alone: the budget head reads the hidden state at
`<think>` that prefill computed anyway (`Prefix.predicted_thinking`).

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
from o1jax.thinking.config import Phase, StopReason

POLICIES = ("static", "fcfs", "preempt", "pools", "spf")


class QueueFull(RuntimeError):
  """The bounded queue is full: the request is rejected, not lost."""


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  policy: str = "fcfs"
  max_queue: int = 256             # requests waiting (not in a slot) before submit rejects
  steps_busy: int = 4              # k per generate() while a slot is free or work waits
  steps_idle: int = 64             # k when every slot is busy and nothing waits
  adaptive: bool = True            # False: always steps_busy, and no return on a finish
  preempt_after: int = 48          # thinking tokens before a request may be paused
  max_wait_s: float = 1.0          # spf / preempt: a request waiting (or paused) this long
                                   # goes first, oldest first: no starvation under load
  hard_threshold: float = 64.0     # predicted thinking tokens from which a request is "hard"
  fast_slots: int | None = None    # pools: slots of the fast pool (default: 3/4 of them)

  def __post_init__(self):
    if self.policy not in POLICIES:
      raise ValueError(f"unknown policy {self.policy!r}; known: {', '.join(POLICIES)}")
    bad = [n for n in ("max_queue", "steps_busy", "steps_idle") if getattr(self, n) < 1]
    if self.preempt_after < 0:
      bad.append("preempt_after")
    if bad:
      raise ValueError("SchedulerConfig: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
                       + " must be positive")


@dataclasses.dataclass
class Completion:
  """A request's outcome, with its timings (seconds on the scheduler's clock)."""
  id: str
  prompt_tokens: int
  tokens: list[int]
  segments: list[int]
  thinking_tokens: int
  answer_tokens: int
  stop_reason: str
  finished: bool                   # the answer ended (EOS or its cap), not cut by the context
  predicted_thinking: float
  predicted_class: str
  arrival: float
  first_answer: float | None       # when its first answer token was read
  end: float
  preemptions: int = 0
  cancelled: bool = False
  slot_seconds: float = 0.0        # time spent holding a slot (paused time excluded)

  @property
  def latency(self) -> float:
    return self.end - self.arrival


@dataclasses.dataclass
class _Tracked:
  request: Request
  arrival: float
  on_event: Callable | None
  prefix: Prefix | None = None
  prompt_tokens: int = 0
  predicted: float = math.nan
  klass: str = "easy"
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
    fast = config.fast_slots if config.fast_slots is not None else max(1, (3 * n) // 4)
    if config.policy == "pools" and not 1 <= fast < n:
      raise ValueError(f"pools needs 1 <= fast_slots < slots, got {fast} of {n}")
    self.pool_of_slot = ["easy" if s < fast else "hard" for s in range(n)]
    self._lock = threading.Lock()
    self._arrivals: collections.deque[_Tracked] = collections.deque()
    self._cancelled: set[str] = set()
    self.waiting: list[_Tracked] = []      # prefilled, not yet in a slot
    self.paused: list[_Tracked] = []       # evicted to host (preempt)
    self.live: dict[int, _Tracked] = {}
    self.preemptions = 0
    self._last_view = None
    self.rejected = collections.Counter()
    self.generated_tokens = 0

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

  # -- the driving thread -----------------------------------------------------------------

  def step(self) -> list[Completion]:
    """One round: cancellations, prefills, admissions (and preemptions), one generate(k),
    then the tokens read back. Returns the requests that completed in it."""
    done = self._apply_cancellations()
    self._prefill_arrivals()
    self._admit()
    if not self.live:
      return done
    # A free slot: keep the call short, an arrival during it can start within k steps.
    # Every slot busy: a long call, since it returns as soon as a request finishes anyway
    # (that is when waiting work can be admitted).
    short = not self.config.adaptive or len(self.live) < self.engine.slots
    self.engine.generate(self.config.steps_busy if short else self.config.steps_idle,
                         return_on_finish=self.config.adaptive)
    return done + self._read_back()

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

  def _prefill_arrivals(self) -> None:
    # One prefill call per round, of at most 2x slots arrivals (more than could start in
    # this round; the rest wait for the next), so a burst never compiles a huge batch.
    with self._lock:
      n = min(len(self._arrivals), 2 * self.engine.slots)
      arrivals = [self._arrivals.popleft() for _ in range(n)]
    if not arrivals:
      return
    for t, prefix in zip(arrivals, self.engine.prefill_batch([t.request for t in arrivals])):
      t.prefix, t.prompt_tokens = prefix, prefix.prompt_tokens
      t.predicted = prefix.predicted_thinking
      t.klass = "hard" if t.predicted >= self.config.hard_threshold else "easy"
      self.waiting.append(t)

  def _free_slots(self) -> list[int]:
    return [s for s in range(self.engine.slots) if s not in self.live]

  def _next_for(self, slot: int) -> _Tracked | None:
    policy = self.config.policy
    if policy == "pools":
      # Work-conserving in one direction: an easy request may take an idle thinking slot
      # (it leaves soon), a hard one never takes a fast slot.
      fits = [t for t in self.waiting if t.klass == self.pool_of_slot[slot]]
      if not fits and self.pool_of_slot[slot] == "hard":
        fits = self.waiting
      return fits[0] if fits else None
    now = self.clock()
    starved = [t for t in self.paused + self.waiting
               if now - (t.slot_since if t.saved is not None else t.arrival)
               > self.config.max_wait_s]
    if starved:  # spf / preempt: long waiters first, oldest first
      return min(starved, key=lambda t: t.arrival)
    if policy == "spf" and self.waiting:
      return min(self.waiting, key=lambda t: (t.predicted, t.arrival))
    if self.waiting:  # preempt: new work before paused work
      return self.waiting[0]
    return self.paused[0] if self.paused else None

  def _admit(self) -> None:
    if self.config.policy == "preempt":
      self._preempt()
    if self.config.policy == "static" and self.live:
      return   # the running batch ends before the next one starts
    for slot in self._free_slots():
      t = self._next_for(slot)
      if t is None:
        continue
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
    """Pauses long thinkers while new work waits and no slot is free."""
    need = len(self.waiting) - len(self._free_slots())
    if need <= 0 or self._last_view is None:
      return
    # The last read-back is current for every live slot: all were in place for the last
    # generate, and nothing has run since (a fresh view would cost a transfer per round).
    view = self._last_view
    # Each request is paused at most once: a resumed one runs to its end.
    candidates = sorted(
        (s for s, t in self.live.items()
         if t.preemptions == 0 and view.phase[s] == Phase.THINKING and
         view.thinking_tokens[s] >= self.config.preempt_after),
        key=lambda s: -int(view.thinking_tokens[s]))
    for slot in candidates[:need]:
      t = self.live.pop(slot)
      self._read_slot(t, view, slot)   # pass on what it produced before the pause
      t.saved = self.engine.evict(slot)
      t.slot_seconds += self.clock() - t.slot_since
      t.slot_since = self.clock()      # now: when its pause began
      t.slot = None
      t.preemptions += 1
      self.preemptions += 1
      self.paused.append(t)

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
        out.append(self._finish(t, view, slot))
    return out

  def _finish(self, t: _Tracked, view, slot: int | None = None) -> Completion:
    if view is None:  # cancelled
      c = Completion(t.request.id, t.prompt_tokens, [], [], 0, 0, "cancelled", False,
                     t.predicted, t.klass, t.arrival, t.first_answer, self.clock(),
                     t.preemptions, cancelled=True, slot_seconds=t.slot_seconds)
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
          end=self.clock(), preemptions=t.preemptions, slot_seconds=t.slot_seconds)
    if t.on_event is not None:
      t.on_event("done", c)
    return c


def percentiles(values, qs=(50, 99)) -> list[float]:
  return [float(np.percentile(values, q)) if len(values) else math.nan for q in qs]
