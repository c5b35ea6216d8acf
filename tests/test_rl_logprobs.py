"""GRPO's token log-probs without [B, L, V] logits (o1jax/rl/logprobs.py).

The reference is float64 NumPy: the plain forward's final hidden states, unembedded,
divided by the temperature, EOS banned where drawn while thinking, log-softmaxed and
gathered, all in float64. Tiny random models (tied and untied unembedding, Qwen3 q/k norm).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax.model.config import ModelConfig
from o1jax.model.transformer import forward, init_params
from o1jax.rl import logprobs as lp

EOS = (5, 7)
T = 1.3


def _model(tie: bool, vocab: int = 97):
  c = ModelConfig(vocab_size=vocab, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, qk_norm=True, tie_embeddings=tie, max_seq_len=64)
  return init_params(c, jax.random.key(1)), c


def _batch(rng, b=3, length=37, vocab=97):
  tokens = rng.integers(0, vocab, (b, length)).astype(np.int32)
  ctx = rng.random((b, length - 1)) > 0.5
  nxt = tokens[:, 1:]
  nxt[ctx & np.isin(nxt, EOS)] = 9           # the sampler never draws EOS while thinking
  ctx[:, :4] = False
  nxt[:, :2] = EOS[0]                         # ... but may outside it
  return tokens, ctx


def _np_logprobs(params, tokens, ctx, c):
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  hidden = np.asarray(forward(params, jnp.asarray(tokens), jnp.asarray(positions), None, c)[1],
                      np.float64)[:, :-1]
  w = np.asarray(params["embedding"] if c.tie_embeddings else params["lm_head"], np.float64)
  out = np.zeros(ctx.shape)
  for b in range(tokens.shape[0]):
    for t in range(ctx.shape[1]):
      logits = (w @ hidden[b, t] if c.tie_embeddings else hidden[b, t] @ w) / T
      if ctx[b, t]:
        logits[list(EOS)] = -np.inf
      top = logits.max()
      out[b, t] = logits[tokens[b, t + 1]] - top - np.log(np.exp(logits - top).sum())
  return out


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_logprobs_match_float64_and_the_full_path(tie):
  params, c = _model(tie)
  tokens, ctx = _batch(np.random.default_rng(0))
  want = _np_logprobs(params, tokens, ctx, c)
  full = np.asarray(lp.token_logprobs_full(params, jnp.asarray(tokens), jnp.asarray(ctx), c, T,
                                           EOS))
  np.testing.assert_allclose(full, want, atol=1e-5, rtol=0)
  for chunk in (8, 36, 100):                # ragged last block, one block, chunk > length
    for remat in (True, False):
      got = np.asarray(lp.token_logprobs(params, jnp.asarray(tokens), jnp.asarray(ctx), c, T,
                                         EOS, chunk=chunk, remat=remat))
      np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
      np.testing.assert_allclose(got, full, atol=1e-5, rtol=0)
  # The data exercise the ban: without it the reference's values move well past tolerance.
  unbanned = np.asarray(lp.token_logprobs(params, jnp.asarray(tokens),
                                          jnp.zeros_like(jnp.asarray(ctx)), c, T, EOS))
  assert np.abs(unbanned - want).max() > 1e-3


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_gradients_equal_the_full_path_and_float64(tie):
  """d/dtheta sum_t w_t log pi_t: every parameter, chunked + remat against the full path;
  the unembedding's gradient also against float64 NumPy (softmax - one-hot, by hand)."""
  params, c = _model(tie)
  rng = np.random.default_rng(1)
  tokens, ctx = _batch(rng)
  w = rng.normal(size=ctx.shape).astype(np.float32)
  args = (jnp.asarray(tokens), jnp.asarray(ctx), c, T, EOS)
  full = jax.grad(lambda p: (lp.token_logprobs_full(p, *args) * w).sum())(params)
  chunked = jax.grad(lambda p: (lp.token_logprobs(p, *args, chunk=8) * w).sum())(params)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(full), jax.tree.leaves(chunked)):
    a, b = np.asarray(a), np.asarray(b)
    assert np.abs(a).max() > 0, path
    np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max(), rtol=0, err_msg=str(path))
  if not tie:  # lm_head's gradient: sum_bt w (onehot - p) h^T / T, in float64
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    h = np.asarray(forward(params, jnp.asarray(tokens), jnp.asarray(positions), None, c)[1],
                   np.float64)[:, :-1]
    head = np.asarray(params["lm_head"], np.float64)
    want = np.zeros_like(head)
    for b in range(tokens.shape[0]):
      for t in range(ctx.shape[1]):
        logits = h[b, t] @ head / T
        if ctx[b, t]:
          logits[list(EOS)] = -np.inf
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p[tokens[b, t + 1]] -= 1.0
        want -= w[b, t] * np.outer(h[b, t], p) / T
    got = np.asarray(chunked["lm_head"])
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=0)


def test_chunking_keeps_the_logits_out_of_memory():
  """Compiled (not run) value-and-grad of the log-probs: the full path's temporaries hold
  the [B, L, V] float32 logits (twice over: forward and backward); the chunked path's stay
  under half of one copy (measured: 277 MB vs 21 MB against 67 MB of logits)."""
  params, c = _model(True, vocab=32768)
  b, length = 2, 257
  tokens = jax.ShapeDtypeStruct((b, length), jnp.int32)
  ctx = jax.ShapeDtypeStruct((b, length - 1), jnp.bool_)
  logits_bytes = b * (length - 1) * c.vocab_size * 4

  def temp_bytes(fn):
    loss = lambda p, tok, cx: fn(p, tok, cx, c, T, EOS).sum()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, tokens, ctx).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  full = temp_bytes(lp.token_logprobs_full)
  chunked = temp_bytes(lambda *a: lp.token_logprobs(*a, chunk=16))
  assert full >= 2 * logits_bytes, (full, logits_bytes)
  assert chunked < logits_bytes / 2, (chunked, logits_bytes)


def test_trimmed_batches_give_the_same_logprobs():
  """packed_width keeps every trained position (and the token it predicts), rounded up to
  the bucket; the trimmed rows' log-probs there equal the full-width rows' (causal)."""
  params, c = _model(True)
  tokens, ctx = _batch(np.random.default_rng(2), b=3, length=60)
  mask = np.zeros(ctx.shape, np.float32)
  mask[0, 3:20], mask[1, 5:26], mask[2, 2:9] = 1, 1, 1     # last trained position 25
  assert lp.packed_width(mask, 8, 60) == 32                 # 27 tokens needed, to 8s
  assert lp.packed_width(mask, 64, 60) == 60                # never past the full width
  assert lp.packed_width(np.zeros_like(mask), 8, 60) == 8
  width = lp.packed_width(mask, 8, 60)
  full = np.asarray(lp.token_logprobs(params, jnp.asarray(tokens), jnp.asarray(ctx), c, T, EOS))
  cut = np.asarray(lp.token_logprobs(params, jnp.asarray(tokens[:, :width]),
                                     jnp.asarray(ctx[:, :width - 1]), c, T, EOS))
  on = mask[:, :width - 1] > 0
  np.testing.assert_allclose(cut[on], full[:, :width - 1][on], atol=1e-6, rtol=0)
