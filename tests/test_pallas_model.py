"""attention_impl="pallas" (interpret mode on CPU) gives the model the same outputs as "xla":
the training loss and its gradient, prefill plus cached decoding, and the thinking loop.

Weights are seeded. Greedy tokens are compared only where they are decided: two logits
closer than float error can be ordered either way by kernels that sum in different orders,
so past the first near-tie the two paths may part without either being wrong."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax.model import KVCache, ModelConfig, forward, init_params
from o1jax.model.decode import decode_step, prefill
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import Segment, make_think_config, prepare_inputs, think
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
  rng = np.random.default_rng(0)
  params = init_params(XLA, jax.random.key(0))
  batch = _batch(rng)
  loss_x, grad_x = jax.value_and_grad(loss_fn)(params, batch, XLA)
  loss_p, grad_p = jax.value_and_grad(loss_fn)(params, batch, PALLAS)
  np.testing.assert_allclose(loss_p, loss_x, rtol=1e-5)
  for gx, gp in zip(jax.tree.leaves(grad_x), jax.tree.leaves(grad_p)):
    np.testing.assert_allclose(gp, gx, atol=1e-5, rtol=1e-4)


def _teacher_forced_logits(params, config, tok, prompts, result):
  """The logits each generated token of `result` was chosen from ([B, T, V]), recomputed by
  prefill and cached decode steps fed `result`'s own tokens: the thinking loop's computation
  with its choices fixed, so two implementations can be compared step by step."""
  ids = [tok.encode_prompt(p) for p in prompts]
  lengths = np.array([len(i) for i in ids], np.int32)
  cache = KVCache.init(config, len(ids), config.max_seq_len)
  logits, _, cache = prefill(params, jnp.asarray(tok.pad_batch(ids, lengths.max())),
                             jnp.asarray(lengths), cache, config=config)
  out = [logits]
  for t in range(int(result.num_generated.max()) - 1):
    live = t < result.num_generated - 1
    positions = jnp.asarray(np.where(live, lengths + t, -1), jnp.int32)
    logits, _, cache = decode_step(params, jnp.asarray(result.tokens[:, t]), positions, cache,
                                   config=config)
    out.append(logits)
  return np.stack([np.asarray(x) for x in out], axis=1)


def _near_tied(params, rng):
  """Every embedding row (the output rows too: they are tied) a hair from the same vector:
  all logits are within ~1e-6 of each other, so greedy tokens hinge on rounding."""
  e = params["embedding"]
  noise = 1e-6 * rng.normal(size=e.shape).astype(np.float32)
  return {**params, "embedding": e[:1] + jnp.asarray(noise)}


@pytest.mark.parametrize("near_ties", [False, True])
def test_thinking_loop_matches(near_ties):
  rng = np.random.default_rng(1)
  params = init_params(XLA, jax.random.key(1))
  if near_ties:
    params = _near_tied(params, rng)
  tok = CharTokenizer()
  prompts, budgets = ["12+34=", "3 5 2 to 16", "2x+5=13"], [5, 20, 40]
  results = []
  for config in (XLA, PALLAS):
    tc = make_think_config(config, tok, 96, max_answer_tokens=8)
    inputs = prepare_inputs(tok, prompts, tc, budgets)
    results.append(jax.tree.map(np.asarray, think(params, inputs, tc, jax.random.key(0))))
  xla, pallas = results
  # Along XLA's path both implementations compute the same logits ...
  forced = [_teacher_forced_logits(params, c, tok, prompts, xla) for c in (XLA, PALLAS)]
  ties = 0
  for b in range(len(prompts)):
    n = int(xla.num_generated[b])
    np.testing.assert_allclose(forced[1][b, :n], forced[0][b, :n], atol=1e-4, rtol=1e-4)
    # ... and Pallas takes XLA's tokens up to the first near-tie. Logits that differ by at
    # most d between the two agree on the top token wherever its margin exceeds 2d; 4d + 1e-6
    # leaves room for the loop's own rounding. The loop never ends thinking with EOS: it is
    # no candidate before the answer.
    tie = 4 * np.abs(forced[1][b, :n] - forced[0][b, :n]).max() + 1e-6
    chosen_from = forced[0][b, :n].copy()
    chosen_from[xla.segments[b, :n] != Segment.ANSWER, tok.eos_id] = -np.inf
    top2 = np.sort(chosen_from, axis=-1)[:, -2:]
    tied = np.nonzero(top2[:, 1] - top2[:, 0] < tie)[0]
    decided = int(tied[0]) if len(tied) else n
    np.testing.assert_array_equal(pallas.tokens[b, :decided], xla.tokens[b, :decided])
    if not len(tied):
      assert pallas.num_generated[b] == n
      assert pallas.thinking_tokens[b] == xla.thinking_tokens[b]
    ties += bool(len(tied))
  if near_ties:
    assert ties == len(prompts)  # the case exercises what it is for


def test_prefill_logits_match():
  rng = np.random.default_rng(2)
  params = init_params(XLA, jax.random.key(2))
  tokens = jnp.asarray(rng.integers(4, 100, (2, 30)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(30), (2, 30))
  out_x, _, _ = forward(params, tokens, positions, None, XLA)
  out_p, _, _ = forward(params, tokens, positions, None, PALLAS)
  np.testing.assert_allclose(out_p, out_x, atol=1e-5)
