"""The KV cache: a plain pytree that goes in and out of `forward`, never a mutable collection."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from o1jax.model.config import ModelConfig

# Logical axes of each cache array, mapped to mesh axes in o1jax/parallel/ only.
CACHE_AXES = ("batch", "cache_len", "kv_heads", "head_dim")


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
  length: int | None = struct.field(pytree_node=False, default=None)

  @property
  def cache_len(self) -> int:
    return self.k[0].shape[1] if self.length is None else self.length

  @property
  def batch_size(self) -> int:
    return self.k[0].shape[0]

  @classmethod
  def init(cls, config: ModelConfig, batch_size: int, cache_len: int, dtype=None) -> "KVCache":
    dtype = dtype or config.jnp_dtype
    allocated = padded_cache_len(config, cache_len)
    shape = (batch_size, allocated, config.num_kv_heads, config.head_dim)
    # Separate buffers per leaf: donating two leaves that alias one buffer fails.
    # The constraint is a no-op unless o1jax.parallel.activate(mesh, ...) is in effect; under
    # it the cache is born sharded (batch and KV heads split over the mesh) instead of whole.
    zeros = lambda: nn.with_logical_constraint(jnp.zeros(shape, dtype), CACHE_AXES)
    k = tuple(zeros() for _ in range(config.num_layers))
    v = tuple(zeros() for _ in range(config.num_layers))
    return cls(k=k, v=v, length=None if allocated == cache_len else cache_len)


def write_kv(cache_k: jax.Array, cache_v: jax.Array, k: jax.Array, v: jax.Array,
             positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Scatters new keys/values [B, T, KVH, D] into the cache at `positions` [B, T].

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
