"""Attention dispatch: one call site in the model, three implementations behind it.

All share one masking rule: key index j is visible to query (b, i) iff j <= q_positions[b, i],
so causal training attention, right-padded batches and KV-cache decoding are the same call.
Packed training rows (several examples end to end in one row) add `segment_ids` [B, T]:
a key is visible only to queries of its own example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Below this many query tokens the decode kernel (split over the KV length) beats the
# training kernel, whose parallelism comes from the query blocks.
_DECODE_MAX_QUERIES = 8


def visibility(q_positions, num_keys, segment_ids=None):
  """[B, T, S] bool: which keys each query may attend to (the module docstring's rule)."""
  visible = jnp.arange(num_keys)[None, None, :] <= q_positions[:, :, None]
  if segment_ids is not None:  # packed rows: queries and keys are the same T tokens
    visible &= segment_ids[:, :, None] == segment_ids[:, None, :]
  return visible


def xla_attention(q, k, v, q_positions, scale=None, segment_ids=None):
  """Plain einsum attention with grouped-query heads; q [B,T,H,D], k/v [B,S,KVH,D]."""
  b, t, h, d = q.shape
  kvh = k.shape[2]
  scale = d ** -0.5 if scale is None else scale
  qg = q.reshape(b, t, kvh, h // kvh, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
  visible = visibility(q_positions, k.shape[1], segment_ids)  # [B, T, S]
  scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
  any_visible = visible.any(-1)[:, None, None, :, None]
  probs = jax.nn.softmax(jnp.where(any_visible, scores, 0.0), axis=-1)
  probs = jnp.where(any_visible, probs, 0.0)  # rows with no visible key output zeros
  out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


def cudnn_attention(q, k, v, q_positions, scale=None, segment_ids=None):
  visible = visibility(q_positions, k.shape[1], segment_ids)
  return jax.nn.dot_product_attention(q, k, v, mask=visible[:, None], scale=scale,
                                      implementation="cudnn")


def attend(q, k, v, q_positions, impl: str = "xla", scale=None, from_cache: bool = False,
           segment_ids=None):
  """`from_cache`: keys are a KV cache being decoded against (no gradient is needed);
  `segment_ids` [B, T]: packed training rows (`forward` allows them without a cache only)."""
  if impl == "xla":
    return xla_attention(q, k, v, q_positions, scale, segment_ids)
  if impl == "pallas":
    if segment_ids is not None:
      raise ValueError("packed training rows (data.pack=True) need attention_impl 'xla' or "
                       "'cudnn': the Pallas flash kernel has no segment mask")
    from o1jax import kernels  # imported lazily: Pallas is only needed when asked for
    if from_cache and q.shape[1] <= _DECODE_MAX_QUERIES:
      return kernels.decode_attention(q, k, v, q_positions, scale=scale)
    return kernels.flash_attention(q, k, v, q_positions, scale=scale)
  if impl == "cudnn":
    return cudnn_attention(q, k, v, q_positions, scale, segment_ids)
  raise ValueError(f"attention_impl must be one of xla, pallas, cudnn; got {impl!r}")
