"""The scheduler's configuration, its policies and what it reports per request
(o1jax/serving/scheduler.py schedules)."""

from __future__ import annotations

import dataclasses

POLICIES = ("static", "fcfs", "preempt", "pools", "spf")
PREDICTED = ("preempt", "pools", "spf")   # policies that schedule by the prediction
FALLBACK_PREDICTORS = ("budget",)


class QueueFull(RuntimeError):
  """The bounded queue is full: the request is rejected, not lost."""


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
  policy: str = "fcfs"
  max_queue: int = 256             # requests waiting (not in a slot) before submit rejects
  steps_busy: int = 4              # k per generate() while a slot is free or work waits
  steps_idle: int = 64             # k when every slot is busy and nothing waits
  steps_preempt: int = 16          # preempt: k while a hard request is live (an easy
                                   # arrival can pause it within k steps)
  adaptive: bool = True            # False: always steps_busy, and no return on a finish
  preempt_after: int = 0           # preempt: thinking tokens before a request may be paused
  preempt_ratio: float | None = None  # preempt: the victim's predicted remaining work over
                                   # the waiting request's (default: min_class_ratio)
  min_class_ratio: float = 4.0     # classes act while hard costs this many easy requests
  hard_threshold: float | None = None  # a constant boundary (predicted tokens) instead of
                                   # the calibrated one; the classes then always act
  fast_slots: int | None = None    # pools: slots hard requests may never take (default:
                                   # from the measured slot-time share of hard requests)
  max_wait_s: float | None = None  # spf / preempt: a request waiting (or paused) this long
                                   # goes first, oldest first (None: no such rule)
  slo_p99_s: float | None = None   # SLO mode: budgets shrink as the queue grows
  fallback_predictor: str | None = None  # without a budget head: "budget" predicts a
                                   # request's own thinking budget (unlimited: the context)

  def __post_init__(self):
    if self.policy not in POLICIES:
      raise ValueError(f"unknown policy {self.policy!r}; known: {', '.join(POLICIES)}")
    bad = [n for n in ("max_queue", "steps_busy", "steps_idle", "steps_preempt")
           if getattr(self, n) < 1]
    bad += [n for n in ("preempt_after",) if getattr(self, n) < 0]
    bad += [n for n in ("preempt_ratio", "hard_threshold", "max_wait_s", "slo_p99_s")
            if getattr(self, n) is not None and not getattr(self, n) > 0]
    if not self.min_class_ratio >= 1:
      bad.append("min_class_ratio")
    if bad:
      raise ValueError("SchedulerConfig: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
                       + " out of range (counts >= 1, ratios and times > 0)")
    if self.fallback_predictor not in (None,) + FALLBACK_PREDICTORS:
      raise ValueError(f"SchedulerConfig.fallback_predictor={self.fallback_predictor!r}; "
                       f"known: {', '.join(FALLBACK_PREDICTORS)}")


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
  budget: int | None = None        # the thinking budget it ran with (SLO mode may cut it)

  @property
  def latency(self) -> float:
    return self.end - self.arrival
