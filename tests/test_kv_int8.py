"""The int8 KV cache (`ModelConfig.kv_dtype="int8"`): quantisation error, attention on the
XLA path and in the Pallas decode kernel against a float64 plain-jnp reference, sharded
decoding, think() on the embedded model and serving's evict/resume of the new leaves."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax import parallel, tasks
from o1jax.kernels import reference_attention
from o1jax.model.attention import attend
from o1jax.model.cache import SCALE_DTYPE, KVCache, dequantize, quantize_int8
from o1jax.model.config import ModelConfig
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, think_texts

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
TOK = CharTokenizer()
B, TQ, S, H, KVH, D = 3, 2, 72, 4, 2, 32


def test_kv_dtype_is_validated_early():
  with pytest.raises(ValueError, match="kv_dtype must be one of"):
    ModelConfig(kv_dtype="fp8")
  with pytest.raises(ValueError, match="kv_dtype"):
    ModelConfig(kv_dtype="float32")


def _check_half_step(x64, q, scale):
  """|x - q * scale| <= scale / 2 (float64, from the stored int8 values and scales), plus the
  float32 rounding of x / scale; returns the per-row steps."""
  q64 = np.asarray(q).astype(np.float64)
  step = np.asarray(scale.astype(jnp.float32), np.float64)[..., None]
  err = np.abs(q64 * step - x64)
  assert np.all(err <= step * (0.5 + 1e-5)), float(np.max(err / np.maximum(step, 1e-300)))
  return step[..., 0]


def test_quantisation_error_is_at_most_half_a_step():
  rng = np.random.default_rng(0)
  # Rows of very different magnitudes, one all-zero row, outlier channels.
  x = rng.standard_normal((4, 5, 32)) * np.array([1e-3, 1.0, 30.0, 0.0])[:, None, None]
  x[1, :, 3] *= 20
  q, scale = quantize_int8(jnp.asarray(x, jnp.float32))
  assert q.dtype == jnp.int8 and scale.shape == (4, 5)
  assert int(jnp.max(jnp.abs(q.astype(jnp.int32)))) <= 127
  _check_half_step(x, q, scale)
  err = np.abs(np.asarray(dequantize(q, scale, jnp.float32), np.float64) - x)
  assert np.all(np.asarray(q)[3] == 0) and np.all(err[3] == 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_quantisation_holds_from_1e_minus_8_to_1e8(dtype):
  """Every half decade of absmax from 1e-8 to 1e8 (and on to 1e-30 and 1e30): no inf or
  NaN, at most half a step of error, and a step within 2^-8 of absmax / 127 (a scale
  blown up to hide the error would fail that). float16 scales failed above ~8.3e6 (an inf
  scale, NaN values) and below ~1e-4 (a subnormal scale: 3 steps of error at 1e-5, a zero
  scale below ~4e-6)."""
  rng = np.random.default_rng(1)
  decades = np.concatenate([np.arange(-8, 8.01, 0.5), [-30, -20, 20, 30]])
  x = rng.standard_normal((len(decades), 3, 32)) * 10.0 ** decades[:, None, None]
  x = np.asarray(jnp.asarray(x, dtype).astype(jnp.float32), np.float64)  # exactly as given
  q, scale = quantize_int8(jnp.asarray(x, dtype))
  deq = np.asarray(dequantize(q, scale, dtype).astype(jnp.float32))
  assert np.all(np.isfinite(deq)) and np.all(np.isfinite(np.asarray(scale, np.float64)))
  step = _check_half_step(x, q, scale)
  ideal = np.abs(x).max(-1) / 127
  np.testing.assert_array_less(np.abs(step / ideal - 1), 2.0 ** -8 + 1e-6)
  assert np.all(np.abs(np.asarray(q)).max(-1) >= 126)  # the whole int8 range is used


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_quantisation_is_finite_at_the_ends_of_the_dtype(dtype):
  """The largest, smallest normal and smallest subnormal magnitudes of the input dtype,
  zero, and mixed rows: scales and dequantised values are finite, within one step at the top
  (the scale is capped so that 127 * scale stays finite) and within absmax below."""
  info = jnp.finfo(dtype)
  ends = [float(info.max), float(info.smallest_normal), float(info.smallest_subnormal), 0.0]
  x = np.zeros((len(ends) + 1, 8))
  for i, a in enumerate(ends):
    x[i] = a * np.linspace(-1, 1, 8)
  x[-1, :4], x[-1, 4:] = float(info.max), float(info.smallest_subnormal)
  x = np.asarray(jnp.asarray(x, dtype).astype(jnp.float32), np.float64)
  q, scale = quantize_int8(jnp.asarray(x, dtype))
  for out in (dtype, jnp.float32):
    deq = np.asarray(dequantize(q, scale, out).astype(jnp.float32), np.float64)
    assert np.all(np.isfinite(deq)), (out, deq)
  step = np.asarray(scale.astype(jnp.float32), np.float64)[..., None]
  err = np.abs(np.asarray(q).astype(np.float64) * step - x)
  assert np.all(err[[0, 4]] <= step[[0, 4]])
  assert np.all(err[1:4] <= np.abs(x[1:4]).max(-1, keepdims=True))
  assert np.all(np.asarray(q)[3] == 0) and float(scale[3]) == 0


def _reference64(q, k, v, pos):
  with jax.enable_x64(True):
    f = jax.jit(lambda q, k, v: reference_attention(q, k, v, pos))
    return np.asarray(f(*(jnp.asarray(np.asarray(x, np.float64)) for x in (q, k, v))))


def _bound(q, k, v, qk, sk, qv, sv, pos):
  """Per (b, t, h) bound on |attention(float cache) - attention(int8 cache)|, from the
  quantisation step alone. With key errors |dk| <= s_k / 2 each score moves by at most
  E = d^-0.5 * sum|q| * max_j s_k,j / 2, which changes every softmax weight by a factor in
  [e^-2E, e^2E], so sum_j |dp_j| <= e^2E - 1; value errors add max_j s_v,j / 2:
  |d out| <= max|v| (e^2E - 1) + max s_v / 2 (max over the visible keys)."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  sk, sv = np.asarray(sk, np.float64), np.asarray(sv, np.float64)
  g = H // KVH
  out = np.zeros(q.shape[:3])
  for b in range(B):
    for t in range(TQ):
      n = int(pos[b, t]) + 1
      if n <= 0:
        continue
      for h in range(H):
        kv = h // g
        e = D ** -0.5 * np.abs(q[b, t, h]).sum() * sk[b, :n, kv].max() / 2
        out[b, t, h] = np.abs(v[b, :n, kv]).max() * np.expm1(2 * e) + sv[b, :n, kv].max() / 2
  return out


