"""The OpenAI chat-completions wire format for budgeted thinking: request checking, the
reasoning-effort table, the budget plan, and response / stream-chunk bodies.

Pure functions of JSON values and numbers (no web framework), so every rule here is tested
without a server. See docs/SERVING_API.md for the contract these implement.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from o1jax.thinking.api import UNLIMITED
from o1jax.thinking.budget import ARTICLE_BUDGETS

# reasoning_effort -> the article's problem type whose budget it gets (times the server's
# --effort_scale; the article's table is for o1-sized models, 0.1 suits the tiny reasoner).
# "none" thinks 0 tokens; "max" is unlimited (the context is the only cap). Every level is
# capped by the context: an effort never makes a request fail, an explicit budget can.
REASONING_EFFORT = {"none": None, "minimal": "simple", "low": "simple",
                    "medium": "moderate", "high": "complex", "xhigh": "research",
                    "max": None}


def effort_budget(effort: str, scale: float) -> int:
  """The thinking budget of a reasoning_effort level (before the context cap)."""
  if effort == "none":
    return 0
  if effort == "max":
    return UNLIMITED
  return max(1, round(ARTICLE_BUDGETS[REASONING_EFFORT[effort]] * scale))


def effort_table(scale: float) -> dict[str, int | str]:
  """{level: budget} as documented (unlimited shown as 'context')."""
  return {e: ("context" if effort_budget(e, scale) == UNLIMITED else effort_budget(e, scale))
          for e in REASONING_EFFORT}


# Fields this server reads. `thinking_token_budget` is vLLM's name for an explicit cap on
# thinking; `top_k` is vLLM's sampling extension; `chat_template_kwargs` is vLLM's too (only
# `enable_thinking` is read).
KNOWN_FIELDS = ("model", "messages", "max_completion_tokens", "max_tokens", "reasoning_effort",
                "thinking_token_budget", "temperature", "top_p", "top_k", "seed", "stream",
                "stream_options", "stop", "user", "n", "chat_template_kwargs")
# Documented OpenAI fields that do not apply to this server: accepted, ignored, and listed
# in the X-Ignored-Fields response header so a client can see they had no effect. A value
# that would change what the answer means (a forced tool call, log-probabilities, JSON
# output, audio) is a 400 instead (`_unsupported`): ignoring it would answer another question.
IGNORED_FIELDS = ("frequency_penalty", "presence_penalty", "logit_bias", "logprobs",
                  "top_logprobs", "metadata", "modalities", "parallel_tool_calls", "prediction",
                  "prompt_cache_key", "prompt_cache_retention", "response_format",
                  "safety_identifier", "service_tier", "store", "tool_choice", "tools",
                  "verbosity", "web_search_options", "audio", "function_call", "functions")
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP_STRINGS = 4


class ApiError(Exception):
  """An error answered as OpenAI's {"error": {...}} body with an HTTP status."""

  def __init__(self, status: int, message: str, *, param: str | None = None,
               type: str = "invalid_request_error", code: str | None = None,
               headers: dict[str, str] | None = None):
    super().__init__(message)
    self.status, self.message, self.param = status, message, param
    self.type, self.code, self.headers = type, code, headers or {}

  def body(self) -> dict[str, Any]:
    return {"error": {"message": self.message, "type": self.type, "param": self.param,
                      "code": self.code}}


def bad_request(message: str, param: str | None = None) -> ApiError:
  return ApiError(400, message, param=param)


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  model: str
  messages: tuple[dict[str, str], ...]   # {"role", "content"} with text content
  max_completion_tokens: int | None = None
  reasoning_effort: str | None = None
  thinking_token_budget: int | None = None
  temperature: float | None = None
  top_p: float | None = None
  top_k: int | None = None
  seed: int | None = None                # None: a fresh random seed (OpenAI's behaviour)
  stream: bool = False
  include_usage: bool = False
  stop: tuple[str, ...] = ()
  user: str | None = None
  enable_thinking: bool | None = None    # chat_template_kwargs.enable_thinking
  ignored: tuple[str, ...] = ()          # ignored fields the client sent


