"""Serve a thinking model over an OpenAI-compatible HTTP API (docs/SERVING_API.md).

  python launch/serve.py                                  # the embedded tiny reasoner
  python launch/serve.py --port=8000 --slots=8 --policy=pools --api_key=secret
  python launch/serve.py --hf_dir=/models/DeepSeek-R1-Distill-Qwen-1.5B --cache_len=4096 \
      --dtype=bfloat16

Then any OpenAI client: base_url http://127.0.0.1:8000/v1, model as given by --model_name
(default: o1jax-tiny for the embedded model, the directory's name for --hf_dir).
SIGTERM (or Ctrl-C) drains: /health answers 503 "draining" and new requests 503 while
in-flight ones get --drain_timeout_s to finish (those still running then get an error, a
stream an error event and [DONE]); then the server stops listening and exits 0. A second
signal cuts the drain short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys

from absl import app, flags

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint dir or training workdir "
                                  "(default: the embedded tiny reasoner).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A local Hugging Face model directory.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_CACHE_LEN = flags.DEFINE_integer("cache_len", None, "Context length (default: the model's; "
                                  "4096 for --hf_dir).")
_MAX_ANSWER = flags.DEFINE_integer("max_answer_tokens", 32, "Answer room per request: the "
                                   "most answer tokens, kept free in the context.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (loopback by default: "
                            "pass 0.0.0.0 deliberately, with --api_key).")
_PORT = flags.DEFINE_integer("port", 8000, "Port.")
_SLOTS = flags.DEFINE_integer("slots", 8, "Decode slots (requests thinking at once).")
_POLICY = flags.DEFINE_enum("policy", "fcfs", ["fcfs", "preempt", "pools", "spf"],
                            "Scheduling policy (o1jax/serving/scheduler.py). pools and spf "
                            "need the budget head, which only the embedded model ships.")
_MAX_QUEUE = flags.DEFINE_integer("max_queue", 64, "Requests waiting for a slot before new "
                                  "ones get 429.")
_API_KEY = flags.DEFINE_string("api_key", None, "Require 'Authorization: Bearer <key>' "
                               "(default: $O1JAX_API_KEY if set, else no key).")
_MODEL_NAME = flags.DEFINE_string("model_name", None, "The model id clients send.")
_EFFORT_SCALE = flags.DEFINE_float("effort_scale", None, "reasoning_effort budgets are the o1 "
                                   "article's (50/500/2000/10000) times this (default 0.1 for "
                                   "the embedded model, 1.0 for --hf_dir).")
_DEFAULT_BUDGET = flags.DEFINE_string("default_budget", "inf", "Thinking budget of a request "
                                      "that sets none: an integer or 'inf' (the context).")
_MAX_BODY = flags.DEFINE_integer("max_body_bytes", 1 << 20, "Larger request bodies get 413.")
_DRAIN = flags.DEFINE_float("drain_timeout_s", 60.0, "On SIGTERM, how long in-flight "
                            "requests may take to finish before they get an error.")
_ROUND_DELAY = flags.DEFINE_float("round_delay_s", 0.0, "Testing: pause between scheduler "
                                  "rounds, to hold requests in flight.")
_SWITCH_INTERVAL = flags.DEFINE_float("switch_interval_s", 0.001, "Python's GIL switch "
                                      "interval (sys.setswitchinterval; default 0.005).")
_LOG_LEVEL = flags.DEFINE_enum("log_level", "info", ["debug", "info", "warning", "error"],
                               "Log level.")

_HF_DEFAULT_CACHE = 4096


def _load():
  """(params, tokenizer, model_config, budget head or None, default model name)."""
  if _HF_DIR.value:
    from o1jax import hf
    params, config, tokenizer = hf.load_hf(_HF_DIR.value, dtype=_DTYPE.value,
                                           max_seq_len=_CACHE_LEN.value or _HF_DEFAULT_CACHE)
    return params, tokenizer, config, None, os.path.basename(os.path.normpath(_HF_DIR.value))
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  params, config, _ = load_params(_CHECKPOINT.value or embedded_checkpoint_dir())
  head = None
  if not _CHECKPOINT.value:   # the shipped budget head sits on the embedded model's trunk
    from o1jax.serving.predictor import load_thinking_head
    head, _ = load_thinking_head()
  name = "o1jax-tiny" if not _CHECKPOINT.value else os.path.basename(
      os.path.normpath(_CHECKPOINT.value))
  return params, CharTokenizer(), config.replace(dtype=_DTYPE.value), head, name


def build_app():
  from o1jax.serving import Engine, SchedulerConfig
  from o1jax.serving.http import ServeOptions, create_app
  from o1jax.thinking import make_think_config, parse_budget
  params, tokenizer, model_config, head, name = _load()
  config = make_think_config(model_config, tokenizer, _CACHE_LEN.value,
                             max_answer_tokens=_MAX_ANSWER.value)
  engine = Engine(params, tokenizer, config, _SLOTS.value, budget_head=head)
  scale = _EFFORT_SCALE.value or (1.0 if _HF_DIR.value else 0.1)
  api_key = _API_KEY.value or os.environ.get("O1JAX_API_KEY") or None
  options = ServeOptions(model_name=_MODEL_NAME.value or name, api_key=api_key,
                         max_body_bytes=_MAX_BODY.value, effort_scale=scale,
                         default_budget=parse_budget(_DEFAULT_BUDGET.value),
                         drain_timeout_s=_DRAIN.value, round_delay_s=_ROUND_DELAY.value)
  return create_app(engine, SchedulerConfig(policy=_POLICY.value, max_queue=_MAX_QUEUE.value),
                    options)


def _check_policy() -> None:
  """pools and spf route by the budget head's predicted thinking; only the embedded model
  ships a head (o1jax/serving/predictor.py), so with another model they would silently act
  as fcfs. Refused before any weights load."""
  if _POLICY.value in ("pools", "spf") and (_HF_DIR.value or _CHECKPOINT.value):
    model_flag = "--hf_dir" if _HF_DIR.value else "--checkpoint"
    raise ValueError(f"--policy={_POLICY.value} needs a budget head (predicted thinking per "
                     f"request), and only the embedded model ships one: with {model_flag} "
                     "it would act as fcfs; use --policy=fcfs or --policy=preempt")


def _server_class():
  from o1jax.serving.drain import Server as DrainingServer

  class Server(DrainingServer):
    """uvicorn re-raises a caught SIGTERM after its graceful shutdown, so the process dies
    by the signal (exit -15). Here SIGTERM *is* the orderly stop: the drain has finished, so
    exit 0 (supervisors and tests read a non-zero status as a crash)."""

    @contextlib.contextmanager
    def capture_signals(self):
      handled = (signal.SIGINT, signal.SIGTERM)
      previous = {s: signal.signal(s, self.handle_exit) for s in handled}
      try:
        yield
      finally:
        for s, handler in previous.items():
          signal.signal(s, handler)

  return Server


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import uvicorn
  # absl has put its handler on the root logger already; the level is set on ours.
  logging.getLogger("o1jax").setLevel(_LOG_LEVEL.value.upper())
  # Request parsing and tokenizing run in worker threads (o1jax/serving/http.py); while one
  # holds the GIL, the event loop waits up to this long for it at each step of an answer
  # (Python's default is 5 ms, several of which add up under large bodies).
  sys.setswitchinterval(_SWITCH_INTERVAL.value)
  try:
    _check_policy()
    application = build_app()
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  # The drain (Server) has answered every request before uvicorn's own shutdown starts:
  # its grace period only covers writing those answers.
  config = uvicorn.Config(application, host=_HOST.value, port=_PORT.value,
                          log_level=_LOG_LEVEL.value, lifespan="on",
                          timeout_graceful_shutdown=10)
  server = _server_class()(config)
  server.run()
  if not server.started:
    sys.exit(1)   # the port was taken, or the app failed to start (logged above)


if __name__ == "__main__":
  app.run(main)
