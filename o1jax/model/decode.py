"""Prefill and a single cache-donating decode step: the building blocks of every sampler.

`greedy_decode` is the plain Python-loop decoder: the step-by-step reference the compiled
thinking loop is tested against, and the baseline it is benchmarked against.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.cache import KVCache
from o1jax.model.config import ModelConfig
from o1jax.model.transformer import forward


def prompt_positions(lengths: jax.Array, width: int) -> jax.Array:
  """Positions [B, width] for right-padded prompts: 0..len-1, then -1 for padding."""
  ar = jnp.arange(width)[None, :]
  return jnp.where(ar < lengths[:, None], ar, -1)


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("cache",))
def prefill(params, tokens, lengths, cache: KVCache, config: ModelConfig):
  """Writes right-padded prompts [B, P] into the cache; returns each prompt's last logits
  and hidden state ([B, V], [B, E]) and the cache."""
  logits, hidden, cache = forward(params, tokens, prompt_positions(lengths, tokens.shape[1]),
                                  cache, config)
  last = jnp.maximum(lengths - 1, 0)
  take = lambda x: jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
  return take(logits), take(hidden), cache


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("cache",))
def decode_step(params, tokens, positions, cache: KVCache, config: ModelConfig):
  """One token per sequence: tokens [B] at positions [B] -> (logits [B,V], hidden [B,E], cache)."""
  logits, hidden, cache = forward(params, tokens[:, None], positions[:, None], cache, config)
  return logits[:, 0], hidden[:, 0], cache


def greedy_decode(params, config: ModelConfig, prompts: np.ndarray, lengths: np.ndarray,
                  max_new_tokens: int, eos_id: int, cache_len: int | None = None):
  """Greedy decoding with a Python loop over `decode_step`; stops when all emitted EOS.

  Returns (tokens [B, max_new_tokens] int32 padded with eos after the end, number of steps).
  """
  batch, width = prompts.shape
  cache_len = cache_len or int(np.max(lengths)) + max_new_tokens
  cache = KVCache.init(config, batch, cache_len)
  logits, _, cache = prefill(params, jnp.asarray(prompts), jnp.asarray(lengths), cache,
                             config=config)
  positions = jnp.asarray(lengths, jnp.int32)
  done = np.zeros(batch, bool)
  out = np.full((batch, max_new_tokens), eos_id, np.int32)
  for t in range(max_new_tokens):
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    token_np = np.asarray(token)
    out[:, t] = np.where(done, eos_id, token_np)
    done |= token_np == eos_id
    if done.all():
      return out, t + 1
    logits, _, cache = decode_step(params, token, positions, cache, config=config)
    positions = positions + 1
  return out, max_new_tokens
