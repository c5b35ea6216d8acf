"""Serving budgeted reasoning: a slot engine that runs the thinking loop's own step, and
schedulers for a bimodal load (docs/SERVING.md)."""

from o1jax.serving.engine import Engine, Prefix, Request, SavedSlot
from o1jax.serving.scheduler import (POLICIES, Completion, QueueFull, Scheduler,
                                     SchedulerConfig)
