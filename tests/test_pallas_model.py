"""attention_impl="pallas" (interpret mode on CPU) gives the model the same outputs as "xla":
the training loss and its gradient, prefill plus cached decoding, and the thinking loop."""

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model import ModelConfig, forward, init_params
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, prepare_inputs, think
from o1jax.training.trainer import loss_fn

XLA = ModelConfig(embed_dim=64, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=16,
                  mlp_dim=128, max_seq_len=96)
PALLAS = XLA.replace(attention_impl="pallas")


def _batch(rng, batch=2, length=40):
  inputs = rng.integers(4, 100, (batch, length)).astype(np.int32)
  mask = (np.arange(length)[None] < np.array([[length], [length - 13]])).astype(np.float32)
  return {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(np.roll(inputs, -1, 1)),
          "loss_mask": jnp.asarray(mask)}


def test_training_loss_and_gradient_match():
  rng = np.random.default_rng(np.random.SeedSequence().entropy % 2**32)
  params = init_params(XLA, jax.random.key(int(rng.integers(1 << 30))))
  batch = _batch(rng)
  loss_x, grad_x = jax.value_and_grad(loss_fn)(params, batch, XLA)
  loss_p, grad_p = jax.value_and_grad(loss_fn)(params, batch, PALLAS)
  np.testing.assert_allclose(loss_p, loss_x, rtol=1e-5)
  for gx, gp in zip(jax.tree.leaves(grad_x), jax.tree.leaves(grad_p)):
    np.testing.assert_allclose(gp, gx, atol=1e-5, rtol=1e-4)


def test_thinking_loop_matches():
  rng = np.random.default_rng(np.random.SeedSequence().entropy % 2**32)
  params = init_params(XLA, jax.random.key(int(rng.integers(1 << 30))))
  tok = CharTokenizer()
  prompts, budgets = ["12+34=", "3 5 2 to 16", "2x+5=13"], [5, 20, 40]
  results = []
  for config in (XLA, PALLAS):
    tc = make_think_config(config, tok, 96, max_answer_tokens=8)
    inputs = prepare_inputs(tok, prompts, tc, budgets)
    results.append(jax.tree.map(np.asarray, think(params, inputs, tc, jax.random.key(0))))
  xla, pallas = results
  np.testing.assert_array_equal(pallas.tokens, xla.tokens)
  np.testing.assert_array_equal(pallas.thinking_tokens, xla.thinking_tokens)


def test_prefill_logits_match():
  rng = np.random.default_rng(np.random.SeedSequence().entropy % 2**32)
  params = init_params(XLA, jax.random.key(1))
  tokens = jnp.asarray(rng.integers(4, 100, (2, 30)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(30), (2, 30))
  out_x, _, _ = forward(params, tokens, positions, None, XLA)
  out_p, _, _ = forward(params, tokens, positions, None, PALLAS)
  np.testing.assert_allclose(out_p, out_x, atol=1e-5)
