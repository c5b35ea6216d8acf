"""Greedy, temperature, top-k and top-p sampling: one PRNG key and one setting per sequence.

Temperature, top-k and top-p are arrays [B] (a scalar is broadcast), so one compiled program
serves requests with different settings; a batch that is greedy throughout skips the sort.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _per_row(value, batch: int, dtype) -> jax.Array:
  return jnp.broadcast_to(jnp.asarray(value, dtype), (batch,))


def filter_logits(logits: jax.Array, top_k, top_p) -> jax.Array:
  """Masks logits [B, V] outside each row's top-k and top-p nucleus to -inf.

  top_k [B] (0 or >= V: off) applies first; top_p [B] (1: off) keeps the smallest prefix of
  the remaining tokens, by probability, whose mass reaches top_p.
  """
  batch, vocab = logits.shape
  top_k = _per_row(top_k, batch, jnp.int32)
  top_p = _per_row(top_p, batch, jnp.float32)
  k = jnp.where((top_k <= 0) | (top_k >= vocab), vocab, top_k)
  sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
  kth = jnp.take_along_axis(sorted_logits, (k - 1)[:, None], axis=-1)
  logits = jnp.where(logits < kth, -jnp.inf, logits)
  sorted_logits = jnp.where(jnp.arange(vocab)[None, :] < k[:, None], sorted_logits, -jnp.inf)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  # A token stays if the mass before it is still below top_p (the first one always stays).
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = (mass_before < top_p[:, None]) | (top_p[:, None] >= 1.0)
  cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits < cutoff, -jnp.inf, logits)


def sample(logits: jax.Array, keys: jax.Array, temperature, top_k=0, top_p=1.0) -> jax.Array:
  """One token per row of logits [B, V]; keys [B] are typed PRNG keys, one per sequence.

  Rows with temperature 0 take the argmax. The filters and the categorical draw run only
  when some row samples (a `lax.cond`, so a greedy batch pays for one argmax).
  """
  batch = logits.shape[0]
  temperature = _per_row(temperature, batch, jnp.float32)
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def draw(_):
    scaled = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    filtered = filter_logits(scaled, top_k, top_p)
    drawn = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
    return jnp.where(temperature > 0, drawn, greedy)

  return jax.lax.cond((temperature > 0).any(), draw, lambda _: greedy, None)
