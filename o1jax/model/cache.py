"""The KV cache: a plain pytree that goes in and out of `forward`, never a mutable collection."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from o1jax.model.config import ModelConfig

# Logical axes of each cache array, mapped to mesh axes in o1jax/parallel/ only.
CACHE_AXES = ("batch", "cache_len", "kv_heads", "head_dim")


@struct.dataclass
class KVCache:
  """Keys and values per layer, stored at the index equal to the token's position.

  k[l], v[l]: [batch, cache_len, kv_heads, head_dim]. Slots past a sequence's current
  position may hold stale data (a confidence probe writes there); attention masks by
  position (key j is visible to a query at position p iff j <= p), so they are never read.
  """
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]

  @property
  def cache_len(self) -> int:
    return self.k[0].shape[1]

  @property
  def batch_size(self) -> int:
    return self.k[0].shape[0]

  @classmethod
  def init(cls, config: ModelConfig, batch_size: int, cache_len: int, dtype=None) -> "KVCache":
    dtype = dtype or config.jnp_dtype
    shape = (batch_size, cache_len, config.num_kv_heads, config.head_dim)
    # Separate buffers per leaf: donating two leaves that alias one buffer fails.
    # The constraint is a no-op unless o1jax.parallel.activate(mesh, ...) is in effect; under
    # it the cache is born sharded (batch and KV heads split over the mesh) instead of whole.
    zeros = lambda: nn.with_logical_constraint(jnp.zeros(shape, dtype), CACHE_AXES)
    k = tuple(zeros() for _ in range(config.num_layers))
    v = tuple(zeros() for _ in range(config.num_layers))
    return cls(k=k, v=v)


def write_kv(cache_k: jax.Array, cache_v: jax.Array, k: jax.Array, v: jax.Array,
             positions: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Scatters new keys/values [B, T, KVH, D] into the cache at `positions` [B, T].

  Negative positions (padding) are dropped rather than wrapped to the end.
  """
  cache_len = cache_k.shape[1]
  index = jnp.where(positions < 0, cache_len, positions)
  batch = jnp.arange(cache_k.shape[0])[:, None]
  cache_k = cache_k.at[batch, index].set(k.astype(cache_k.dtype), mode="drop")
  cache_v = cache_v.at[batch, index].set(v.astype(cache_v.dtype), mode="drop")
  return cache_k, cache_v
