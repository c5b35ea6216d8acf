"""Speculative sampling has plain sampling's distribution, with tests that have power.

A tiny random model (16 tokens, peaked enough that filters and the draft matter) decodes
thousands of rows in one call per arm. Two-sample tests compare speculative output with
plain output, and five plausible wrong samplers, kept here as test-only variants, must each
be rejected by the same test (a mutation check), so a pass means something.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from o1jax.model import ModelConfig
from o1jax.model.transformer import init_params
from o1jax.thinking import SpeculativeConfig, ThinkConfig, ThinkInputs, think
from o1jax.thinking import speculative
from o1jax.thinking.sampling import categorical
from o1jax.thinking.state import fill_settings

MODEL = ModelConfig(vocab_size=16, embed_dim=32, num_layers=2, num_heads=2, num_kv_heads=1,
                    head_dim=16, mlp_dim=64, max_seq_len=48)
# The close is the model's likeliest token after the prompt, so closes below the minimum,
# and with them wait strings, are frequent.
END, WAIT, PAD, THINK, EOS = 0, (2, 3), 15, 13, 14


def _random_model(seed, scale):
  params = init_params(MODEL, jax.random.key(seed))
  # Random init gives near-uniform logits; a larger embedding makes them peaked, so top-k
  # and top-p cut real mass and a random draft is far from the target.
  return {**params, "embedding": params["embedding"] * scale}


@pytest.fixture(scope="module")
def target():
  return _random_model(0, 12.0)


@pytest.fixture(scope="module")
def draft():
  return _random_model(1, 12.0)


def _config(cache_len, speculative_config=None, **kw):
  return ThinkConfig(model=MODEL, cache_len=cache_len, think_id=THINK, end_think_id=END,
                     eos_id=EOS, pad_id=PAD, eos_ids=(EOS,), close_ids=(END,),
                     max_answer_tokens=2, speculative=speculative_config, **kw)


def _inputs(rows, budget, minimum, **settings):
  return ThinkInputs(tokens=jnp.tile(jnp.array([[6, 7, THINK]], jnp.int32), (rows, 1)),
                     lengths=jnp.full((rows,), 3, jnp.int32),
                     budget=jnp.full((rows,), budget, jnp.int32),
                     min_thinking=jnp.full((rows,), minimum, jnp.int32),
                     **{k: jnp.asarray(v) for k, v in settings.items()})


def _speculative_tokens(params, draft_params, inputs, config, seed):
  """The speculative loop traced afresh (a new jit), so a patched sampler takes effect."""
  run = jax.jit(lambda p, d, i: speculative.run(p, d, i, config).think.tokens)
  return np.asarray(run(params, draft_params, fill_settings(inputs, config,
                                                           jax.random.key(seed))))


# ---- 1. closes below the minimum become wait strings, in both loops alike ------------------

def test_wait_strings_below_the_minimum_have_the_plain_rates():
  # The draft's close below the minimum is emitted as the first wait token; accept/reject
  # must run on the draft's draw (the close), not on the emitted wait token. Before the fix
  # speculation emitted ~45% more wait tokens (Welch p ~1e-17 on 12k rows).
  config = _config(26, wait_ids=WAIT, temperature=1.0)
  spec_config = _config(26, SpeculativeConfig(gamma=3, draft_model=MODEL), wait_ids=WAIT,
                        temperature=1.0)
  # Sharper models: the close (token 0) has probability ~0.37 after the prompt.
  target, draft = _random_model(0, 30.0), _random_model(1, 30.0)
  inputs = _inputs(4096, budget=21, minimum=20)
  plain = np.asarray(think(target, inputs, config, jax.random.key(0)).tokens)[:, :20]
  spec = np.asarray(think(target, inputs, spec_config, jax.random.key(1),
                          draft_params=draft).tokens)[:, :20]
  for name, statistic in [
      ("wait tokens", lambda t: (t == WAIT[0]).sum(1)),
      ("broken wait strings", lambda t: ((t[:, :-1] == WAIT[0]) & (t[:, 1:] != WAIT[1])).sum(1)),
      ("thinking tokens before the first wait", lambda t: np.argmax(
          np.concatenate([t, np.full((len(t), 1), WAIT[0])], 1) == WAIT[0], 1))]:
    p_value = stats.ttest_ind(statistic(plain), statistic(spec), equal_var=False).pvalue
    assert p_value > 1e-3, (name, statistic(plain).mean(), statistic(spec).mean(), p_value)
  assert (plain == WAIT[0]).sum(1).mean() > 0.1  # waits were common enough to measure


# ---- 2. the output distribution, with five wrong samplers it must reject --------------------

ROWS = 4096
POSITIONS = range(6)


def _min_p_value(plain, spec):
  """The smallest p-value of chi-square two-sample tests on the token at each position, per
  half of the rows (unfiltered / filtered); categories rarer than 20 in both arms together
  are pooled into one "other" bin, so no part of the vocabulary goes untested."""
  p_values = []
  for rows in (slice(0, ROWS // 2), slice(ROWS // 2, ROWS)):
    for i in POSITIONS:
      a, b = plain[rows, i], spec[rows, i]
      counts = np.array([np.bincount(x, minlength=MODEL.vocab_size) for x in (a, b)])
      common = counts.sum(0) >= 20
      table = np.concatenate([counts[:, common], counts[:, ~common].sum(1, keepdims=True)], 1)
      table = table[:, table.sum(0) > 0]
      if table.shape[1] >= 2:
        p_values.append(stats.chi2_contingency(table)[1])
  return min(p_values), len(p_values)


def _settings():
  half = ROWS // 2
  return dict(temperature=np.full(ROWS, 1.0, np.float32),
              top_k=np.array([0] * half + [3] * half, np.int32),
              top_p=np.array([1.0] * half + [0.8] * half, np.float32))


# Wrong samplers, each a plausible slip in the rule (issue 29's list).
def _residual_is_p(p, q, proposal, key_accept, key_residual):
  token, accepted = _ORIGINAL["accept_or_resample"](p, q, proposal, key_accept, key_residual)
  resampled = categorical(key_residual, jnp.log(p))[0]
  return jnp.where(accepted, proposal, resampled), accepted


def _accept_if_u_below_p(p, q, proposal, key_accept, key_residual):
  p_d = jnp.take_along_axis(p, proposal[:, None], -1)[:, 0]
  accepted = jax.vmap(jax.random.uniform)(key_accept) < p_d
  residual = jnp.maximum(p - q, 0.0)
  residual = jnp.where(residual.sum(-1, keepdims=True) > 0, residual, p)
  resampled = categorical(key_residual, jnp.log(residual))[0]
  return jnp.where(accepted, proposal, resampled), accepted


def _ratio_with_another_q(p, q, proposal, key_accept, key_residual):
  flattened = jax.nn.softmax(0.5 * jnp.log(q + 1e-30), -1)  # q before sharpening, say
  return _ORIGINAL["accept_or_resample"](p, flattened, proposal, key_accept, key_residual)


def _bonus_is_argmax(p, keys):
  return jnp.argmax(p, -1).astype(jnp.int32)


def _p_without_filters(logits, temperature, top_k, top_p):
  return _ORIGINAL["token_distribution"](logits, temperature, jnp.zeros_like(top_k),
                                         jnp.ones_like(top_p))


_ORIGINAL = {name: getattr(speculative, name)
             for name in ("accept_or_resample", "bonus_token", "token_distribution")}
# (patched name, wrong version, which draft exposes it): rejections need a draft far from
# the target; the bonus token needs a draft equal to the target (every proposal accepted).
MUTANTS = {
    "residual = p": ("accept_or_resample", _residual_is_p, "random"),
    "accept if u < p": ("accept_or_resample", _accept_if_u_below_p, "random"),
    "ratio with another q": ("accept_or_resample", _ratio_with_another_q, "random"),
    "bonus token = argmax": ("bonus_token", _bonus_is_argmax, "target"),
    "p without top-k/top-p": ("token_distribution", _p_without_filters, "target"),
}


@pytest.fixture(scope="module")
def plain_draws(target):
  config = _config(10, temperature=1.0)
  inputs = _inputs(ROWS, budget=8, minimum=0, **_settings())
  return np.asarray(think(target, inputs, config, jax.random.key(7)).tokens)


def _spec_draws(target, draft, which):
  # With the target as its own draft every proposal is accepted: gamma 1 makes every other
  # token a bonus token.
  gamma = 3 if which == "random" else 1
  config = _config(10, SpeculativeConfig(gamma=gamma, draft_model=MODEL), temperature=1.0)
  inputs = _inputs(ROWS, budget=8, minimum=0, **_settings())
  draft_params = draft if which == "random" else target
  return _speculative_tokens(target, draft_params, inputs, config, seed=8)


@pytest.mark.parametrize("which", ["random", "target"])
def test_speculative_samples_have_the_plain_distribution(target, draft, plain_draws, which):
  p_value, tests = _min_p_value(plain_draws, _spec_draws(target, draft, which))
  assert tests == 2 * len(POSITIONS)   # the filtered half is tested too
  assert p_value > 1e-4, p_value       # 12 tests: a false alarm has probability ~1e-3


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_the_distribution_test_rejects_wrong_samplers(target, draft, plain_draws, mutant,
                                                      monkeypatch):
  name, wrong, which = MUTANTS[mutant]
  monkeypatch.setattr(speculative, name, wrong)
  p_value, _ = _min_p_value(plain_draws, _spec_draws(target, draft, which))
  assert p_value < 1e-6, (mutant, p_value)
