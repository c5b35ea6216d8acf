"""Flash attention for training and prefill: Pallas forward and backward under custom_vjp.

Memory is O(T) instead of the reference's O(Tq * Tk): scores live one [bq, bk] tile at a
time, the backward recomputes them from the saved per-row logsumexp. Masking is by
position (see reference.visibility_mask); key blocks that no row of a query block can see
are skipped entirely, which halves causal work.

Layouts. The loop driver (GPU, CPU interpret) reads q/k/v in their native [B, T, H, D]
order through a free reshape to [B, T, H*D]: a (bq, D) block at column-block h is head h, so
no transpose pass is needed. The TPU grid driver transposes to [B, H, T, D], because Mosaic
only tiles blocks whose last dim is a multiple of 128 or the whole array dim.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from o1jax.kernels import backend
from o1jax.kernels import flash_kernels as fk


@dataclasses.dataclass(frozen=True)
class _Cfg:
  """Static configuration (hashable: it is a nondiff argument of the custom_vjp)."""
  target: backend.Target
  group: int          # query heads per kv head
  heads: int
  head_dim: int
  scale: float
  fwd_blocks: tuple[int, int]
  bwd_blocks: tuple[int, int]
  warps: int | None
  fwd_stages: int | None
  bwd_stages: int | None
  precision: object


def flash_attention(q, k, v, q_positions, kv_lengths=None, *, scale=None, block_q=None,
                    block_k=None, interpret=None):
  """Blocked attention with a Pallas backward. q [B, Tq, H, D], k/v [B, Tk, KVH, D].

  q_positions [B, Tq] int; kv_lengths [B] int or None. Returns [B, Tq, H, D] in q.dtype.
  block_q/block_k override both forward and backward tiles; lengths need not divide them.
  """
  target = backend.resolve_target(interpret)
  backend.check_inputs("flash_attention", q, k, v, target)
  b, tq, h, d = q.shape
  tk, kvh = k.shape[1], k.shape[2]
  if q_positions.shape != (b, tq):
    raise ValueError(f"q_positions must be [batch, q_len]={(b, tq)}, got {q_positions.shape}")
  dflt = backend.flash_blocks(target, d, q.dtype, tq, tk)
  fit_q = lambda blk: backend.fit_block(block_q or blk, tq, target)
  fit_k = lambda blk: backend.fit_block(block_k or blk, tk, target, lane=True)
  cfg = _Cfg(target, h // kvh, h, d, float(d ** -0.5 if scale is None else scale),
             (fit_q(dflt["fwd"][0]), fit_k(dflt["fwd"][1])),
             (fit_q(dflt["bwd"][0]), fit_k(dflt["bwd"][1])),
             dflt["warps"], dflt["fwd_stages"], dflt["bwd_stages"],
             backend.float32_precision(q.dtype))
  # Pad to a multiple of both the forward and backward tiles. Padded query rows get
  # position -1 (they see nothing); padded keys lie beyond kv_len (nobody sees them).
  mq = _lcm(cfg.fwd_blocks[0], cfg.bwd_blocks[0])
  mk = _lcm(cfg.fwd_blocks[1], cfg.bwd_blocks[1])
  tq_p, tk_p = backend.round_up(tq, mq), backend.round_up(tk, mk)
  pos = jnp.pad(q_positions.astype(jnp.int32), ((0, 0), (0, tq_p - tq)), constant_values=-1)
  kv_len = (jnp.full((b,), tk, jnp.int32) if kv_lengths is None
            else jnp.minimum(kv_lengths.astype(jnp.int32), tk))
  pad_t = lambda x, t: jnp.pad(x, ((0, 0), (0, t - x.shape[1]), (0, 0), (0, 0)))
  q, k, v = pad_t(q, tq_p), pad_t(k, tk_p), pad_t(v, tk_p)
  if target.grid_driver:
    to_kernel = lambda x: x.transpose(0, 2, 1, 3)       # [B, H, T, D]
    out = _flash(cfg, to_kernel(q), to_kernel(k), to_kernel(v), pos[..., None], kv_len)
    out = out.transpose(0, 2, 1, 3)
  else:
    flat = lambda x: x.reshape(x.shape[0], x.shape[1], -1)  # [B, T, H*D], free
    out = _flash(cfg, flat(q), flat(k), flat(v), pos[..., None], kv_len).reshape(b, tq_p, h, d)
  return out[:, :tq]


def _lcm(a, b):
  return a * b // math.gcd(a, b)


_div = backend.idiv


# --------------------------------------------------------------------------- block tables

def _q_block_tables(pos, kv_len, bq, bk, nk):
  """Per (batch, q block): number of key blocks any row sees (end) and that all rows see in
  full (full). pos [B, Tq_p, 1]."""
  pb = pos[..., 0].reshape(pos.shape[0], -1, bq)
  hi = jnp.minimum(pb.max(-1) + 1, kv_len[:, None])   # keys [0, hi) visible to some row
  lo = jnp.minimum(pb.min(-1) + 1, kv_len[:, None])   # keys [0, lo) visible to all rows
  end = jnp.clip(backend.cdiv(jnp.maximum(hi, 0), bk), 0, nk)
  full = jnp.clip(jnp.maximum(lo, 0) // bk, 0, nk)
  return end.astype(jnp.int32), full.astype(jnp.int32)


def _kv_block_first_q(pos, kv_len, bq, bk, nk):
  """Per (batch, key block): the first q block with a row that may see it (nq if none).
  Exact skip for monotone positions; otherwise later blocks are still masked correctly."""
  maxpos = jax.lax.cummax(pos[..., 0].reshape(pos.shape[0], -1, bq).max(-1), axis=1)
  starts = jnp.arange(nk, dtype=jnp.int32) * bk
  first = jax.vmap(lambda c: jnp.searchsorted(c, starts, side="left"))(maxpos)
  first = jnp.where(starts[None, :] >= kv_len[:, None], maxpos.shape[1], first)
  return first.astype(jnp.int32)


# ----------------------------------------------------------------------------- pallas calls

def _forward(cfg: _Cfg, q, k, v, pos, kv_len):
  t, (bq, bk) = cfg.target, cfg.fwd_blocks
  bsz, tq_p, tk_p, d, g = q.shape[0], pos.shape[1], k.shape[-2 if t.grid_driver else 1], \
      cfg.head_dim, cfg.group
  nq, nk = tq_p // bq, tk_p // bk
  end, full = _q_block_tables(pos, kv_len, bq, bk, nk)
  kw = dict(scale=cfg.scale, bk=bk, precision=cfg.precision)
  lse_shape = jax.ShapeDtypeStruct((bsz, cfg.heads, tq_p, 1), jnp.float32)
  if t.grid_driver:
    from jax.experimental.pallas import tpu as pltpu
    last = lambda b, i, e: jnp.maximum(e[b, i] - 1, 0)  # clamp skipped blocks: no new DMA
    kv_spec = pl.BlockSpec((None, None, bk, d),
                           lambda b, h, i, j, e, f, n: (b, _div(h, g), jnp.minimum(j, last(b, i, e)), 0))
    q_spec = pl.BlockSpec((None, None, bq, d), lambda b, h, i, j, *_: (b, h, i, 0))
    row_spec = pl.BlockSpec((None, None, bq, 1), lambda b, h, i, j, *_: (b, h, i, 0))
    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=3, grid=(bsz, cfg.heads, nq, nk),
        in_specs=[q_spec, kv_spec, kv_spec,
                  pl.BlockSpec((None, bq, 1), lambda b, h, i, j, *_: (b, i, 0))],
        out_specs=[q_spec, row_spec],
        scratch_shapes=[pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32),
                        pltpu.VMEM((bq, d), jnp.float32)])
    return pl.pallas_call(
        functools.partial(fk.fwd_grid_kernel, **kw), grid_spec=grid_spec,
        out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), lse_shape],
        compiler_params=backend.compiler_params(
            t, semantics=("parallel", "parallel", "parallel", "arbitrary")),
        interpret=t.interpret, name="flash_fwd")(end, full, kv_len, q, k, v, pos)
  # Loop driver. Query blocks run in reverse so the longest causal rows start first.
  rev = lambda i: nq - 1 - i
  q_spec = pl.BlockSpec((None, bq, d), lambda i, b, h: (b, rev(i), h))
  kv_spec = pl.BlockSpec((None, tk_p, d), lambda i, b, h: (b, 0, _div(h, g)))
  return pl.pallas_call(
      functools.partial(fk.fwd_loop_kernel, **kw), grid=(nq, bsz, cfg.heads),
      in_specs=[pl.BlockSpec((None, None), lambda i, b, h: (b, rev(i))),
                pl.BlockSpec((None, None), lambda i, b, h: (b, rev(i))),
                pl.BlockSpec((None,), lambda i, b, h: (b,)),
                q_spec, kv_spec, kv_spec,
                pl.BlockSpec((None, bq, 1), lambda i, b, h: (b, rev(i), 0))],
      out_specs=[q_spec, pl.BlockSpec((None, None, bq, 1), lambda i, b, h: (b, h, rev(i), 0))],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), lse_shape],
      compiler_params=backend.compiler_params(t, num_warps=cfg.warps,
                                              num_stages=cfg.fwd_stages),
      interpret=t.interpret, name="flash_fwd")(end, full, kv_len, q, k, v, pos)


def _backward(cfg: _Cfg, q, k, v, pos, kv_len, out, lse, do):
  t, (bq, bk) = cfg.target, cfg.bwd_blocks
  bsz, tq_p, d, g, kvh = q.shape[0], pos.shape[1], cfg.head_dim, cfg.group, \
      cfg.heads // cfg.group
  tk_p = k.shape[-2 if t.grid_driver else 1]
  nq, nk = tq_p // bq, tk_p // bk
  # delta_i = rowsum(dO_i * O_i): the softmax-Jacobian term, cheap enough for plain XLA.
  prod = do.astype(jnp.float32) * out.astype(jnp.float32)
  if t.grid_driver:
    delta = prod.sum(-1, keepdims=True)                                    # [B, H, Tq, 1]
  else:
    delta = prod.reshape(bsz, tq_p, cfg.heads, d).sum(-1).transpose(0, 2, 1)[..., None]
  end, full = _q_block_tables(pos, kv_len, bq, bk, nk)
  first = _kv_block_first_q(pos, kv_len, bq, bk, nk)
  kw = dict(scale=cfg.scale, precision=cfg.precision)
  if t.grid_driver:
    return _backward_grid(cfg, q, k, v, pos, kv_len, lse, do, delta, end, full, first, kw)
  params = backend.compiler_params(t, num_warps=cfg.warps, num_stages=cfg.bwd_stages)
  q_spec = pl.BlockSpec((None, bq, d), lambda i, b, h: (b, i, h))
  kv_full = pl.BlockSpec((None, tk_p, d), lambda i, b, h: (b, 0, _div(h, g)))
  row_spec = pl.BlockSpec((None, None, bq, 1), lambda i, b, h: (b, h, i, 0))
  tbl = pl.BlockSpec((None, None), lambda i, b, h: (b, i))
  len_spec = pl.BlockSpec((None,), lambda i, b, h: (b,))
  dq = pl.pallas_call(
      functools.partial(fk.dq_loop_kernel, bk=bk, **kw), grid=(nq, bsz, cfg.heads),
      in_specs=[tbl, tbl, len_spec, q_spec, kv_full, kv_full, q_spec, row_spec, row_spec,
                pl.BlockSpec((None, bq, 1), lambda i, b, h: (b, i, 0))],
      out_specs=q_spec, out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=params, interpret=t.interpret, name="flash_dq",
  )(end, full, kv_len, q, k, v, do, lse, delta, pos)
  # dk/dv: one program per (kv block, batch, kv head) sees the whole query sequence of the
  # group's heads ((Tq_p, group*D) block at column-block kv head) and loops over it.
  kv_spec = pl.BlockSpec((None, bk, d), lambda j, b, h: (b, j, h))
  q_all = pl.BlockSpec((None, tq_p, g * d), lambda j, b, h: (b, 0, h))
  rows_all = pl.BlockSpec((None, g, tq_p, 1), lambda j, b, h: (b, h, 0, 0))
  dk, dv = pl.pallas_call(
      functools.partial(fk.dkdv_loop_kernel, bq=bq, group=g, nq=nq, **kw),
      grid=(nk, bsz, kvh),
      in_specs=[pl.BlockSpec((None, None), lambda j, b, h: (b, j)), len_spec,
                q_all, kv_spec, kv_spec, q_all, rows_all, rows_all,
                pl.BlockSpec((None, tq_p, 1), lambda j, b, h: (b, 0, 0))],
      out_specs=[kv_spec, kv_spec],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype)] * 2,
      compiler_params=params, interpret=t.interpret, name="flash_dkdv",
  )(first, kv_len, q, k, v, do, lse, delta, pos)
  return dq, dk, dv


def _backward_grid(cfg, q, k, v, pos, kv_len, lse, do, delta, end, full, first, kw):
  from jax.experimental.pallas import tpu as pltpu
  t, (bq, bk) = cfg.target, cfg.bwd_blocks
  bsz, d, g, kvh = q.shape[0], cfg.head_dim, cfg.group, cfg.heads // cfg.group
  nq, nk = pos.shape[1] // bq, k.shape[2] // bk
  sem = ("parallel", "parallel", "parallel", "arbitrary")
  last = lambda b, i, e: jnp.maximum(e[b, i] - 1, 0)
  kv_spec = pl.BlockSpec((None, None, bk, d),
                         lambda b, h, i, j, e, f, n: (b, _div(h, g), jnp.minimum(j, last(b, i, e)), 0))
  q_spec = pl.BlockSpec((None, None, bq, d), lambda b, h, i, j, *_: (b, h, i, 0))
  row_spec = pl.BlockSpec((None, None, bq, 1), lambda b, h, i, j, *_: (b, h, i, 0))
  dq = pl.pallas_call(
      functools.partial(fk.dq_grid_kernel, bk=bk, **kw),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=3, grid=(bsz, cfg.heads, nq, nk),
          in_specs=[q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec,
                    pl.BlockSpec((None, bq, 1), lambda b, h, i, j, *_: (b, i, 0))],
          out_specs=q_spec, scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32)]),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=backend.compiler_params(t, semantics=sem), interpret=t.interpret,
      name="flash_dq")(end, full, kv_len, q, k, v, do, lse, delta, pos)
  # Inner step s -> (head s // nq of the group, q block s % nq); q blocks a kv block cannot
  # see are clamped to the first one it can (prefetched early, no wasted DMA). A kv block no
  # query sees (right padding) has first == nq: clamp to nq - 1, or its DMA reads one block
  # past the end (the kernel skips its compute either way).
  qi = lambda b, j, s, f: jnp.minimum(jnp.maximum(backend.irem(s, nq), f[b, j]), nq - 1)
  q_spec = pl.BlockSpec((None, None, bq, d),
                        lambda b, h, j, s, f, n: (b, h * g + _div(s, nq), qi(b, j, s, f), 0))
  row_spec = pl.BlockSpec((None, None, bq, 1),
                          lambda b, h, j, s, f, n: (b, h * g + _div(s, nq), qi(b, j, s, f), 0))
  kv_spec = pl.BlockSpec((None, None, bk, d), lambda b, h, j, s, *_: (b, h, j, 0))
  dk, dv = pl.pallas_call(
      functools.partial(fk.dkdv_grid_kernel, bk=bk, nq=nq, **kw),
      grid_spec=pltpu.PrefetchScalarGridSpec(
          num_scalar_prefetch=2, grid=(bsz, kvh, nk, g * nq),
          in_specs=[q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec,
                    pl.BlockSpec((None, bq, 1),
                                 lambda b, h, j, s, f, n: (b, qi(b, j, s, f), 0))],
          out_specs=[kv_spec, kv_spec],
          scratch_shapes=[pltpu.VMEM((bk, d), jnp.float32)] * 2),
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype)] * 2,
      compiler_params=backend.compiler_params(t, semantics=sem), interpret=t.interpret,
      name="flash_dkdv")(first, kv_len, q, k, v, do, lse, delta, pos)
  return dq, dk, dv


# ----------------------------------------------------------------------------- custom_vjp

@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg, q, k, v, pos, kv_len):
  return _forward(cfg, q, k, v, pos, kv_len)[0]


def _flash_fwd(cfg, q, k, v, pos, kv_len):
  out, lse = _forward(cfg, q, k, v, pos, kv_len)
  return out, (q, k, v, pos, kv_len, out, lse)


def _flash_bwd(cfg, res, do):
  q, k, v, pos, kv_len, out, lse = res
  dq, dk, dv = _backward(cfg, q, k, v, pos, kv_len, out, lse, do)
  return dq, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
