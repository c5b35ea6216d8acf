"""The sort-free sampler against a float64, sort-based reference: the kept sets of top-k and
top-p, the draws' distribution, and the log-probs think() records for each sampled token."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from o1jax import tasks
from o1jax.model.transformer import forward
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import Segment, make_think_config, prepare_inputs, think
from o1jax.thinking.sampling import filter_logits, sample

TOK = CharTokenizer()


def reference_keep(logits, top_k, top_p):
  """[B, V] bool kept by top-k then top-p, in float64 with a sort and a running sum (the
  textbook definitions: ties at the k-th value kept; the smallest sorted prefix whose mass
  reaches top_p, ties at its last value kept). Also returns each token's preceding mass."""
  logits = np.asarray(logits, np.float64)
  batch, vocab = logits.shape
  keep = np.ones_like(logits, bool)
  margin = np.full(logits.shape, np.inf)
  for b in range(batch):
    x = logits[b].copy()
    k = int(top_k[b])
    if 0 < k < vocab:
      kth = np.sort(x)[::-1][k - 1]
      x[x < kth] = -np.inf
    if top_p[b] < 1:
      order = np.argsort(-x, kind="stable")
      p = np.exp(x - x.max())
      p /= p.sum()
      before = np.cumsum(p[order]) - p[order]
      kept_sorted = before < top_p[b]
      cutoff = x[order][kept_sorted].min()
      x[x < cutoff] = -np.inf
      margin[b, order] = np.abs(before - top_p[b])
    keep[b] = np.isfinite(x)
  return keep, margin


def _settings(batch, vocab, rng):
  top_k = rng.choice([0, 1, 2, 5, 17, vocab - 1, vocab, vocab + 3], batch)
  top_p = rng.choice([1.0, 0.999, 0.9, 0.5, 0.1, 1e-4], batch)
  return top_k.astype(np.int32), top_p.astype(np.float32)


@pytest.mark.parametrize("vocab", [7, 300, 4099])
def test_filters_keep_exactly_the_sorted_definitions(vocab):
  rng = np.random.default_rng(vocab)
  batch = 96
  logits = rng.normal(0, 3, (batch, vocab)).astype(np.float32)
  # Ties, at the k-th value and elsewhere, and banned tokens (-inf), as the controller makes.
  logits[:, 1::5] = np.round(logits[:, 1::5])
  logits[::3, 0] = -np.inf
  top_k, top_p = _settings(batch, vocab, rng)
  got = np.asarray(jax.jit(filter_logits)(jnp.asarray(logits), top_k, top_p))
  want, margin = reference_keep(logits, top_k, top_p)
  differ = np.isfinite(got) != want
  # The one documented limit: a token whose preceding mass is within float32 rounding of top_p.
  assert not np.any(differ & (margin > 1e-5)), np.argwhere(differ & (margin > 1e-5))[:5]
  assert differ.sum() <= 2
  np.testing.assert_array_equal(got[np.isfinite(got)], logits[np.isfinite(got)])


def test_draws_and_log_probs_follow_the_float64_distribution():
  rng = np.random.default_rng(0)
  vocab, draws = 11, 40_000
  row = rng.normal(0, 1.5, vocab).astype(np.float32)
  settings = [(1.0, 0, 1.0), (0.7, 4, 1.0), (1.3, 0, 0.8), (2.0, 6, 0.9), (0.0, 0, 1.0)]
  for temperature, top_k, top_p in settings:
    keys = jax.random.split(jax.random.key(int(temperature * 100) + top_k), draws)
    token, logp = jax.jit(sample)(jnp.tile(row, (draws, 1)), keys, temperature, top_k, top_p)
    token, logp = np.asarray(token), np.asarray(logp)
    if temperature == 0:
      assert np.all(token == row.argmax()) and np.all(logp == 0)
      continue
    scaled = row.astype(np.float64) / temperature
    keep, _ = reference_keep(scaled[None], np.array([top_k]), np.array([top_p]))
    probs = np.where(keep[0], np.exp(scaled - scaled.max()), 0.0)
    probs /= probs.sum()
    np.testing.assert_allclose(logp, np.log(probs[token]), atol=2e-6)
    counts = np.bincount(token, minlength=vocab)
    assert counts[probs == 0].sum() == 0
    assert stats.chisquare(counts[probs > 0], draws * probs[probs > 0])[1] > 1e-3


