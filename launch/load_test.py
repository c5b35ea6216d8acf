"""A bounded load test of the OpenAI-compatible endpoint with the official `openai` client.

  python launch/serve.py &                     # the embedded model on 127.0.0.1:8000
  python launch/load_test.py --clients=8 --requests=64 --time_limit_s=120

N client threads send a fixed number of chat completions (held-out task problems of every
task and level, reasoning efforts and streaming mixed) within a time limit, and report
p50/p99 latency, time to the first answer token when streaming, tokens/s, accuracy and errors
by type. Every request must end answered (200) or explicitly rejected (429, 4xx, 503);
one that times out, loses its connection, gets a 5xx or a malformed answer is *lost*, and
the exit status is then 1. Requests the time limit left unsent are reported, not lost.

  python launch/load_test.py --big_bodies=6 --big_body_bytes=1000000

instead measures the event loop under large bodies: N bodies of that size sent at once
(one user message each) while GET /health is polled every 10 ms and small streamed
requests run back to back; it reports /health latency and the longest gap between an
unrelated stream's chunks while the big bodies are in (docs/SERVING_API.md).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import random
import sys
import threading
import time

from absl import app, flags

_URL = flags.DEFINE_string("url", "http://127.0.0.1:8000/v1", "The server's /v1 base URL.")
_MODEL = flags.DEFINE_string("model", None, "Model id (default: the server's first model).")
_API_KEY = flags.DEFINE_string("api_key", "none", "Bearer key, if the server wants one.")
_CLIENTS = flags.DEFINE_integer("clients", 8, "Concurrent clients (threads).")
_REQUESTS = flags.DEFINE_integer("requests", 64, "Requests in all.")
_TIME_LIMIT = flags.DEFINE_float("time_limit_s", 120.0, "Wall-clock bound of the whole test; "
                                 "each request's timeout is what is left of it.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", None, "max_completion_tokens per request "
                                   "(thinking counts against it).")
_EFFORT = flags.DEFINE_enum("reasoning_effort", "mixed", ["mixed", "none", "low", "medium",
                                                          "high", "default"],
                            "mixed cycles low/medium/high/default (no effort sent).")
_STREAM = flags.DEFINE_enum("stream", "mixed", ["mixed", "all", "none"], "Streamed requests.")
_SEED = flags.DEFINE_integer("seed", 0, "Which held-out problems.")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "Prompts to cycle instead of task problems.")
_JSON = flags.DEFINE_bool("json", False, "Print the report as one JSON object.")
_BIG_BODIES = flags.DEFINE_integer("big_bodies", 0, "If > 0: the large-body probe instead "
                                   "(this many bodies at once).")
_BIG_BODY_BYTES = flags.DEFINE_integer("big_body_bytes", 1_000_000, "Size of each big body.")

_EFFORTS = ("low", "medium", "high", None)


@dataclasses.dataclass
class Outcome:
  kind: str                    # "ok", "rejected:<status>" or "lost:<why>"
  latency: float
  completion_tokens: int = 0
  reasoning_tokens: int = 0
  first_content_s: float | None = None
  text: str = ""
  correct: bool | None = None    # the answer verified against the task (None: no task)


def _work(n: int, seed: int):
  """(prompt, effort, stream, verify or None) for request i."""
  if _PROMPT.value:
    items = [(p, None) for p in _PROMPT.value]
  else:
    from o1jax import tasks
    items = []
    for name in sorted(tasks.TASKS):
      task = tasks.get_task(name)
      for d in task.difficulties:
        items += [(p.prompt, (lambda a, t=task, p=p: t.verify(p, a)))
                  for p in task.generate_problems(seed + 11, d, 4, split="eval")]
    random.Random(seed).shuffle(items)   # every task and level early in the run
  efforts = {"mixed": _EFFORTS, "default": (None,)}.get(_EFFORT.value, (_EFFORT.value,))
  streams = {"mixed": (False, True), "all": (True,), "none": (False,)}[_STREAM.value]
  cycle = zip(itertools.cycle(items), itertools.cycle(efforts), itertools.cycle(streams))
  return [(p, e, s, v) for ((p, v), e, s), _ in zip(cycle, range(n))]


def _ask(client, model, prompt, effort, stream, timeout) -> Outcome:
  import openai
  kw = dict(model=model, messages=[{"role": "user", "content": prompt}], timeout=timeout)
  if effort:
    kw["reasoning_effort"] = effort
  if _MAX_TOKENS.value:
    kw["max_completion_tokens"] = _MAX_TOKENS.value
  start = time.monotonic()
  try:
    if stream:
      content, first, usage, finish = [], None, None, None
      for chunk in client.chat.completions.create(stream=True,
                                                  stream_options={"include_usage": True}, **kw):
        if chunk.usage is not None:
          usage = chunk.usage
        for choice in chunk.choices:
          if choice.delta.content:
            first = first or time.monotonic() - start
            content.append(choice.delta.content)
          finish = choice.finish_reason or finish
      text = "".join(content)
      if usage is None or finish is None:
        return Outcome("lost:truncated_stream", time.monotonic() - start)
    else:
      r = client.chat.completions.create(**kw)
      text, usage, first = r.choices[0].message.content, r.usage, None
  except openai.APIStatusError as e:
    kind = "rejected" if e.status_code < 500 or e.status_code == 503 else "lost"
    return Outcome(f"{kind}:{e.status_code}", time.monotonic() - start)
  except openai.APITimeoutError:
    return Outcome("lost:timeout", time.monotonic() - start)
  except openai.APIConnectionError:
    return Outcome("lost:connection", time.monotonic() - start)
  except Exception as e:   # a malformed body the client could not parse: lost, with its type
    return Outcome(f"lost:{type(e).__name__}", time.monotonic() - start)
  details = usage.completion_tokens_details
  if text is None or details is None or details.reasoning_tokens is None:
    return Outcome("lost:no_reasoning_tokens", time.monotonic() - start)
  return Outcome("ok", time.monotonic() - start, usage.completion_tokens,
                 details.reasoning_tokens, first, text)


def run(client, model, work, clients: int, time_limit_s: float) -> tuple[list, float]:
  """Runs `work` over `clients` threads: (outcomes, None where unsent; wall seconds)."""
  deadline = time.monotonic() + time_limit_s
  outcomes: list = [None] * len(work)
  next_index = iter(range(len(work)))
  lock = threading.Lock()

  def client_loop():
    while True:
      with lock:
        i = next(next_index, None)
      left = deadline - time.monotonic()
      if i is None or left <= 0:
        return
      prompt, effort, stream, verify = work[i]
      o = _ask(client, model, prompt, effort, stream, timeout=left)
      if o.kind == "ok" and verify is not None:
        o.correct = bool(verify(o.text))
      outcomes[i] = o

  start = time.monotonic()
  threads = [threading.Thread(target=client_loop) for _ in range(clients)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return outcomes, time.monotonic() - start


def _percentile(values, q):
  if not values:
    return None
  values = sorted(values)
  k = (len(values) - 1) * q / 100
  lo, hi = int(k), min(int(k) + 1, len(values) - 1)
  return values[lo] + (values[hi] - values[lo]) * (k - lo)


def report(outcomes, wall: float) -> dict:
  done = [o for o in outcomes if o is not None]
  ok = [o for o in done if o.kind == "ok"]
  kinds = collections.Counter(o.kind for o in done)
  lat = [o.latency for o in ok]
  first = [o.first_content_s for o in ok if o.first_content_s is not None]
  tokens = sum(o.completion_tokens for o in ok)
  verified = [o for o in ok if o.correct is not None]
  r = lambda x: None if x is None else round(x, 4)
  return {
      "requests": len(outcomes), "sent": len(done), "unsent": len(outcomes) - len(done),
      "answered": len(ok),
      "rejected": {k: v for k, v in sorted(kinds.items()) if k.startswith("rejected")},
      "lost": {k: v for k, v in sorted(kinds.items()) if k.startswith("lost")},
      "wall_s": r(wall), "latency_p50_s": r(_percentile(lat, 50)),
      "latency_p99_s": r(_percentile(lat, 99)),
      "first_answer_token_p50_s": r(_percentile(first, 50)),
      "accuracy": r(sum(o.correct for o in verified) / len(verified) if verified else None),
      "completion_tokens": tokens, "reasoning_tokens": sum(o.reasoning_tokens for o in ok),
      "tokens_per_s": r(tokens / wall if wall > 0 else None),
      "requests_per_s": r(len(ok) / wall if wall > 0 else None),
  }


def probe_big_bodies(client, model, n: int, size: int) -> dict:
  """/health latency and unrelated streams' chunk gaps while n bodies of `size` bytes are
  sent at once; baseline figures from the same probes before they are sent."""
  import http.client
  import urllib.parse
  url = urllib.parse.urlparse(_URL.value)
  base = url.path.rsplit("/v1", 1)[0]
  headers = {"Authorization": f"Bearer {_API_KEY.value}", "Content-Type": "application/json"}
  stop = threading.Event()
  health: list[tuple[float, float]] = []   # (start, seconds)
  gaps: list[tuple[float, float]] = []     # (arrival, seconds since the previous chunk)

  def poll_health():
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    while not stop.is_set():
      t = time.monotonic()
      conn.request("GET", base + "/health")
      conn.getresponse().read()
      health.append((t, time.monotonic() - t))
      time.sleep(0.01)
    conn.close()

  def stream_small():
    while not stop.is_set():
      last = None
      for _ in client.chat.completions.create(
          model=model, messages=[{"role": "user", "content": "3 5 2 to 16"}], stream=True,
          extra_body={"thinking_token_budget": 300}):
        now = time.monotonic()
        if last is not None:
          gaps.append((now, now - last))
        last = now

  content = "1" * (size - 100)
  body = json.dumps({"model": model, "messages": [{"role": "user", "content": content}]})
  results = []

  def send_big():
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    t = time.monotonic()
    conn.request("POST", base + "/v1/chat/completions", body=body, headers=headers)
    r = conn.getresponse()
    r.read()
    results.append((r.status, time.monotonic() - t))
    conn.close()

  probes = [threading.Thread(target=f) for f in (poll_health, stream_small)]
  for t in probes:
    t.start()
  time.sleep(2.0)   # baseline
  start = time.monotonic()
  senders = [threading.Thread(target=send_big) for _ in range(n)]
  for t in senders:
    t.start()
  for t in senders:
    t.join()
  end = time.monotonic()
  time.sleep(0.5)
  stop.set()
  for t in probes:
    t.join()
  during = [d for t, d in health if t + d >= start and t <= end]   # overlapping the bodies
  before = [d for t, d in health if t + d < start]
  gap_during = [d for t, d in gaps if start <= t <= end + 0.5]
  r = lambda x: None if x is None else round(x, 4)
  return {"bodies": n, "body_bytes": len(body), "statuses": sorted(s for s, _ in results),
          "bodies_wall_s": r(end - start),
          "health_before_p50_s": r(_percentile(before, 50)),
          "health_before_max_s": r(max(before, default=None)),
          "health_during_n": len(during), "health_during_p50_s": r(_percentile(during, 50)),
          "health_during_max_s": r(max(during, default=None)),
          "stream_gap_before_max_s": r(max((d for t, d in gaps if t < start), default=None)),
          "stream_gap_during_max_s": r(max(gap_during, default=None))}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import openai
  from absl import logging
  logging.set_verbosity(logging.WARNING)   # not one client log line per request
  if _CLIENTS.value < 1 or _REQUESTS.value < 1 or _TIME_LIMIT.value <= 0:
    sys.exit("error: --clients and --requests must be >= 1 and --time_limit_s > 0")
  # No retries: a 429 is counted as the explicit rejection it is, not hidden by the client.
  client = openai.OpenAI(base_url=_URL.value, api_key=_API_KEY.value, max_retries=0,
                         timeout=_TIME_LIMIT.value)
  try:
    model = _MODEL.value or client.models.list(timeout=10).data[0].id
  except openai.OpenAIError as e:
    sys.exit(f"error: cannot reach {_URL.value}: {e}")
  if _BIG_BODIES.value > 0:
    print(json.dumps({"url": _URL.value, "model": model,
                      **probe_big_bodies(client, model, _BIG_BODIES.value,
                                         _BIG_BODY_BYTES.value)}))
    return
  work = _work(_REQUESTS.value, _SEED.value)
  outcomes, wall = run(client, model, work, _CLIENTS.value, _TIME_LIMIT.value)
  rep = {"url": _URL.value, "model": model, "clients": _CLIENTS.value, **report(outcomes, wall)}
  if _JSON.value:
    print(json.dumps(rep))
  else:
    print(f"{rep['requests']} requests ({rep['sent']} sent, {rep['unsent']} unsent at the time "
          f"limit) from {rep['clients']} clients to {model} in {rep['wall_s']:.1f} s")
    print(f"  answered {rep['answered']}; rejected {rep['rejected'] or 'none'}; "
          f"lost {rep['lost'] or 'none'}")
    if rep["answered"]:
      print(f"  latency p50 {rep['latency_p50_s']:.3f} s, p99 {rep['latency_p99_s']:.3f} s; "
            f"first answer token p50 {rep['first_answer_token_p50_s']} s (streamed)")
      print(f"  {rep['completion_tokens']} completion tokens ({rep['reasoning_tokens']} "
            f"reasoning): {rep['tokens_per_s']:.1f} tokens/s, {rep['requests_per_s']:.2f} "
            f"requests/s; accuracy {rep['accuracy']}")
  if rep["lost"]:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
