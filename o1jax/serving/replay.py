"""Replaying decoded requests through the scheduler: a benchmark grid that fits a 2-core CPU.

A served request's tokens do not depend on how it was scheduled: they equal `think()` on
that request alone, under every policy, paused or not (tests/test_serving.py asserts it).
With greedy decoding a request's outcome is a function of (prompt, budget, minimum
thinking), so it can be decoded once, in large batches, and every policy replayed on it:
`ReplayEngine` has the `Engine`'s interface and answers each call from those outcomes (a
slot's row advances one token per step, thinking, then the close, then the answer, as the
engine's does). Under `cost_clock.ClockedEngine` each call still costs what the real call
costs, so a policy's latencies follow from the calls it makes, exactly as with the engine
(`launch/bench_serving.py --validate_replay` runs the same stream through both and compares
every request's latency; tests/test_serving_policies.py does so on a small stream).
Only greedy requests without per-request settings replay (ValueError otherwise).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.serving.engine import Engine, Prefix, Request, SlotView
from o1jax.thinking.api import parse_budget
from o1jax.thinking.config import Phase, StopReason
from o1jax.thinking.state import Segment


@dataclasses.dataclass(frozen=True)
class Outcome:
  thinking_tokens: int
  answer_tokens: int
  stop_reason: int
  finished: bool
  correct: bool | None       # the task's verifier on the answer (None: not a task prompt)

  @property
  def generated(self) -> int:   # thinking, the one close token, the answer
    return self.thinking_tokens + 1 + self.answer_tokens


def request_key(request: Request) -> tuple:
  if request.settings:
    raise ValueError(f"request {request.id!r}: only greedy requests without per-request "
                     f"settings replay, got settings {dict(request.settings)}")
  return (request.prompt, parse_budget(request.budget), int(request.min_thinking))


class OutcomeCache:
  """Outcomes and predictions, decoded by the real model in batches and kept (optionally
  in a JSON file keyed by the checkpoint's name, so a rerun skips the decoding)."""

  def __init__(self, engine: Engine, path: str | None = None):
    if engine.config.temperature != 0:
      raise ValueError("replay needs greedy decoding (temperature 0)")
    self.engine, self.path = engine, path
    self.outcomes: dict[tuple, Outcome] = {}
    self.predicted: dict[str, tuple[float, int]] = {}    # prompt -> (head, prompt tokens)
    if path and os.path.exists(path):
      with open(path) as f:
        data = json.load(f)
      self.outcomes = {(p, b, m): Outcome(*o) for p, b, m, o in data["outcomes"]}
      self.predicted = {p: tuple(v) for p, v in data["predicted"].items()}

  def save(self) -> None:
    if self.path:
      with open(self.path, "w") as f:
        json.dump({"outcomes": [[*k, list(dataclasses.astuple(o))]
                                for k, o in self.outcomes.items()],
                   "predicted": self.predicted}, f)

  def fill(self, requests: Sequence[Request], batch_size: int = 64, log=None) -> int:
    """Decodes every request not seen yet; returns how many were decoded."""
    from o1jax.thinking import think_texts
    todo = {request_key(r) for r in requests} - set(self.outcomes)
    prompts = sorted({r.prompt for r in requests} - set(self.predicted))
    for start in range(0, len(prompts), 16):   # the engine's own prefill: its predictions
      chunk = prompts[start:start + 16]
      for p, prefix in zip(chunk, self.engine.prefill_batch([Request(p) for p in chunk])):
        self.predicted[p] = (prefix.predicted_thinking, prefix.prompt_tokens)
    # Like budgets, then like predicted lengths, together: a batch runs as long as its
    # longest request.
    todo = sorted(todo, key=lambda k: (k[1], k[2], self.predicted[k[0]][0], k[0]))
    for start in range(0, len(todo), batch_size):
      chunk = todo[start:start + batch_size]
      thoughts = think_texts(self.engine.params, self.engine.tokenizer, [k[0] for k in chunk],
                             self.engine.config, budgets=[k[1] for k in chunk],
                             min_thinking=[k[2] for k in chunk], batch_size=batch_size)
      for k, t in zip(chunk, thoughts):
        problem = tasks_lib.find_task_for_prompt(k[0])
        correct = None if problem is None else bool(
            tasks_lib.get_task(problem.task).verify(problem, t.answer))
        self.outcomes[k] = Outcome(t.thinking_tokens, t.answer_tokens,
                                   int(StopReason[t.stop_reason.upper()]), t.finished, correct)
      if log:
        log(f"  decoded {min(start + batch_size, len(todo))}/{len(todo)} outcomes")
      if start // batch_size % 4 == 3:
        self.save()
    self.save()
    return len(todo)

  def get(self, request: Request) -> Outcome:
    return self.outcomes[request_key(request)]


class ReplayEngine:
  """The Engine's slot interface over decoded outcomes (see the module docstring)."""

  def __init__(self, cache: OutcomeCache, slots: int, with_head: bool = True):
    self.cache, self.slots = cache, slots
    self.config = cache.engine.config
    self.budget_head = cache.engine.budget_head if with_head else None
    self._rows: list[list | None] = [None] * slots     # [outcome, tokens generated]
    w = self.config.cache_len
    self._tokens = np.zeros((slots, w), np.int32)       # token ids are not replayed
    self._segments = np.zeros((slots, w), np.int32)

  def validate(self, request: Request):
    return self.cache.engine.validate(request)

  def prefill_batch(self, requests: Sequence[Request]) -> list[Prefix]:
    out = []
    for i, r in enumerate(requests):
      head, prompt_tokens = self.cache.predicted[r.prompt]
      out.append(Prefix(self.cache.get(r), i, prompt_tokens,
                        head if self.budget_head is not None else math.nan))
    return out

  def prefill(self, request: Request) -> Prefix:
    return self.prefill_batch([request])[0]

  def insert(self, prefix: Prefix, slot: int) -> None:
    self._rows[slot] = [prefix.state, 0]

  def generate(self, k: int, return_on_finish: bool = False) -> int:
    left = [o.generated - n for row in self._rows if row is not None
            for o, n in [row] if n < o.generated]
    if not left:
      return 0
    steps = min(k, min(left) if return_on_finish else max(left))
    for row in self._rows:
      if row is not None:
        row[1] = min(row[0].generated, row[1] + steps)
    return steps

  def view(self) -> SlotView:
    """Read once, before the next call (its token and segment arrays are reused)."""
    s = self.slots
    v = SlotView(phase=np.full(s, int(Phase.DONE), np.int32), tokens=self._tokens,
                 segments=self._segments, num_generated=np.zeros(s, np.int32),
                 thinking_tokens=np.zeros(s, np.int32), answer_tokens=np.zeros(s, np.int32),
                 stop_reason=np.zeros(s, np.int32), finished=np.zeros(s, bool))
    for slot, row in enumerate(self._rows):
      if row is None:
        continue
      o, n = row
      t = o.thinking_tokens
      v.num_generated[slot] = n
      v.thinking_tokens[slot] = min(n, t)
      v.answer_tokens[slot] = max(0, n - t - 1)
      v.segments[slot, :min(n, t)] = Segment.THINKING
      if n > t:
        v.segments[slot, t] = Segment.CLOSE
        v.segments[slot, t + 1:n] = Segment.ANSWER
        v.segments[slot, n:] = Segment.PAD
        v.stop_reason[slot] = o.stop_reason
      done = n >= o.generated
      v.phase[slot] = Phase.DONE if done else (Phase.THINKING if n <= t else Phase.ANSWERING)
      v.finished[slot] = done and o.finished
    return v

  def evict(self, slot: int):
    row, self._rows[slot] = self._rows[slot], None
    return row

  def resume(self, saved, slot: int) -> None:
    self._rows[slot] = saved

  def free(self, slot: int) -> None:
    self._rows[slot] = None

  def kv_bytes_per_token(self) -> int:
    return self.cache.engine.kv_bytes_per_token()

