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
from o1jax.thinking.state import Segment, ThinkInputs

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


def prepare_inputs(tokenizer, prompts: Sequence[str], config: ThinkConfig, budgets=None,
                   min_thinking=0, width: int | None = None) -> ThinkInputs:
  """Encodes prompts (appending `<think>`) and checks every control before any compute."""
  if isinstance(prompts, str):
    prompts = [prompts]
  if len(prompts) == 0:
    raise ValueError("no prompts given")
  budgets = [parse_budget(b) for b in _per_prompt(budgets, len(prompts), "budgets")]
  mins = [parse_budget(m) for m in _per_prompt(min_thinking, len(prompts), "min_thinking")]
  encoded = []
  for i, (p, b, m) in enumerate(zip(prompts, budgets, mins)):
    if not p:
      raise ValueError(f"prompt {i} is empty")
    if m == UNLIMITED:
      raise ValueError("min_thinking must be a finite integer")
    if m > b:
      raise ValueError(f"prompt {i}: min_thinking ({m}) is above the thinking budget ({b})")
    ids = list(tokenizer.encode_prompt(p))
    room = config.cache_len - len(ids) - config.reserve
    if room < 0 or (b != UNLIMITED and b > room):
      need = len(ids) + config.reserve + (0 if b == UNLIMITED else b)
      raise ValueError(
          f"prompt {i} ({len(ids)} tokens) does not fit the context ({config.cache_len} tokens) "
          f"together with its thinking budget ({'unlimited' if b == UNLIMITED else b}) and the "
          f"answer ({config.reserve} tokens): it needs {need}")
    encoded.append(ids)
  lengths = np.array([len(e) for e in encoded], np.int32)
  width = max(width or 0, int(lengths.max()))
  return ThinkInputs(tokens=jnp.asarray(tokenizer.pad_batch(encoded, width)),
                     lengths=jnp.asarray(lengths), budget=jnp.asarray(budgets, jnp.int32),
                     min_thinking=jnp.asarray(mins, jnp.int32))


def make_think_config(model_config, tokenizer, cache_len: int | None = None,
                      **overrides) -> ThinkConfig:
  """A ThinkConfig whose special tokens and close string come from the tokenizer."""
  cache_len = cache_len or model_config.max_seq_len
  if cache_len > model_config.max_seq_len:
    raise ValueError(f"cache_len {cache_len} exceeds the model's max_seq_len "
                     f"{model_config.max_seq_len}")
  kw = dict(model=model_config, cache_len=cache_len, think_id=tokenizer.think_id,
            end_think_id=tokenizer.end_think_id, eos_id=tokenizer.eos_id,
            pad_id=tokenizer.pad_id, close_ids=tuple(tokenizer.close_ids()))
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
                budgets=None, min_thinking=0, seed: int = 0,
                batch_size: int | None = None, heads=None) -> list[Thought]:
  """Thinks on text prompts in batches; same seed, same result. `heads` are passed to
  think() (a trained confidence head, and value head, for confidence_estimate="head")."""
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  budgets = _per_prompt(budgets, len(prompts), "budgets")
  mins = _per_prompt(min_thinking, len(prompts), "min_thinking")
  # Validate everything up front, so a bad prompt late in the list fails before any compute.
  width = int(prepare_inputs(tokenizer, prompts, config, budgets, mins).tokens.shape[1])
  batch_size = batch_size or len(prompts)
  out: list[Thought] = []
  for start in range(0, len(prompts), batch_size):
    sl = slice(start, start + batch_size)
    chunk = prompts[sl]
    # Pad the last chunk to the batch size so every chunk reuses one compiled program.
    pad = batch_size - len(chunk)
    inputs = prepare_inputs(tokenizer, chunk + [chunk[0]] * pad, config,
                            budgets[sl] + [budgets[sl][0]] * pad, mins[sl] + [mins[sl][0]] * pad,
                            width=width)
    rng = jax.random.fold_in(jax.random.key(seed), start)
    out += decode_result(think(params, inputs, config, rng, heads=heads), tokenizer, chunk)
  return out
