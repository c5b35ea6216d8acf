"""Attention and the KV cache on a mesh: Pallas kernels per shard, no gathers.

Runs on the 8 simulated CPU devices of conftest.py, with the meshes of test_parallel.py.
The Pallas kernels run in interpret mode here; what is checked is the partitioning around
them: XLA's partitioner cannot split a Pallas call (on TPU it refuses, on GPU it all-gathers
q, k, v and, when decoding, the whole KV cache onto every device), so `attend` runs the
kernels inside `shard_map` and the compiled programs must hold no all-gather at all.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax import parallel
from o1jax.kernels import backend
from o1jax.model import cache as cache_lib
from o1jax.model.attention import attend
from o1jax.model.cache import KVCache
from o1jax.model.config import ModelConfig
from o1jax.model.transformer import forward, init_params

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# test_parallel.py's model: 4 query heads, 2 KV heads (replicated under tensor=4).
MODEL = ModelConfig(vocab_size=128, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, max_seq_len=48)
MESHES = [(8, 1, 1), (2, 1, 4), (1, 8, 1)]
B, T, S = 8, 24, 40  # batch, training length, cache length


def _all_gathers(compiled) -> list[str]:
  return re.findall(r"= (\S+) all-gather\(", compiled.as_text())


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  mk = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  pos = np.broadcast_to(np.arange(T), (B, T)).copy()
  pos[1, 15:] = -1  # a right-padded row
  train = (mk(B, T, 4, 8), mk(B, T, 2, 8), mk(B, T, 2, 8), mk(B, T, 4, 8))
  decode = (mk(B, 1, 4, 8), mk(B, S, 2, 8), mk(B, S, 2, 8))
  return dict(train=train, decode=decode, pos=jnp.asarray(pos, jnp.int32),
              decode_pos=jnp.asarray(rng.integers(0, S, (B, 1)), jnp.int32))


@pytest.fixture(scope="module")
def params():  # jitted: op-by-op initialisation costs seconds here
  return jax.jit(init_params, static_argnums=0)(MODEL, jax.random.key(0))


def _train_fn(impl, pos):
  def fn(q, k, v, ct):  # output and the three input gradients
    out, vjp = jax.vjp(lambda q, k, v: attend(q, k, v, pos, impl), q, k, v)
    return (out, *vjp(ct))
  return fn


def _decode_fn(impl, pos):
  return lambda q, k, v: attend(q, k, v, pos, impl, from_cache=True)


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_pallas_attention_runs_per_shard(shape, inputs):
  """pallas == xla (flash forward + gradients, decode against a cache), batch and heads
  sharded as the model shards them, and not one all-gather in either program."""
  want_train = jax.jit(_train_fn("xla", inputs["pos"]))(*inputs["train"])
  want_decode = jax.jit(_decode_fn("xla", inputs["decode_pos"]))(*inputs["decode"])
  mesh = parallel.make_mesh(shape)
  rules = parallel.rules_for(MODEL, mesh)
  q_sh = parallel.logical_sharding(mesh, ("batch", "length", "heads", "head_dim"), rules)
  kv_sh = parallel.logical_sharding(mesh, ("batch", "length", "kv_heads", "head_dim"), rules)
  with parallel.activate(mesh, MODEL):
    train = jax.jit(_train_fn("pallas", inputs["pos"]), in_shardings=(q_sh, kv_sh, kv_sh, q_sh))
    train = train.lower(*inputs["train"]).compile(FAST)
    decode = jax.jit(_decode_fn("pallas", inputs["decode_pos"]),
                     in_shardings=(q_sh, kv_sh, kv_sh)).lower(*inputs["decode"]).compile(FAST)
  for name, got, want in zip(("out", "dq", "dk", "dv"), train(*inputs["train"]), want_train):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
  np.testing.assert_allclose(decode(*inputs["decode"]), want_decode, rtol=1e-5, atol=1e-5)
  assert _all_gathers(train) == [], "q/k/v gathered for the flash kernel"
  assert _all_gathers(decode) == [], "KV cache gathered for the decode kernel"


def test_sharded_mosaic_kernels_lower_inside_shard_map():
  """On TPU, Mosaic refuses to be partitioned automatically: lowered for TPU under a mesh,
  every kernel call must sit inside the shard_map's manual region."""
  sds = lambda *s, dt=jnp.bfloat16: jax.ShapeDtypeStruct(s, dt)
  q, kv = sds(B, 256, 4, 64), sds(B, 256, 2, 64)  # head_dim 64: the TPU kernels' minimum
  pos = jnp.broadcast_to(jnp.arange(256, dtype=jnp.int32), (B, 256))
  loss = lambda q, k, v: attend(q, k, v, pos, "pallas").astype(jnp.float32).sum()
  with parallel.activate(parallel.make_mesh((2, 1, 4)), MODEL):
    with backend.override_target("tpu", False):
      text = jax.jit(jax.grad(loss, (0, 1, 2))).trace(q, kv, kv).lower(
          lowering_platforms=("tpu",)).as_text()
  assert text.count("@tpu_custom_call") == 3  # forward, dq, dk/dv
  assert "manual_computation" in text or "SPMDFullToShardShape" in text


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_kv_write_stays_on_its_shard(shape):
  """Writing new K/V into a batch- (and head-) sharded cache moves no data between devices
  (a scatter indexed by (row, position) pairs made XLA all-gather K/V and indices)."""
  rng = np.random.default_rng(1)
  mk = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
  cache_k, cache_v, k, v = mk(B, S, 2, 8), mk(B, S, 2, 8), mk(B, 3, 2, 8), mk(B, 3, 2, 8)
  positions = jnp.asarray(rng.integers(-1, S, (B, 3)), jnp.int32)  # -1: dropped
  want = cache_lib.write_kv(cache_k, cache_v, k, v, positions)
  mesh = parallel.make_mesh(shape)
  rules = parallel.rules_for(MODEL, mesh)
  c_sh = parallel.logical_sharding(mesh, cache_lib.CACHE_AXES, rules)
  p_sh = parallel.logical_sharding(mesh, ("batch", "length"), rules)
  with parallel.activate(mesh, MODEL):
    write = jax.jit(cache_lib.write_kv, in_shardings=(c_sh,) * 4 + (p_sh,),
                    out_shardings=(c_sh, c_sh)).lower(cache_k, cache_v, k, v, positions)
    write = write.compile(FAST)
  for got, w in zip(write(cache_k, cache_v, k, v, positions), want):
    np.testing.assert_array_equal(got, w)
  assert _all_gathers(write) == []