def test_a_greedy_batch_and_an_unfiltered_batch_run_no_filter():
  # Sort-free everywhere, and a filter nobody asked for is not run: the unfiltered sampling
  # program contains no sort and no radix-select loop outside a cond branch.
  logits = jnp.zeros((4, 151_936), jnp.float32)
  keys = jax.random.split(jax.random.key(0), 4)
  text = jax.jit(sample).lower(logits, keys, jnp.ones(4), jnp.zeros(4, jnp.int32),
                               jnp.ones(4)).as_text()
  assert "stablehlo.sort" not in text
  assert text.count("stablehlo.while") >= 2   # top-k and top-p radix selects, each in a cond
  assert text.count("stablehlo.case") >= 3    # sample's cond + one per filter


def test_think_records_the_log_prob_of_every_sampled_token(model):
  # Recompute each sampled token's distribution in float64 from a full forward of the
  # sequence: the controller's masks (EOS banned while thinking, the close suppressed below
  # the minimum), temperature, top-k, top-p. Forced tokens (a budget's close string) and
  # greedy rows record 0.
  params, mc = model
  config = make_think_config(mc, TOK, 160, max_answer_tokens=8)
  assert not config.wait_ids and not config.answer_prefix_ids  # every close string is forced
  prompts = [p.prompt for p in tasks.get_task("countdown").generate_problems(3, 3, 6,
                                                                             split="eval")]
  temperature = [1.5, 1.0, 3.0, 0.0, 2.0, 1.2]
  top_k = [0, 5, 0, 0, 3, 0]
  top_p = [1.0, 1.0, 0.9, 1.0, 0.95, 0.7]
  minimum = [0, 0, 20, 0, 0, 6]
  inputs = prepare_inputs(TOK, prompts, config, [40, 12, 60, 30, 8, 50], minimum,
                          temperature=temperature, top_k=top_k, top_p=top_p)
  r = jax.tree.map(np.asarray, think(params, inputs, config, jax.random.key(4)))
  lengths, prompt_tokens = np.asarray(inputs.lengths), np.asarray(inputs.tokens)
  checked = 0
  for b in range(len(prompts)):
    p, g = int(lengths[b]), int(r.num_generated[b])
    seq = np.concatenate([prompt_tokens[b, :p], r.tokens[b, :g]])
    logits = np.asarray(forward(params, jnp.asarray(seq[None]), jnp.arange(len(seq))[None],
                                None, mc)[0][0], np.float64)
    segments, tokens = r.segments[b, :g], r.tokens[b, :g]
    natural = r.stop_reason[b] == 1
    first_close = int(np.argmax(segments == Segment.CLOSE))
    for i in range(g):
      seg = segments[i]
      drawn_in_thinking = seg == Segment.THINKING or (natural and i == first_close)
      if temperature[b] == 0 or not (drawn_in_thinking or seg == Segment.ANSWER):
        assert r.logprobs[b, i] == 0.0, (b, i, seg)
        continue
      x = logits[p - 1 + i].copy()
      if drawn_in_thinking:
        x[list(config.eos_ids)] = -np.inf
        if (segments[:i] == Segment.THINKING).sum() < minimum[b]:
          x[config.end_think_id] = -np.inf
      x /= temperature[b]
      keep, _ = reference_keep(x[None], np.array([top_k[b]]), np.array([top_p[b]]))
      x = np.where(keep[0], x, -np.inf)
      want = x[tokens[i]] - x.max() - np.log(np.exp(x - x.max()).sum())
      np.testing.assert_allclose(r.logprobs[b, i], want, atol=1e-4, err_msg=f"row {b} #{i}")
      checked += 1
  assert checked > 100
