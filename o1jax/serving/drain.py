"""A graceful stop for the OpenAI endpoint (o1jax/serving/http.py) that says so and answers
every request: `drain` while the server still listens, then uvicorn's own shutdown."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("o1jax.serving")


class ServerShutdown(RuntimeError):
  """The server shut down before the request finished (it outlived the drain)."""


async def drain(app: FastAPI, timeout_s: float | None = None) -> None:
  """The first half of a graceful stop, while the server still listens: /health answers 503
  "draining" (a load balancer takes the server out) and new completions 503; requests in
  flight get up to `timeout_s` (default --drain_timeout_s) to finish; those still open then
  are answered with a 503 error (a stream: an error event, then [DONE]) and cancelled."""
  state = app.state
  timeout_s = state.options.drain_timeout_s if timeout_s is None else timeout_s
  state.draining = True
  loop = asyncio.get_running_loop()
  log.info("draining: %d request(s) in flight, up to %g s", len(state.exchanges), timeout_s)
  deadline = loop.time() + timeout_s
  while state.exchanges and loop.time() < deadline:
    await asyncio.sleep(0.02)
  left = list(state.exchanges.values())
  if not left:
    return
  log.warning("drain timed out after %g s: failing %d request(s): %s", timeout_s, len(left),
              ", ".join(ex.id for ex in left))
  error = ServerShutdown(f"the server shut down before the request finished (it was still "
                         f"running at the end of the {timeout_s:g} s drain, --drain_timeout_s)")
  for ex in left:
    ex.queue.put_nowait(("error", error))
    state.driver.cancel(ex.id)
  deadline = loop.time() + 5.0   # the handlers write their errors
  while state.exchanges and loop.time() < deadline:
    await asyncio.sleep(0.02)


class Server(uvicorn.Server):
  """uvicorn with a drain phase. The first SIGTERM / Ctrl-C (or `request_drain()`, from any
  thread) runs `drain` while the server still accepts connections, then uvicorn's own
  shutdown; a second signal cuts the drain short (uvicorn's shutdown starts at once). Plain
  uvicorn would stop listening first, so /health could never say "draining", and at its
  timeout it cut streams without an error event and answered waiting requests with a
  plain-text 500."""

  def __init__(self, config: uvicorn.Config):
    super().__init__(config)
    self.drain_requested = False
    self._drain: asyncio.Task | None = None

  def request_drain(self) -> None:
    self.drain_requested = True   # picked up within a tick (0.1 s) on the server's loop

  def handle_exit(self, sig, frame) -> None:
    if self.drain_requested or self.should_exit or not isinstance(self.config.app, FastAPI):
      super().handle_exit(sig, frame)
    else:
      self.drain_requested = True

  async def on_tick(self, counter: int) -> bool:
    if self.drain_requested and self._drain is None:
      self._drain = asyncio.create_task(drain(self.config.app))
    if self._drain is not None and self._drain.done():
      self.should_exit = True
    return await super().on_tick(counter)
