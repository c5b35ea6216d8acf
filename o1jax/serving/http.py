"""An OpenAI-compatible HTTP endpoint for budgeted thinking (ASGI, FastAPI under uvicorn).

  POST /v1/chat/completions   the answer in `content`; the thinking in `reasoning` and
                              `reasoning_content`; usage.completion_tokens_details.
                              reasoning_tokens is the loop's own thinking count
  GET  /v1/models             the one served model
  GET  /health                200 while serving, 503 starting, draining or failed
  GET  /metrics               Prometheus text

The engine runs in one background thread (`Driver`); each request registers a callback that
hands the scheduler's events to its handler's asyncio queue. The event loop only reads
bodies and writes answers: parsing, tokenizing and checking a request run in a worker
thread, after a character count has refused prompts that cannot fit. `create_app` returns
the app, importable and testable in-process; `Server` (o1jax/serving/drain.py) serves it
with a drain phase; launch/serve.py runs that. The wire contract is in docs/SERVING_API.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import math
import secrets
import time
import uuid

from fastapi import FastAPI, Request as HttpRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from o1jax.serving import openai_schema as oa, prompt_limits
from o1jax.serving.drain import ServerShutdown
from o1jax.serving.driver import Driver, DriverStopped, Metrics
from o1jax.serving.engine import Engine, Request
from o1jax.serving.scheduler import Completion, QueueFull, Scheduler, SchedulerConfig
from o1jax.serving.transcript import Transcript
from o1jax.thinking.api import UNLIMITED

log = logging.getLogger("o1jax.serving")


@dataclasses.dataclass(frozen=True)
class ServeOptions:
  model_name: str = "o1jax-tiny"
  api_key: str | None = None            # None: no authentication
  max_body_bytes: int = 1 << 20
  effort_scale: float = 0.1             # reasoning_effort budgets = the article's x this
  default_budget: int = UNLIMITED       # thinking budget when a request sets none
  drain_timeout_s: float = 60.0         # shutdown: how long in-flight requests may finish
                                        # before they are answered with an error
  round_delay_s: float = 0.0            # see Driver.round_delay_s
  warmup: bool = True                   # compile before accepting requests


class _Exchange:
  """One HTTP request's view of its scheduler request."""

  def __init__(self, app_state, chat: oa.ChatRequest, plan: oa.BudgetPlan,
               loop: asyncio.AbstractEventLoop):
    engine: Engine = app_state.engine
    self.id = f"chatcmpl-{uuid.uuid4().hex}"
    self.created = int(time.time())
    self.model = app_state.options.model_name
    self.chat, self.plan = chat, plan
    self.transcript = Transcript(engine.tokenizer, engine.config.eos_ids, chat.stop)
    self.queue: asyncio.Queue = asyncio.Queue()
    self.done = False
    self._loop = loop

  def on_event(self, kind: str, payload) -> None:
    """From the driving thread: hand the event to the handler's loop."""
    try:
      self._loop.call_soon_threadsafe(self.queue.put_nowait, (kind, payload))
    except RuntimeError:   # the loop is closed: the server is gone, nobody is waiting
      pass

  def extension(self, c: Completion) -> dict:
    """o1jax's own fields: what budget applied and why, and the scheduler's view."""
    pred = c.predicted_thinking
    return {"thinking_budget": None if self.plan.budget == UNLIMITED else self.plan.budget,
            "budget_source": self.plan.source, "answer_cap": self.plan.answer_cap,
            "thinking_stop_reason": c.stop_reason, "predicted_class": c.predicted_class,
            "predicted_thinking_tokens": None if math.isnan(pred) else round(pred, 1),
            "preemptions": c.preemptions, "latency_s": round(c.latency, 4)}

  def usage(self, c: Completion) -> dict:
    return oa.usage(c.prompt_tokens, len(c.tokens), c.thinking_tokens)

  def body(self, c: Completion) -> dict:
    return oa.completion_body(
        id=self.id, created=self.created, model=self.model, content=self.transcript.content,
        reasoning=self.transcript.reasoning, finish_reason=self.transcript.finish_reason(),
        thinking_stop_reason=c.stop_reason, usage=self.usage(c), o1jax=self.extension(c))

  def chunk(self, delta=None, **kw) -> str:
    body = oa.chunk_body(id=self.id, created=self.created, model=self.model, delta=delta, **kw)
    return f"data: {json.dumps(body)}\n\n"


