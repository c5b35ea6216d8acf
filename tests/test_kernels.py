"""Pallas attention kernels vs a float64 reference, in interpret mode on CPU.

Every run draws fresh inputs; the seed is in each failure message so a failure can be
replayed by setting it in `_rng`. Interpret-mode programs cost seconds to compile on CPU,
so each case runs forward and backward in one compiled function, with LLVM optimisation
off (it only slows compilation; HLO buffer assignment, which the memory test reads, does not
depend on it).
"""

from __future__ import annotations

import importlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax.kernels import backend, decode_attention, flash_attention, reference_attention

_FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
_TOL = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def _rng():
  seed = np.random.SeedSequence().entropy
  return np.random.default_rng(seed), seed


def _run(fn, *args):
  return jax.jit(fn).lower(*args).compile(_FAST)(*args)


def _interpreter(platform, seed):
  """How the case runs on CPU. TPU kernels run in JAX's TPU interpreter, which simulates
  HBM/VMEM and the block DMAs: it raises on a block index out of bounds (the generic
  interpreter clamps such reads silently), fills uninitialised memory with NaN, and visits
  "parallel" grid dimensions in an order shuffled by the case's seed."""
  if platform != "tpu":
    return True
  from jax.experimental.pallas import tpu as pltpu
  return pltpu.InterpretParams(uninitialized_memory="nan", random_seed=seed % 2**31)


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


def _reference64(q, k, v, pos, kv_len, ct):
  """Output and (dq, dk, dv) of the reference in float64 for cotangent ct."""
  def fn(q, k, v, ct):
    out, vjp = jax.vjp(lambda q, k, v: reference_attention(q, k, v, pos, kv_len), q, k, v)
    return (out, *vjp(ct))

  with jax.enable_x64(True):  # jit: op-by-op float64 dispatch costs seconds per case
    args = [jnp.asarray(np.asarray(x, np.float64)) for x in (q, k, v, ct)]
    return [np.asarray(x) for x in jax.jit(fn)(*args)]


def _inputs(rng, b, tq, tk, h, kvh, d, dtype):
  mk = lambda *s: jnp.asarray(rng.standard_normal(s), dtype)
  return mk(b, tq, h, d), mk(b, tk, kvh, d), mk(b, tk, kvh, d), mk(b, tq, h, d)


# (platform driver, dtype, B, Tq, Tk, H, KVH, D, q position offset, block_q, block_k, padded)
FLASH_CASES = [
    # GQA, lengths not multiples of the blocks, right padding with fully padded rows.
    ("cpu", jnp.float32, 2, 100, 100, 4, 2, 64, 0, 32, 16, True),
    # MHA, head_dim 128, a prefill chunk at positions 60.. against a longer cache.
    ("cpu", jnp.float32, 1, 24, 90, 2, 2, 128, 60, 16, 32, False),
    ("cpu", jnp.bfloat16, 2, 50, 50, 4, 1, 128, 0, None, None, True),
    ("cpu", jnp.bfloat16, 1, 40, 40, 2, 2, 64, 0, 16, 16, False),
    # The TPU grid driver (scalar prefetch, scratch accumulators), in the TPU interpreter.
    # Right padding leaves key blocks no query sees (their first query block is nq).
    ("tpu", jnp.float32, 2, 44, 44, 4, 2, 64, 0, 16, 16, True),
]


def _case_id(c):
  return "-".join(jnp.dtype(x).name if isinstance(x, type) else str(x) for x in c)


