"""The KV cache: a plain pytree that goes in and out of `forward`, never a mutable collection."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from o1jax.model.config import ModelConfig

# Logical axes of each cache array, mapped to mesh axes in o1jax/parallel/ only.
CACHE_AXES = ("batch", "cache_len", "kv_heads", "head_dim")
# int8 caches: one scale per (token, kv head), sharded like the cache it scales.
SCALE_AXES = CACHE_AXES[:3]
# bfloat16: 2 bytes, like float16, but with float32's 8-bit exponent, so every finite
# float32 absmax / 127 has a normal scale. float16 does not: above ~8.3e6 the scale
# overflowed to inf (the cache dequantised to NaN), below ~8e-3 it went subnormal and then to
# 0 (errors of many steps). bfloat16 keeps 8 significant bits; rounding to nearest puts the
# scale within 2^-8 of absmax / 127, so |x| / scale <= 127.5: no value is clipped and the
# error stays within half the stored step (`quantize_int8`). A float32 scale would cost 2
# more bytes per token and head (6% of the int8 cache at head_dim 32) for no better bound.
SCALE_DTYPE = jnp.bfloat16
_INT8_MAX = 127.0


# The Pallas decode kernel reads the cache in blocks (TPU: multiples of 128 up to 512; GPU:
# 16 to 64) and must pad, i.e. copy, a cache that no allowed block divides: every layer and
# every step. Caches for Pallas models are therefore allocated in multiples of this.
PALLAS_CACHE_MULTIPLE = 128


def padded_cache_len(config: ModelConfig, cache_len: int) -> int:
  """The allocated length for a cache of `cache_len` usable positions."""
  if config.attention_impl != "pallas":
    return cache_len
  return -(-cache_len // PALLAS_CACHE_MULTIPLE) * PALLAS_CACHE_MULTIPLE


@struct.dataclass
class SlotTable:
  """Which position each cache slot holds, for caches whose slots are not their positions
  (thinking-KV eviction, o1jax/thinking/kv_eviction.py: a thinking token's slot is reused).

  Keys are cached after RoPE, so a key keeps its position wherever it sits. Attention sees
  slot j from a query at position p iff 0 <= positions[b, j] <= p. `positions` and
  `thinking` are [batch, slots].

  `queries`: R-KV's observation window, the queries (after RoPE) of the last W positions
  fed, per layer [batch, W, heads, head_dim] in the model dtype, at index position % W;
  `query_positions` [batch, W] says which position each entry holds (-1: none yet). The
  model writes them every step (`record_queries`: W entries, no pass over the keys); the
  attention they give each slot is computed only when a row evicts. None when no score
  needs them (the `oldest` policy).
  """
  positions: jax.Array    # int32, -1: empty
  thinking: jax.Array     # bool: holds a thinking token (the only kind ever evicted)
  queries: tuple[jax.Array, ...] | None = None
  query_positions: jax.Array | None = None


@struct.dataclass
class KVCache:
  """Keys and values per layer, stored at the index equal to the token's position.

  k[l], v[l]: [batch, allocated_len, kv_heads, head_dim]. Slots past a sequence's current
  position may hold stale data (a confidence probe writes there); attention masks by
  position (key j is visible to a query at position p iff j <= p), so they are never read.

  `length`: the usable length when the allocation was rounded up (`padded_cache_len`,
  Pallas models), else None. Callers keep positions below `cache_len`, so the padding is
  never written nor attended. It is static (part of the tree structure): rebuild a cache
  with `cache.replace(k=..., v=...)` to keep it.
  """
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  # int8 caches (`kv_dtype="int8"`): per layer [batch, allocated_len, kv_heads] SCALE_DTYPE,
  # key/value = int8 * scale. None for float caches.
  k_scale: tuple[jax.Array, ...] | None = None
  v_scale: tuple[jax.Array, ...] | None = None
  # Eviction caches: slot -> position table (None: slot j holds position j).
  slots: SlotTable | None = None
  length: int | None = struct.field(pytree_node=False, default=None)

  @property
  def cache_len(self) -> int:
    return self.k[0].shape[1] if self.length is None else self.length

  @property
  def batch_size(self) -> int:
    return self.k[0].shape[0]

  @property
  def quantized(self) -> bool:
    return self.k_scale is not None

  @property
  def nbytes(self) -> int:
    """Bytes held by the cache arrays (all layers, scales included)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(self))

  def layer(self, i: int) -> "LayerKV":
    scales = (self.k_scale[i], self.v_scale[i]) if self.quantized else (None, None)
    if self.slots is None:
      return LayerKV(self.k[i], self.v[i], *scales)
    window = (None, None) if self.slots.queries is None else (self.slots.queries[i],
                                                              self.slots.query_positions)
    return LayerKV(self.k[i], self.v[i], *scales, self.slots.positions, *window)

  def with_layers(self, layers: list["LayerKV"]) -> "KVCache":
    field = lambda name: tuple(getattr(l, name) for l in layers)
    slots = self.slots
    if slots is not None and slots.queries is not None:  # the observation window moved on
      slots = slots.replace(queries=field("queries"),
                            query_positions=layers[0].query_positions)
    return self.replace(k=field("k"), v=field("v"),
                        k_scale=field("k_scale") if self.quantized else None,
                        v_scale=field("v_scale") if self.quantized else None, slots=slots)

  @classmethod
  def init(cls, config: ModelConfig, batch_size: int, cache_len: int, dtype=None) -> "KVCache":
    quantized = config.kv_dtype == "int8" and dtype is None
    dtype = jnp.int8 if quantized else (dtype or config.jnp_dtype)
    allocated = padded_cache_len(config, cache_len)
    shape = (batch_size, allocated, config.num_kv_heads, config.head_dim)
    # Separate buffers per leaf: donating two leaves that alias one buffer fails.
    # The constraint is a no-op unless o1jax.parallel.activate(mesh, ...) is in effect; under
    # it the cache is born sharded (batch and KV heads split over the mesh) instead of whole.
    zeros = lambda: nn.with_logical_constraint(jnp.zeros(shape, dtype), CACHE_AXES)
    k = tuple(zeros() for _ in range(config.num_layers))
    v = tuple(zeros() for _ in range(config.num_layers))
    scales = lambda: tuple(nn.with_logical_constraint(jnp.zeros(shape[:3], SCALE_DTYPE),
                                                      SCALE_AXES)
                           for _ in range(config.num_layers))
    return cls(k=k, v=v, k_scale=scales() if quantized else None,
               v_scale=scales() if quantized else None,
               length=None if allocated == cache_len else cache_len)