def _error(e: oa.ApiError) -> JSONResponse:
  return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _failure(error: BaseException) -> oa.ApiError:
  """The error answered for a request that failed after it was accepted."""
  if isinstance(error, ServerShutdown):
    return oa.ApiError(503, str(error), type="server_error", code="server_shutdown")
  if isinstance(error, DriverStopped):
    return oa.ApiError(503, f"the request did not finish: {error}", type="server_error",
                       code="server_shutdown")
  return oa.ApiError(500, f"the request failed on the server: {error!r}", type="server_error")


_REJECTION_REASONS = {400: "invalid", 401: "unauthorized", 404: "model_not_found",
                      413: "too_large", 429: "queue_full", 503: "unavailable"}


_ROUTES = "POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics"


def create_app(engine: Engine, scheduler_config: SchedulerConfig = SchedulerConfig(),
               options: ServeOptions = ServeOptions()) -> FastAPI:
  if scheduler_config.policy in ("pools", "spf") and engine.budget_head is None:
    raise ValueError(
        f"policy {scheduler_config.policy!r} schedules by the budget head's predicted thinking, "
        "and this engine has no budget head (Engine(budget_head=...)): every request would be "
        f"predicted alike and {scheduler_config.policy!r} would act as 'fcfs'; use 'fcfs' or "
        "'preempt', or give the engine a head")
  scheduler = Scheduler(engine, scheduler_config)
  metrics = Metrics(scheduler)
  driver = Driver(scheduler, metrics, options.round_delay_s)

  @contextlib.asynccontextmanager
  async def lifespan(app: FastAPI):
    if options.warmup:
      await asyncio.to_thread(_warm_up, scheduler)
    driver.start()
    log.info("serving %s: %d slots, policy %s, context %d tokens", options.model_name,
             engine.slots, scheduler_config.policy, engine.config.cache_len)
    try:
      yield
    finally:
      # uvicorn has stopped accepting and waited for open responses (after `drain`, when
      # served by `Server`); finish what the scheduler still holds (bounded), then stop its
      # thread: whatever is left gets an error event, never silence.
      app.state.draining = True
      if not await asyncio.to_thread(driver.drain, options.drain_timeout_s):
        log.warning("drain timed out after %.0f s", options.drain_timeout_s)
      driver.stop()

  app = FastAPI(title="o1jax", lifespan=lifespan)
  started = int(time.time())
  state = app.state
  state.engine, state.scheduler, state.driver, state.metrics = engine, scheduler, driver, metrics
  state.options, state.draining = options, False
  state.exchanges = {}                     # id -> _Exchange of requests not yet answered

  def reject(e: oa.ApiError) -> JSONResponse:
    metrics.rejections.labels(_REJECTION_REASONS.get(e.status, str(e.status))).inc()
    return _error(e)

  @app.exception_handler(HTTPException)
  async def route_error(http: HttpRequest, e: HTTPException):
    """Unknown routes and methods answer in OpenAI's error shape, not FastAPI's."""
    if e.status_code == 404:
      message = f"no route {http.method} {http.url.path}; this server serves {_ROUTES}"
      code = "not_found"
    elif e.status_code == 405:
      message = (f"{http.method} is not allowed on {http.url.path} (allowed: "
                 f"{(e.headers or {}).get('Allow', '?')})")
      code = "method_not_allowed"
    else:
      message, code = str(e.detail), None
    return _error(oa.ApiError(e.status_code, message, code=code, headers=e.headers))

  @app.post("/v1/chat/completions")
  async def chat_completions(http: HttpRequest):
    try:
      _authorize(http, options.api_key)
      body = await _read_body(http, options.max_body_bytes)
      ex = await _off_loop(_prepare, state, body, asyncio.get_running_loop())
    except oa.ApiError as e:
      return reject(e)
    headers = {"X-Request-Id": ex.id}
    if ex.chat.ignored:
      headers["X-Ignored-Fields"] = ",".join(ex.chat.ignored)
    if ex.chat.stream:
      return StreamingResponse(_stream(ex, state), media_type="text/event-stream",
                               headers={**headers, "Cache-Control": "no-cache"})
    return await _complete(ex, state, http, headers)

  @app.get("/v1/models")
  async def models(http: HttpRequest):
    try:
      _authorize(http, options.api_key)
    except oa.ApiError as e:
      return reject(e)
    return {"object": "list", "data": [{
        "id": options.model_name, "object": "model", "created": started,
        "owned_by": "o1jax", "max_model_len": engine.config.cache_len,
        "reasoning_effort_budgets": oa.effort_table(options.effort_scale)}]}

  @app.get("/health")
  async def health():
    status = ("failed" if driver.error else "draining" if state.draining
              else "ok" if driver.running else "starting")
    return JSONResponse({"status": status, "model": options.model_name, "slots": engine.slots,
                         "live_slots": len(scheduler.live), "queue_depth": scheduler.queue_depth,
                         "in_flight": driver.in_flight},
                        status_code=200 if status == "ok" else 503)

  @app.get("/metrics")
  async def prometheus():
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

  return app