@pytest.mark.parametrize("case", FLASH_CASES, ids=_case_id)
def test_flash_attention_forward_and_grads(case):
  platform, dtype, b, tq, tk, h, kvh, d, offset, bq, bk, padded = case
  rng, seed = _rng()
  q, k, v, ct = _inputs(rng, b, tq, tk, h, kvh, d, dtype)
  pos = np.broadcast_to(offset + np.arange(tq), (b, tq)).copy()
  kv_len = None
  if padded:  # sequence 1 is right-padded: its tail rows see nothing, its tail keys are junk
    n = tq * 3 // 5
    pos[1, n:] = -1
    kv_len = jnp.asarray([tk, n], jnp.int32)
  pos = jnp.asarray(pos, jnp.int32)

  def fn(q, k, v, ct):
    out, vjp = jax.vjp(lambda q, k, v: flash_attention(q, k, v, pos, kv_len, block_q=bq,
                                                       block_k=bk), q, k, v)
    return (out, *vjp(ct))

  with backend.override_target(platform, _interpreter(platform, seed)):
    got = _run(fn, q, k, v, ct)
  want = _reference64(q, k, v, pos, kv_len, ct)
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    assert g.dtype == dtype, name
    err = _rel(g, w)
    assert err <= _TOL[dtype], f"{name}: rel err {err:.2e} > {_TOL[dtype]} (seed {seed})"
  if padded:
    out, dq = np.asarray(got[0], np.float32), np.asarray(got[1], np.float32)
    assert np.all(out[1, tq * 3 // 5:] == 0), f"padded rows must output 0 (seed {seed})"
    assert np.all(dq[1, tq * 3 // 5:] == 0), f"padded rows must get 0 grad (seed {seed})"
    assert np.all(np.isfinite(np.asarray(got[2], np.float32))), f"seed {seed}"


# (platform, dtype, B, Tq, Tk, H, KVH, D, splits, block_k)
DECODE_CASES = [
    ("cpu", jnp.float32, 3, 1, 200, 8, 2, 64, (1, 3), None),
    ("cpu", jnp.float32, 3, 4, 256, 4, 4, 128, (2, 5), 32),
    ("cpu", jnp.bfloat16, 2, 4, 160, 8, 1, 128, (4,), None),
    ("tpu", jnp.float32, 3, 4, 256, 4, 2, 128, (1, 3), 32),
]


@pytest.mark.parametrize("case", DECODE_CASES, ids=_case_id)
def test_decode_attention(case):
  platform, dtype, b, tq, tk, h, kvh, d, splits, bk = case
  rng, seed = _rng()
  q, k, v, _ = _inputs(rng, b, tq, tk, h, kvh, d, dtype)
  # Per-sequence cache fill: sequence 0 is an empty slot (all rows -1); later slots hold
  # large stale values that the mask must hide.
  start = rng.integers(tq, tk - tq, size=b)
  pos = start[:, None] + np.arange(tq)
  pos[0] = -1
  kv_len = jnp.asarray(pos.max(axis=1) + 1, jnp.int32)
  stale = np.arange(tk)[None, :, None, None] >= np.asarray(kv_len)[:, None, None, None]
  k = jnp.where(stale, jnp.asarray(1e3, dtype), k)
  v = jnp.where(stale, jnp.asarray(-1e3, dtype), v)
  pos = jnp.asarray(pos, jnp.int32)

  def fn(q, k, v):
    return [decode_attention(q, k, v, pos, kv_len, num_splits=s, block_k=bk) for s in splits]

  with backend.override_target(platform, _interpreter(platform, seed)):
    outs = _run(fn, q, k, v)
  want = _reference64(q, k, v, pos, kv_len, jnp.zeros_like(q))[0]
  for s, got in zip(splits, outs):
    assert got.shape == q.shape and got.dtype == dtype
    err = _rel(got, want)
    assert err <= _TOL[dtype], f"splits={s}: rel err {err:.2e} (seed {seed})"
    assert np.all(np.asarray(got[0], np.float32) == 0), f"empty slot must be 0 (seed {seed})"


def test_unsupported_configs_raise_with_xla_hint():
  q = jnp.zeros((1, 16, 2, 64), jnp.float32)
  pos = jnp.zeros((1, 16), jnp.int32)
  hint = 'attention_impl="xla"'
  with backend.override_target("gpu", False):
    q96 = jnp.zeros((1, 16, 2, 96), jnp.float32)
    with pytest.raises(ValueError, match=re.escape(hint)):
      flash_attention(q96, q96, q96, pos)
    with pytest.raises(ValueError, match=re.escape(hint)):
      decode_attention(q96, q96, q96, pos)
  with backend.override_target("tpu", False):
    with pytest.raises(ValueError, match=re.escape(hint)):  # decode reads D-lane blocks
      decode_attention(q, q, q, pos)
  q16 = q.astype(jnp.float16)
  with pytest.raises(ValueError, match=re.escape(hint)):
    flash_attention(q16, q16, q16, pos)
  q20 = jnp.zeros((1, 16, 2, 20), jnp.float32)  # not a multiple of 8, even in interpret mode
  with pytest.raises(ValueError, match=re.escape(hint)):
    flash_attention(q20, q20, q20, pos)
  if jax.default_backend() == "cpu":
    with pytest.raises(ValueError, match=re.escape(hint)):
      flash_attention(q, q, q, pos, interpret=False)


def _grad_program(attn, s):
  """Compiled jit(grad(loss)) of causal attention at sequence length s (B=1, H=2, D=64)."""
  x = jax.ShapeDtypeStruct((1, s, 2, 64), jnp.float32)
  pos = jnp.arange(s, dtype=jnp.int32)[None]
  loss = lambda q, k, v: attn(q, k, v, pos).sum()
  return jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile(_FAST)


def test_memory_grows_linearly_for_flash_and_quadratically_for_reference():
  short, long = 256, 1024  # 4x longer: linear -> ~4x, quadratic -> ~16x
  temp = {}
  for name, attn in (("flash", flash_attention), ("reference", reference_attention)):
    progs = {s: _grad_program(attn, s) for s in (short, long)}
    temp[name] = {s: p.memory_analysis().temp_size_in_bytes for s, p in progs.items()}
    if name == "flash":  # No buffer anywhere in the program has two sequence-long dims.
      hlo = progs[long].as_text()
      assert not re.search(rf"\[[^\]]*\b{long}\b[^\]]*\b{long}\b[^\]]*\]", hlo)
  ratio = {n: t[long] / t[short] for n, t in temp.items()}
  print(f"temp bytes {temp}, ratio {ratio}")
  assert ratio["flash"] < 6, temp
  assert ratio["reference"] > 12, temp
  assert temp["flash"][long] * 3 < temp["reference"][long], temp


@pytest.mark.parametrize("platform,lowering", [("gpu", "cuda"), ("tpu", "tpu")])
def test_kernels_lower_for_accelerators(platform, lowering):
  """Lower (not compile) the real GPU Triton and TPU Mosaic kernels from this CPU host: this
  runs Pallas' own lowering and its block-shape checks, not Triton's or Mosaic's compilers."""
  sds = lambda *s, dt=jnp.bfloat16: jax.ShapeDtypeStruct(s, dt)
  b, t, h, kvh, d = 2, 1000, 8, 2, 128
  qkv = (sds(b, t, h, d), sds(b, t, kvh, d), sds(b, t, kvh, d), sds(b, t, dt=jnp.int32),
         sds(b, dt=jnp.int32))
  grad = jax.grad(lambda q, k, v, p, n: flash_attention(q, k, v, p, n).astype(jnp.float32)
                  .sum(), (0, 1, 2))
  # Fresh function objects: jit caches traces per function, and the override is not part
  # of its cache key, so reusing one traced under the other platform would be wrong.
  decode = lambda *a: decode_attention(*a)
  cache = (sds(b, 4, h, d), sds(b, 4096, kvh, d), sds(b, 4096, kvh, d), sds(b, 4, dt=jnp.int32),
           sds(b, dt=jnp.int32))
  target = "@tpu_custom_call" if platform == "tpu" else "@__gpu$xla.gpu.triton"
  with backend.override_target(platform, False):
    for fn, args, kernels in ((grad, qkv, 3), (decode, cache, 1)):
      text = jax.jit(fn).trace(*args).lower(lowering_platforms=(lowering,)).as_text()
      assert text.count(target) == kernels, (fn, text.count(target))


def test_causal_block_skipping_tables():
  """The skip tables the kernels loop over: with causal positions, q block i visits key
  blocks [0, i] (the last one masked) and key block j is visited from q block j on; right
  padding and an empty sequence shrink both."""
  fa = importlib.import_module("o1jax.kernels.flash_attention")  # the module, not the function
  bq = bk = 16
  pos = jnp.broadcast_to(jnp.arange(64, dtype=jnp.int32), (3, 64))
  pos = pos.at[1, 40:].set(-1)[..., None]
  kv_len = jnp.asarray([64, 40, 0], jnp.int32)
  end, full = fa._q_block_tables(pos, kv_len, bq, bk, 4)
  first = fa._kv_block_first_q(pos, kv_len, bq, bk, 4)
  np.testing.assert_array_equal(end, [[1, 2, 3, 4], [1, 2, 3, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(full, [[0, 1, 2, 3], [0, 1, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(first, [[0, 1, 2, 3], [0, 1, 2, 4], [4, 4, 4, 4]])


def test_tpu_default_blocks_grow_with_the_context():
  """128x128 tiles made a 32K-token TPU forward 65K sequential grid steps per (batch, head);
  long sequences now take 512x512, short ones the block that pads them least."""
  tpu = backend.Target("tpu", False)
  assert backend.flash_blocks(tpu, 128, jnp.bfloat16, 32768, 32768)["fwd"] == (512, 512)
  assert backend.flash_blocks(tpu, 128, jnp.bfloat16, 600, 1000)["bwd"] == (128, 512)
  assert backend.flash_blocks(tpu, 128, jnp.bfloat16, 1280, 1280)["fwd"] == (256, 256)
