"""Kernel bodies for flash attention (forward, dq, dk/dv), in two drivers sharing the math.

* loop driver (GPU Triton and CPU interpret): one program per (q block, batch, head); the KV
  blocks are a ``fori_loop`` inside the kernel with data-dependent bounds, so blocks that no
  row can see are never touched. Triton software-pipelines the loads of such loops.
* grid driver (TPU Mosaic): TPU grid steps run in order on one core, so the KV loop is the
  innermost ("arbitrary") grid dimension with accumulators in VMEM scratch; Mosaic pipelines
  the block DMAs. Skipped blocks are clamped in the index_map to an already-fetched block (no
  DMA) and their compute is skipped with ``pl.when``.

Per-row vectors (positions, logsumexp, delta) are [rows, 1] columns everywhere: they
broadcast against [bq, bk] score tiles without a reshape, which both lowerings handle.
Key block ``j`` covers key indices [j*bk, (j+1)*bk); a key is visible to a row iff
``key <= pos`` and ``key < kv_len`` (see reference.visibility_mask).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

# Running-max start value. Finite on purpose: a row that has only seen masked (-inf) scores
# keeps m = NEG_INIT, so exp(m_old - m_new) and exp(s - m_new) stay 1 and 0 instead of NaN.
NEG_INIT = -1e30
_F32 = jnp.float32


def _nt(a, b, precision):  # a @ b.T without materialising a transpose
  return lax.dot_general(a, b, (((1,), (1,)), ((), ())), precision=precision,
                         preferred_element_type=_F32)


def _nn(a, b, precision):  # a @ b
  return lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=_F32)


def _tn(a, b, precision):  # a.T @ b
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())), precision=precision,
                         preferred_element_type=_F32)


def scores(q, k, pos, k_start, kv_len, *, scale, precision, masked):
  """[bq, bk] f32 scaled scores; masked entries are -inf (only when ``masked``)."""
  s = _nt(q, k, precision) * scale
  if masked:
    key = k_start + lax.broadcasted_iota(jnp.int32, s.shape, 1)
    s = jnp.where((key <= pos) & (key < kv_len), s, -jnp.inf)
  return s


def softmax_step(s, v, m, l, acc, precision):
  """One online-softmax update of (running max, running sum, unnormalised output)."""
  m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
  alpha = jnp.exp(m - m_new)
  p = jnp.exp(s - m_new)
  l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
  acc = alpha * acc + _nn(p.astype(v.dtype), v, precision)
  return m_new, l, acc


def finish(m, l, acc):
  """Normalised output and logsumexp. Rows that saw no key give 0 output and lse 0: any
  finite lse works there, because backward recomputes their scores as -inf (p = 0)."""
  empty = l == 0.0
  l_safe = jnp.where(empty, 1.0, l)
  return acc / l_safe, jnp.where(empty, 0.0, m + jnp.log(l_safe))


def bwd_block(q, k, v, do, lse, delta, pos, k_start, kv_len, *, scale, precision, masked):
  """Recomputed probabilities p and score gradients ds = p * (dO v^T - delta), [bq, bk]."""
  s = scores(q, k, pos, k_start, kv_len, scale=scale, precision=precision, masked=masked)
  p = jnp.exp(s - lse)
  ds = p * (_nt(do, v, precision) - delta)
  return p, ds


def _init_fwd(bq, d):
  return (jnp.full((bq, 1), NEG_INIT, _F32), jnp.zeros((bq, 1), _F32),
          jnp.zeros((bq, d), _F32))


# ----------------------------------------------------------------------------- loop driver

def fwd_loop_kernel(end_ref, full_ref, len_ref, q_ref, k_ref, v_ref, pos_ref, o_ref, lse_ref,
                    *, scale, bk, precision):
  q, pos, kv_len = q_ref[...], pos_ref[...], len_ref[...]

  def body(j, carry, masked):
    rows = pl.ds(pl.multiple_of(j * bk, bk), bk)
    s = scores(q, k_ref[rows, :], pos, j * bk, kv_len, scale=scale, precision=precision,
               masked=masked)
    return softmax_step(s, v_ref[rows, :], *carry, precision)

  # Blocks [0, full) are visible to every row of this q block: no mask arithmetic there.
  n_full, n_end = full_ref[...], end_ref[...]
  carry = lax.fori_loop(0, n_full, functools.partial(body, masked=False),
                        _init_fwd(*q.shape))
  carry = lax.fori_loop(n_full, n_end, functools.partial(body, masked=True), carry)
  out, lse = finish(*carry)
  o_ref[...] = out.astype(o_ref.dtype)
  lse_ref[...] = lse


def dq_loop_kernel(end_ref, full_ref, len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref,
                   delta_ref, pos_ref, dq_ref, *, scale, bk, precision):
  q, do, pos, kv_len = q_ref[...], do_ref[...], pos_ref[...], len_ref[...]
  lse, delta = lse_ref[...], delta_ref[...]

  def body(j, dq, masked):
    rows = pl.ds(pl.multiple_of(j * bk, bk), bk)
    k = k_ref[rows, :]
    _, ds = bwd_block(q, k, v_ref[rows, :], do, lse, delta, pos, j * bk, kv_len, scale=scale,
                      precision=precision, masked=masked)
    return dq + _nn(ds.astype(k.dtype), k, precision)

  n_full, n_end = full_ref[...], end_ref[...]
  dq = lax.fori_loop(0, n_full, functools.partial(body, masked=False), jnp.zeros(q.shape, _F32))
  dq = lax.fori_loop(n_full, n_end, functools.partial(body, masked=True), dq)
  dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def dkdv_loop_kernel(first_ref, len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref,
                     pos_ref, dk_ref, dv_ref, *, scale, bq, group, nq, precision):
  """One program per (kv block, batch, kv head); loops over the `group` query heads sharing
  this kv head and over the q blocks that can see it, so GQA sums happen in registers."""
  j = pl.program_id(0)
  k, v, kv_len = k_ref[...], v_ref[...], len_ref[...]
  bk, d = k.shape

  def q_block(i, carry, g):
    dk, dv = carry
    rows = pl.ds(pl.multiple_of(i * bq, bq), bq)
    cols = pl.ds(pl.multiple_of(g * d, d), d)
    q, do = q_ref[rows, cols], do_ref[rows, cols]
    p, ds = bwd_block(q, k, v, do, lse_ref[g, rows, :], delta_ref[g, rows, :], pos_ref[rows, :],
                      j * bk, kv_len, scale=scale, precision=precision, masked=True)
    return dk + _tn(ds.astype(q.dtype), q, precision), dv + _tn(p.astype(do.dtype), do, precision)

  # Query blocks before `first` see no key of this block (causal skip).
  first = first_ref[...]
  init = (jnp.zeros((bk, d), _F32), jnp.zeros((bk, d), _F32))
  dk, dv = lax.fori_loop(
      0, group, lambda g, c: lax.fori_loop(first, nq, functools.partial(q_block, g=g), c), init)
  dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


# ----------------------------------------------------------------------------- grid driver

def fwd_grid_kernel(end_ref, full_ref, len_ref, q_ref, k_ref, v_ref, pos_ref, o_ref, lse_ref,
                    m_sc, l_sc, acc_sc, *, scale, bk, precision):
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  n_full, n_end, kv_len = full_ref[b, i], end_ref[b, i], len_ref[b]

  @pl.when(j == 0)
  def _():
    m_sc[...], l_sc[...], acc_sc[...] = _init_fwd(*acc_sc.shape)

  def step(masked):
    s = scores(q_ref[...], k_ref[...], pos_ref[...], j * bk, kv_len, scale=scale,
               precision=precision, masked=masked)
    m_sc[...], l_sc[...], acc_sc[...] = softmax_step(s, v_ref[...], m_sc[...], l_sc[...],
                                                     acc_sc[...], precision)

  pl.when(j < n_full)(lambda: step(False))
  pl.when((j >= n_full) & (j < n_end))(lambda: step(True))

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    out, lse = finish(m_sc[...], l_sc[...], acc_sc[...])
    o_ref[...] = out.astype(o_ref.dtype)
    lse_ref[...] = lse


def dq_grid_kernel(end_ref, full_ref, len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref,
                   pos_ref, dq_ref, dq_sc, *, scale, bk, precision):
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)
  n_full, n_end, kv_len = full_ref[b, i], end_ref[b, i], len_ref[b]

  @pl.when(j == 0)
  def _():
    dq_sc[...] = jnp.zeros(dq_sc.shape, _F32)

  def step(masked):
    k = k_ref[...]
    _, ds = bwd_block(q_ref[...], k, v_ref[...], do_ref[...], lse_ref[...], delta_ref[...],
                      pos_ref[...], j * bk, kv_len, scale=scale, precision=precision,
                      masked=masked)
    dq_sc[...] += _nn(ds.astype(k.dtype), k, precision)

  pl.when(j < n_full)(lambda: step(False))
  pl.when((j >= n_full) & (j < n_end))(lambda: step(True))

  @pl.when(j == pl.num_programs(3) - 1)
  def _():
    dq_ref[...] = (dq_sc[...] * scale).astype(dq_ref.dtype)


def dkdv_grid_kernel(first_ref, len_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref,
                     pos_ref, dk_ref, dv_ref, dk_sc, dv_sc, *, scale, bk, nq, precision):
  """Grid (B, KVH, nk, group * nq): the innermost step t visits query head t // nq of the
  group and q block t % nq, accumulating this kv block's dk/dv in scratch."""
  b, j, t = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(t == 0)
  def _():
    dk_sc[...] = jnp.zeros(dk_sc.shape, _F32)
    dv_sc[...] = jnp.zeros(dv_sc.shape, _F32)

  @pl.when(lax.rem(t, nq) >= first_ref[b, j])
  def _():
    q, do = q_ref[...], do_ref[...]
    p, ds = bwd_block(q, k_ref[...], v_ref[...], do, lse_ref[...], delta_ref[...], pos_ref[...],
                      j * bk, len_ref[b], scale=scale, precision=precision, masked=True)
    dk_sc[...] += _tn(ds.astype(q.dtype), q, precision)
    dv_sc[...] += _tn(p.astype(do.dtype), do, precision)

  @pl.when(t == pl.num_programs(3) - 1)
  def _():
    dk_ref[...] = (dk_sc[...] * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)