def _warm_up(scheduler: Scheduler) -> None:
  """Compiles every slot function before the first client (Engine.warm_up): every prefill
  batch bucket at prompt widths 8, 16 and 32 for a plain tokenizer (the task prompts of the
  embedded model), at one chat prompt's width otherwise; other widths compile on first
  use."""
  tok = scheduler.engine.tokenizer
  if getattr(tok, "use_chat_template", False):
    prompts = [[{"role": "user", "content": "Hi"}]]
  else:   # with <think>: 5, 15 and 25 tokens
    prompts = ["1+1=", "1+1=" + "1" * 10, "1+1=" + "1" * 20]
  scheduler.engine.warm_up(prompts)


def _authorize(http: HttpRequest, api_key: str | None) -> None:
  if api_key is None:
    return
  given = http.headers.get("authorization", "")
  token = given[7:] if given.lower().startswith("bearer ") else ""
  if not hmac.compare_digest(token.encode(), api_key.encode()):
    raise oa.ApiError(401, "invalid API key: send 'Authorization: Bearer <key>' with the "
                      "server's --api_key", code="invalid_api_key")


async def _read_body(http: HttpRequest, limit: int) -> bytes:
  too_large = oa.ApiError(413, f"the request body is larger than {limit} bytes",
                          code="request_too_large")
  length = http.headers.get("content-length", "")
  if length.isdigit() and int(length) > limit:
    raise too_large
  parts, size = [], 0
  async for part in http.stream():   # chunked bodies have no length: count as we read
    size += len(part)
    if size > limit:
      raise too_large
    parts.append(part)
  return b"".join(parts)


async def _off_loop(fn, *args):
  """fn(*args) in a worker thread, so the event loop keeps serving meanwhile. If the handler
  is cancelled while it runs, a request it still managed to submit is cancelled too."""
  task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
  try:
    return await asyncio.shield(task)
  except asyncio.CancelledError:
    def abandon(t: asyncio.Future):
      if not t.cancelled() and t.exception() is None:
        _abandon(t.result(), args[0], "handler cancelled")
    task.add_done_callback(abandon)
    raise


def _prepare(state, body: bytes, loop) -> _Exchange:
  """Everything between the body and the scheduler (in a worker thread): JSON, the request's
  fields, the prompt's size against the context (prompt_limits), its tokens, the budget
  plan, and the submit (which checks the request again in the engine). ApiError if not
  accepted."""
  try:
    payload = json.loads(body)
  except (ValueError, UnicodeDecodeError) as e:
    raise oa.bad_request(f"the request body is not valid JSON: {e}")
  return _admit(state, oa.parse_chat_request(payload), loop)