def _cache_case(seed):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, TQ, H, D))
  k = rng.standard_normal((B, S, KVH, D)) * rng.uniform(0.5, 2, (1, S, KVH, 1))
  k[..., 5] *= 4  # an outlier channel, as real keys have: it sets the step of the rest
  v = rng.standard_normal((B, S, KVH, D))
  pos = np.stack([np.array([40, 41]), np.array([S - 2, S - 1]), np.array([-1, -1])])
  q, k, v = (jnp.asarray(x, jnp.float32) for x in (q, k, v))
  (qk, sk), (qv, sv) = quantize_int8(k), quantize_int8(v)
  return q, k, v, qk, sk, qv, sv, jnp.asarray(pos, jnp.int32)


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_int8_cache_attention_matches_float_within_the_quantisation_bound(impl):
  q, k, v, qk, sk, qv, sv, pos = _cache_case(1)
  run = jax.jit(lambda q, qk, qv, pos, sk, sv: attend(q, qk, qv, pos, impl, from_cache=True,
                                                      k_scale=sk, v_scale=sv))
  got = np.asarray(run.lower(q, qk, qv, pos, sk, sv).compile(FAST)(q, qk, qv, pos, sk, sv),
                   np.float64)
  # 1. It computes attention over exactly the dequantised cache (int8 * scale).
  exact = _reference64(q, dequantize(qk, sk, jnp.float32), dequantize(qv, sv, jnp.float32), pos)
  assert np.abs(got - exact).max() <= 1e-5 * max(1.0, np.abs(exact).max())
  # 2. Against the float cache, within the bound the quantisation step implies.
  want = _reference64(q, k, v, pos)
  err = np.abs(got - want).max(-1)
  bound = _bound(q, k, v, qk, sk, qv, sv, pos)
  assert np.all(err <= bound + 1e-6), float((err - bound).max())
  assert np.all(got[2] == 0), "a row with no visible key outputs 0"
  rel = np.linalg.norm(got - want) / np.linalg.norm(want)
  print(f"{impl}: max err {err.max():.2e}, max bound {bound.max():.2e}, rel {rel:.2e}")
  # The bound is worst-case (all rounding errors aligned); the errors are random-signed,
  # so in practice they are far smaller: ~1% of the output norm here.
  assert rel < 3e-2


