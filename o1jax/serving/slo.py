"""SLO mode: as the queue grows, new requests get smaller thinking budgets.

No open server we know of (vLLM, SGLang, JetStream) trades a request's reasoning for its
latency; a reasoner can, because its controller answers from any budget (the cap forces the
close and the answer follows). At each arrival the scheduler estimates the time the request
would wait (the work ahead of it, in decode steps of all slots) and gives it the largest
budget level whose thinking still ends within the SLO; an unconstrained request keeps its
own budget. The estimate's headroom is corrected from the latencies requests then saw: it
shrinks while more than 1% of the recent ones miss the SLO and grows back while none do.

The budget is a cap on the controller (the model still decides to stop earlier); the
embedded reasoner was not trained on budget-conditioned prompts, so nothing tells it the
budget in advance (docs/SERVING.md states what that costs in accuracy).
"""

from __future__ import annotations

import collections
import dataclasses
import math

LEVELS = (0, 32, 128)   # budget levels (few: each is a distinct request to decode)


@dataclasses.dataclass
class SloBudgeter:
  slo_s: float
  levels: tuple[int, ...] = LEVELS
  headroom: float = 0.7                  # share of the SLO the estimate may fill
  min_headroom: float = 0.1
  max_headroom: float = 0.9
  window: int = 200

  def __post_init__(self):
    if not self.slo_s > 0:
      raise ValueError(f"slo_p99_s must be > 0, got {self.slo_s!r}")
    self.step_s = None                   # seconds per decode step, round overheads included
    self.answer_tokens = 10.0            # close plus answer, measured
    self._latencies = collections.deque(maxlen=self.window)
    self.cuts = 0

  def observe_round(self, seconds: float, steps: int) -> None:
    if steps > 0 and seconds > 0:
      per = seconds / steps
      self.step_s = per if self.step_s is None else 0.9 * self.step_s + 0.1 * per

  def observe_done(self, latency: float, answer_tokens: int) -> None:
    self.answer_tokens = 0.95 * self.answer_tokens + 0.05 * (answer_tokens + 1)
    self._latencies.append(latency)
    if len(self._latencies) < 50 or len(self._latencies) % 10:
      return
    missed = sum(x > self.slo_s for x in self._latencies) / len(self._latencies)
    if missed > 0.01:
      self.headroom = max(self.min_headroom, self.headroom * 0.9)
    elif missed == 0:
      self.headroom = min(self.max_headroom, self.headroom * 1.03)

  def budget(self, work_ahead_tokens: float, slots: int, own_budget: int | None
             ) -> int | None:
    """The budget for a request arriving behind `work_ahead_tokens` (generated tokens
    still to come in the slots and the queue); `own_budget` (None: unlimited) is never
    raised."""
    if self.step_s is None:
      return own_budget
    wait_steps = work_ahead_tokens / slots
    allowed = self.headroom * self.slo_s / self.step_s - wait_steps - self.answer_tokens
    fits = [b for b in self.levels if b <= allowed]
    level = fits[-1] if fits else self.levels[0]
    if level == self.levels[-1] and allowed > 2 * self.levels[-1]:
      return own_budget                  # room for far more than the top level: no cap
    if own_budget is not None and own_budget <= level:
      return own_budget
    self.cuts += 1
    return level


def work_of(predicted: float, budget: int | None, done: int = 0) -> float:
  """Predicted thinking still to come, within the budget (nan prediction: the budget, or
  0 when there is neither)."""
  if not math.isfinite(predicted):
    predicted = budget if budget is not None else 0.0
  if budget is not None:
    predicted = min(predicted, budget)
  return max(predicted - done, 0.0)
