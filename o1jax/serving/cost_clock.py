"""Serving time on a cost clock: reproducible latencies on a machine whose speed drifts.

The dev VM's speed moves by 25% and more over minutes, and a tail latency measured at 80% of
a capacity measured minutes earlier can be at 60% or at 110% of the machine's speed by then:
one run's p99 then says more about the VM than about the policy. On the cost clock every
engine call advances a virtual clock by its cost under a model measured once, on this
machine, before the runs (the fastest of several timed real calls: on a VM shared with other
jobs a median moves with their load, 1.8 ms a decode step in one minute and 12 ms in another
on this machine; the fastest call is what the engine costs when it has the cores): a
`generate` call costs
`generate_call_s + steps * step_s`, a prefill `prefill_call_s + rows * prefill_row_s`, and
insert, view, evict, resume and free each their own. Every token is still really decoded by
the engine; only time is modelled, so each policy's latencies follow from what it does
(which calls, how many steps, how many pauses), the same way on every run.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import numpy as np

from o1jax.serving.engine import Engine, Prefix, Request, SavedSlot


@dataclasses.dataclass(frozen=True)
class CostModel:
  step_s: float             # one decode step of every slot
  generate_call_s: float    # a generate call's fixed cost (dispatch, loop entry, sync)
  prefill_call_s: float
  prefill_row_s: float
  insert_s: float
  view_s: float
  evict_s: float
  resume_s: float
  free_s: float

  @classmethod
  def measure(cls, engine: Engine, prompts: Sequence[str], reps: int = 9) -> "CostModel":
    """The fastest of `reps` timed calls on `engine` (compiled already: `Engine.warm_up`),
    with every slot thinking, so no call ends early. Leaves every slot free."""
    med = lambda xs: float(np.min(xs))

    def timed(fn):
      t = time.perf_counter()
      out = fn()
      jax.block_until_ready(engine.state)
      return time.perf_counter() - t, out

    def fill():
      for slot, prefix in enumerate(engine.prefill_batch(
          [Request(prompts[s % len(prompts)], min_thinking=64, seed=s)
           for s in range(engine.slots)])):
        engine.insert(prefix, slot)

    one, many = [], []
    for _ in range(reps):
      fill()
      one.append(timed(lambda: engine.generate(1))[0])
      many.append(timed(lambda: engine.generate(33))[0])
    step = max(0.0, (med(many) - med(one)) / 32)
    small, large = [], []
    batch = 2 * engine.slots
    for _ in range(reps):
      small.append(timed(lambda: engine.prefill_batch([Request(prompts[0])]))[0])
      large.append(timed(lambda: engine.prefill_batch([Request(p) for p in
                                                       (list(prompts) * batch)[:batch]]))[0])
    row = max(0.0, (med(large) - med(small)) / (batch - 1))
    prefix = engine.prefill(Request(prompts[0]))
    insert, view, evict, resume, free = [], [], [], [], []
    for _ in range(reps):
      insert.append(timed(lambda: engine.insert(prefix, 0))[0])
      view.append(timed(engine.view)[0])
      t, saved = timed(lambda: engine.evict(0))
      evict.append(t)
      resume.append(timed(lambda: engine.resume(saved, 0))[0])
      free.append(timed(lambda: engine.free(0))[0])
    for slot in range(engine.slots):
      engine.free(slot)
    return cls(step_s=step, generate_call_s=max(0.0, med(one) - step),
               prefill_call_s=max(0.0, med(small) - row), prefill_row_s=row,
               insert_s=med(insert), view_s=med(view), evict_s=med(evict),
               resume_s=med(resume), free_s=med(free))


class CostClock:
  """A clock that moves only when told: `clock()` reads it, `advance(dt)` moves it."""

  def __init__(self, start: float = 0.0):
    self.now = start

  def __call__(self) -> float:
    return self.now

  def advance(self, seconds: float) -> None:
    self.now += max(0.0, seconds)


class ClockedEngine:
  """An Engine whose calls advance a CostClock by their modelled cost (everything else is
  the engine's own)."""

  def __init__(self, engine: Engine, costs: CostModel, clock: CostClock):
    self.engine, self.costs, self.clock = engine, costs, clock

  def __getattr__(self, name: str) -> Any:
    return getattr(self.engine, name)

  def prefill_batch(self, requests: Sequence[Request]) -> list[Prefix]:
    out = self.engine.prefill_batch(requests)
    self.clock.advance(self.costs.prefill_call_s + len(requests) * self.costs.prefill_row_s)
    return out

  def prefill(self, request: Request) -> Prefix:
    return self.prefill_batch([request])[0]

  def insert(self, prefix: Prefix, slot: int) -> None:
    self.engine.insert(prefix, slot)
    self.clock.advance(self.costs.insert_s)

  def generate(self, k: int, return_on_finish: bool = False) -> int:
    steps = self.engine.generate(k, return_on_finish)
    self.clock.advance(self.costs.generate_call_s + steps * self.costs.step_s)
    return steps

  def view(self):
    out = self.engine.view()
    self.clock.advance(self.costs.view_s)
    return out

  def evict(self, slot: int) -> SavedSlot:
    out = self.engine.evict(slot)
    self.clock.advance(self.costs.evict_s)
    return out

  def resume(self, saved: SavedSlot, slot: int) -> None:
    self.engine.resume(saved, slot)
    self.clock.advance(self.costs.resume_s)

  def free(self, slot: int) -> None:
    self.engine.free(slot)
    self.clock.advance(self.costs.free_s)
