"""Plain-jnp attention: the ground truth for the kernel and model tests.

It materialises the [B, H, Tq, Tk] scores, so memory grows with Tq * Tk; the Pallas kernels
exist to avoid exactly that.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def visibility_mask(q_positions, kv_lengths, tk: int):
  """[B, Tq, Tk] bool: key j is visible to query (b, i) iff j <= pos[b, i] and j < len[b].

  Keys sit at the index equal to their position, so this one rule covers causal training,
  right padding and decoding against a cache whose later slots hold stale data.
  """
  j = jnp.arange(tk, dtype=jnp.int32)
  mask = j[None, None, :] <= q_positions.astype(jnp.int32)[:, :, None]
  if kv_lengths is not None:
    mask &= j[None, None, :] < kv_lengths.astype(jnp.int32)[:, None, None]
  return mask


def reference_attention(q, k, v, q_positions, kv_lengths=None, *, scale=None):
  """q [B, Tq, H, D], k/v [B, Tk, KVH, D] (H % KVH == 0) -> [B, Tq, H, D] in q.dtype.

  Computes in float32 (float64 when the inputs are float64). Rows with no visible key
  output zeros and get zero gradients (no NaNs from an all -inf softmax).
  """
  b, tq, h, d = q.shape
  tk, kvh = k.shape[1], k.shape[2]
  if h % kvh:
    raise ValueError(f"query heads {h} not a multiple of kv heads {kvh}")
  group = h // kvh
  scale = d ** -0.5 if scale is None else scale
  cdt = jnp.float64 if q.dtype == jnp.float64 else jnp.float32
  qf = q.astype(cdt).reshape(b, tq, kvh, group, d)
  s = jnp.einsum("bqhgd,bkhd->bhgqk", qf, k.astype(cdt)) * jnp.asarray(scale, cdt)
  mask = visibility_mask(q_positions, kv_lengths, tk)[:, None, None]
  s = jnp.where(mask, s, -jnp.inf)
  # The max is only for numerical range; stop_gradient keeps it out of the backward pass
  # (softmax is invariant to it), and 0 stands in for the max of an all-masked row.
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  p = jnp.exp(s - m)
  l = jnp.sum(p, axis=-1, keepdims=True)
  o = jnp.einsum("bhgqk,bkhd->bqhgd", p / jnp.where(l == 0, 1.0, l), v.astype(cdt))
  return o.reshape(b, tq, h, d).astype(q.dtype)
