"""Static model configuration: one frozen dataclass, hashable so it can be a jit static arg."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

ATTENTION_IMPLS = ("xla", "pallas", "cudnn")
KV_DTYPES = (None, "int8")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16,
           "float64": jnp.float64}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama 3.x frequency-dependent RoPE scaling (`rope_type: llama3`)."""
  factor: float = 8.0
  low_freq_factor: float = 1.0
  high_freq_factor: float = 4.0
  original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A decoder-only transformer covering the Llama, Qwen2 and Qwen3 layouts.

  qkv_bias=True is Qwen2 / R1-Distill-Qwen; qk_norm=True is Qwen3; rope_scaling is Llama 3.x.
  """
  vocab_size: int = 128
  embed_dim: int = 128
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 384
  max_seq_len: int = 256
  rope_theta: float = 10_000.0
  rope_scaling: RopeScaling | None = None
  norm_eps: float = 1e-6
  qk_norm: bool = False
  qkv_bias: bool = False
  tie_embeddings: bool = True
  param_dtype: str = "float32"
  dtype: str = "float32"
  attention_impl: str = "xla"
  # KV cache storage: None stores keys/values in `dtype`; "int8" stores them quantised, with
  # one float16 scale per (token, kv head) (o1jax/model/cache.py), dequantised in attention.
  kv_dtype: str | None = None

  def __post_init__(self):
    problems = []
    for name in ("vocab_size", "embed_dim", "num_layers", "num_heads", "num_kv_heads",
                 "head_dim", "mlp_dim", "max_seq_len"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.append(f"{name} must be a positive integer, got {value!r}")
    if not problems and self.num_heads % self.num_kv_heads:
      problems.append(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                      f"({self.num_kv_heads})")
    if not problems and self.head_dim % 2:
      problems.append(f"head_dim must be even for RoPE, got {self.head_dim}")
    if self.rope_theta <= 0:
      problems.append(f"rope_theta must be positive, got {self.rope_theta}")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in _DTYPES:
        problems.append(f"{name} must be one of {sorted(_DTYPES)}, got {getattr(self, name)!r}")
    if self.attention_impl not in ATTENTION_IMPLS:
      problems.append(f"attention_impl must be one of {ATTENTION_IMPLS}, "
                      f"got {self.attention_impl!r}")
    if self.attention_impl == "cudnn" and self.dtype not in ("bfloat16", "float16"):
      # Else it fails at trace time, deep inside jax.nn.dot_product_attention.
      problems.append(f"attention_impl='cudnn' needs dtype bfloat16 or float16 (cuDNN's "
                      f"fused attention has no {self.dtype} kernel); set dtype='bfloat16' "
                      f"or use attention_impl 'xla' or 'pallas'")
    if self.kv_dtype not in KV_DTYPES:
      problems.append(f"kv_dtype must be one of {KV_DTYPES}, got {self.kv_dtype!r}")
    if problems:
      raise ValueError("invalid ModelConfig: " + "; ".join(problems))

  @property
  def jnp_dtype(self):
    return _DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def num_groups(self) -> int:
    """Query heads per KV head."""
    return self.num_heads // self.num_kv_heads

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
    d = dict(d)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
      raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(fields)}")
    if d.get("rope_scaling") is not None and not isinstance(d["rope_scaling"], RopeScaling):
      d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
    return cls(**d)
