"""Speculative decoding inside the loop: greedy output token for token equal to plain decoding
under every controller path, budgets exact, and the accept/reject sampler's distribution
equal to plain sampling (chi-square tests with fixed seeds)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from o1jax import tasks
from o1jax.model import ModelConfig
from o1jax.model.transformer import init_params
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import (UNLIMITED, SpeculativeConfig, make_think_config, prepare_inputs,
                            think)
from o1jax.thinking.sampling import sample
from o1jax.thinking.speculative import (accept_or_resample, think_with_stats,
                                        token_distribution)

TOK = CharTokenizer()
RESULT_FIELDS = ("tokens", "segments", "num_generated", "thinking_tokens", "answer_tokens",
                 "stop_reason", "finished", "num_probes")


def _prompts(seeds=(0, 1)):
  return [p.prompt for seed in seeds for name in ("addition", "equation", "countdown")
          for d in (1, 3) for p in tasks.get_task(name).generate_problems(seed, d, 1,
                                                                          split="eval")]


def _run(params, config, inputs, seed=0, **kw):
  return jax.tree.map(np.asarray, think(params, inputs, config, jax.random.key(seed), **kw))


def _assert_same(plain, spec):
  for field in RESULT_FIELDS:
    np.testing.assert_array_equal(getattr(spec, field), getattr(plain, field), err_msg=field)
  # Hidden states from a (gamma+1)-token forward may differ from one-token ones in the last bits.
  np.testing.assert_allclose(spec.similarity, plain.similarity, atol=1e-5)


# Budgets that cut mid-draft (1, 5, 17 are no multiple of gamma + 1), no thinking, no budget;
# minimums that hold the close back; per-request answer caps.
BUDGETS = [0, 1, 5, 17, 40, UNLIMITED] * 2
MINS = [0, 0, 3, 11, 40, 180, 0, 1, 0, 17, 25, 0]  # 180: past a reflective trace
ANSWER_CAPS = [12, 3, 12, 1, 12, 5, 2, 12, 12, 12, 4, 12]


@pytest.fixture(scope="module")
def plain_and_spec_config(model):
  """Self-speculative (2 of the 4 layers, gamma 3), a multi-token close string, an answer
  prefix and the convergence rule at a threshold that fires for some requests."""
  _, mc = model
  config = make_think_config(mc, TOK, 256, max_answer_tokens=12,
                             close_ids=tuple(TOK.encode(" so</think>")),
                             answer_prefix_ids=tuple(TOK.encode("A:")),
                             stop_rules=("natural", "budget", "converged"), converge_window=6)
  return config, dataclasses.replace(config, speculative=SpeculativeConfig(3, draft_layers=2))


def test_greedy_equals_plain_with_budgets_minimums_and_answer_caps(model, plain_and_spec_config):
  params, _ = model
  plain_config, spec_config = plain_and_spec_config
  # Windows of this model's thinking are 0.2-0.6 alike: 0.35 stops some requests, 1 none.
  inputs = prepare_inputs(TOK, _prompts(), plain_config, BUDGETS, MINS,
                          max_answer_tokens=ANSWER_CAPS, converge_threshold=[0.35] * 6 + [1.0] * 6)
  plain = _run(params, plain_config, inputs)
  spec, counts = jax.tree.map(np.asarray, think_with_stats(params, inputs, spec_config,
                                                           jax.random.key(0)))
  spec = jax.tree.map(np.asarray, spec)
  _assert_same(plain, spec)
  # Every controller path was taken: the cap, the model's own close, convergence.
  assert {1, 2, 4} <= set(plain.stop_reason.tolist())
  budgets = np.minimum(np.asarray(BUDGETS), 10**6)
  assert np.all(spec.thinking_tokens <= budgets)
  capped = spec.stop_reason == 2
  np.testing.assert_array_equal(spec.thinking_tokens[capped], budgets[capped])
  assert np.all(spec.thinking_tokens >= np.minimum(MINS, budgets))
  assert np.all(spec.answer_tokens <= ANSWER_CAPS)
  # Speculation did skip work: some proposals were accepted, and fewer iterations ran than
  # the longest sequence has tokens.
  assert 0 < counts["accepted"].sum() < counts["drafted"].sum()
  assert counts["iterations"] < spec.num_generated.max()


def test_greedy_equals_plain_with_wait_strings_heads_and_a_separate_draft(model):
  # A separate draft model (random weights, 1 layer: almost every proposal is rejected), the
  # wait string below the minimum, and the confidence and give-up heads.
  from o1jax.model.heads import HeadConfig, init_head
  params, mc = model
  draft_model = ModelConfig(vocab_size=mc.vocab_size, embed_dim=32, num_layers=1, num_heads=2,
                            num_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=mc.max_seq_len)
  draft_params = init_params(draft_model, jax.random.key(7))
  heads = {"confidence": init_head(HeadConfig(mc.embed_dim, 8, "confidence"),
                                   jax.random.key(1), 0.0),
           "value": init_head(HeadConfig(mc.embed_dim, 8, "value"), jax.random.key(2), 0.0)}
  config = make_think_config(mc, TOK, 256, max_answer_tokens=12,
                             wait_ids=tuple(TOK.encode("; wait")),
                             stop_rules=("natural", "budget", "confidence"),
                             confidence_estimate="head", probe_every=5,
                             give_up_threshold=0.5)
  spec_config = dataclasses.replace(
      config, speculative=SpeculativeConfig(gamma=4, draft_model=draft_model))
  # The heads read about 0.5: the first four requests stop confident, the next four give up.
  inputs = prepare_inputs(TOK, _prompts(seeds=(2, 3)), config, BUDGETS, MINS,
                          max_answer_tokens=ANSWER_CAPS,
                          confidence_threshold=[0.3] * 4 + [0.99] * 8,
                          give_up_threshold=[0.1] * 4 + [0.7] * 4 + [0.1] * 4)
  plain = _run(params, config, inputs, heads=heads)
  spec = _run(params, spec_config, inputs, heads=heads, draft_params=draft_params)
  _assert_same(plain, spec)
  np.testing.assert_allclose(spec.confidence, plain.confidence, atol=1e-5)
  text = [TOK.decode(t, stop_at_eos=False) for t in plain.tokens]
  assert any("; wait" in t for t in text)      # the wait string was inserted
  assert np.any(plain.num_probes > 0)
  assert {3, 6} <= set(plain.stop_reason.tolist()), plain.stop_reason   # confidence, give-up


def test_sampled_output_has_the_plain_distribution(model, plain_and_spec_config):
  # Per-request temperature and top-k/top-p: the same compiled programs as the greedy test.
  # Two-sample chi-square on the tokens at a few indices, pooled over many keys.
  params, _ = model
  plain_config, spec_config = plain_and_spec_config
  prompt = tasks.get_task("countdown").generate_problems(5, 4, 1, split="eval")[0].prompt
  n = len(BUDGETS)
  # The trained model is sure of its traces: high temperatures make the draws spread.
  inputs = prepare_inputs(TOK, [prompt] * n, plain_config, 8, 0, max_answer_tokens=1,
                          temperature=[12.0] * (n // 2) + [8.0] * (n - n // 2),
                          top_k=[0] * (n // 2) + [5] * (n - n // 2),
                          top_p=[1.0] * (n // 2) + [0.9] * (n - n // 2))
  draws = {"plain": [], "spec": []}
  for seed in range(20):
    draws["plain"].append(_run(params, plain_config, inputs, seed).tokens[:, :6])
    draws["spec"].append(_run(params, spec_config, inputs, 1000 + seed).tokens[:, :6])
  tested = 0
  for rows in (slice(0, n // 2), slice(n // 2, n)):
    plain, spec = (np.concatenate([d[rows] for d in draws[k]]) for k in ("plain", "spec"))
    assert len(set(map(tuple, spec))) > 20  # it really sampled
    for index in (1, 2, 3, 5):
      values = sorted(set(plain[:, index]) | set(spec[:, index]))
      table = np.array([[np.sum(x[:, index] == v) for v in values] for x in (plain, spec)])
      table = table[:, table.sum(0) >= 10]  # pool away categories too rare to test
      if table.shape[1] >= 2:
        tested += 1
        assert stats.chi2_contingency(table)[1] > 1e-3, (index, table)
  assert tested >= 4


@functools.partial(jax.jit, static_argnames=("draws",))
def _toy_draws(p_logits, q_logits, temperature, top_k, top_p, draws: int):
  """`draws` tokens from the speculative rule (proposals from q) and from the plain sampler."""
  per_row = lambda x, dtype: jnp.full((draws,), x, dtype)
  settings = (per_row(temperature, jnp.float32), per_row(top_k, jnp.int32),
              per_row(top_p, jnp.float32))
  p = token_distribution(jnp.repeat(p_logits, draws, 0), *settings)
  q = token_distribution(jnp.repeat(q_logits, draws, 0), *settings)
  keys = jax.random.split(jax.random.key(123), 4 * draws).reshape(4, draws)
  proposal = jax.vmap(jax.random.categorical)(keys[0], jnp.log(q)).astype(jnp.int32)
  token, accepted = accept_or_resample(p, q, proposal, keys[1], keys[2])
  plain, _ = sample(jnp.repeat(p_logits, draws, 0), keys[3], *settings)
  return token, accepted, plain, p[0]


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 4, 1.0),
                                                      (1.3, 0, 0.8)])
def test_accept_reject_draws_from_the_target(temperature, top_k, top_p):
  # A toy pair of distributions over 7 tokens, the draft far from the target: the tokens the
  # rule emits follow the target (as the plain sampler draws it), not the draft.
  vocab, draws = 7, 20_000
  p_logits = jnp.array([[2.0, 1.5, 0.2, -1.0, 0.5, 1.0, -0.5]])
  q_logits = jnp.array([[-1.0, 0.5, 2.0, 1.0, 0.0, -2.0, 1.5]])
  token, accepted, plain, target = _toy_draws(p_logits, q_logits, temperature, top_k, top_p,
                                              draws)
  target = np.asarray(target, np.float64)
  support = target > 0
  for tokens in (token, plain):
    counts = np.bincount(np.asarray(tokens), minlength=vocab)
    assert counts[~support].sum() == 0  # nothing outside the filtered target
    _, pvalue = stats.chisquare(counts[support], draws * target[support] / target.sum())
    assert pvalue > 1e-3, counts
  assert 0.02 < float(accepted.mean()) < 0.95  # both branches of the rule were taken


def test_greedy_rows_accept_exactly_the_argmax():
  p_logits = jnp.array([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
  zero = jnp.zeros((2,), jnp.float32)
  p = token_distribution(p_logits, zero, jnp.zeros((2,), jnp.int32), jnp.ones((2,)))
  q = jax.nn.one_hot(jnp.array([1, 2]), 3)
  keys = jax.random.split(jax.random.key(0), 4).reshape(2, 2)
  token, accepted = jax.jit(accept_or_resample)(p, q, jnp.array([1, 2]), keys[0], keys[1])
  assert token.tolist() == [1, 0] and accepted.tolist() == [True, False]


def test_bad_speculative_settings_are_named(model):
  params, mc = model
  with pytest.raises(ValueError, match="confidence_estimate='probe'"):
    make_think_config(mc, TOK, 256, stop_rules=("natural", "budget", "confidence"),
                      speculative=SpeculativeConfig())
  with pytest.raises(ValueError, match="draft_layers=4 must be below"):
    make_think_config(mc, TOK, 256, speculative=SpeculativeConfig(draft_layers=4))
  with pytest.raises(ValueError, match="gamma must be an integer >= 1"):
    SpeculativeConfig(gamma=0)
  with pytest.raises(ValueError, match="vocab_size"):
    make_think_config(mc, TOK, 256, speculative=SpeculativeConfig(
        draft_model=mc.replace(vocab_size=256)))
  config = make_think_config(mc, TOK, 256, speculative=SpeculativeConfig(draft_model=mc))
  inputs = prepare_inputs(TOK, ["1+2="], config, 4)
  with pytest.raises(ValueError, match="pass its params as"):
    think(params, inputs, config, jax.random.key(0))
