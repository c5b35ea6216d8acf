"""Text in, text out: validation of budgets and prompts, batching, and result decoding."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.thinking.config import StopReason, ThinkConfig
from o1jax.thinking.loop import think
from o1jax.thinking.state import (ANSWER_AT_THINKING_TEMPERATURE, REQUEST_SETTINGS, Segment,
                                  ThinkInputs, request_keys)

UNLIMITED = 2**30  # a budget no cache can reach: thinking is then capped by the context


@dataclasses.dataclass
class Thought:
  prompt: str
  thinking: str
  answer: str
  thinking_tokens: int
  answer_tokens: int
  stop_reason: str
  finished: bool
  num_probes: int
  confidence: float | None
  similarity: float | None

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def parse_budget(value) -> int:
  """An int >= 0, or None / inf / 'inf' / 'unlimited' for no budget. Clear errors otherwise."""
  if value is None or (isinstance(value, str) and value.lower() in ("inf", "unlimited", "none")):
    return UNLIMITED
  if isinstance(value, float) and np.isinf(value) and value > 0:
    return UNLIMITED
  if isinstance(value, str):
    try:
      value = int(value)
    except ValueError:
      raise ValueError(f"thinking budget must be a non-negative integer or 'inf', got {value!r}")
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    if isinstance(value, float) and value.is_integer():
      value = int(value)
    else:
      raise ValueError(f"thinking budget must be a non-negative integer or 'inf', got {value!r}")
  if value < 0:
    raise ValueError(f"thinking budget must be non-negative, got {value}")
  return int(value)


def _per_prompt(value, n: int, name: str) -> list:
  if isinstance(value, (list, tuple, np.ndarray)):
    if len(value) != n:
      raise ValueError(f"{name} has {len(value)} entries for {n} prompts")
    return list(value)
  return [value] * n


def bucket_width(n: int, limit: int) -> int:
  """The power of two >= n (at least 8), capped at `limit`: prompt widths and cache lengths
  are bucketed so that calls with other prompts reuse a handful of compiled programs."""
  return min(max(8, 1 << (max(n, 1) - 1).bit_length()), limit)


def prepare_inputs(tokenizer, prompts: Sequence[str], config: ThinkConfig, budgets=None,
                   min_thinking=0, width: int | None = None, prefixes=None,
                   **settings) -> ThinkInputs:
  """Encodes prompts (appending `<think>`, then `prefixes[i]`, thinking text to continue
  from, if given) and checks every control before any compute.

  The width is the longest prompt's, bucketed (`bucket_width`), or `width` if larger.
  `settings` are per-request overrides of the config's defaults (REQUEST_SETTINGS:
  temperature=, top_k=, top_p=, max_answer_tokens=, confidence_threshold=, ...), each a
  scalar or one value per prompt.
  """
  if isinstance(prompts, str):
    prompts = [prompts]
  if len(prompts) == 0:
    raise ValueError("no prompts given")
  budgets = [parse_budget(b) for b in _per_prompt(budgets, len(prompts), "budgets")]
  mins = [parse_budget(m) for m in _per_prompt(min_thinking, len(prompts), "min_thinking")]
  prefixes = _per_prompt("" if prefixes is None else prefixes, len(prompts), "prefixes")
  encoded = []
  for i, (p, b, m, x) in enumerate(zip(prompts, budgets, mins, prefixes)):
    if not p:
      raise ValueError(f"prompt {i} is empty")
    if m == UNLIMITED:
      raise ValueError("min_thinking must be a finite integer")
    if m > b:
      raise ValueError(f"prompt {i}: min_thinking ({m}) is above the thinking budget ({b})")
    ids = list(tokenizer.encode_prompt(p)) + (list(tokenizer.encode(x)) if x else [])
    room = config.cache_len - len(ids) - config.reserve
    if room < 0 or (b != UNLIMITED and b > room):
      need = len(ids) + config.reserve + (0 if b == UNLIMITED else b)
      raise ValueError(
          f"prompt {i} ({len(ids)} tokens) does not fit the context ({config.cache_len} tokens) "
          f"together with its thinking budget ({'unlimited' if b == UNLIMITED else b}) and the "
          f"answer ({config.reserve} tokens): it needs {need}")
    encoded.append(ids)
  lengths = np.array([len(e) for e in encoded], np.int32)
  width = max(width or 0, bucket_width(int(lengths.max()), config.cache_len))
  return ThinkInputs(tokens=jnp.asarray(tokenizer.pad_batch(encoded, width)),
                     lengths=jnp.asarray(lengths), budget=jnp.asarray(budgets, jnp.int32),
                     min_thinking=jnp.asarray(mins, jnp.int32),
                     **_settings_arrays(settings, len(prompts), config))


def _settings_arrays(settings: dict, n: int, config: ThinkConfig) -> dict:
  """Per-request setting arrays from scalars or per-prompt lists, checked like the config."""
  unknown = sorted(set(settings) - set(REQUEST_SETTINGS))
  if unknown:
    raise ValueError(f"unknown per-request setting(s) {unknown}; known: "
                     f"{', '.join(REQUEST_SETTINGS)}")
  out = {}
  for name, value in settings.items():
    if value is None:
      continue
    values = _per_prompt(value, n, name)
    # Reuse ThinkConfig's own checks on each value, so one error text serves both.
    for v in values:
      if name.startswith("use_"):
        continue
      if name == "answer_temperature" and v == ANSWER_AT_THINKING_TEMPERATURE:
        continue  # the carry's "answer at the thinking temperature" (setting_defaults fills it)
      dataclasses.replace(config, **{name: v})
      if name == "max_answer_tokens" and v > config.max_answer_tokens:
        raise ValueError(f"max_answer_tokens={v} is above the config's {config.max_answer_tokens} "
                         "(it sizes the cache room kept for the answer)")
    out[name] = jnp.asarray(values)
  return out


def make_think_config(model_config, tokenizer, cache_len: int | None = None,
                      **overrides) -> ThinkConfig:
  """A ThinkConfig whose special tokens and close string come from the tokenizer."""
  cache_len = cache_len or model_config.max_seq_len
  if cache_len > model_config.max_seq_len:
    raise ValueError(f"cache_len {cache_len} exceeds the model's max_seq_len "
                     f"{model_config.max_seq_len}")
  kw = dict(model=model_config, cache_len=cache_len, think_id=tokenizer.think_id,
            end_think_id=tokenizer.end_think_id, eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id, close_ids=tuple(tokenizer.close_ids()),
            eos_ids=tuple(getattr(tokenizer, "eos_ids", (tokenizer.eos_id,))))
  kw.update(overrides)
  return ThinkConfig(**kw)


def decode_result(result, tokenizer, prompts: Sequence[str]) -> list[Thought]:
  r = jax.tree.map(np.asarray, result)
  out = []
  for b, prompt in enumerate(prompts):
    n = int(r.num_generated[b])
    toks, segs = r.tokens[b, :n], r.segments[b, :n]
    thinking = tokenizer.decode(toks[segs == Segment.THINKING], stop_at_eos=False)
    answer = tokenizer.decode(toks[segs == Segment.ANSWER])
    nan_to_none = lambda x: None if np.isnan(x) else float(x)
    out.append(Thought(prompt=prompt, thinking=thinking, answer=answer,
                       thinking_tokens=int(r.thinking_tokens[b]),
                       answer_tokens=int(r.answer_tokens[b]),
                       stop_reason=StopReason(int(r.stop_reason[b])).name.lower(),
                       finished=bool(r.finished[b]), num_probes=int(r.num_probes[b]),
                       confidence=nan_to_none(r.confidence[b]),
                       similarity=nan_to_none(r.similarity[b])))
  return out


def think_texts(params, tokenizer, prompts: Sequence[str], config: ThinkConfig, *,
                budgets=None, min_thinking=0, seed: int | Sequence[int] = 0,
                batch_size: int | None = None, heads=None, draft_params=None,
                prefixes=None, **settings) -> list[Thought]:
  """Thinks on text prompts in batches; same seed, same result.

  With one seed, prompt i samples from `request_keys(seed, i)`; with one seed per prompt,
  from `request_keys(seed[i], 0)` (a request's own identity, as in serving). Either way its
  thinking does not depend on the batch size or on its neighbours, and with per-prompt seeds
  not on its place in the list either. `heads` are passed to think() (a trained confidence head,
  and value head, for confidence_estimate="head"), `draft_params` too (a separate speculative
  draft model); `settings` are per-request overrides (see prepare_inputs). `prefixes`: per
  prompt, thinking text to continue from (after `<think>`); a Thought's thinking is what
  was generated after it.
  """
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  n = len(prompts)
  budgets = _per_prompt(budgets, n, "budgets")
  mins = _per_prompt(min_thinking, n, "min_thinking")
  prefixes = _per_prompt("" if prefixes is None else prefixes, n, "prefixes")
  settings = {k: _per_prompt(v, n, k) for k, v in settings.items() if v is not None}
  per_prompt_seed = isinstance(seed, (list, tuple, np.ndarray))
  seeds = _per_prompt(seed, n, "seed")
  # Validate everything up front, so a bad prompt late in the list fails before any compute.
  width = int(prepare_inputs(tokenizer, prompts, config, budgets, mins, prefixes=prefixes,
                             **settings).tokens.shape[1])
  batch_size = batch_size or n
  out: list[Thought] = []
  for start in range(0, n, batch_size):
    # Pad the last chunk to the batch size (repeating its first row) so every chunk reuses
    # one compiled program.
    rows = list(range(start, min(start + batch_size, n)))
    rows += [rows[0]] * (batch_size - len(rows))
    pick = lambda xs: [xs[r] for r in rows]
    inputs = prepare_inputs(tokenizer, pick(prompts), config, pick(budgets), pick(mins),
                            width=width, prefixes=pick(prefixes),
                            **{k: pick(v) for k, v in settings.items()})
    inputs = inputs.replace(request_key=request_keys(pick(seeds), 0) if per_prompt_seed
                            else request_keys(seed, np.asarray(rows)))
    chunk = prompts[start:start + batch_size]
    out += decode_result(think(params, inputs, config, heads=heads,
                                     draft_params=draft_params), tokenizer, chunk)
  return out
