"""The decoder against independent references: step-by-step decoding vs one full forward,
RoPE and attention vs plain-numpy float64 code, and clear errors for bad configs."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from o1jax.model import KVCache, ModelConfig, RopeScaling, init_params
from o1jax.model import forward as _eager_forward
from o1jax.model.attention import single_query_attention, xla_attention
from o1jax.model.rope import apply_rope, inverse_frequencies

# Jitted: op-by-op dispatch compiled every op again for each new shape (minutes per test).
forward = jax.jit(_eager_forward, static_argnames=("config",))

CONFIGS = {
    "gqa": ModelConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                       mlp_dim=128, max_seq_len=64),
    "mha_qwen": ModelConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16,
                            mlp_dim=128, max_seq_len=64, qkv_bias=True, tie_embeddings=False),
    "mqa_qknorm_llama3": ModelConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=1,
                                     head_dim=16, mlp_dim=96, max_seq_len=64, qk_norm=True,
                                     rope_scaling=RopeScaling(factor=8.0,
                                                              original_max_position_embeddings=16)),
}


def _rng():
  seed = int(np.random.SeedSequence().entropy % 2**31)
  print("seed", seed)
  return np.random.default_rng(seed), seed


@pytest.mark.parametrize("name", list(CONFIGS))
def test_cached_decoding_equals_full_forward(name):
  config = CONFIGS[name]
  rng, seed = _rng()
  params = init_params(config, jax.random.key(seed))
  # Biases start at zero; give them values so the test exercises them.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.1 * rng.standard_normal(x.shape).astype(x.dtype)
      if "bias" in jax.tree_util.keystr(p) else x, params)
  batch, total, prefix = 3, 24, 9
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (batch, total)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(total), (batch, total))
  full, _, _ = forward(params, tokens, positions, None, config)

  cache = KVCache.init(config, batch, 32)
  logits, _, cache = forward(params, tokens[:, :prefix], positions[:, :prefix], cache, config)
  steps = [logits]
  for t in range(prefix, total):
    logits, _, cache = forward(params, tokens[:, t:t + 1], positions[:, t:t + 1], cache, config)
    steps.append(logits)
  stepwise = jnp.concatenate(steps, axis=1)
  assert np.max(np.abs(np.asarray(stepwise) - np.asarray(full))) <= 1e-5


def test_right_padded_rows_match_unpadded():
  config = CONFIGS["gqa"]
  rng, seed = _rng()
  params = init_params(config, jax.random.key(seed))
  short = jnp.asarray(rng.integers(4, 100, (1, 7)), jnp.int32)
  long = jnp.asarray(rng.integers(4, 100, (1, 12)), jnp.int32)
  padded = jnp.concatenate([jnp.pad(short, ((0, 0), (0, 5))), long], axis=0)
  positions = jnp.where(jnp.arange(12)[None] < jnp.array([[7], [12]]), jnp.arange(12), -1)
  batched, _, _ = forward(params, padded, positions, None, config)
  alone, _, _ = forward(params, short, jnp.arange(7)[None], None, config)
  np.testing.assert_allclose(batched[0, :7], alone[0], atol=1e-5)


@pytest.mark.parametrize("name", ["gqa", "mha_qwen"])
def test_packed_rows_match_examples_run_alone(name):
  """Training rows that pack examples end to end (segment ids, positions restarting at 0,
  padding as segment 0) give each example exactly the logits it has alone."""
  config = CONFIGS[name]
  rng, seed = _rng()
  params = init_params(config, jax.random.key(seed))
  # Rows of 150 tokens: past the attention's 64-query blocks, examples crossing their edges.
  width = 150
  rows = [[int(n) for n in rng.integers(10, 50, 3)] for _ in range(2)]  # 3 examples a row
  tokens = np.zeros((2, width), np.int32)
  positions = np.zeros((2, width), np.int32)
  segments = np.zeros((2, width), np.int32)
  examples = []
  for r, lengths in enumerate(rows):
    start = 0
    for s, n in enumerate(lengths, 1):
      ids = rng.integers(4, config.vocab_size, n)
      tokens[r, start:start + n], positions[r, start:start + n] = ids, np.arange(n)
      segments[r, start:start + n] = s
      examples.append((r, start, ids))
      start += n
  packed, _, _ = forward(params, jnp.asarray(tokens), jnp.asarray(positions), None, config,
                         segment_ids=jnp.asarray(segments))
  for r, start, ids in examples:
    alone, _, _ = forward(params, jnp.asarray(ids)[None], jnp.arange(len(ids))[None], None,
                          config)
    np.testing.assert_allclose(packed[r, start:start + len(ids)], alone[0], atol=1e-5)


def _rope_reference(x, positions, inv_freq):
  x = np.asarray(x, np.float64)
  half = x.shape[-1] // 2
  angles = np.asarray(positions, np.float64)[..., None] * inv_freq  # [B, T, D/2]
  cos, sin = np.cos(angles)[:, :, None], np.sin(angles)[:, :, None]
  out = np.empty_like(x)
  # Rotate each pair (x_i, x_{i+half}) by its angle: the rotate-half convention.
  out[..., :half] = x[..., :half] * cos - x[..., half:] * sin
  out[..., half:] = x[..., half:] * cos + x[..., :half] * sin
  return out


@pytest.mark.parametrize("scaling", [None, RopeScaling(factor=8.0, low_freq_factor=1.0,
                                                       high_freq_factor=4.0,
                                                       original_max_position_embeddings=32)])
def test_rope_against_float64_reference(scaling):
  rng, _ = _rng()
  x = rng.standard_normal((2, 5, 3, 16)).astype(np.float32)
  positions = rng.integers(0, 500, (2, 5))
  inv = inverse_frequencies(16, 10_000.0, scaling)
  if scaling is None:
    np.testing.assert_allclose(inv, 10_000.0 ** (-np.arange(0, 16, 2) / 16), rtol=1e-12)
  else:  # the highest frequency is kept, the lowest divided by the factor
    base = 10_000.0 ** (-np.arange(0, 16, 2) / 16)
    assert inv[0] == base[0] and np.isclose(inv[-1], base[-1] / 8.0)
  got = apply_rope(jnp.asarray(x), jnp.asarray(positions), inv)
  np.testing.assert_allclose(got, _rope_reference(x, positions, inv), atol=2e-5)
  # Rotations preserve norms and relative positions: <R(p)q, R(k)k> depends on p - k only.
  np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def _attention_reference(q, k, v, q_positions):
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, t, h, d = q.shape
  group = h // k.shape[2]
  out = np.zeros((b, t, h, d))
  for bi in range(b):
    for hi in range(h):
      kh = hi // group
      for ti in range(t):
        visible = np.arange(k.shape[1]) <= q_positions[bi, ti]
        if not visible.any():
          continue
        s = k[bi, visible, kh] @ q[bi, ti, hi] / np.sqrt(d)
        p = np.exp(s - s.max())
        out[bi, ti, hi] = (p / p.sum()) @ v[bi, visible, kh]
  return out


def test_attention_against_loop_reference():
  rng, _ = _rng()
  q = rng.standard_normal((2, 5, 4, 8)).astype(np.float32)
  k = rng.standard_normal((2, 9, 2, 8)).astype(np.float32)
  v = rng.standard_normal((2, 9, 2, 8)).astype(np.float32)
  q_positions = np.array([[0, 3, 4, 8, -1], [2, 2, 5, 6, 7]])  # -1: a fully padded row
  got = np.asarray(xla_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                 jnp.asarray(q_positions)))
  np.testing.assert_allclose(got, _attention_reference(q, k, v, q_positions), atol=1e-5)
  assert np.all(got[0, 4] == 0.0)


def test_single_query_attention_against_loop_reference():
  # The decode path (one query per row against the cache, no layout change of the cache):
  # rows at the first slot, mid-cache, the last slot, and a finished row (-1: output 0).
  rng, _ = _rng()
  q = rng.standard_normal((4, 1, 6, 8)).astype(np.float32)
  k = rng.standard_normal((4, 9, 2, 8)).astype(np.float32)
  v = rng.standard_normal((4, 9, 2, 8)).astype(np.float32)
  q_positions = np.array([[0], [4], [8], [-1]])
  got = np.asarray(single_query_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                          jnp.asarray(q_positions)))
  np.testing.assert_allclose(got, _attention_reference(q, k, v, q_positions), atol=1e-5)
  assert np.all(got[3] == 0.0)


def test_causal_query_blocks_are_exact():
  """Blocked causal attention (each query block against its key prefix) equals the loop
  reference, outputs and gradients, on packed rows with padding and blocks that cut
  examples."""
  rng, _ = _rng()
  t = 11
  q, k, v = (jnp.asarray(rng.standard_normal(s).astype(np.float32))
             for s in ((2, t, 4, 8), (2, t, 2, 8), (2, t, 2, 8)))
  segments = np.array([[1, 1, 1, 2, 2, 2, 2, 2, 3, 0, 0], [1] * 5 + [2] * 6])
  q_positions = np.where(segments > 0, np.arange(t), -1)
  args = (jnp.asarray(q_positions), None, jnp.asarray(segments))
  blocked = jax.jit(lambda q, k, v: xla_attention(q, k, v, *args, causal_query_block=4))(q, k, v)
  want = np.zeros((2, t, 4, 8))
  for r in range(2):  # each example alone against the loop reference
    for seg in set(segments[r]) - {0}:
      idx = np.flatnonzero(segments[r] == seg)
      pos = np.arange(len(idx))[None]
      want[r, idx] = _attention_reference(q[r:r + 1, idx], k[r:r + 1, idx], v[r:r + 1, idx],
                                          pos)[0]
  np.testing.assert_allclose(blocked, want, atol=1e-5)

  def loss(block):
    return lambda q, k, v: jnp.sum(xla_attention(q, k, v, *args, causal_query_block=block) ** 2)

  for g_blocked, g_full in zip(jax.jit(jax.grad(loss(4), (0, 1, 2)))(q, k, v),
                               jax.jit(jax.grad(loss(None), (0, 1, 2)))(q, k, v)):
    np.testing.assert_allclose(g_blocked, g_full, atol=1e-5)


def test_attention_gradients_against_reference():
  """The head-major XLA attention has the plain-jnp reference's gradients, and a query with
  no visible key (padding) gets zero output and zero gradient, never NaN."""
  from o1jax.kernels.reference import reference_attention
  rng, _ = _rng()
  q, k, v = (jnp.asarray(rng.standard_normal(s).astype(np.float32))
             for s in ((2, 6, 4, 8), (2, 6, 2, 8), (2, 6, 2, 8)))
  q_positions = jnp.asarray([[0, 1, 2, 3, -1, -1], [0, 1, 2, 3, 4, 5]])
  cotangent = jnp.asarray(rng.standard_normal((2, 6, 4, 8)).astype(np.float32))

  def loss(fn):
    return lambda q, k, v: (fn(q, k, v, q_positions) * cotangent).sum()

  got = jax.grad(loss(xla_attention), argnums=(0, 1, 2))(q, k, v)
  want = jax.grad(loss(reference_attention), argnums=(0, 1, 2))(q, k, v)
  for g, w in zip(got, want):
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, w, atol=1e-5)
  assert np.all(got[0][0, 4:] == 0.0)


@pytest.mark.parametrize("changes, message", [
    (dict(num_heads=6, num_kv_heads=4), "multiple of num_kv_heads"),
    (dict(head_dim=15), "head_dim must be even"),
    (dict(embed_dim=0), "embed_dim must be a positive integer"),
    (dict(dtype="float8"), "dtype must be one of"),
    (dict(attention_impl="flash"), "attention_impl must be one of"),
])
def test_bad_configs_name_the_problem(changes, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig(**changes)


def test_unknown_config_field_is_named():
  with pytest.raises(ValueError, match="unknown ModelConfig fields \\['hidden_size'\\]"):
    ModelConfig.from_dict({"hidden_size": 3})
