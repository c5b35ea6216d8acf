"""Rotary position embeddings (the rotate-half convention of Llama/Qwen checkpoints)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.config import RopeScaling


def inverse_frequencies(head_dim: int, theta: float,
                        scaling: RopeScaling | None = None) -> np.ndarray:
  """1 / theta^(2i/d), optionally rescaled the Llama 3.x way (float64 for exactness)."""
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  if scaling is None:
    return inv
  # Llama 3.x: keep high frequencies, divide low ones by `factor`, blend in between.
  low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
  high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
  wavelen = 2 * math.pi / inv
  smooth = ((scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  scaled = np.where(wavelen > low_wavelen, inv / scaling.factor, inv)
  medium = (wavelen <= low_wavelen) & (wavelen >= high_wavelen)
  return np.where(medium, (1 - smooth) * inv / scaling.factor + smooth * inv, scaled)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates x [B, T, N, D] by positions [B, T]; computed in float32."""
  angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq, jnp.float32)
  sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)