def test_pallas_int8_decode_on_a_mesh_matches_xla_and_gathers_nothing():
  """The scales travel into the per-shard kernel like the cache (batch and KV heads split)."""
  q, _, _, qk, sk, qv, sv, pos = _cache_case(2)
  q, qk, qv, sk, sv = (jnp.concatenate([x] * 2 + [x[:2]]) for x in (q, qk, qv, sk, sv))
  pos = jnp.concatenate([pos] * 2 + [pos[:2]])  # batch 8
  fn = lambda impl: (lambda q, qk, qv, sk, sv: attend(q, qk, qv, pos, impl, from_cache=True,
                                                      k_scale=sk, v_scale=sv))
  want = jax.jit(fn("xla"))(q, qk, qv, sk, sv)
  model = ModelConfig(num_heads=H, num_kv_heads=KVH, head_dim=D)
  for shape in ((8, 1, 1), (2, 1, 4)):
    mesh = parallel.make_mesh(shape)
    rules = parallel.rules_for(model, mesh)
    sh = lambda *axes: parallel.logical_sharding(mesh, axes, rules)
    q_sh, kv_sh = sh("batch", "length", "heads", "head_dim"), sh("batch", "cache_len",
                                                                   "kv_heads", "head_dim")
    s_sh = sh("batch", "cache_len", "kv_heads")
    with parallel.activate(mesh, model):
      step = jax.jit(fn("pallas"), in_shardings=(q_sh, kv_sh, kv_sh, s_sh, s_sh))
      step = step.lower(q, qk, qv, sk, sv).compile(FAST)
    np.testing.assert_allclose(step(q, qk, qv, sk, sv), want, rtol=1e-5, atol=1e-5)
    assert re.findall(r"= (\S+) all-gather\(", step.as_text()) == [], shape


def test_int8_cache_memory_and_layout(model):
  _, config = model
  f, i8 = KVCache.init(config, 2, 64), KVCache.init(config.replace(kv_dtype="int8"), 2, 64)
  assert i8.quantized and i8.k[0].dtype == jnp.int8 and i8.k_scale[0].shape == (2, 64,
                                                                               config.num_kv_heads)
  # head_dim 32, float32 compute: 128 bytes per token-head become 32 + a bfloat16 scale.
  assert f.nbytes / i8.nbytes == pytest.approx(4 * config.head_dim / (config.head_dim + 2))


def _problems():
  return [p for name in ("addition", "equation", "countdown") for d in (1, 2, 3, 4)
          for p in tasks.get_task(name).generate_problems(5, d, 2, split="eval")]


def test_think_with_int8_kv_matches_float_greedy_on_most_problems(model):
  """Measured: 24 of 24 problems give token-identical output (thinking and answer), greedy,
  on the embedded model (2026-11-29); the assertion leaves room for a flipped argmax."""
  params, model_config = model
  prompts = [p.prompt for p in _problems()]
  outs = {}
  for kv in (None, "int8"):
    config = make_think_config(model_config.replace(kv_dtype=kv), TOK, max_answer_tokens=12)
    outs[kv] = think_texts(params, TOK, prompts, config)
  same = [a.thinking == b.thinking and a.answer == b.answer
          for a, b in zip(outs[None], outs["int8"])]
  print(f"int8 KV: {sum(same)}/{len(same)} problems token-identical to the float cache")
  assert sum(same) >= 0.75 * len(same)
  assert max(t.thinking_tokens for t in outs["int8"]) >= 100  # long traces are in the test


def test_confidence_probes_run_on_an_int8_cache(model):
  """Probes write a trial answer into the (int8) cache past the position and read it back;
  with the same stop rules the int8 and float runs stop alike."""
  params, model_config = model
  prompts = [p.prompt for p in _problems()[::2]]
  outs = {}
  for kv in (None, "int8"):
    config = make_think_config(model_config.replace(kv_dtype=kv), TOK, max_answer_tokens=12,
                               stop_rules=("natural", "budget", "confidence"), probe_every=8)
    outs[kv] = think_texts(params, TOK, prompts, config)
  assert sum(t.num_probes for t in outs["int8"]) > 0
  assert any(t.stop_reason == "confidence" for t in outs["int8"])
  same = sum((a.stop_reason, a.thinking_tokens, a.answer) == (b.stop_reason, b.thinking_tokens,
                                                              b.answer)
             for a, b in zip(outs[None], outs["int8"]))
  print(f"probes on int8 KV: {same}/{len(prompts)} runs identical to the float cache")
  assert same >= 0.75 * len(prompts)