def test_model_decode_step_on_a_mesh_gathers_nothing(params):
  """A whole decode step (cache write, Pallas decode attention) of the model, data parallel
  over 8 devices: its only cross-device traffic would be a bug."""
  config = MODEL.replace(attention_impl="pallas")
  mesh = parallel.make_mesh((8, 1, 1))
  tokens = jnp.arange(B, dtype=jnp.int32)[:, None]
  positions = jnp.full((B, 1), 5, jnp.int32)
  with parallel.activate(mesh, config):
    params = parallel.shard_params(params, config, mesh)
    cache = KVCache.init(config, B, S)
    step = jax.jit(lambda p, t, pos, c: forward(p, t, pos, c, config)[::2])
    step = step.lower(params, *parallel.put_batch((tokens, positions), mesh), cache).compile(FAST)
  assert _all_gathers(step) == []


def test_pallas_cache_is_allocated_in_whole_blocks(params):
  """A cache_len no decode block divides made the Pallas decode pad (copy) the whole cache
  every layer and step; the cache is now allocated rounded up, its usable length kept."""
  config = MODEL.replace(attention_impl="pallas")
  cache = KVCache.init(config, 2, 100)
  assert cache.k[0].shape[1] == 128 and cache.cache_len == 100
  assert KVCache.init(MODEL, 2, 100).k[0].shape[1] == 100  # the XLA path needs no blocks
  tokens, positions = jnp.asarray([[3], [4]], jnp.int32), jnp.asarray([[7], [99]], jnp.int32)
  step = lambda c: forward(params, tokens, positions, c, config)
  jaxpr = jax.make_jaxpr(step)(cache)
  pads = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "pad"
          and e.outvars[0].aval.ndim == 4 and e.outvars[0].aval.shape[1] >= 100]
  assert pads == [], "the decode step pads (copies) the KV cache"
  logits, _, new_cache = jax.jit(step).lower(cache).compile(FAST)(cache)
  assert new_cache.cache_len == 100
  xla_cache = KVCache.init(MODEL, 2, 100)
  want, _, _ = jax.jit(lambda c: forward(params, tokens, positions, c, MODEL)).lower(
      xla_cache).compile(FAST)(xla_cache)
  np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)


def test_think_launch_decodes_on_a_mesh():
  """`launch/think.py --mesh_shape` splits the prompts over data and the heads over tensor
  of this host's devices (8 simulated), with the same tokens as one device."""
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu", PYTHONPATH=repo)
  run = lambda shape: subprocess.run(
      [sys.executable, "launch/think.py", "--prompt=12+34=", "--prompt=5+6=", "--prompt=99+1=",
       "--json", "--show_thinking", f"--mesh_shape={shape}"],
      capture_output=True, text=True, timeout=300, cwd=repo, env=env)
  one, sharded = run("1,1,1"), run("-1,1,2")
  assert one.returncode == 0 and sharded.returncode == 0, one.stderr + sharded.stderr
  assert "mesh data=4 fsdp=1 tensor=2" in sharded.stderr
  assert sharded.stdout == one.stdout and one.stdout.count("\n") == 3
  bad = run("3,1,1")
  assert bad.returncode != 0 and "one of 1, 2, 4, 8" in bad.stderr
