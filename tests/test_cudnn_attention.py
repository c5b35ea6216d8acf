"""attention_impl="cudnn": config-time dtype check, and the structure (not a dense mask)
handed to cuDNN. No GPU here: the model's `jax.nn.dot_product_attention` call is recorded
and run with implementation="xla" (same arguments, same semantics) against our XLA path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax.model import attention
from o1jax.model.config import ModelConfig


def test_cudnn_needs_a_16_bit_dtype_at_config_time():
  with pytest.raises(ValueError, match=r"attention_impl='cudnn' needs dtype bfloat16"):
    ModelConfig(attention_impl="cudnn")  # float32, the default
  ModelConfig(attention_impl="cudnn", dtype="bfloat16")


@pytest.fixture
def calls(monkeypatch):
  """Records the keyword arguments of every jax.nn.dot_product_attention call, and runs it
  on XLA (cuDNN needs a GPU)."""
  seen, real = [], jax.nn.dot_product_attention

  def spy(*args, **kwargs):
    assert kwargs.get("implementation") == "cudnn"
    seen.append(kwargs)
    return real(*args, **dict(kwargs, implementation="xla"))
  monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
  return seen


def _qkv(rng, b, t, s, dtype=jnp.float32):
  mk = lambda *shape: jnp.asarray(rng.standard_normal(shape), dtype)
  return mk(b, t, 4, 8), mk(b, s, 2, 8), mk(b, s, 2, 8)


def test_training_passes_causal_and_lengths_not_a_mask(calls):
  rng = np.random.default_rng(0)
  q, k, v = _qkv(rng, 3, 12, 12)
  ar = np.arange(12)
  pos = jnp.asarray(np.stack([ar, np.where(ar < 7, ar, -1), np.full(12, -1)]), jnp.int32)
  ct = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

  @jax.jit  # one compilation instead of op-by-op dispatch of the backward
  def run_both(q, k, v, ct):
    def run(fn):
      out, vjp = jax.vjp(fn, q, k, v)
      return (out, *vjp(ct))
    return (run(lambda q, k, v: attention.attend(q, k, v, pos, "cudnn")),
            run(lambda q, k, v: attention.xla_attention(q, k, v, pos)))
  got, want = run_both(q, k, v, ct)
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)
  assert calls[0].get("mask") is None and calls[0].get("bias") is None
  assert calls[0]["is_causal"] is True


def test_decode_passes_key_lengths_and_packed_rows_keep_the_mask(calls):
  rng = np.random.default_rng(1)
  q, k, v = _qkv(rng, 3, 1, 20)
  pos = jnp.asarray([[5], [19], [-1]], jnp.int32)  # the last slot is empty
  both = jax.jit(lambda q, k, v: (attention.attend(q, k, v, pos, "cudnn", from_cache=True),
                                  attention.xla_attention(q, k, v, pos)))
  np.testing.assert_allclose(*both(q, k, v), rtol=1e-5, atol=1e-6)
  assert calls[-1].get("mask") is None and not calls[-1].get("is_causal")
  q, k, v = _qkv(rng, 2, 10, 10)
  pos = jnp.asarray([list(range(9)) + [-1]] * 2, jnp.int32)  # mask positions are indices
  seg = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 3, 3, 0]] * 2, jnp.int32)
  both = jax.jit(lambda q, k, v: (attention.attend(q, k, v, pos, "cudnn", segment_ids=seg),
                                  attention.xla_attention(q, k, v, pos, segment_ids=seg)))
  np.testing.assert_allclose(*both(q, k, v), rtol=1e-5, atol=1e-6)
  assert calls[-1]["mask"].shape == (2, 1, 10, 10)