class LayerKV(NamedTuple):
  """One layer's cache arrays, as the attention layer reads and writes them."""
  k: jax.Array
  v: jax.Array
  k_scale: jax.Array | None = None
  v_scale: jax.Array | None = None
  slot_positions: jax.Array | None = None  # [B, S] (SlotTable.positions), eviction caches
  queries: jax.Array | None = None         # [B, W, H, D] (SlotTable.queries[layer]), ditto
  query_positions: jax.Array | None = None  # [B, W] (SlotTable.query_positions), ditto


def record_queries(layer: LayerKV, q: jax.Array, positions: jax.Array) -> LayerKV:
  """Writes this call's queries q [B, T, H, D] (after RoPE) at `positions` [B, T] into
  the layer's observation window, at index position % W. Of a call longer than the window
  (a prefill) only each row's last W positions are kept, so no two writes share an index."""
  window = layer.queries.shape[1]
  newest = positions.max(axis=1, keepdims=True)
  keep = (positions >= 0) & (positions > newest - window)
  index = jnp.where(keep, positions % window, window)   # out of range: dropped
  write = jax.vmap(lambda ring, i, new: ring.at[i].set(new.astype(ring.dtype), mode="drop"))
  return layer._replace(queries=write(layer.queries, index, q),
                        query_positions=write(layer.query_positions, index, positions))


