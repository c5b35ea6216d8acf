"""Flash-decoding: a few query tokens against a long KV cache, split along the cache.

Decoding is bound by reading K and V once. One program per (batch, kv head, split) reads a
contiguous range of cache blocks a single time for ALL query heads of that kv head: the
group's (H // KVH) heads times Tq tokens form the M dimension of one matmul (padded to the
tile minimum), so GQA costs no extra cache traffic. Each split writes a partial output and
its logsumexp; a tiny jnp pass merges the splits. The splits divide the *visible* prefix
(max position + 1, capped by kv_len) evenly per sequence, so a 128K cache holding 2K tokens
still spreads its 2K tokens over all splits and never touches the stale tail.

The cache is read in place through a free reshape to [B, Tk, KVH*D] (a (bk, D) block at
column-block h is kv head h): no transpose or copy of the cache per step. If Tk is not a
multiple of any allowed block size, the cache is padded, which copies it: keep cache
lengths multiples of 128 (the model's `KVCache.init` allocates Pallas caches so).

An int8 cache (k/v int8 plus per-(token, kv head) scales) is read as int8 blocks with their
scale blocks and dequantised inside the kernel, so the cache traffic is the int8 bytes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from o1jax.kernels import backend
from o1jax.kernels import flash_kernels as fk

_F32 = jnp.float32


def decode_attention(q, k, v, q_positions, kv_lengths=None, *, scale=None, block_k=None,
                     num_splits=None, interpret=None, k_scale=None, v_scale=None):
  """q [B, Tq, H, D] (Tq small), k/v cache [B, Tk, KVH, D] -> [B, Tq, H, D] in q.dtype.

  Same masking rule as flash_attention: key j is visible to query (b, i) iff
  j <= q_positions[b, i] and j < kv_lengths[b]. Forward only (no custom gradient).
  `k_scale`, `v_scale` [B, Tk, KVH] (any float dtype): k and v are int8 and the cache holds
  k * k_scale, v * v_scale.
  """
  target = backend.resolve_target(interpret)
  quantized = k_scale is not None
  if quantized:
    if k.dtype != jnp.int8 or v.dtype != jnp.int8 or v_scale is None:
      raise ValueError(f"decode_attention: an int8 cache needs int8 k and v and both scales; "
                       f"got k {k.dtype}, v {v.dtype}, v_scale {v_scale is not None}")
    if k_scale.shape != k.shape[:3] or v_scale.shape != v.shape[:3]:
      raise ValueError(f"decode_attention: scales must be [batch, time, kv_heads]={k.shape[:3]}, "
                       f"got {k_scale.shape}, {v_scale.shape}")
  as_q = lambda x: jax.ShapeDtypeStruct(x.shape, q.dtype) if quantized else x
  backend.check_inputs("decode_attention", q, as_q(k), as_q(v), target, decode=True)
  b, tq, h, d = q.shape
  tk, kvh = k.shape[1], k.shape[2]
  group, m = h // kvh, (h // kvh) * tq
  if q_positions.shape != (b, tq):
    raise ValueError(f"q_positions must be [batch, q_len]={(b, tq)}, got {q_positions.shape}")
  scale = float(d ** -0.5 if scale is None else scale)
  gpu = target.platform == "gpu" and not target.interpret
  # Rows of the matmul: Triton's tl.dot needs M >= 16 (power of two), Mosaic multiples of 8.
  m_pad = max(16, backend.next_pow2(m)) if gpu else backend.round_up(m, 8)
  bk = _block_k(block_k, tk, target)
  tk_p = backend.round_up(tk, bk)
  if tk_p != tk:  # Only when no block size divides Tk (copies the cache; see module doc).
    pad = ((0, 0), (0, tk_p - tk), (0, 0), (0, 0))
    k, v = jnp.pad(k, pad), jnp.pad(v, pad)
    if quantized:
      k_scale, v_scale = jnp.pad(k_scale, pad[:3]), jnp.pad(v_scale, pad[:3])
  nk = tk_p // bk
  splits = max(1, min(num_splits or _default_splits(target, b * kvh, nk), nk))

  pos = q_positions.astype(jnp.int32)
  kv_len = (jnp.full((b,), tk, jnp.int32) if kv_lengths is None
            else jnp.minimum(kv_lengths.astype(jnp.int32), tk))
  n_vis = jnp.clip(jnp.minimum(pos.max(axis=1) + 1, kv_len), 0, tk)  # keys [0, n_vis) matter
  # Row r = g * Tq + t of kv head's M block is query head (kvh * group + g), token t.
  q_rows = q.reshape(b, tq, kvh, group, d).transpose(0, 2, 3, 1, 4).reshape(b, kvh, m, d)
  q_rows = jnp.pad(q_rows, ((0, 0), (0, 0), (0, m_pad - m), (0, 0)))
  pos_rows = jnp.pad(jnp.tile(pos, (1, group)), ((0, 0), (0, m_pad - m)), constant_values=-1)
  k_flat, v_flat = k.reshape(b, tk_p, kvh * d), v.reshape(b, tk_p, kvh * d)

  kw = dict(scale=scale, bk=bk, splits=splits, precision=backend.float32_precision(q.dtype),
            quantized=quantized)
  scales = (k_scale, v_scale) if quantized else ()
  out_shape = [jax.ShapeDtypeStruct((b, kvh, splits, m_pad, d), _F32),
               jax.ShapeDtypeStruct((b, kvh, splits, m_pad, 1), _F32)]
  o_spec = pl.BlockSpec((None, None, None, m_pad, d), lambda i, j, s, *_: (i, j, s, 0, 0))
  l_spec = pl.BlockSpec((None, None, None, m_pad, 1), lambda i, j, s, *_: (i, j, s, 0, 0))
  q_spec = pl.BlockSpec((None, None, m_pad, d), lambda i, j, s, *_: (i, j, 0, 0))
  p_spec = pl.BlockSpec((None, m_pad, 1), lambda i, j, s, *_: (i, 0, 0))
  args = (n_vis, kv_len, q_rows, k_flat, v_flat, pos_rows[..., None])
  if target.grid_driver:
    from jax.experimental.pallas import tpu as pltpu
    per_max = backend.cdiv(nk, splits)

    def kv_index(i, j, s, t, nv, n):
      start, end = _split_range(nv[i], bk, splits, s)
      return i, jnp.maximum(jnp.minimum(start + t, end - 1), 0), j  # clamp: no DMA if idle
    kv_spec = pl.BlockSpec((None, bk, d), kv_index)
    # Scale blocks [bk, KVH] (Mosaic tiles a last dim only whole or in 128s; the kernel
    # picks column j), in float32 (a small copy: 1/D of the cache's elements).
    s_spec = pl.BlockSpec((None, bk, kvh), lambda *a: kv_index(*a)[:2] + (0,))
    scales = tuple(x.astype(_F32) for x in scales)
    parts, lse = pl.pallas_call(
        functools.partial(_decode_grid_kernel, **kw),
        grid_spec=pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2, grid=(b, kvh, splits, per_max),
            in_specs=[q_spec, kv_spec, kv_spec, p_spec] + [s_spec] * len(scales),
            out_specs=[o_spec, l_spec],
            scratch_shapes=[pltpu.VMEM((m_pad, 1), _F32), pltpu.VMEM((m_pad, 1), _F32),
                            pltpu.VMEM((m_pad, d), _F32)]),
        out_shape=out_shape, interpret=target.interpret, name="decode_attention",
        compiler_params=backend.compiler_params(
            target, semantics=("parallel", "parallel", "parallel", "arbitrary")))(
                *args, *scales)
  else:
    scalar = pl.BlockSpec((None,), lambda i, j, s: (i,))
    kv_spec = pl.BlockSpec((None, tk_p, d), lambda i, j, s: (i, 0, j))
    s_spec = pl.BlockSpec((None, tk_p, 1), lambda i, j, s: (i, 0, j))
    parts, lse = pl.pallas_call(
        functools.partial(_decode_loop_kernel, **kw), grid=(b, kvh, splits),
        in_specs=[scalar, scalar, q_spec, kv_spec, kv_spec, p_spec] + [s_spec] * len(scales),
        out_specs=[o_spec, l_spec], out_shape=out_shape, interpret=target.interpret,
        name="decode_attention",
        compiler_params=backend.compiler_params(
            target, num_warps=4, num_stages=3 if q.dtype == jnp.bfloat16 else 2))(
                *args, *scales)
  out = _combine(parts, lse)[:, :, :m]                                   # [B, KVH, M, D]
  out = out.reshape(b, kvh, group, tq, d).transpose(0, 3, 1, 2, 4).reshape(b, tq, h, d)
  return out.astype(q.dtype)


def _block_k(block_k, tk, target):
  """Largest allowed cache block dividing Tk (so the cache is never copied), or the
  default when none does (then Tk is padded)."""
  gpu = target.platform == "gpu" and not target.interpret
  tpu = target.platform == "tpu" and not target.interpret
  if block_k is not None:
    return backend.fit_block(block_k, tk, target)
  default = 512 if tpu else (64 if gpu else 128)
  step = 128 if tpu else 8
  cands = ([default >> i for i in range(3) if default >> i >= 16] if gpu
           else list(range(default, step - 1, -step)))
  for c in cands:
    if tk % c == 0:
      return c
  return backend.fit_block(default, tk, target)


def _default_splits(target, programs, nk):
  if target.interpret or target.platform == "cpu":
    return 4                    # enough to exercise the merge; CPU gains nothing from more
  if target.platform == "tpu":
    return 2                    # grid steps are sequential per core; 2 feeds megacore chips
  # GPU: about two waves of programs over ~132 SMs (H100), at least ~4 blocks per split.
  return max(1, min(backend.cdiv(264, programs), nk // 4))


def _split_range(n_vis, bk, splits, s):
  """Key blocks [start, end) of split s: the visible blocks divided evenly, in order."""
  nb = backend.cdiv(n_vis, bk)
  per = backend.cdiv(nb, splits)
  start = s * per
  return start, jnp.minimum(start + per, nb)


def _partial_result(m, l, acc):
  """Normalised split output and its logsumexp; -inf marks a split that saw no key, so the
  merge gives it zero weight."""
  out, lse = fk.finish(m, l, acc)
  return out, jnp.where(l == 0.0, -jnp.inf, lse)


def _split_refs(refs, quantized, n_out):
  """(inputs without scales, (k_scale_ref, v_scale_ref) or None, the rest): the scale refs
  come after the other inputs when the cache is int8."""
  n_in = len(refs) - n_out - (2 if quantized else 0)
  ins, rest = refs[:n_in], refs[n_in:]
  if quantized:
    return ins, rest[:2], rest[2:]
  return ins, None, rest


def _block(ref, rows, scale_ref, dtype):
  """A cache block (bk, D) as `dtype`, dequantised with its (bk, 1) scales if int8."""
  if scale_ref is None:
    return ref[rows, :]
  return (ref[rows, :].astype(_F32) * scale_ref[rows, :].astype(_F32)).astype(dtype)


class _Column:
  """A [bk, KVH] scale ref read as its column `j` [bk, 1]: a masked lane sum, which Mosaic
  lowers (a dynamic lane slice it may not)."""

  def __init__(self, ref, j):
    self.ref, self.j = ref, j

  def __getitem__(self, index):  # index: (rows, slice(None)), as _block reads a scale ref
    x = self.ref[index[0], :].astype(_F32)
    lane = lax.broadcasted_iota(jnp.int32, x.shape, 1)
    return jnp.sum(jnp.where(lane == self.j, x, 0.0), axis=1, keepdims=True)


def _decode_loop_kernel(*refs, scale, bk, splits, precision, quantized):
  (nvis_ref, len_ref, q_ref, k_ref, v_ref, pos_ref), scale_refs, (o_ref, lse_ref) = (
      _split_refs(refs, quantized, 2))
  ks_ref, vs_ref = scale_refs or (None, None)
  q, pos, kv_len = q_ref[...], pos_ref[...], len_ref[...]
  start, end = _split_range(nvis_ref[...], bk, splits, pl.program_id(2))

  def body(j, carry):
    rows = pl.ds(pl.multiple_of(j * bk, bk), bk)
    s = fk.scores(q, _block(k_ref, rows, ks_ref, q.dtype), pos, j * bk, kv_len, scale=scale,
                  precision=precision, masked=True)
    return fk.softmax_step(s, _block(v_ref, rows, vs_ref, q.dtype), *carry, precision)

  init = (jnp.full((q.shape[0], 1), fk.NEG_INIT, _F32), jnp.zeros((q.shape[0], 1), _F32),
          jnp.zeros(q.shape, _F32))
  o_ref[...], lse_ref[...] = _partial_result(*lax.fori_loop(start, end, body, init))


def _decode_grid_kernel(*refs, scale, bk, splits, precision, quantized):
  (nvis_ref, len_ref, q_ref, k_ref, v_ref, pos_ref), scale_refs, rest = (
      _split_refs(refs, quantized, 5))
  o_ref, lse_ref, m_sc, l_sc, acc_sc = rest
  ks_ref, vs_ref = scale_refs or (None, None)
  every = slice(None)
  if scale_refs is not None:  # this kv head's column of the [bk, KVH] scale blocks
    ks_ref, vs_ref = (_Column(r, pl.program_id(1)) for r in scale_refs)
  b, s, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  start, end = _split_range(nvis_ref[b], bk, splits, s)
  j = start + t

  @pl.when(t == 0)
  def _():
    m_sc[...] = jnp.full(m_sc.shape, fk.NEG_INIT, _F32)
    l_sc[...] = jnp.zeros(l_sc.shape, _F32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, _F32)

  @pl.when(j < end)
  def _():
    dt = q_ref.dtype
    sc = fk.scores(q_ref[...], _block(k_ref, every, ks_ref, dt), pos_ref[...], j * bk,
                   len_ref[b], scale=scale, precision=precision, masked=True)
    m_sc[...], l_sc[...], acc_sc[...] = fk.softmax_step(
        sc, _block(v_ref, every, vs_ref, dt), m_sc[...], l_sc[...], acc_sc[...], precision)

  @pl.when(t == pl.num_programs(3) - 1)
  def _():
    o_ref[...], lse_ref[...] = _partial_result(m_sc[...], l_sc[...], acc_sc[...])


def _combine(parts, lse):
  """Merge split results: out = sum_s w_s o_s / sum_s w_s, w_s = exp(lse_s - max lse)."""
  top = jnp.max(lse, axis=2, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  w = jnp.exp(lse - top)                                     # 0 for empty splits
  den = jnp.sum(w, axis=2)
  return jnp.sum(w * parts, axis=2) / jnp.where(den == 0.0, 1.0, den)
