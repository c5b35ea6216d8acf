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
# Query block of the XLA path's causal full forwards (training, scoring): blocks of 64
# against their key prefix cut fwd+bwd attention time by a third at 240 tokens on the
# 2-core CPU (launch/bench_train_step.py).
_CAUSAL_QUERY_BLOCK = 64
# Added to the scores of hidden keys: far below any real score, yet finite (see below).
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def visibility(q_positions, num_keys, segment_ids=None, kv_segment_ids=None):
  """[B, T, S] bool: which keys each query may attend to (the module docstring's rule).

  `kv_segment_ids` [B, S]: the keys' segments when they are not the queries' own tokens
  (a block of queries against a prefix of the row); default `segment_ids`."""
  visible = jnp.arange(num_keys)[None, None, :] <= q_positions[:, :, None]
  if segment_ids is not None:  # packed rows: a key is visible only within its example
    kv_segment_ids = segment_ids if kv_segment_ids is None else kv_segment_ids
    visible &= segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  return visible


def xla_attention(q, k, v, q_positions, scale=None, segment_ids=None,
                  causal_query_block: int | None = None):
  """Plain attention with grouped-query heads; q [B,T,H,D], k/v [B,S,KVH,D].

  `causal_query_block`: the caller promises keys are this call's own tokens and
  q_positions[b, i] <= i (a causal full forward, packed or padded). Queries then go in
  blocks of this many, each against the keys up to its own end only: the score blocks
  above the diagonal, all masked, are never computed (~37% fewer at 240 tokens in blocks
  of 64; exact, since those keys were invisible).
  """
  t = q.shape[1]
  if causal_query_block is None or t <= causal_query_block:
    return _attention(q, k, v, q_positions, scale, segment_ids, segment_ids)
  outs = []
  for start in range(0, t, causal_query_block):
    end = min(t, start + causal_query_block)
    outs.append(_attention(
        q[:, start:end], k[:, :end], v[:, :end], q_positions[:, start:end], scale,
        None if segment_ids is None else segment_ids[:, start:end],
        None if segment_ids is None else segment_ids[:, :end]))
  return jnp.concatenate(outs, axis=1)


def _attention(q, k, v, q_positions, scale, q_segments, kv_segments):
  """Computed head-major ([B, KVH, G*T, D], each KV head with its G query heads stacked)
  so both products are plain batched matmuls: the token-major einsum this replaced spent
  a third more time, mostly in layout copies, on XLA:CPU (launch/bench_train_step.py)."""
  b, t, h, d = q.shape
  s, kvh = k.shape[1], k.shape[2]
  g = h // kvh
  scale = d ** -0.5 if scale is None else scale
  qh = (q * scale).reshape(b, t, kvh, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kvh, g * t, d)
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KVH, S, D]
  scores = jnp.matmul(qh, kh.swapaxes(-1, -2), preferred_element_type=jnp.float32)
  visible = visibility(q_positions, s, q_segments, kv_segments)  # [B, T, S]
  # A finite mask value, so a row with no visible key (padding) softmaxes to finite
  # weights instead of NaN; its output is zeroed below, which also zeroes its gradient.
  bias = jnp.where(visible, 0.0, _MASK_VALUE)[:, None, None]
  probs = jax.nn.softmax(scores.reshape(b, kvh, g, t, s) + bias, axis=-1)
  out = jnp.matmul(probs.reshape(b, kvh, g * t, s).astype(v.dtype), vh,
                   preferred_element_type=jnp.float32)
  out = out.reshape(b, kvh, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
  return (out * visible.any(-1)[:, :, None, None]).astype(q.dtype)


def cudnn_attention(q, k, v, q_positions, scale=None, segment_ids=None):
  visible = visibility(q_positions, k.shape[1], segment_ids)
  return jax.nn.dot_product_attention(q, k, v, mask=visible[:, None], scale=scale,
                                      implementation="cudnn")


def attend(q, k, v, q_positions, impl: str = "xla", scale=None, from_cache: bool = False,
           segment_ids=None):
  """`from_cache`: keys are a KV cache being decoded against (no gradient is needed);
  `segment_ids` [B, T]: packed training rows (`forward` allows them without a cache only)."""
  if impl == "xla":
    # Without a cache the keys are the call's own tokens and the Decoder's mask positions
    # are their indices (or -1): the causal promise `causal_query_block` needs.
    return xla_attention(q, k, v, q_positions, scale, segment_ids,
                         causal_query_block=None if from_cache else _CAUSAL_QUERY_BLOCK)
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
