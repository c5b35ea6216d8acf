"""Where a Pallas kernel runs, and the per-platform rules that follow from that.

One kernel body serves three targets:
  * ``gpu``: Pallas' Triton lowering. Every value inside a kernel must have a power-of-two
    shape and a matmul needs M, N, K >= 16, so blocks are powers of two >= 16.
  * ``tpu``: Pallas' Mosaic lowering. The last two dims of every block must be divisible by
    (8, 128) or equal the full array dims, which decides the layouts used on TPU.
  * ``cpu``: the same kernels run with ``interpret=True`` (the only mode Pallas has on CPU).

Anything we cannot run raises ``ValueError`` pointing the caller at ``attention_impl="xla"``,
the model's plain-XLA attention path, so a config error is never a silent slow path.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

_XLA_HINT = 'use attention_impl="xla" instead'

# Set only by tests and tools: pretend to be another platform (e.g. build the TPU variant of a
# kernel and run it in interpret mode on CPU, or lower the GPU variant for "cuda" on a CPU host).
_OVERRIDE: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar(
    "o1jax_kernels_target", default=None)


@dataclasses.dataclass(frozen=True)
class Target:
  platform: str  # "gpu" | "tpu" | "cpu": whose layout/tiling rules the kernel follows
  # False: compile for the chip. True: Pallas' generic interpreter (any platform's kernels on
  # CPU; out-of-bounds block reads are clamped silently). A `pltpu.InterpretParams`: JAX's
  # TPU interpreter, which simulates HBM/VMEM and DMAs, raises on out-of-bounds blocks,
  # fills uninitialised memory with NaN and can shuffle "parallel" grid dimensions.
  interpret: Any

  @property
  def tpu_interpreter(self) -> bool:
    return self.platform == "tpu" and not isinstance(self.interpret, bool)

  @property
  def grid_driver(self) -> bool:
    """TPU programs run sequentially over the grid, so the KV loop is a grid dimension with
    scratch accumulators (Mosaic pipelines the block DMAs); elsewhere programs run in
    parallel and the KV loop lives inside the kernel."""
    return self.platform == "tpu"


@contextlib.contextmanager
def override_target(platform: str, interpret):
  """Build kernels as if running on ``platform`` (for tests and cross-platform lowering).

  Not part of jit's cache key: jit a function object created inside the context, or an
  earlier trace made under another target may be reused.
  """
  if platform not in ("gpu", "tpu", "cpu"):
    raise ValueError(f"unknown platform {platform!r}")
  token = _OVERRIDE.set((platform, interpret))
  try:
    yield
  finally:
    _OVERRIDE.reset(token)


def resolve_target(interpret: bool | None) -> Target:
  forced = _OVERRIDE.get()
  if forced is not None:
    platform, forced_interpret = forced
    return Target(platform, forced_interpret if interpret is None else interpret)
  backend = jax.default_backend()
  platform = {"gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu", "cpu": "cpu"}.get(backend)
  if platform is None:
    raise ValueError(f"Pallas attention does not support the {backend!r} backend; {_XLA_HINT}.")
  if interpret is None:
    interpret = platform == "cpu"
  if platform == "cpu" and not interpret:
    raise ValueError(f"Pallas kernels only run in interpret mode on CPU; pass interpret=None "
                     f"or True, or {_XLA_HINT}.")
  return Target(platform, bool(interpret))


def check_inputs(name: str, q, k, v, target: Target, *, decode: bool = False) -> None:
  """Shape/dtype/platform checks shared by both kernels (ValueError, never a slow fallback)."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"{name}: q, k, v must be [batch, time, heads, head_dim]; got "
                     f"{q.shape}, {k.shape}, {v.shape}")
  if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
    raise ValueError(f"{name}: mismatched shapes q{q.shape} k{k.shape} v{v.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"{name}: query heads {q.shape[2]} not a multiple of kv heads {k.shape[2]}")
  if not (q.dtype == k.dtype == v.dtype):
    raise ValueError(f"{name}: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
  if q.dtype not in (jnp.float32, jnp.bfloat16):
    raise ValueError(f"{name}: dtype {q.dtype} unsupported (float32 and bfloat16 only); "
                     f"{_XLA_HINT}.")
  d = q.shape[3]
  if target.platform == "cpu" or target.interpret:
    ok, allowed = d % 8 == 0, "a multiple of 8"
  elif target.platform == "gpu":
    ok, allowed = d in (64, 128), "64 or 128"
  else:
    # The decode kernel reads the cache in place as [B, T, KVH*D] blocks of D lanes, which
    # Mosaic tiles only when D is a multiple of 128; flash transposes to [B, H, T, D] instead.
    ok, allowed = (d == 128, "128") if decode else (d in (64, 128), "64 or 128")
  if not ok:
    raise ValueError(f"{name}: head_dim {d} unsupported on {target.platform} (must be "
                     f"{allowed}); {_XLA_HINT}.")


def round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def next_pow2(x: int) -> int:
  return 1 << max(0, (x - 1).bit_length())


def fit_block(block: int, length: int, target: Target, *, lane: bool = False) -> int:
  """Clamp a requested block size to the sequence so short inputs are not padded to 128.

  GPU blocks stay powers of two >= 16 (Triton shapes and tl.dot minimums). TPU blocks that
  become a lane dimension (the key axis of the score tile) keep multiples of 128.
  """
  if target.platform == "gpu" and not target.interpret:
    if block < 16 or block & (block - 1):
      raise ValueError(f"GPU block sizes must be powers of two >= 16, got {block}")
    return min(block, max(16, next_pow2(length)))
  unit = 128 if (lane and target.platform == "tpu" and not target.interpret) else 8
  if block % unit:
    raise ValueError(f"block size {block} must be a multiple of {unit} on {target.platform}")
  return min(block, round_up(length, unit))


def flash_blocks(target: Target, head_dim: int, dtype, q_len: int, kv_len: int) -> dict:
  """Default block sizes per backend (untuned without hardware; launch/bench_attention.py
  sweeps them). The reasons, since they differ by backend:"""
  if target.platform == "gpu" and not target.interpret:
    warps = 8 if head_dim > 64 else 4
    if dtype == jnp.bfloat16:
      # Forward: the Triton tutorial's Hopper config (128x64 tiles, 3 pipeline stages).
      # Backward keeps two [bk, D] f32 accumulators live, so smaller 64x64 tiles.
      return dict(fwd=(128, 64), bwd=(64, 64), warps=warps, fwd_stages=3, bwd_stages=2)
    # fp32 tiles are twice the bytes: 3 stages of 64x128 K and V tiles would not fit in
    # Hopper's 227 KiB of shared memory next to the Q tile.
    return dict(fwd=(64, 64), bwd=(64, 64), warps=warps, fwd_stages=2, bwd_stages=2)
  if target.platform == "tpu" and not target.interpret:
    # TPU grid steps run one after another, each with a fixed cost (DMA issue, pipeline
    # bookkeeping), and a 128x128 tile gives the MXU little work per step: at 32K tokens a
    # 128x128 forward is 65K steps per (batch, head). 512x512 tiles make 16x fewer steps in
    # ~3 MiB of VMEM (q/k/v tiles double-buffered, the f32 score tile and accumulator; fp32,
    # D=128), well inside the 16 MiB scoped default of v5e. Shorter sequences take the
    # largest of 512/256/128 that pads them by at most 1/8 (padding is copied and computed).
    bq, bk = _tpu_block(q_len), _tpu_block(kv_len)
    return dict(fwd=(bq, bk), bwd=(bq, bk), warps=None, fwd_stages=None, bwd_stages=None)
  # Interpret mode: each grid step and loop trip costs a while-loop iteration on CPU, so
  # large blocks are fastest; tests pass small blocks explicitly to exercise the tiling.
  return dict(fwd=(128, 128), bwd=(128, 128), warps=None, fwd_stages=None, bwd_stages=None)


def _tpu_block(length: int) -> int:
  for block in (512, 256):
    if round_up(length, block) - length <= length // 8:
      return block
  return 128


def compiler_params(target: Target, *, num_warps=None, num_stages=None, semantics=None):
  if target.interpret and not target.tpu_interpreter:
    return None  # the TPU interpreter reads the dimension semantics (to shuffle parallel dims)
  if target.platform == "gpu":
    from jax.experimental.pallas import triton as plgpu
    return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)
  if target.platform == "tpu":
    from jax.experimental.pallas import tpu as pltpu
    return pltpu.CompilerParams(dimension_semantics=semantics)
  return None


def float32_precision(dtype):
  """fp32 inputs get true fp32 matmuls (HIGHEST), a deliberate choice: with DEFAULT
  precision Triton uses TF32 and Mosaic a single bf16 pass, both far from the 1e-5 the
  kernels promise against the fp32 reference. The price: no tensor cores on GPU (fp32 FMA
  runs at a fraction of bf16 tensor-core throughput) and several MXU passes on TPU. fp32 is
  for checking and small models; for speed set the model's dtype to bfloat16, which uses
  the native path (DEFAULT precision, f32 accumulation)."""
  return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None


def cdiv(a, b):
  """Ceil division of non-negative ints (python or traced)."""
  return idiv(a + b - 1, b)


def idiv(a, b):
  """Truncating division of non-negative ints. For traced values this is lax.div, not `//`:
  jnp's floor division adds sign fix-ups, and Mosaic's lowering of `sign` needs a real TPU
  to query, which would stop us from lowering TPU kernels on a CPU host."""
  if isinstance(a, int) and isinstance(b, int):
    return a // b
  a = jnp.asarray(a)
  return jax.lax.div(a, jnp.asarray(b, a.dtype))


def irem(a, b):
  """Remainder of non-negative ints (see idiv)."""
  if isinstance(a, int) and isinstance(b, int):
    return a % b
  a = jnp.asarray(a)
  return jax.lax.rem(a, jnp.asarray(b, a.dtype))
