"""Attention kernels: Pallas flash attention (training/prefill), flash-decoding over a KV
cache, and the plain-jnp reference (the model's ``attention_impl="xla"`` path).

Backend is picked from ``jax.default_backend()``: Triton lowering on GPU, Mosaic on TPU,
interpret mode on CPU. See ``backend.py``.
"""

from o1jax.kernels.decode_attention import decode_attention
from o1jax.kernels.flash_attention import flash_attention
from o1jax.kernels.reference import reference_attention

__all__ = ["flash_attention", "decode_attention", "reference_attention"]