def _admit(state, chat: oa.ChatRequest, loop) -> _Exchange:
  """Plans the request's budget and submits it; ApiError if it cannot be accepted."""
  engine, options, driver = state.engine, state.options, state.driver
  if chat.model != options.model_name:
    raise oa.ApiError(404, f"the model {chat.model!r} is not served here; this server serves "
                      f"{options.model_name!r}", param="model", code="model_not_found")
  if state.draining:
    raise oa.ApiError(503, "the server is shutting down", type="server_error")
  config, tokenizer = engine.config, engine.tokenizer
  template = getattr(tokenizer, "use_chat_template", False)
  room = config.cache_len - config.reserve   # the most prompt tokens the context holds
  # Before tokenizing it all: a huge prompt is refused at a cost bounded by the context.
  prompt_limits.check_characters(tokenizer, chat, template, room, config.cache_len)
  prompt = oa.prompt_of(chat, template)
  try:
    prompt_limits.check_prefix_tokens(tokenizer, prompt, room, config.cache_len)
    prompt_tokens = len(tokenizer.encode_prompt(prompt))
  except ValueError as e:   # text the tokenizer cannot represent, a template error
    raise oa.bad_request(str(e), "messages")
  plan = oa.plan_budget(chat, prompt_tokens=prompt_tokens, cache_len=config.cache_len,
                        close_tokens=config.reserve - config.max_answer_tokens,
                        max_answer_tokens=config.max_answer_tokens,
                        effort_scale=options.effort_scale,
                        default_budget=options.default_budget)
  settings = {k: v for k, v in (("temperature", chat.temperature), ("top_p", chat.top_p),
                                ("top_k", chat.top_k)) if v is not None}
  if plan.answer_cap < config.max_answer_tokens:
    settings["max_answer_tokens"] = plan.answer_cap
  ex = _Exchange(state, chat, plan, loop)
  # Without a seed, sampling varies from request to request, as OpenAI's does; with one, a
  # request samples what think_texts(..., seed=seed) samples.
  seed = secrets.randbits(32) if chat.seed is None else chat.seed
  request = Request(prompt=prompt, budget=plan.budget, seed=seed, settings=settings, id=ex.id)
  state.exchanges[ex.id] = ex   # before submit: a drain starting now waits for it
  accepted = False
  try:
    driver.submit(request, ex.on_event)
    accepted = True
  except QueueFull as e:
    raise oa.ApiError(429, f"{e}; retry later", type="rate_limit_error", code="queue_full",
                      headers={"Retry-After": str(_retry_after(state))})
  except DriverStopped as e:
    raise oa.ApiError(503, str(e), type="server_error")
  except ValueError as e:   # the engine's own check (context, settings), with its numbers
    raise oa.bad_request(str(e))
  finally:
    if not accepted:
      state.exchanges.pop(ex.id, None)
  log.debug("accepted %s (user %r): budget %s from %s", ex.id, chat.user, plan.budget,
            plan.source)
  return ex


def _retry_after(state) -> int:
  """Seconds until a slot is likely free: recent latency x the queue ahead per slot."""
  latency = state.driver.latency_ewma
  if math.isnan(latency):
    return 1
  waves = (state.scheduler.queue_depth + state.engine.slots) / state.engine.slots
  return int(min(60, max(1, math.ceil(latency * waves))))


async def _complete(ex: _Exchange, state, http: HttpRequest, headers: dict):
  """Waits for the whole answer, watching for the client going away meanwhile."""
  next_check = time.monotonic() + 0.25
  try:
    while True:
      try:
        kind, payload = await asyncio.wait_for(ex.queue.get(), timeout=0.25)
      except TimeoutError:
        kind = None
      if time.monotonic() >= next_check:
        next_check = time.monotonic() + 0.25
        if await http.is_disconnected():
          _abandon(ex, state, "client disconnected")
          return Response(status_code=499)
      if kind == "tokens":
        ex.transcript.add(*payload)
      elif kind == "done":
        ex.done = True
        return JSONResponse(ex.body(payload), headers=headers)
      elif kind == "error":
        ex.done = True
        return _error(_failure(payload))
  finally:
    _abandon(ex, state, "handler cancelled")


async def _stream(ex: _Exchange, state):
  """SSE: a role chunk, thinking deltas, answer deltas, the finish chunk, usage, [DONE]; on a
  failure (the engine's, or the end of a drain) an error event, then [DONE]."""
  try:
    yield ex.chunk({"role": "assistant", "content": ""})
    while True:
      kind, payload = await ex.queue.get()
      if kind == "tokens":
        reasoning, content = ex.transcript.add(*payload)
        if reasoning:
          yield ex.chunk(oa.reasoning_delta(reasoning))
        if content:
          yield ex.chunk({"content": content})
      elif kind == "done":
        ex.done = True
        reasoning, content = ex.transcript.finish()
        if reasoning:
          yield ex.chunk(oa.reasoning_delta(reasoning))
        if content:
          yield ex.chunk({"content": content})
        yield ex.chunk({}, finish_reason=ex.transcript.finish_reason(),
                       extra={"thinking_stop_reason": payload.stop_reason},
                       o1jax=ex.extension(payload))
        if ex.chat.include_usage:
          yield ex.chunk(None, usage=ex.usage(payload))
        yield "data: [DONE]\n\n"
        return
      elif kind == "error":
        ex.done = True
        yield f"data: {json.dumps(_failure(payload).body())}\n\n"
        yield "data: [DONE]\n\n"
        return
  finally:
    _abandon(ex, state, "client disconnected")


def _abandon(ex: _Exchange, state, why: str) -> None:
  """The handler is done with its request: forgets it, and cancels it if nobody will read it
  any more (frees its slot); logged, never silent."""
  state.exchanges.pop(ex.id, None)
  if not ex.done:
    ex.done = True
    log.info("cancelling %s: %s", ex.id, why)
    state.driver.cancel(ex.id)
