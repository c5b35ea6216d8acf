"""Greedy, temperature, top-k and top-p sampling: one PRNG key and one setting per sequence.

Temperature, top-k and top-p are arrays [B] (a scalar is broadcast), so one compiled program
serves requests with different settings. Nothing here sorts the vocabulary: at V = 151,936 a
sort per step is a large share of a decode step. Instead

* a batch that is greedy throughout pays for one argmax (a `lax.cond`);
* a sampling batch with top-k and top-p off draws straight from the scaled logits;
* top-k and top-p are thresholds found by a radix select over the logits' bit patterns
  (32 passes of a compare and a reduction over [B, V], each under its own `lax.cond` so a
  batch where no row uses the filter skips it).

The kept sets are exactly the sorted definitions': top-k keeps every logit >= the k-th
largest (ties at the k-th value stay, as a sort-based cut keeps them); top-p keeps a token iff
the probability of the tokens strictly more likely than it is below top_p, which is the
smallest sorted prefix whose mass reaches top_p, ties at its last value included. The only
difference from a sort-and-cumsum is where that mass is summed: here one masked sum per
threshold, there a running sum in sorted order; the two round differently, so a token whose
preceding mass lies within float32 rounding (~1e-7 relative) of top_p can fall on the other
side. `tests/test_sampling.py` checks both filters against a float64 sort-based reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_BITS = 32


def _per_row(value, batch: int, dtype) -> jax.Array:
  return jnp.broadcast_to(jnp.asarray(value, dtype), (batch,))


def order_keys(x: jax.Array) -> jax.Array:
  """float32 -> uint32 keys with the same order (-inf lowest, +inf highest, NaN aside)."""
  x = x.astype(jnp.float32)
  x = jnp.where(x == 0, 0.0, x)  # -0.0 == 0.0: one key, so the two tie as their values do
  u = jax.lax.bitcast_convert_type(x, jnp.uint32)
  negative = (u >> 31) == 1
  return jnp.where(negative, ~u, u | jnp.uint32(0x80000000))


def _largest_key_where(holds, batch: int) -> jax.Array:
  """The largest uint32 t [batch] with holds(t), for a predicate that holds at 0 and is
  monotone (true below some point, false above): a radix select, one bit per pass, MSB first."""
  def body(i, t):
    candidate = t | (jnp.uint32(1) << (_BITS - 1 - i).astype(jnp.uint32))
    return jnp.where(holds(candidate), candidate, t)
  return jax.lax.fori_loop(0, _BITS, body, jnp.zeros((batch,), jnp.uint32))


def top_k_mask(logits: jax.Array, k: jax.Array) -> jax.Array:
  """[B, V] bool: logits >= each row's k-th largest value (k [B] in 1..V)."""
  keys = order_keys(logits)
  kth = _largest_key_where(lambda t: (keys >= t[:, None]).sum(-1) >= k, logits.shape[0])
  return keys >= kth[:, None]


def top_p_mask(logits: jax.Array, top_p: jax.Array) -> jax.Array:
  """[B, V] bool: tokens whose strictly-more-likely tokens hold less than top_p [B] of the
  probability (the nucleus; the most likely token always stays)."""
  keys = order_keys(logits)
  probs = jax.nn.softmax(logits, axis=-1)
  mass_above = lambda t: jnp.where(keys > t[:, None], probs, 0.0).sum(-1)
  # The largest t whose mass above still reaches top_p: the nucleus is every key above it.
  last_out = _largest_key_where(lambda t: mass_above(t) >= top_p, logits.shape[0])
  return keys > last_out[:, None]


def filter_logits(logits: jax.Array, top_k, top_p) -> jax.Array:
  """Masks logits [B, V] outside each row's top-k and top-p nucleus to -inf.

  top_k [B] (0 or >= V: off) applies first; top_p [B] (1: off) keeps the smallest prefix of
  the remaining tokens, by probability, whose mass reaches top_p (module docstring).
  """
  batch, vocab = logits.shape
  top_k = _per_row(top_k, batch, jnp.int32)
  top_p = _per_row(top_p, batch, jnp.float32)
  use_k = (top_k > 0) & (top_k < vocab)
  use_p = top_p < 1.0

  def cut(use, mask_fn, setting):
    def apply(x):
      keep = mask_fn(x, setting) | ~use[:, None]
      return jnp.where(keep, x, -jnp.inf)
    return lambda x: jax.lax.cond(use.any(), apply, lambda x: x, x)

  logits = cut(use_k, top_k_mask, jnp.clip(top_k, 1, vocab))(logits)
  return cut(use_p, top_p_mask, top_p)(logits)


def sample(logits: jax.Array, keys: jax.Array, temperature, top_k=0, top_p=1.0):
  """One token per row of logits [B, V]; keys [B] are typed PRNG keys, one per sequence.

  Returns (tokens [B] int32, log-probs [B] f32): each token's log-probability under the
  distribution it was drawn from (scaled by the row's temperature, top-k and top-p applied,
  renormalised); 0 for greedy rows (temperature 0: a point mass on the argmax). Rows with
  temperature 0 take the argmax; the draw runs only when some row samples (a `lax.cond`).
  """
  batch = logits.shape[0]
  temperature = _per_row(temperature, batch, jnp.float32)
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  zeros = jnp.zeros((batch,), jnp.float32)

  def draw(_):
    scaled = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    filtered = filter_logits(scaled, top_k, top_p)
    drawn = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(filtered, axis=-1), drawn[:, None], -1)[:, 0]
    sampling = temperature > 0
    return jnp.where(sampling, drawn, greedy), jnp.where(sampling, logp, zeros)

  return jax.lax.cond((temperature > 0).any(), draw, lambda _: (greedy, zeros), None)
