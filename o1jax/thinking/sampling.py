"""Greedy, temperature, top-k and top-p sampling with one PRNG key per sequence."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def filter_logits(logits: jax.Array, top_k: int, top_p: float) -> jax.Array:
  """Masks logits [B, V] outside the top-k and outside the top-p nucleus to -inf."""
  if top_k and top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before it
    # is still below top_p.
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p
    cutoff = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def sample(logits: jax.Array, keys: jax.Array, temperature: float, top_k: int = 0,
           top_p: float = 1.0) -> jax.Array:
  """One token per row of logits [B, V]; keys [B] are typed PRNG keys, one per sequence."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p)
  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)
