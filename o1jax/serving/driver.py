"""The scheduler in one background thread, and its Prometheus metrics.

The Scheduler is driven by one thread calling `step()`; web handlers run on an event loop and
only `submit` and `cancel` (both thread-safe). `Driver` owns that thread: it sleeps while
nothing is queued (woken by a submit), tracks which requests are still owed an answer (so a
shutdown can drain them and a crash can fail them instead of leaving them hanging), and
records each completion in `Metrics`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

from o1jax.serving.engine import Request
from o1jax.serving.scheduler import Completion, Scheduler

log = logging.getLogger("o1jax.serving")

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _SchedulerCounters:
  """Counters the scheduler keeps itself, exposed at scrape time (no double bookkeeping)."""

  def __init__(self, scheduler: Scheduler):
    self.scheduler = scheduler

  def collect(self):
    yield CounterMetricFamily("o1jax_preemptions", "Requests paused to host (preempt policy)",
                              value=self.scheduler.preemptions)
    yield CounterMetricFamily("o1jax_generated_tokens", "Tokens read back from the slots",
                              value=self.scheduler.generated_tokens)


class Metrics:
  """One registry per app, so several apps (tests) in a process do not collide."""

  def __init__(self, scheduler: Scheduler):
    self.registry = r = CollectorRegistry()
    Gauge("o1jax_queue_depth", "Requests waiting for a slot (queued, prefilled or paused)",
          registry=r).set_function(lambda: scheduler.queue_depth)
    Gauge("o1jax_live_slots", "Slots holding a request", registry=r).set_function(
        lambda: len(scheduler.live))
    Gauge("o1jax_slots", "Decode slots of the engine", registry=r).set(scheduler.engine.slots)
    self.thinking_tokens = Counter("o1jax_thinking_tokens", "Thinking tokens of completed "
                                   "requests", registry=r)
    self.answer_tokens = Counter("o1jax_answer_tokens", "Answer tokens of completed requests",
                                 registry=r)
    self.latency = Histogram("o1jax_request_latency_seconds", "Arrival to last token, by the "
                             "budget head's predicted class", ["predicted_class"],
                             buckets=_LATENCY_BUCKETS, registry=r)
    self.first_answer = Histogram("o1jax_time_to_answer_seconds", "Arrival to the first answer "
                                  "token (thinking is the wait)", ["predicted_class"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
    self.requests = Counter("o1jax_requests", "Accepted requests by outcome", ["outcome"],
                            registry=r)
    self.rejections = Counter("o1jax_rejections", "Requests refused before any compute, by "
                              "reason", ["reason"], registry=r)
    r.register(_SchedulerCounters(scheduler))

  def completed(self, c: Completion) -> None:
    if c.cancelled:
      self.requests.labels("cancelled").inc()
      return
    self.requests.labels("completed").inc()
    self.thinking_tokens.inc(c.thinking_tokens)
    self.answer_tokens.inc(c.answer_tokens)
    self.latency.labels(c.predicted_class).observe(c.latency)
    if c.first_answer is not None:
      self.first_answer.labels(c.predicted_class).observe(c.first_answer - c.arrival)


class DriverStopped(RuntimeError):
  """The driver is not running (stopped, or failed): no request can be accepted."""


class Driver:
  """Runs `scheduler.step()` in a daemon thread while there is work."""

  def __init__(self, scheduler: Scheduler, metrics: Metrics | None = None,
               round_delay_s: float = 0.0):
    self.scheduler, self.metrics = scheduler, metrics
    # Sleep between rounds while busy: holds requests in flight for tests and demos of
    # disconnects, overload and shutdown on a model that otherwise answers in milliseconds.
    self.round_delay_s = round_delay_s
    self.error: BaseException | None = None
    self._owed: dict[str, Callable] = {}     # id -> on_event of requests not yet done
    self._lock = threading.Lock()
    self._wake = threading.Event()
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.latency_ewma = math.nan              # seconds; for Retry-After

  @property
  def running(self) -> bool:
    return self._thread is not None and self._thread.is_alive() and self.error is None

  @property
  def in_flight(self) -> int:
    with self._lock:
      return len(self._owed)

  def start(self) -> None:
    self._thread = threading.Thread(target=self._run, name="o1jax-scheduler", daemon=True)
    self._thread.start()

  def submit(self, request: Request, on_event: Callable) -> None:
    """Scheduler.submit (ValueError, QueueFull) once the driver runs; DriverStopped if not."""
    if not self.running:
      raise DriverStopped("the scheduler is not running" +
                          (f" (it failed: {self.error!r})" if self.error else ""))
    with self._lock:   # owed before submit: the driver may finish it before submit returns
      self._owed[request.id] = on_event
    try:
      self.scheduler.submit(request, lambda kind, payload: self._event(request.id, kind,
                                                                        payload))
    except BaseException:
      with self._lock:
        self._owed.pop(request.id, None)
      raise
    self._wake.set()

  def cancel(self, request_id: str) -> None:
    self.scheduler.cancel(request_id)
    self._wake.set()

  def drain(self, timeout_s: float) -> bool:
    """Waits (bounded) until every accepted request is done; True if it was."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and self.running:
      if self.scheduler.idle and not self.in_flight:
        return True
      time.sleep(0.02)
    return self.scheduler.idle and not self.in_flight

  def stop(self, timeout_s: float = 10.0) -> None:
    self._stop.set()
    self._wake.set()
    if self._thread is not None:
      self._thread.join(timeout_s)
    with self._lock:
      left = list(self._owed)
    if left:   # never silently: each is logged (they get an error event from _fail_all)
      log.warning("stopping with %d request(s) not done: %s", len(left), ", ".join(left))
      self._fail_all(DriverStopped("the server stopped before the request finished"))

  # -- the driving thread ------------------------------------------------------------------

  def _event(self, request_id: str, kind: str, payload) -> None:
    if kind == "done":
      with self._lock:
        on_event = self._owed.pop(request_id, None)
      self._record(payload)
    else:
      with self._lock:
        on_event = self._owed.get(request_id)
    if on_event is not None:
      on_event(kind, payload)

  def _record(self, c: Completion) -> None:
    if c.cancelled:
      log.info("request %s cancelled; its slot is free", c.id)
    else:
      a = 0.2
      self.latency_ewma = (c.latency if math.isnan(self.latency_ewma)
                           else (1 - a) * self.latency_ewma + a * c.latency)
    if self.metrics is not None:
      self.metrics.completed(c)

  def _run(self) -> None:
    try:
      while not self._stop.is_set():
        self._wake.clear()
        if self.scheduler.idle:
          self._wake.wait(0.1)
          continue
        self.scheduler.step()
        if self.round_delay_s > 0:
          time.sleep(self.round_delay_s)
    except BaseException as e:  # a failed step must not leave requests waiting forever
      log.exception("the scheduler failed; failing every request in flight")
      self.error = e
      self._fail_all(e)

  def _fail_all(self, error: BaseException) -> None:
    with self._lock:
      owed, self._owed = self._owed, {}
    for request_id, on_event in owed.items():
      log.warning("request %s failed: %r", request_id, error)
      on_event("error", error)
