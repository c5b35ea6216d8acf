"""Attention dispatch: one call site in the model, three implementations behind it.

All share one masking rule: key index j is visible to query (b, i) iff j <= q_positions[b, i],
so causal training attention, right-padded batches and KV-cache decoding are the same call.
Packed training rows (several examples end to end in one row) add `segment_ids` [B, T]:
a key is visible only to queries of its own example.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

# Below this many query tokens the decode kernel (split over the KV length) beats the
# training kernel, whose parallelism comes from the query blocks.
_DECODE_MAX_QUERIES = 8
# Query block of the XLA path's causal full forwards (training, scoring): blocks of 64
# against their key prefix cut fwd+bwd attention time by a third at 240 tokens on the
# 2-core CPU (launch/bench_train_step.py).
_CAUSAL_QUERY_BLOCK = 64
# From this many cache elements per layer (K alone) one-query decode attention reduces over
# the cache in place (`single_query_attention`); below it the cache copies the matmul form
# makes are cheap and its two dots beat the reductions (XLA:CPU, 25M model: batch 1 with
# 280 slots ~5% faster with the dots, batch 8 ~6% faster with the reductions).
_REDUCE_DECODE_MIN_CACHE = 1 << 17
# Added to the scores of hidden keys: far below any real score, yet finite (see below).
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def visibility(q_positions, num_keys, segment_ids=None, kv_segment_ids=None,
               key_positions=None):
  """[B, T, S] bool: which keys each query may attend to (the module docstring's rule).

  `kv_segment_ids` [B, S]: the keys' segments when they are not the queries' own tokens
  (a block of queries against a prefix of the row); default `segment_ids`.
  `key_positions` [B, S]: the position each key slot holds (-1: empty) when slots are not
  positions (thinking-KV eviction); key j is then visible iff 0 <= key_positions <= q."""
  if key_positions is not None:
    kp = key_positions[:, None, :]
    return (kp >= 0) & (kp <= q_positions[:, :, None])
  visible = jnp.arange(num_keys)[None, None, :] <= q_positions[:, :, None]
  if segment_ids is not None:  # packed rows: a key is visible only within its example
    kv_segment_ids = segment_ids if kv_segment_ids is None else kv_segment_ids
    visible &= segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  return visible


def xla_attention(q, k, v, q_positions, scale=None, segment_ids=None,
                  causal_query_block: int | None = None, k_scale=None, v_scale=None,
                  key_positions=None):
  """Plain attention with grouped-query heads; q [B,T,H,D], k/v [B,S,KVH,D].

  `causal_query_block`: the caller promises keys are this call's own tokens and
  q_positions[b, i] <= i (a causal full forward, packed or padded). Queries then go in
  blocks of this many, each against the keys up to its own end only: the score blocks
  above the diagonal, all masked, are never computed (~37% fewer at 240 tokens in blocks
  of 64; exact, since those keys were invisible).

  `k_scale`, `v_scale` [B, S, KVH]: k and v are an int8 cache (o1jax/model/cache.py).
  `key_positions` [B, S]: the cache's slot table (see `visibility`).
  """
  t = q.shape[1]
  if k_scale is not None or key_positions is not None:
    return _attention(q, k, v, q_positions, scale, segment_ids, segment_ids, k_scale, v_scale,
                      key_positions)
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


def _attention(q, k, v, q_positions, scale, q_segments, kv_segments, k_scale=None,
               v_scale=None, key_positions=None):
  """Computed head-major ([B, KVH, G*T, D], each KV head with its G query heads stacked)
  so both products are plain batched matmuls: the token-major einsum this replaced spent
  a third more time, mostly in layout copies, on XLA:CPU (launch/bench_train_step.py).

  An int8 cache is never dequantised as a whole: the matmuls read its int8 values (exact
  in bf16/f32) and the per-key scales multiply the [.., S] scores and probabilities,
  (q . k_int8) * s_k = q . (k_int8 * s_k), likewise for v."""
  b, t, h, d = q.shape
  s, kvh = k.shape[1], k.shape[2]
  g = h // kvh
  scale = d ** -0.5 if scale is None else scale
  qh = (q * scale).reshape(b, t, kvh, g, d).transpose(0, 2, 3, 1, 4).reshape(b, kvh, g * t, d)
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KVH, S, D]
  if k_scale is not None:
    kh, vh = kh.astype(q.dtype), vh.astype(q.dtype)
  scores = jnp.matmul(qh, kh.swapaxes(-1, -2), preferred_element_type=jnp.float32)
  if k_scale is not None:
    scores = scores * k_scale.astype(jnp.float32).transpose(0, 2, 1)[:, :, None, :]
  visible = visibility(q_positions, s, q_segments, kv_segments, key_positions)  # [B, T, S]
  # A finite mask value, so a row with no visible key (padding) softmaxes to finite
  # weights instead of NaN; its output is zeroed below, which also zeroes its gradient.
  bias = jnp.where(visible, 0.0, _MASK_VALUE)[:, None, None]
  probs = jax.nn.softmax(scores.reshape(b, kvh, g, t, s) + bias, axis=-1)
  if v_scale is not None:
    probs = probs * v_scale.astype(jnp.float32).transpose(0, 2, 1)[:, :, None, None, :]
  out = jnp.matmul(probs.reshape(b, kvh, g * t, s).astype(vh.dtype), vh,
                   preferred_element_type=jnp.float32)
  out = out.reshape(b, kvh, g, t, d).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)
  return (out * visible.any(-1)[:, :, None, None]).astype(q.dtype)


def single_query_attention(q, k, v, q_positions, scale=None):
  """One query token per row against a KV cache: q [B,1,H,D], k/v [B,S,KVH,D].

  Both products are written as broadcast multiplies reduced over D and over S, which XLA
  fuses into two reductions that read the cache where it lies. The matmul form
  (`_attention`) needs the cache head-major, and XLA:CPU transposed and copied every
  layer's K and V for it, every decode step: three passes over the cache instead of one.
  """
  b, _, h, d = q.shape
  s, kvh = k.shape[1], k.shape[2]
  g = h // kvh
  scale = d ** -0.5 if scale is None else scale
  qg = (q[:, 0] * scale).reshape(b, 1, kvh, g, d).astype(jnp.float32)
  scores = jnp.sum(qg * k[:, :, :, None, :].astype(jnp.float32), axis=-1)  # [B, S, KVH, G]
  visible = jnp.arange(s)[None, :] <= q_positions[:, :1]                     # [B, S]
  scores = scores + jnp.where(visible, 0.0, _MASK_VALUE)[:, :, None, None]
  probs = jax.nn.softmax(scores, axis=1)
  out = jnp.sum(probs[..., None] * v[:, :, :, None, :].astype(jnp.float32), axis=1)
  out = out.reshape(b, 1, h, d) * visible.any(-1)[:, None, None, None]
  return out.astype(q.dtype)


def cudnn_attention(q, k, v, q_positions, scale=None, segment_ids=None,
                    from_cache: bool = False):
  """cuDNN's fused attention through `jax.nn.dot_product_attention`.

  A boolean mask becomes a dense [B, 1, T, S] bias there (O(T * S) memory, a bias gradient
  in training, no skipping of masked blocks), so the two common cases pass the mask's
  structure instead:
  * a full forward (training, scoring): keys are the call's own tokens and a row's real
    tokens are a prefix (positions 0..n-1, then -1 padding: what the trainer and
    `prompt_positions` produce), i.e. `is_causal` plus sequence lengths;
  * one decoded token against the cache: it sees the keys [0, position], a key length.
  Packed rows (segment ids) and several tokens written into a cache (probes) keep the
  dense mask: the public API has no segment ids and its causal mask is aligned at key 0.
  """
  t = q_positions.shape[1]
  valid = q_positions >= 0
  if segment_ids is None and not from_cache:
    n = valid.sum(axis=1, dtype=jnp.int32)
    kw = dict(is_causal=True, query_seq_lengths=n, key_value_seq_lengths=n)
  elif segment_ids is None and t == 1:
    kw = dict(query_seq_lengths=valid[:, 0].astype(jnp.int32),
              key_value_seq_lengths=jnp.maximum(q_positions[:, 0] + 1, 0).astype(jnp.int32))
  else:
    kw = dict(mask=visibility(q_positions, k.shape[1], segment_ids)[:, None])
  out = jax.nn.dot_product_attention(q, k, v, scale=scale, implementation="cudnn", **kw)
  # Rows that see no key (padding) output 0, as the other implementations do.
  return jnp.where(valid[:, :, None, None], out, jnp.zeros((), out.dtype))


def attention_received(q, k, q_positions, key_positions, k_scale=None):
  """[B, S] f32: the attention weight each key slot receives, averaged over query heads and
  summed over the queries. Thinking-KV eviction's importance calls it with the stored
  queries of its observation window, and only on steps where a row evicts, so no attention
  implementation has to return its weights."""
  b, t, h, d = q.shape
  kvh = k.shape[2]
  keys = k.astype(jnp.float32)
  if k_scale is not None:
    keys = keys * k_scale.astype(jnp.float32)[..., None]
  qf = q.astype(jnp.float32).reshape(b, t, kvh, h // kvh, d) * d ** -0.5
  scores = jnp.einsum("btkgd,bskd->bkgts", qf, keys)
  visible = visibility(q_positions, k.shape[1], key_positions=key_positions)  # [B, T, S]
  probs = jax.nn.softmax(jnp.where(visible[:, None, None], scores, _MASK_VALUE), axis=-1)
  probs = probs * visible[:, None, None]          # rows that see nothing receive nothing
  return probs.mean(axis=(1, 2)).sum(axis=1)


def attend(q, k, v, q_positions, impl: str = "xla", scale=None, from_cache: bool = False,
           segment_ids=None, k_scale=None, v_scale=None, key_positions=None):
  """`from_cache`: keys are a KV cache being decoded against (no gradient is needed);
  `segment_ids` [B, T]: packed training rows (`forward` allows them without a cache only);
  `k_scale`, `v_scale` [B, S, KVH]: k and v are an int8 cache, key = k * k_scale (the XLA
  path and the Pallas decode kernel read it as int8; other kernels get it dequantised);
  `key_positions` [B, S]: the slot table of an eviction cache (XLA path only)."""
  if key_positions is not None and impl != "xla":
    raise ValueError(f"a cache with evicted slots (thinking_kv_budget) needs attention_impl "
                     f"'xla'; got {impl!r}")
  if impl == "xla":
    if (from_cache and q.shape[1] == 1 and segment_ids is None and k_scale is None
        and key_positions is None
        and k[..., 0].size * k.shape[-1] >= _REDUCE_DECODE_MIN_CACHE):
      # (float caches with every slot at its position; int8 and eviction caches below)
      return single_query_attention(q, k, v, q_positions, scale)
    # Without a cache the keys are the call's own tokens and the Decoder's mask positions
    # are their indices (or -1): the causal promise `causal_query_block` needs.
    return xla_attention(q, k, v, q_positions, scale, segment_ids,
                         causal_query_block=None if from_cache else _CAUSAL_QUERY_BLOCK,
                         k_scale=k_scale, v_scale=v_scale, key_positions=key_positions)
  if impl == "pallas":
    if segment_ids is not None:
      raise ValueError("packed training rows (data.pack=True) need attention_impl 'xla' or "
                       "'cudnn': the Pallas flash kernel has no segment mask")
    from o1jax import kernels  # imported lazily: Pallas is only needed when asked for
    if from_cache and q.shape[1] <= _DECODE_MAX_QUERIES:
      if k_scale is not None:
        kernel = lambda q, k, v, pos, ks, vs: kernels.decode_attention(
            q, k, v, pos, scale=scale, k_scale=ks, v_scale=vs)
        return per_shard(kernel, q, k, v, q_positions, k_scale, v_scale)
      kernel = functools.partial(kernels.decode_attention, scale=scale)
    else:
      # Prefill and probe chunks are compute-bound: the flash kernel gets a float cache.
      k, v = _dequantized(k, v, k_scale, v_scale, q.dtype)
      kernel = functools.partial(kernels.flash_attention, scale=scale)
    return per_shard(kernel, q, k, v, q_positions)
  if impl == "cudnn":
    k, v = _dequantized(k, v, k_scale, v_scale, q.dtype)
    return cudnn_attention(q, k, v, q_positions, scale, segment_ids, from_cache)
  raise ValueError(f"attention_impl must be one of xla, pallas, cudnn; got {impl!r}")


def _dequantized(k, v, k_scale, v_scale, dtype):
  if k_scale is None:
    return k, v
  from o1jax.model.cache import dequantize  # local: cache.py imports nothing from here
  return dequantize(k, k_scale, dtype), dequantize(v, v_scale, dtype)


def per_shard(kernel, q, k, v, q_positions, *kv_scales):
  """Runs an attention kernel on each device's own rows and heads, inside `shard_map`.

  A Pallas kernel is opaque to XLA's partitioner: on TPU a sharded call does not lower at
  all ("Mosaic kernels cannot be automatically partitioned"), and on GPU the partitioner
  all-gathers q, k, v (in decode: the whole KV cache) of the global batch onto every
  device, every layer and step. Attention is independent per sequence and per head, so
  each shard needs no communication: batch over the mesh axes of the logical `batch` axis,
  query heads over those of `heads` (the rules of `o1jax.parallel.activate`).

  Without a mesh (or a one-device mesh) the kernel is called directly. `kv_scales` (int8
  caches: [B, S, KVH] each) are split like the KV heads and passed on after q_positions.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return kernel(q, k, v, q_positions, *kv_scales)
  batch, heads, kv_heads = nn.logical_to_mesh_axes(("batch", "heads", "kv_heads"))
  size = lambda axes: math.prod(mesh.shape[a] for a in _names(axes))
  if q.shape[0] % size(batch):
    batch = None  # a batch the shards do not divide is replicated (as parallel.put_batch does)
  h, kvh = q.shape[2], k.shape[2]
  if h % size(heads):
    raise ValueError(f"{h} query heads do not split over {size(heads)} tensor shards")
  if kv_heads is not None and kvh % size(kv_heads):
    kv_heads = None
  select_kv = heads is not None and kv_heads is None and size(heads) > 1
  q_spec, kv_spec = P(batch, None, heads, None), P(batch, None, kv_heads, None)
  scale_spec = P(batch, None, kv_heads)

  def body(q, k, v, pos, *scales):
    if select_kv:  # KV heads replicated, query heads split: keep this shard's KV group(s)
      k, v, *scales = (_shard_kv_heads(x, _shard_index(heads), q.shape[2], h // kvh)
                       for x in (k, v, *scales))
    return kernel(q, k, v, pos, *scales)

  # check_vma=False: the kernels' out_shape carries no varying-axes annotation, which the
  # check requires. Gradients of K/V replicated over `tensor` are still summed over it
  # (tests/test_sharded_attention.py compares dk, dv with the XLA path on such a mesh).
  return jax.shard_map(
      body, in_specs=(q_spec, kv_spec, kv_spec, P(batch, None)) + (scale_spec,) * len(kv_scales),
      out_specs=q_spec, check_vma=False)(q, k, v, q_positions, *kv_scales)


def _names(axes) -> tuple[str, ...]:
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


def _shard_index(axes):
  """This shard's index along the (possibly several) mesh axes, row-major as in a spec."""
  return jax.lax.axis_index(_names(axes))


def _shard_kv_heads(x, shard, local_heads: int, group: int):
  """The KV heads [B, S, KVH, D] (or their scales [B, S, KVH]) the query heads
  [shard * local_heads, ...) read.

  Whole groups (or one group split over shards) are a contiguous slice, so GQA stays GQA;
  other splits repeat KV heads per query head (MHA on this shard)."""
  first = shard * local_heads
  if local_heads % group == 0 or group % local_heads == 0:
    n = max(1, local_heads // group)
    return jax.lax.dynamic_slice_in_dim(x, first // group, n, axis=2)
  return jnp.take(x, (first + jnp.arange(local_heads)) // group, axis=2)
