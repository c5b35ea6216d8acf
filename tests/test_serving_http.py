"""The OpenAI-compatible endpoint (o1jax/serving/http.py) against a live uvicorn server on
127.0.0.1, driven by the official `openai` client (raw HTTP only where a client cannot send
the fault: malformed JSON, an oversized body, a dropped connection)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import openai
import portpicker
import pytest
import uvicorn

from o1jax import tasks
from o1jax.serving import Engine, SchedulerConfig
from o1jax.serving import openai_schema as oa
from o1jax.serving.drain import Server
from o1jax.serving.http import ServeOptions, create_app
from o1jax.serving.predictor import load_thinking_head
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, think_texts
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "test-key"
MODEL = "o1jax-tiny"
BODY_LIMIT = 32 * 1024
HARD = [p.prompt for p in tasks.get_task("countdown").generate_problems(0, 4, 4, split="eval")]


class LiveServer:
  """uvicorn (with the drain phase, o1jax/serving/drain.py) serving `app` in a thread on a free
  loopback port."""

  def __init__(self, app):
    self.app, self.port = app, portpicker.pick_unused_port()
    self.server = Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                        log_level="warning", lifespan="on"))
    self.thread = threading.Thread(target=self.server.run, daemon=True)
    self.thread.start()
    deadline = time.monotonic() + 120
    while not self.server.started:
      assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
      time.sleep(0.05)
    self.url = f"http://127.0.0.1:{self.port}/v1"

  def client(self, key=KEY):
    return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=60)

  def raw(self, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
    conn.request(method, path, body=body, headers={"Authorization": f"Bearer {KEY}",
                                                   "Content-Type": "application/json",
                                                   **(headers or {})})
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out

  def stop(self):
    self.server.should_exit = True
    self.thread.join(60)


@pytest.fixture(scope="module")
def model():
  params, model_config, _ = load_params(embedded_checkpoint_dir())
  tokenizer = CharTokenizer()
  return params, tokenizer, make_think_config(model_config, tokenizer)


def _app(model, **kw):
  params, tokenizer, config = model
  engine = Engine(params, tokenizer, config, 4, budget_head=load_thinking_head()[0])
  sched = SchedulerConfig(max_queue=kw.pop("max_queue", 16))
  return create_app(engine, sched, ServeOptions(model_name=MODEL, api_key=KEY,
                                                max_body_bytes=BODY_LIMIT, **kw))


@pytest.fixture(scope="module")
def server(model):
  s = LiveServer(_app(model))
  yield s
  s.stop()


def _user(text):
  return [{"role": "user", "content": text}]


def _reference(model, prompt, budget, seed=0, **settings):
  params, tokenizer, config = model
  return think_texts(params, tokenizer, [prompt], config, budgets=[budget], seed=seed,
                     **settings)[0]


def _no_leak(message_or_text, reasoning):
  content = getattr(message_or_text, "content", message_or_text)
  assert "</think>" not in content and "<think>" not in content
  assert not reasoning or reasoning not in content


def test_completion_matches_the_engine(server, model):
  """reasoning_tokens is the loop's thinking count, the texts are think()'s, greedy and
  sampled with a seed; thinking never reaches content."""
  client = server.client()
  for prompt, budget, kw in [("3 5 2 to 16", 40, {}),
                             ("7 7 3 to 52", 30, dict(temperature=0.8, seed=3))]:
    r = client.chat.completions.create(model=MODEL, messages=_user(prompt),
                                       extra_body={"thinking_token_budget": budget}, **kw)
    ref = _reference(model, prompt, budget, **kw)
    msg, usage = r.choices[0].message, r.usage
    assert usage.completion_tokens_details.reasoning_tokens == ref.thinking_tokens <= budget
    assert msg.reasoning_content == msg.reasoning == ref.thinking
    assert msg.content == ref.answer
    assert r.choices[0].thinking_stop_reason == ref.stop_reason
    assert r.choices[0].finish_reason == "stop"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens == ref.thinking_tokens + 1 + ref.answer_tokens  # + </think>
    _no_leak(msg, msg.reasoning)


def test_budget_binds_and_stream_agrees(server, model):
  """A tight budget stops thinking at exactly the budget; the streamed deltas assemble to the
  same texts, thinking chunks before answer chunks, then finish, usage and [DONE]."""
  prompt, budget = HARD[1], 12
  client = server.client()
  plain = client.chat.completions.create(model=MODEL, messages=_user(prompt),
                                         extra_body={"thinking_token_budget": budget})
  assert plain.usage.completion_tokens_details.reasoning_tokens == budget
  assert plain.choices[0].thinking_stop_reason == "budget"
  chunks = list(client.chat.completions.create(model=MODEL, messages=_user(prompt),
                                               stream=True,
                                               stream_options={"include_usage": True},
                                               extra_body={"thinking_token_budget": budget}))
  reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or ""
                      for c in chunks if c.choices)
  content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  kinds = "".join("r" if getattr(c.choices[0].delta, "reasoning", None) else
                  "c" if c.choices[0].delta.content else "" for c in chunks if c.choices)
  assert "r" not in kinds[kinds.index("c"):]   # all the thinking, then the answer
  assert reasoning == plain.choices[0].message.reasoning
  assert content == plain.choices[0].message.content
  assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
  assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
  _no_leak(content, reasoning)


def test_reasoning_effort_low_thinks_less_than_high(server):
  client = server.client()
  spent = {}
  for effort in ("low", "high"):
    rs = [client.chat.completions.create(model=MODEL, messages=_user(p),
                                         reasoning_effort=effort) for p in HARD]
    spent[effort] = [r.usage.completion_tokens_details.reasoning_tokens for r in rs]
    assert all(r.o1jax["thinking_budget"] == oa.effort_budget(effort, 0.1) for r in rs)
    for r in rs:
      _no_leak(r.choices[0].message, r.choices[0].message.reasoning)
  assert max(spent["low"]) <= oa.effort_budget("low", 0.1)
  assert sum(spent["low"]) < sum(spent["high"])


def test_max_completion_tokens_counts_thinking(server):
  client = server.client()
  for limit in (40, 20):
    r = client.chat.completions.create(model=MODEL, messages=_user(HARD[2]),
                                       max_completion_tokens=limit)
    assert r.usage.completion_tokens <= limit
    assert r.usage.completion_tokens_details.reasoning_tokens <= limit - 1 - r.o1jax["answer_cap"]
  r = client.chat.completions.create(model=MODEL, messages=_user(HARD[2]), max_tokens=3)
  assert r.usage.completion_tokens <= 3 and r.choices[0].finish_reason == "length"


def test_stop_strings_cut_the_answer(server):
  client = server.client()
  full = client.chat.completions.create(model=MODEL, messages=_user("3 5 2 to 16"))
  answer = full.choices[0].message.content
  assert "*" in answer
  cut = client.chat.completions.create(model=MODEL, messages=_user("3 5 2 to 16"), stop=["*"])
  assert cut.choices[0].message.content == answer[:answer.index("*")]
  assert cut.choices[0].finish_reason == "stop"
  streamed = client.chat.completions.create(model=MODEL, messages=_user("3 5 2 to 16"),
                                            stop="*", stream=True)
  assert "".join(c.choices[0].delta.content or "" for c in streamed
                 if c.choices) == answer[:answer.index("*")]


@pytest.mark.parametrize("body, needle", [
    (b"{not json", "not valid JSON"),
    (json.dumps({"model": MODEL}).encode(), "messages is required"),
    (json.dumps({"model": MODEL, "messages": []}).encode(), "non-empty"),
    (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 7}]}).encode(),
     "messages[0].content must be a string"),
    (json.dumps({"model": MODEL, "messages": _user("1+1="), "bogus_field": 1}).encode(),
     "'bogus_field'"),
    (json.dumps({"model": MODEL, "messages": _user("1+1="), "n": 2}).encode(), "n=2"),
])
def test_bad_requests_are_400(server, body, needle):
  status, _, raw = server.raw("POST", "/v1/chat/completions", body)
  assert status == 400, raw
  assert needle in json.loads(raw)["error"]["message"]


def test_limits_with_the_numbers(server):
  client = server.client()
  with pytest.raises(openai.BadRequestError, match=r"thinking_token_budget=1000 .*704.*at most "
                     r"\d+ thinking tokens"):
    client.chat.completions.create(model=MODEL, messages=_user("2x+5=13"),
                                   extra_body={"thinking_token_budget": 1000})
  with pytest.raises(openai.BadRequestError, match=r"max_completion_tokens=800 .*\(8 tokens\).*"
                     r"704 tokens: at most 696"):
    client.chat.completions.create(model=MODEL, messages=_user("2x+5=13"),
                                   max_completion_tokens=800)
  with pytest.raises(openai.NotFoundError, match="not served here"):
    client.chat.completions.create(model="gpt-5", messages=_user("2x+5=13"))
  status, _, raw = server.raw("POST", "/v1/chat/completions", b" " * (BODY_LIMIT + 1000))
  assert status == 413, raw
  with pytest.raises(openai.AuthenticationError):
    server.client(key="wrong").chat.completions.create(model=MODEL, messages=_user("1+1="))
  with pytest.raises(openai.AuthenticationError):
    server.client(key="wrong").models.list()
  assert [m.id for m in server.client().models.list().data] == [MODEL]
  ignored = server.client().chat.completions.with_raw_response.create(
      model=MODEL, messages=_user("1+1="), presence_penalty=0.5, user="someone")
  assert ignored.headers["x-ignored-fields"] == "presence_penalty"
  metrics = server.raw("GET", "/metrics")[2].decode()
  for name in ("o1jax_queue_depth", "o1jax_live_slots", "o1jax_thinking_tokens_total",
               "o1jax_request_latency_seconds_bucket", "o1jax_preemptions_total",
               'o1jax_rejections_total{reason="too_large"}'):
    assert name in metrics


def _wait(predicate, timeout=15.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.02)


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_frees_the_slot(server, stream):
  state = server.app.state
  cancelled = lambda: state.metrics.registry.get_sample_value(
      "o1jax_requests_total", {"outcome": "cancelled"}) or 0
  before = cancelled()
  state.driver.round_delay_s = 0.4   # hold the request in its slot long enough to leave
  try:
    body = json.dumps({"model": MODEL, "messages": _user(HARD[0]), "stream": stream,
                       "thinking_token_budget": 200})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  f"{KEY}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                  f"\r\n\r\n{body}").encode())
    _wait(lambda: state.scheduler.live)
    if stream:
      received = b""
      while b"reasoning" not in received:
        received += sock.recv(65536)
    sock.close()
    _wait(lambda: not state.scheduler.live and state.driver.in_flight == 0)
    assert state.scheduler.idle and cancelled() == before + 1   # cut, not run to its end
  finally:
    state.driver.round_delay_s = 0.0


def test_overload_answers_429_with_retry_after(model):
  s = LiveServer(_app(model, max_queue=1, round_delay_s=0.2, warmup=False))
  try:
    client = s.client()

    def ask(prompt):
      try:
        r = client.chat.completions.create(model=MODEL, messages=_user(prompt))
        return 200, r.choices[0].message.content
      except openai.RateLimitError as e:
        return 429, e.response.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
      results = list(pool.map(ask, HARD * 3))
    statuses = [s for s, _ in results]
    assert statuses.count(429) >= 1 and set(statuses) <= {200, 429}
    assert all(int(v) >= 1 for s, v in results if s == 429)
    assert all(v for s, v in results if s == 200)
    assert s.app.state.metrics.registry.get_sample_value(
        "o1jax_rejections_total", {"reason": "queue_full"}) == statuses.count(429)
  finally:
    s.stop()


def test_load_test_small(server):
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "load_test.py"), f"--url={server.url}",
       f"--api_key={KEY}", "--clients=4", "--requests=8", "--time_limit_s=60", "--json"],
      capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-2000:]
  rep = json.loads(out.stdout.strip().splitlines()[-1])
  assert rep["answered"] == 8 and not rep["lost"] and rep["latency_p99_s"] is not None


def test_prompts_are_tokenized_off_the_event_loop(server, monkeypatch):
  """Tokenizing (and the engine's own check) runs in a worker thread, never on the server's
  event loop; a prompt whose characters alone cannot fit is refused before it is tokenized,
  with the numbers."""
  encoded, encode_prompt = [], CharTokenizer.encode_prompt

  def recording(self, prompt):
    encoded.append((threading.current_thread(), len(prompt)))
    return encode_prompt(self, prompt)

  monkeypatch.setattr(CharTokenizer, "encode_prompt", recording)
  r = server.client().chat.completions.create(model=MODEL, messages=_user("3 5 2 to 16"),
                                              reasoning_effort="low")
  assert r.choices[0].message.content
  threads = {t for t, n in encoded if n == len("3 5 2 to 16")}
  assert threads and server.thread not in threads   # the loop runs in server.thread
  long = "1" * 20_000   # under the body limit; 704 tokens hold at most 671 x 8 characters
  with pytest.raises(openai.BadRequestError, match=r"20000 characters.*704 tokens.*671 "
                     r"prompt tokens of at most 8 characters"):
    server.client().chat.completions.create(model=MODEL, messages=_user(long))
  assert not [n for _, n in encoded if n == len(long)]


@pytest.mark.parametrize("fields, param", [
    (dict(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="required"),
     "tool_choice"),
    (dict(tools=[{"type": "function", "function": {"name": "f"}}],
          tool_choice={"type": "function", "function": {"name": "f"}}), "tool_choice"),
    (dict(logprobs=True, top_logprobs=2), "logprobs"),
    (dict(response_format={"type": "json_object"}), "response_format"),
    (dict(extra_body={"chat_template_kwargs": {"thinking_mode": "fast"}}),
     "chat_template_kwargs.thinking_mode"),
])
def test_fields_that_change_the_meaning_are_400(server, fields, param):
  """A forced tool call, log-probabilities, JSON output, a template option this server does
  not read: a 400 naming the field, not a 200 whose only hint is a header."""
  with pytest.raises(openai.BadRequestError) as e:
    server.client().chat.completions.create(model=MODEL, messages=_user("1+1="), **fields)
  assert e.value.body["param"] == param and param in e.value.body["message"]


def test_ignorable_fields_and_enable_thinking(server, model):
  """tools with tool_choice auto, logprobs false and text output only change nothing: 200,
  listed in X-Ignored-Fields. chat_template_kwargs.enable_thinking=false thinks 0 tokens:
  the answer think_texts gives at budget 0."""
  client = server.client()
  r = client.chat.completions.with_raw_response.create(
      model=MODEL, messages=_user("1+1="), tools=[{"type": "function", "function": {
          "name": "f"}}], tool_choice="auto", logprobs=False, response_format={"type": "text"})
  assert r.headers["x-ignored-fields"] == "logprobs,response_format,tool_choice,tools"
  assert r.parse().choices[0].message.content
  prompt = HARD[3]
  off = client.chat.completions.create(model=MODEL, messages=_user(prompt),
                                       extra_body={"chat_template_kwargs": {
                                           "enable_thinking": False}})
  ref = _reference(model, prompt, 0)
  assert off.usage.completion_tokens_details.reasoning_tokens == 0 == ref.thinking_tokens
  assert off.choices[0].message.content == ref.answer and off.choices[0].message.reasoning == ""
  assert off.o1jax["budget_source"] == "chat_template_kwargs.enable_thinking"
  on = client.chat.completions.create(model=MODEL, messages=_user(prompt),
                                      extra_body={"chat_template_kwargs": {
                                          "enable_thinking": True}})
  assert on.usage.completion_tokens_details.reasoning_tokens > 0
  assert on.o1jax["budget_source"] == "default"


def test_unknown_routes_answer_openai_errors(server):
  status, _, raw = server.raw("GET", "/v1/nowhere")
  error = json.loads(raw)["error"]
  assert status == 404 and error["code"] == "not_found"
  assert "GET /v1/nowhere" in error["message"] and "POST /v1/chat/completions" in error["message"]
  status, headers, raw = server.raw("GET", "/v1/chat/completions")
  error = json.loads(raw)["error"]
  assert status == 405 and error["code"] == "method_not_allowed" and "POST" in error["message"]
  assert set(json.loads(raw)) == {"error"} and headers.get("allow") == "POST"
  with pytest.raises(openai.NotFoundError, match="no route POST /v1/completions"):
    server.client().completions.create(model=MODEL, prompt="1+1=")


def test_pools_without_a_budget_head_is_refused(model):
  params, tokenizer, config = model
  engine = Engine(params, tokenizer, config, 2)
  for policy in ("pools", "spf"):
    with pytest.raises(ValueError, match=f"policy '{policy}'.*no budget head.*'fcfs'"):
      create_app(engine, SchedulerConfig(policy=policy))
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, "launch", "serve.py"), "--policy=spf",
       f"--checkpoint={embedded_checkpoint_dir()}"], capture_output=True, text=True,
      timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 1 and "--policy=spf needs a budget head" in out.stderr
  assert "--checkpoint" in out.stderr


def _sse(sock_file):
  """The data lines of an SSE response read from a socket file, headers skipped."""
  while sock_file.readline() not in (b"\r\n", b""):
    pass
  events = []
  for line in sock_file:
    if line.startswith(b"data: "):
      events.append(line[6:].strip().decode())
      if events[-1] == "[DONE]":
        return events
  return events


# ---- the README's serving examples print what the README says --------------------------

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


# Before the drain test below: that one drains the module's server for good.
def test_readme_serving_examples_print_what_the_readme_shows(server):
  """The README's `openai` snippet, run against the embedded model as the README runs it
  (only the address and key differ), prints the three lines the README quotes; its curl
  request answers the fields its JSON shows. A retrained checkpoint fails this until the
  README is rerun."""
  import contextlib
  import io
  import re
  with open(README) as f:
    readme = f.read()
  code = re.search(r"<<'EOF'\n(from openai import OpenAI\n.*?)\nEOF", readme, re.S).group(1)
  code = code.replace('"http://127.0.0.1:8000/v1"', repr(server.url)).replace(
      'api_key="none"', f"api_key={KEY!r}")
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    exec(compile(code, "README.md", "exec"), {})
  quoted = re.search(r"stopped \(`(low [^`]*)`, `(medium [^`]*)`, `(high [^`]*)`\)", readme)
  assert printed.getvalue().splitlines() == list(quoted.groups())

  curl = re.search(r"curl -s http://127.0.0.1:8000/v1/chat/completions .*?-d '(.*?)'\n```\n\n"
                   r"```json\n(.*?)\n```", readme, re.S)
  status, _, raw = server.raw("POST", "/v1/chat/completions", curl.group(1).encode())
  assert status == 200, raw
  got = json.loads(raw)
  message, usage = got["choices"][0]["message"], got["usage"]
  actual = {"content": message["content"], "reasoning": message["reasoning"],
            "finish_reason": got["choices"][0]["finish_reason"],
            "thinking_stop_reason": got["choices"][0]["thinking_stop_reason"],
            **{k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
            "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"]}
  shown = {k: json.loads(v) for k, v in re.findall(r'"(\w+)": ("[^"]*"|\d+)', curl.group(2))
           if k in actual}
  assert set(shown) == set(actual), sorted(set(actual) - set(shown))
  assert shown == actual, json.dumps(actual)


def test_drain_says_so_then_answers_with_errors(server):
  """Runs last on the module's server (it stops it). A drain: /health answers 503
  "draining" and a new request 503 while the server still listens; at the drain timeout a
  waiting request gets an OpenAI-shaped 503 and a stream an error event, then [DONE]."""
  state = server.app.state
  state.options = dataclasses.replace(state.options, drain_timeout_s=1.5)
  state.driver.round_delay_s = 0.3   # hold both requests in flight past the drain
  body = lambda stream: json.dumps({"model": MODEL, "messages": _user(HARD[0]),
                                    "stream": stream, "thinking_token_budget": 400})
  sock = socket.create_connection(("127.0.0.1", server.port))
  sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}"
                f"\r\nContent-Type: application/json\r\nContent-Length: {len(body(True))}\r\n\r\n"
                f"{body(True)}").encode())
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    waiting = pool.submit(server.raw, "POST", "/v1/chat/completions", body(False))
    _wait(lambda: len(state.scheduler.live) == 2)
    server.server.request_drain()
    _wait(lambda: state.draining)
    status, _, raw = server.raw("GET", "/health")
    assert status == 503 and json.loads(raw)["status"] == "draining"
    with pytest.raises(openai.InternalServerError, match="shutting down"):
      server.client().chat.completions.create(model=MODEL, messages=_user("1+1="))
    status, _, raw = waiting.result(timeout=30)
  error = json.loads(raw)["error"]
  assert status == 503 and error["code"] == "server_shutdown" and "drain" in error["message"]
  events = _sse(sock.makefile("rb"))
  sock.close()
  assert events[-1] == "[DONE]"
  error = json.loads(events[-2])["error"]
  assert error["code"] == "server_shutdown" and error["type"] == "server_error"
  assert any("reasoning" in e for e in events[:-2])   # it had been streaming
  server.thread.join(30)
  assert not server.thread.is_alive()


def test_sigterm_drains_in_flight_requests():
  port = portpicker.pick_unused_port()
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "launch", "serve.py"), f"--port={port}", "--slots=2",
       "--round_delay_s=0.3", "--log_level=warning"],
      env={**os.environ, "PYTHONPATH": ROOT}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  try:
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                           max_retries=0, timeout=60)
    deadline = time.monotonic() + 120
    while True:
      assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
      try:
        client.models.list(timeout=2)
        break
      except openai.APIConnectionError:
        assert time.monotonic() < deadline, "serve.py did not start"
        time.sleep(0.3)
    # 60 thinking tokens at 4 a round, 0.3 s apart: in flight for about 5 s after the signal.
    stream = client.chat.completions.create(model=MODEL, messages=_user(HARD[0]), stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"thinking_token_budget": 60})
    chunks = [next(stream), next(stream)]   # the role, then thinking: the request is live
    proc.send_signal(signal.SIGTERM)
    health = lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    deadline = time.monotonic() + 10
    while True:   # still listening, but says it is draining (a load balancer's cue)...
      conn = health()
      conn.request("GET", "/health")
      r = conn.getresponse()
      status, body = r.status, json.loads(r.read())
      conn.close()
      if status == 503:
        break
      assert time.monotonic() < deadline, "no draining status"
      time.sleep(0.05)
    assert body["status"] == "draining" and body["in_flight"] == 1
    with pytest.raises(openai.InternalServerError, match="shutting down"):   # ...refuses new
      client.chat.completions.create(model=MODEL, messages=_user("1+1="))
    chunks += list(stream)                        # ...but the request in flight finishes
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens > 0
    assert proc.wait(timeout=60) == 0
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


# -- the wire rules without a server ---------------------------------------------------------

def _chat(**fields):
  return oa.parse_chat_request({"model": MODEL, "messages": _user("1+1="), **fields})


def test_budget_plan_rules():
  plan = lambda chat, p=8: oa.plan_budget(chat, prompt_tokens=p, cache_len=320, close_tokens=1,
                                          max_answer_tokens=32, effort_scale=0.1)
  room = 320 - 8 - 1 - 32
  assert oa.effort_table(0.1) == {"none": 0, "minimal": 5, "low": 5, "medium": 50,
                                  "high": 200, "xhigh": 1000, "max": "context"}
  assert plan(_chat()).budget == room                                      # the context
  assert plan(_chat(reasoning_effort="xhigh")).budget == room              # capped, no error
  assert plan(_chat(reasoning_effort="high")).budget == 200
  both = plan(_chat(reasoning_effort="high", thinking_token_budget=30))    # both caps apply
  assert (both.budget, both.source) == (30, "thinking_token_budget")
  assert plan(_chat(reasoning_effort="low", thinking_token_budget=30)).budget == 5
  for m in (3, 34, 60, 312):   # thinking + close + answer never exceeds the limit
    p = plan(_chat(max_completion_tokens=m))
    assert p.budget + 1 + p.answer_cap <= m and p.answer_cap >= 1
  assert plan(_chat(max_tokens=60)).answer_cap == 32     # the answer keeps its room first
  with pytest.raises(oa.ApiError, match="no room for an answer"):
    plan(_chat(max_completion_tokens=1))
  with pytest.raises(oa.ApiError, match=r"prompt \(300 tokens\).*at most 287 prompt tokens"):
    plan(_chat(), p=300)


def test_request_fields():
  chat = _chat(seed=-1, top_k=-1, stop="x", logprobs=False, max_tokens=9,
               max_completion_tokens=7, messages=[
                   {"role": "system", "content": "be brief"},
                   {"role": "user", "content": [{"type": "text", "text": "2x"},
                                                {"type": "text", "text": "+5=13"}]}])
  assert (chat.seed, chat.top_k, chat.stop, chat.ignored) == (2**32 - 1, 0, ("x",),
                                                              ("logprobs",))
  assert chat.max_completion_tokens == 7                 # the newer name wins
  assert oa.prompt_of(chat, chat_template=False) == "2x+5=13"
  assert oa.prompt_of(chat, chat_template=True)[0] == {"role": "system", "content": "be brief"}
  for bad, field in [(dict(temperature=3), "temperature"), (dict(top_p=0), "top_p"),
                     (dict(stream_options={"include_usage": True}), "stream_options"),
                     (dict(reasoning_effort="extreme"), "reasoning_effort"),
                     (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
                     (dict(max_completion_tokens=True), "max_completion_tokens"),
                     (dict(messages=[{"role": "robot", "content": "hi"}]), "messages[0].role"),
                     (dict(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
                      "messages[0].content")]:
    with pytest.raises(oa.ApiError) as e:
      _chat(**bad)
    assert e.value.status == 400 and e.value.param == field and field.split("[")[0] in str(e.value)


def test_transcript_holds_back_a_possible_stop_string():
  from o1jax.serving.transcript import Transcript
  from o1jax.thinking.state import Segment
  tok = CharTokenizer()
  t = Transcript(tok, (tok.eos_id,), stop=("END",))
  ids = lambda s: tok.encode(s)
  think, close, answer = Segment.THINKING, Segment.CLOSE, Segment.ANSWER
  assert t.add(ids("ab"), [think] * 2) == ("ab", "")
  assert t.add([tok.end_think_id] + ids("12E"), [close] + [answer] * 3) == ("", "12")
  assert t.add(ids("N"), [answer]) == ("", "")        # "EN" may still become "END"
  assert t.add(ids("D!") + [tok.eos_id], [answer] * 3) == ("", "")
  assert t.finish() == ("", "") and t.content == "12" and t.finish_reason() == "stop"
  u = Transcript(tok, (tok.eos_id,))
  u.add(ids("x") + [tok.end_think_id] + ids("42"), [think, close, answer, answer])
  assert (u.content, u.reasoning, u.finish_reason()) == ("42", "x", "length")  # no EOS: cut


def test_transcript_waits_for_an_incomplete_character():
  """A byte-level BPE token can hold half a character: its text waits for the rest, and is
  flushed as it is once thinking has ended."""
  from o1jax.serving.transcript import Transcript
  from o1jax.thinking.state import Segment

  class HalfCharTokenizer:   # ids 200, 201 are the two halves of "é"
    def decode(self, ids, stop_at_eos=True):
      text = "".join({200: "\ufffd", 1: ""}.get(i, chr(i)) for i in ids if i != 201)
      return text.replace("\ufffd", "é", sum(1 for i in ids if i == 201))

  think, close = Segment.THINKING, Segment.CLOSE
  t = Transcript(HalfCharTokenizer(), (1,))
  assert t.add([ord("a"), 200], [think, think]) == ("a", "")
  assert t.add([201], [think]) == ("é", "")
  assert t.add([200], [think]) == ("", "")
  assert t.add([3], [close]) == ("\ufffd", "")     # thinking over: flushed as it is
  assert t.reasoning == "aé\ufffd"


def test_chat_template_model_gets_the_messages(tmp_path):
  """An HF model with a chat template: the whole message list (system included) is the
  prompt, and the endpoint reports think_texts' thinking for it exactly, multi-byte text
  included (a tiny random Qwen2 and BPE tokenizer from test_hf)."""
  pytest.importorskip("torch")
  import test_hf
  from o1jax import hf
  test_hf._build("qwen2_tied", str(tmp_path), test_hf._train_tokenizer())
  params, model_config, tokenizer = hf.load_hf(str(tmp_path), max_seq_len=128)
  config = make_think_config(model_config, tokenizer, max_answer_tokens=16)
  s = LiveServer(create_app(Engine(params, tokenizer, config, 4), SchedulerConfig(),
                            ServeOptions(model_name="tiny-qwen", api_key=KEY)))
  try:
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": "héllo 你好: 12 + 7?"}]
    kw = dict(model="tiny-qwen", messages=msgs, seed=1,
              extra_body={"thinking_token_budget": 20})
    r = s.client().chat.completions.create(**kw)
    ref = think_texts(params, tokenizer, [msgs], config, budgets=[20], seed=1)[0]
    msg = r.choices[0].message
    assert r.usage.completion_tokens_details.reasoning_tokens == ref.thinking_tokens
    assert (msg.reasoning, msg.content) == (ref.thinking, ref.answer)
    assert r.usage.prompt_tokens == len(tokenizer.encode_prompt(msgs))
    chunks = [c for c in s.client().chat.completions.create(stream=True, **kw) if c.choices]
    assert "".join(getattr(c.choices[0].delta, "reasoning", None) or "" for c in chunks
                   ) == msg.reasoning
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == msg.content
    # chat_template_kwargs.enable_thinking=false (as vLLM clients send it for Qwen3): no
    # thinking, the answer think_texts gives at budget 0.
    off = s.client().chat.completions.create(**{**kw, "extra_body": {
        "thinking_token_budget": 20, "chat_template_kwargs": {"enable_thinking": False}}})
    ref = think_texts(params, tokenizer, [msgs], config, budgets=[0], seed=1)[0]
    assert off.usage.completion_tokens_details.reasoning_tokens == 0 == ref.thinking_tokens
    assert (off.choices[0].message.reasoning, off.choices[0].message.content) == (
        "", ref.answer)
  finally:
    s.stop()