def quantize_int8(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Symmetric absmax quantisation over the last axis: x [..., D] -> (int8 [..., D],
  scale [...] SCALE_DTYPE) with x ~= q * scale, |error| <= scale / 2 per element, and the
  scale within 2^-8 of absmax / 127, for every absmax the scale dtype keeps normal (float32
  inputs: 1.5e-36 up to 3.37e38). Finite for every finite input: smaller scales round to 0 or
  a subnormal (error <= absmax < 1.5e-36), and the largest is capped so that 127 * scale
  stays finite in x's dtype (absmax above 3.37e38 may then clip by up to one step).

  The rounding uses the stored scale, so dequantising with it is consistent."""
  x32 = x.astype(jnp.float32)
  scale = (jnp.max(jnp.abs(x32), axis=-1) / _INT8_MAX).astype(SCALE_DTYPE)
  scale = jnp.minimum(scale, _max_scale(x.dtype))
  s32 = scale.astype(jnp.float32)[..., None]
  q = jnp.round(x32 / jnp.where(s32 > 0, s32, 1.0))
  return jnp.clip(q, -_INT8_MAX, _INT8_MAX).astype(jnp.int8), scale


def _max_scale(dtype) -> jax.Array:
  """The largest SCALE_DTYPE scale with 127 * scale finite in `dtype` (float32 for ints)."""
  top = float(jnp.finfo(dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32).max)
  scale = np.asarray(top / _INT8_MAX, np.float64).astype(SCALE_DTYPE)
  while float(scale) * _INT8_MAX > top:  # rounded up: step down one unit in the last place
    scale = np.nextafter(scale, np.zeros_like(scale))
  return jnp.asarray(scale, SCALE_DTYPE)


def dequantize(q: jax.Array, scale: jax.Array, dtype) -> jax.Array:
  """int8 [..., D] * scale [...] -> dtype."""
  return (q.astype(jnp.float32) * scale.astype(jnp.float32)[..., None]).astype(dtype)


def slot_of(slot_positions: jax.Array, positions: jax.Array) -> jax.Array:
  """[B, T] the slot holding each position (-1 where none does: dropped on write)."""
  hit = slot_positions[:, None, :] == positions[:, :, None]          # [B, T, S]
  found = hit.any(-1) & (positions >= 0)
  return jnp.where(found, jnp.argmax(hit, -1), -1).astype(jnp.int32)


def write_layer(layer: LayerKV, k: jax.Array, v: jax.Array, positions: jax.Array) -> LayerKV:
  """`write_kv` for every kind of cache: an int8 layer stores the new keys/values
  quantised, with their scales at the same slots; an eviction cache writes each token to
  the slot its table assigned to the token's position."""
  index = positions if layer.slot_positions is None else slot_of(layer.slot_positions,
                                                                 positions)
  if layer.k_scale is None:
    return layer._replace(**dict(zip("kv", write_kv(layer.k, layer.v, k, v, index))))
  (qk, sk), (qv, sv) = quantize_int8(k), quantize_int8(v)
  new_k, new_v = write_kv(layer.k, layer.v, qk, qv, index)
  new_sk, new_sv = write_kv(layer.k_scale, layer.v_scale, sk, sv, index)
  return layer._replace(k=new_k, v=new_v, k_scale=new_sk, v_scale=new_sv)


def write_kv(cache_k: jax.Array, cache_v: jax.Array, k: jax.Array, v: jax.Array,
             positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Scatters new keys/values [B, T, KVH, D] into the cache at `positions` [B, T] (also
  used for int8 scales [B, T, KVH]).

  Negative positions (padding) are dropped rather than wrapped to the end. Each row is
  written by its own scatter (vmapped, so the batch is a scatter batch dimension): the
  partitioner then writes each shard's rows in place. One scatter indexed by (row, position)
  pairs instead made XLA all-gather the new K/V and the indices across the batch shards,
  every layer and every decode step.
  """
  cache_len = cache_k.shape[1]
  index = jnp.where(positions < 0, cache_len, positions)
  write = jax.vmap(lambda cache, i, new: cache.at[i].set(new.astype(cache.dtype), mode="drop"))
  return write(cache_k, index, k), write(cache_v, index, v)
