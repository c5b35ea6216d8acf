"""Chunked prefill: a prompt of any length through the model in chunks of one fixed width.

A prefill whose program is shaped by the prompt's width compiles once per width bucket, and
every request waits while it does (a server saw 2.6-5.8 s stalls on the first prompt of each
new width). Here the prompt is padded to one width for the whole context (`padded_width`)
and fed C tokens at a time by a `lax.while_loop` that runs only as many chunks as the prompt
has: one program for every prompt length, compiled at warm-up.

Each chunk is the model's own cached forward at positions start .. start + C - 1 (padding
at -1: neither written nor attended), so it attends to the chunks before it through the
cache exactly as one wide prefill would; only the shapes of the matmuls differ (float
rounding). Stale keys past the prompt (a slot's previous request) are never read: a key is
visible to a query only at a position at or below the query's, and every such position was
just written.

`prefill_row` fills a fresh one-row loop state (a prefilled request waiting for a slot);
`prefill_into` writes the prompt straight into a slot of the engine's state (no second copy
of the row), then the slot's controller starts as `think()`'s does (`init_state`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from o1jax.model.cache import KVCache
from o1jax.model.heads import apply_head
from o1jax.model.transformer import forward
from o1jax.thinking.config import ThinkConfig
from o1jax.thinking.state import ThinkInputs, ThinkState, fill_settings, init_state


def padded_width(cache_len: int, chunk: int) -> int:
  """The one token width every prompt is padded to: the context, rounded up to chunks."""
  return -(-cache_len // chunk) * chunk


def chunked_forward(params, tokens, length, cache: KVCache, config: ThinkConfig, chunk: int):
  """Feeds tokens [1, W] (W a multiple of `chunk`; the first `length` [1] are the prompt)
  into `cache` (one row) chunk by chunk. Returns (logits [1, V] f32 and final hidden state
  [1, E] after the prompt's last token, cache)."""
  width = tokens.shape[1]
  if width % chunk:
    raise ValueError(f"token width {width} is not a multiple of the chunk width {chunk}")
  n_chunks = (length[0] + chunk - 1) // chunk
  last = length[0] - 1

  def run(i, cache):
    start = i * chunk
    ids = jax.lax.dynamic_slice_in_dim(tokens, start, chunk, axis=1)
    positions = start + jnp.arange(chunk, dtype=jnp.int32)[None, :]
    positions = jnp.where(positions < length[:, None], positions, -1)
    logits, hidden, cache = forward(params, ids, positions, cache, config.model)
    # The prompt's last token lies in the last chunk run, whose values the loop keeps.
    at = jnp.clip(last - start, 0, chunk - 1)
    take = lambda x: jax.lax.dynamic_index_in_dim(x, at, axis=1, keepdims=False)
    return take(logits).astype(jnp.float32), take(hidden), cache

  logits0, hidden0, _ = jax.eval_shape(run, 0, cache)
  init = (jnp.int32(0), jnp.zeros(logits0.shape, logits0.dtype),
          jnp.zeros(hidden0.shape, hidden0.dtype), cache)

  def body(carry):
    i, _, _, cache = carry
    return (i + 1,) + run(i, cache)

  _, logits, hidden, cache = jax.lax.while_loop(lambda c: c[0] < n_chunks, body, init)
  return logits, hidden, cache


def predicted_thinking(budget_head, hidden):
  """The budget head's prediction of thinking tokens from the hidden state at `<think>`
  (it predicts log(1 + tokens)); nan without a head."""
  if budget_head is None:
    return jnp.full(hidden.shape[:1], jnp.nan)
  return jnp.expm1(jnp.maximum(apply_head(budget_head, hidden), 0.0))


@functools.partial(jax.jit, static_argnames=("config", "chunk"))
def prefill_row(params, inputs: ThinkInputs, config: ThinkConfig, chunk: int, budget_head):
  """One request (`inputs`: one filled row, tokens padded to `padded_width`) into a fresh
  one-row loop state. Returns (state, predicted thinking [1])."""
  inputs = fill_settings(inputs, config)   # shapes and dtypes only: every setting is given
  cache = KVCache.init(config.model, 1, config.cache_len)
  logits, hidden, cache = chunked_forward(params, inputs.tokens, inputs.lengths, cache, config,
                                          chunk)
  return init_state(inputs, logits, cache, config), predicted_thinking(budget_head, hidden)


@functools.partial(jax.jit, static_argnames=("config", "chunk"), donate_argnames=("state",))
def prefill_into(state: ThinkState, params, inputs: ThinkInputs, slot, config: ThinkConfig,
                 chunk: int) -> ThinkState:
  """One request straight into slot `slot` of `state`: its prompt into the slot's KV rows,
  its controller started there. The state is donated, so XLA updates the slot in place."""
  inputs = fill_settings(inputs, config)
  row = lambda a: jax.lax.dynamic_slice_in_dim(a, slot, 1, 0)
  cache = jax.tree.map(row, state.cache)
  logits, _, cache = chunked_forward(params, inputs.tokens, inputs.lengths, cache, config,
                                     chunk)
  fresh = init_state(inputs, logits, cache, config)
  return jax.tree.map(lambda a, r: jax.lax.dynamic_update_slice_in_dim(a, r, slot, 0),
                      state, fresh)