def test_serving_evicts_and_resumes_an_int8_slot_bit_exactly(model):
  from o1jax.serving import Engine, Request
  params, model_config = model
  config = make_think_config(model_config.replace(kv_dtype="int8"), TOK, max_answer_tokens=12)
  prompts = [p.prompt for p in tasks.get_task("countdown").generate_problems(33, 3, 2,
                                                                             split="eval")]

  def run(evict_after):
    engine = Engine(params, TOK, config, slots=2)
    for slot, p in enumerate(prompts):
      engine.insert(engine.prefill(Request(p, seed=slot)), slot)
    saved = None
    if evict_after is not None:
      engine.generate(evict_after)
      saved = engine.evict(0)
      engine.generate(5)
      engine.resume(jax.tree.map(np.copy, saved), 0)
    engine.generate(10_000)
    return engine.view(), saved, engine

  plain, _, _ = run(None)
  view, saved, engine = run(9)
  np.testing.assert_array_equal(view.tokens, plain.tokens)
  assert engine.kv_bytes_per_token() * config.cache_len == KVCache.init(
      config.model, 1, config.cache_len).nbytes
  assert saved.cache.k[0].dtype == np.int8 and saved.cache.k_scale[0].shape[:2] == (
      1, config.cache_len)


def test_tpu_variant_of_the_int8_decode_kernel():
  """The TPU (grid-driven) kernel reads [bk, KVH] scale blocks and picks its head's column:
  run in JAX's TPU interpreter (out-of-bounds blocks raise, uninitialised memory is NaN)
  against the float64 reference on the dequantised cache."""
  from jax.experimental.pallas import tpu as pltpu
  from o1jax.kernels import backend, decode_attention
  rng = np.random.default_rng(3)
  q = jnp.asarray(rng.standard_normal((2, 2, 4, 128)), jnp.float32)
  k, v = (jnp.asarray(rng.standard_normal((2, 256, 2, 128)), jnp.float32) for _ in range(2))
  (qk, sk), (qv, sv) = quantize_int8(k), quantize_int8(v)
  pos = jnp.asarray([[100, 101], [200, 201]], jnp.int32)
  interp = pltpu.InterpretParams(uninitialized_memory="nan", random_seed=3)
  with backend.override_target("tpu", interp):
    run = jax.jit(lambda q, qk, qv, sk, sv: decode_attention(
        q, qk, qv, pos, block_k=128, num_splits=2, k_scale=sk, v_scale=sv))
    got = run.lower(q, qk, qv, sk, sv).compile(FAST)(q, qk, qv, sk, sv)
  want = _reference64(q, dequantize(qk, sk, jnp.float32), dequantize(qv, sv, jnp.float32), pos)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("platform,lowering", [("gpu", "cuda"), ("tpu", "tpu")])
def test_int8_decode_kernel_lowers_for_accelerators(platform, lowering):
  """Pallas' own lowering and block-shape checks for Triton and Mosaic (not their
  compilers): an int8 cache with its SCALE_DTYPE scales, bf16 queries."""
  from o1jax.kernels import backend, decode_attention
  sds = lambda *s, dt=jnp.bfloat16: jax.ShapeDtypeStruct(s, dt)
  b, h, kvh, d, s = 2, 8, 2, 128, 4096
  args = (sds(b, 4, h, d), sds(b, s, kvh, d, dt=jnp.int8), sds(b, s, kvh, d, dt=jnp.int8),
          sds(b, 4, dt=jnp.int32), sds(b, s, kvh, dt=SCALE_DTYPE),
          sds(b, s, kvh, dt=SCALE_DTYPE))
  fn = lambda q, k, v, p, ks, vs: decode_attention(q, k, v, p, k_scale=ks, v_scale=vs)
  with backend.override_target(platform, False):
    text = jax.jit(fn).trace(*args).lower(lowering_platforms=(lowering,)).as_text()
  assert text.count("@tpu_custom_call" if platform == "tpu" else "@__gpu$xla.gpu.triton") == 1