def _int(body, name, minimum=None) -> int | None:
  v = body.get(name)
  if v is None:
    return None
  if isinstance(v, bool) or not isinstance(v, numbers.Integral):
    raise bad_request(f"{name} must be an integer, got {v!r}", name)
  if minimum is not None and v < minimum:
    raise bad_request(f"{name} must be >= {minimum}, got {v}", name)
  return int(v)


def _number(body, name, lo, hi, lo_open=False) -> float | None:
  v = body.get(name)
  if v is None:
    return None
  if isinstance(v, bool) or not isinstance(v, numbers.Real):
    raise bad_request(f"{name} must be a number, got {v!r}", name)
  if not ((lo < v) if lo_open else (lo <= v)) or v > hi:
    raise bad_request(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {v}", name)
  return float(v)


def _content(message: dict, i: int) -> str:
  """A message's text: a string, or (as clients send it) a list of text parts."""
  c = message.get("content")
  if isinstance(c, str):
    return c
  if isinstance(c, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                 and isinstance(p.get("text"), str) for p in c):
    return "".join(p["text"] for p in c)
  kind = "missing" if c is None else type(c).__name__
  raise bad_request(f"messages[{i}].content must be a string (or a list of text parts); got "
                    f"{kind}", f"messages[{i}].content")


def _messages(body) -> tuple[dict[str, str], ...]:
  msgs = body.get("messages")
  if msgs is None:
    raise bad_request("messages is required", "messages")
  if not isinstance(msgs, list) or not msgs:
    raise bad_request("messages must be a non-empty list of {role, content} objects",
                      "messages")
  out = []
  for i, m in enumerate(msgs):
    if not isinstance(m, dict):
      raise bad_request(f"messages[{i}] must be an object, got {type(m).__name__}",
                        f"messages[{i}]")
    if m.get("role") not in ROLES:
      raise bad_request(f"messages[{i}].role must be one of {', '.join(ROLES)}; got "
                        f"{m.get('role')!r}", f"messages[{i}].role")
    out.append({"role": m["role"], "content": _content(m, i)})
  return tuple(out)


def _stop(body) -> tuple[str, ...]:
  stop = body.get("stop")
  if stop is None:
    return ()
  stops = [stop] if isinstance(stop, str) else stop
  if (not isinstance(stops, list) or not 1 <= len(stops) <= MAX_STOP_STRINGS
      or not all(isinstance(s, str) and s for s in stops)):
    raise bad_request(f"stop must be a non-empty string or a list of 1 to {MAX_STOP_STRINGS} "
                      f"non-empty strings, got {stop!r}", "stop")
  return tuple(stops)


def _unsupported(body) -> None:
  """400 for an ignorable field sent with a value that changes the request's meaning."""
  def refuse(field, why):
    raise bad_request(f"{field}={body[field]!r} is not supported: {why}", field)

  choice = body.get("tool_choice")
  if choice == "required" or isinstance(choice, dict):
    refuse("tool_choice", "this server never calls tools (tools are ignored; send "
           "tool_choice 'auto' or 'none', or no tool_choice)")
  if isinstance(body.get("function_call"), dict):
    refuse("function_call", "this server never calls functions")
  if body.get("logprobs"):
    refuse("logprobs", "this server returns no log-probabilities")
  if body.get("top_logprobs"):
    refuse("top_logprobs", "this server returns no log-probabilities")
  fmt = body.get("response_format")
  if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
    refuse("response_format", "only {'type': 'text'} (no JSON mode or schema)")
  modalities = body.get("modalities")
  if modalities is not None and modalities != ["text"]:
    refuse("modalities", "text only")
  if body.get("audio") is not None:
    refuse("audio", "text only")


def _enable_thinking(body) -> bool | None:
  kwargs = body.get("chat_template_kwargs")
  if kwargs is None:
    return None
  if not isinstance(kwargs, dict):
    raise bad_request(f"chat_template_kwargs must be an object, got {kwargs!r}",
                      "chat_template_kwargs")
  other = sorted(set(kwargs) - {"enable_thinking"})
  if other:
    raise bad_request(f"chat_template_kwargs.{other[0]} is not supported: only "
                      "enable_thinking is read", f"chat_template_kwargs.{other[0]}")
  value = kwargs.get("enable_thinking")
  if value is not None and not isinstance(value, bool):
    raise bad_request(f"chat_template_kwargs.enable_thinking must be a boolean, got {value!r}",
                      "chat_template_kwargs.enable_thinking")
  return value


def parse_chat_request(body: Any) -> ChatRequest:
  """Checks a decoded JSON body; ApiError(400) names the first offending field."""
  if not isinstance(body, dict):
    raise bad_request(f"the request body must be a JSON object, got {type(body).__name__}")
  unknown = sorted(set(body) - set(KNOWN_FIELDS) - set(IGNORED_FIELDS))
  if unknown:
    raise bad_request(f"unknown field{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}"
                      f"; this server reads: {', '.join(KNOWN_FIELDS)}", unknown[0])
  _unsupported(body)
  model = body.get("model")
  if not isinstance(model, str) or not model:
    raise bad_request(f"model must be a non-empty string, got {model!r}", "model")
  messages = _messages(body)
  effort = body.get("reasoning_effort")
  if effort is not None and effort not in REASONING_EFFORT:
    raise bad_request(f"reasoning_effort must be one of {', '.join(REASONING_EFFORT)}; got "
                      f"{effort!r}", "reasoning_effort")
  n = _int(body, "n", 1)
  if n not in (None, 1):
    raise bad_request(f"n={n} is not supported: one choice per request", "n")
  stream = body.get("stream") or False
  if not isinstance(stream, bool):
    raise bad_request(f"stream must be a boolean, got {stream!r}", "stream")
  options = body.get("stream_options")
  if options is not None and not stream:
    raise bad_request("stream_options is only allowed with stream=true", "stream_options")
  if options is not None and not isinstance(options, dict):
    raise bad_request(f"stream_options must be an object, got {options!r}", "stream_options")
  include_usage = (options or {}).get("include_usage") or False
  if not isinstance(include_usage, bool):
    raise bad_request(f"stream_options.include_usage must be a boolean, got {include_usage!r}",
                      "stream_options.include_usage")
  user = body.get("user")
  if user is not None and not isinstance(user, str):
    raise bad_request(f"user must be a string, got {user!r}", "user")
  max_completion = _int(body, "max_completion_tokens", 1)
  if max_completion is None:   # the older name; the newer one wins when both are sent
    max_completion = _int(body, "max_tokens", 1)
  top_k = _int(body, "top_k", -1)
  seed = _int(body, "seed")
  return ChatRequest(
      model=model, messages=messages, max_completion_tokens=max_completion,
      reasoning_effort=effort, thinking_token_budget=_int(body, "thinking_token_budget", 0),
      temperature=_number(body, "temperature", 0, 2), top_p=_number(body, "top_p", 0, 1, True),
      top_k=None if top_k is None else max(top_k, 0),   # vLLM's -1: off, our 0
      # The loop's PRNG keys take 32-bit seeds; any integer maps onto one.
      seed=None if seed is None else seed % 2**32,
      stream=stream, include_usage=include_usage, stop=_stop(body), user=user,
      enable_thinking=_enable_thinking(body), ignored=tuple(sorted(set(body) & set(IGNORED_FIELDS))))


def prompt_of(request: ChatRequest, chat_template: bool):
  """What the engine encodes: the messages themselves for a tokenizer with a chat template;
  otherwise (the char tokenizer of the embedded model) the last user message's text."""
  if chat_template:
    return [dict(m) for m in request.messages]
  users = [m["content"] for m in request.messages if m["role"] == "user"]
  if not users:
    raise bad_request("messages has no user message: this model's tokenizer has no chat "
                      "template, it reads the last user message", "messages")
  if not users[-1]:
    raise bad_request("the last user message is empty", "messages")
  return users[-1]


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
  budget: int          # thinking tokens (UNLIMITED: until the model stops or the context)
  answer_cap: int      # answer tokens, EOS included
  source: str          # what set the budget: "thinking_token_budget", "reasoning_effort:high"...


def plan_budget(request: ChatRequest, *, prompt_tokens: int, cache_len: int, close_tokens: int,
                max_answer_tokens: int, effort_scale: float,
                default_budget: int = UNLIMITED) -> BudgetPlan:
  """The thinking budget and the answer cap of a request.

  The context must hold the prompt, the thinking, the close of thinking (`close_tokens`) and
  the answer room (`max_answer_tokens`, what the engine reserves). An explicit
  thinking_token_budget beyond that room is an error; a reasoning_effort is capped to it.
  max_completion_tokens counts thinking + close + answer (as OpenAI counts reasoning against
  it): the answer keeps its room first, the thinking gets what is left, so the total never
  exceeds it. Both caps apply when both are given.
  """
  room = cache_len - prompt_tokens - close_tokens - max_answer_tokens
  if room < 0:
    raise bad_request(
        f"the prompt ({prompt_tokens} tokens) does not fit the context ({cache_len} tokens) "
        f"with the close of thinking ({close_tokens}) and the answer ({max_answer_tokens}): "
        f"at most {cache_len - close_tokens - max_answer_tokens} prompt tokens", "messages")
  budget, source = min(default_budget, room), "default"
  if request.reasoning_effort is not None:
    budget = min(effort_budget(request.reasoning_effort, effort_scale), room)
    source = f"reasoning_effort:{request.reasoning_effort}"
  b = request.thinking_token_budget
  if b is not None:
    if b > room:
      raise bad_request(
          f"thinking_token_budget={b} does not fit the context: {cache_len} tokens hold the "
          f"prompt ({prompt_tokens}), the close ({close_tokens}) and the answer "
          f"({max_answer_tokens}), leaving at most {room} thinking tokens",
          "thinking_token_budget")
    if request.reasoning_effort is None or b < budget:
      budget, source = b, "thinking_token_budget"
  if request.enable_thinking is False:
    budget, source = 0, "chat_template_kwargs.enable_thinking"
  answer_cap = max_answer_tokens
  m = request.max_completion_tokens
  if m is not None:
    name = "max_completion_tokens"
    if prompt_tokens + m > cache_len:
      raise bad_request(
          f"{name}={m} plus the prompt ({prompt_tokens} tokens) exceeds the context of "
          f"{cache_len} tokens: at most {cache_len - prompt_tokens}", name)
    answer_cap = min(max_answer_tokens, m - close_tokens)
    if answer_cap < 1:
      raise bad_request(f"{name}={m} leaves no room for an answer: closing the thinking takes "
                        f"{close_tokens} token(s) and the answer needs at least 1", name)
    if m - close_tokens - answer_cap < budget:
      budget, source = m - close_tokens - answer_cap, name
  return BudgetPlan(budget=budget, answer_cap=answer_cap, source=source)


# -- responses ---------------------------------------------------------------------------

def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> dict:
  return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
          "total_tokens": prompt_tokens + completion_tokens,
          "completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}


def completion_body(*, id: str, created: int, model: str, content: str, reasoning: str,
                    finish_reason: str, thinking_stop_reason: str, usage: dict,
                    o1jax: dict) -> dict:
  """A chat.completion. The thinking is under both names clients read: `reasoning`
  (newer vLLM) and `reasoning_content` (older vLLM, DeepSeek); `content` is the answer only."""
  message = {"role": "assistant", "content": content, "reasoning": reasoning,
             "reasoning_content": reasoning}
  return {"id": id, "object": "chat.completion", "created": created, "model": model,
          "choices": [{"index": 0, "message": message, "finish_reason": finish_reason,
                       "logprobs": None, "thinking_stop_reason": thinking_stop_reason}],
          "usage": usage, "o1jax": o1jax}


def chunk_body(*, id: str, created: int, model: str, delta: dict | None = None,
               finish_reason: str | None = None, usage: dict | None = None,
               extra: dict | None = None, o1jax: dict | None = None) -> dict:
  """A chat.completion.chunk; delta None with usage: the final usage chunk (no choices)."""
  body = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model}
  if delta is None:
    body["choices"] = []
  else:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
    choice.update(extra or {})
    body["choices"] = [choice]
  if usage is not None:
    body["usage"] = usage
  if o1jax is not None:
    body["o1jax"] = o1jax
  return body


def reasoning_delta(text: str) -> dict:
  return {"reasoning": text, "reasoning_content": text}
