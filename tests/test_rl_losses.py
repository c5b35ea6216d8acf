"""GRPO's losses (o1jax/rl/losses.py), their wiring in the update and the train loop, and
the truncation reward bound (o1jax/training/grpo.py).

Every loss is checked against a float64 NumPy loop written here token by token from the
formulas (GRPO, Dr. GRPO, DAPO clip-higher, truncated importance sampling), value and
gradient; plausible wrong implementations are kept beside and the same check must reject
each of them.
"""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax import parallel
from o1jax.model.config import ModelConfig
from o1jax.model.transformer import init_params
from o1jax.rl import losses
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.training import grpo, grpo_train

TOK = CharTokenizer()


# ---- the float64 reference ---------------------------------------------------------------

def _np_loss(logp, old, ref, sampler, adv, mask, *, loss_type="grpo", eps_low=0.2,
             eps_high=0.2, beta=0.0, tis_cap=0.0, max_len=0):
  """(loss, d loss / d logp, metrics), one token at a time."""
  rows, steps = logp.shape
  tokens = mask.sum()
  denom = rows * max_len if loss_type == "dr_grpo" else tokens
  total, pg_total, kl, clipped, weights = 0.0, 0.0, 0.0, 0.0, 0.0
  grad = np.zeros_like(logp, np.float64)
  for b in range(rows):
    for t in range(steps):
      if not mask[b, t]:
        continue
      ratio = np.exp(logp[b, t] - old[b, t])
      a = adv[b]
      unclipped = ratio * a
      clipped_term = min(max(ratio, 1 - eps_low), 1 + eps_high) * a
      w = 1.0
      if tis_cap > 0:
        w = min(np.exp(old[b, t] - sampler[b, t]), tis_cap)
      pg = -w * min(unclipped, clipped_term)
      k3 = np.exp(ref[b, t] - logp[b, t]) - (ref[b, t] - logp[b, t]) - 1
      total += pg + beta * k3
      pg_total += pg
      kl += k3
      clipped += ratio < 1 - eps_low or ratio > 1 + eps_high
      weights += w
      # d/dlogp: the unclipped branch carries ratio * a; a clipped (constant) one nothing.
      g_pg = -w * unclipped if unclipped <= clipped_term else 0.0
      g_kl = beta * (-np.exp(ref[b, t] - logp[b, t]) + 1)
      grad[b, t] = (g_pg + g_kl) / denom
  metrics = {"pg_loss": pg_total / denom, "kl": kl / tokens, "clip_fraction": clipped / tokens,
             "tis_weight": weights / tokens}
  return total / denom, grad, metrics


def _data(seed=0, rows=6, steps=9):
  rng = np.random.default_rng(seed)
  logp = np.log(rng.uniform(0.05, 1.0, (rows, steps)))
  old = logp + rng.normal(0, 0.4, logp.shape)            # ratios well outside [0.8, 1.28]
  ref = logp + rng.normal(0, 0.3, logp.shape)
  sampler = old + rng.normal(0, 0.8, logp.shape)         # weights on both sides of C = 2
  adv = rng.normal(0, 1, rows)
  mask = rng.random(logp.shape) > 0.3
  return logp, old, ref, sampler, adv, mask


CASES = {
    "grpo": dict(),
    "grpo_kl": dict(beta=0.05),
    "clip_higher": dict(eps_low=0.2, eps_high=0.28),
    "dr_grpo": dict(loss_type="dr_grpo", max_len=20),
    "tis": dict(tis_cap=2.0),
    "dr_grpo_clip_higher_tis_kl": dict(loss_type="dr_grpo", max_len=20, eps_low=0.2,
                                       eps_high=0.28, tis_cap=2.0, beta=0.05),
}


def _settings(case):
  kw = CASES[case]
  return losses.PolicyLoss(kw.get("loss_type", "grpo"), kw.get("eps_low", 0.2),
                           kw.get("eps_high", 0.2), kw.get("beta", 0.0), kw.get("tis_cap", 0.0),
                           kw.get("max_len", 0))


def _check(impl, case, seed=0) -> None:
  """Raises AssertionError unless impl(logp, old, adv, mask, settings, ref, sampler) gives
  the reference's loss, gradient and metrics."""
  logp, old, ref, sampler, adv, mask = _data(seed)
  s = _settings(case)
  want, want_grad, want_m = _np_loss(logp, old, ref, sampler, adv, mask, **CASES[case])
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  ref_arg = f32(ref) if s.kl_coef > 0 else None
  fn = lambda lp: impl(lp, f32(old), f32(adv), f32(mask), s, ref_arg, f32(sampler))
  (loss, m), grad = jax.value_and_grad(fn, has_aux=True)(f32(logp))
  np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(float(m["pg_loss"]), want_m["pg_loss"], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(m["clip_fraction"]), want_m["clip_fraction"], atol=1e-6)
  if s.kl_coef > 0:
    np.testing.assert_allclose(float(m["kl"]), want_m["kl"], rtol=1e-5)
  if s.tis_cap > 0:
    np.testing.assert_allclose(float(m["tis_weight"]), want_m["tis_weight"], rtol=1e-5)


def _impl(lp, old, adv, mask, s, ref, sampler):
  return losses.policy_loss(lp, old, adv, mask, s, ref_logp=ref, sampler_logp=sampler)


# Plausible wrong implementations: each must fail `_check` on the case named with it.
def _dr_grpo_token_mean(lp, old, adv, mask, s, ref, sampler):       # normalised per token
  return _impl(lp, old, adv, mask, dataclasses.replace(s, loss_type="grpo"), ref, sampler)


def _symmetric_clip(lp, old, adv, mask, s, ref, sampler):           # eps_high on both sides
  return _impl(lp, old, adv, mask, dataclasses.replace(s, eps_low=s.eps_high), ref, sampler)


def _uncapped_tis(lp, old, adv, mask, s, ref, sampler):             # no truncation at C
  return _impl(lp, old, adv, mask, dataclasses.replace(s, tis_cap=1e9), ref, sampler)


def _inverted_tis(lp, old, adv, mask, s, ref, sampler):             # pi_sampler / pi_old
  return _impl(lp, old, adv, mask, s, ref, 2 * old - sampler)


def _tis_with_gradient(lp, old, adv, mask, s, ref, sampler):        # weight on pi_theta
  loss, m = _impl(lp, lp, adv, mask, dataclasses.replace(s, tis_cap=0.0), ref, sampler)
  w = jnp.minimum(jnp.exp(lp - sampler), s.tis_cap)
  del loss
  ratio = jnp.exp(lp - old)
  a = adv[:, None]
  pg = -w * jnp.minimum(ratio * a, jnp.clip(ratio, 1 - s.eps_low, 1 + s.eps_high) * a)
  return (pg * mask).sum() / mask.sum(), m


WRONG = [(_dr_grpo_token_mean, "dr_grpo"), (_symmetric_clip, "clip_higher"),
         (_uncapped_tis, "tis"), (_inverted_tis, "tis"), (_tis_with_gradient, "tis")]


@pytest.mark.parametrize("case", list(CASES))
def test_policy_losses_match_a_float64_loop(case):
  for seed in (0, 1):
    _check(_impl, case, seed)


@pytest.mark.parametrize("wrong,case", WRONG, ids=[w.__name__ for w, _ in WRONG])
def test_the_reference_rejects_wrong_variants(wrong, case):
  with pytest.raises(AssertionError):
    _check(wrong, case)


def test_grpo_loss_is_the_symmetric_grpo_case():
  logp, old, ref, _, adv, mask = _data(3)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  loss, m = grpo.grpo_loss(f32(logp), f32(old), f32(ref), f32(adv), f32(mask), clip_eps=0.2,
                           kl_coef=0.05)
  want, _, want_m = _np_loss(logp, old, ref, old, adv, mask, beta=0.05)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(float(m["kl"]), want_m["kl"], rtol=1e-5)


def test_dr_grpo_advantages_do_not_divide_by_the_std_and_dynamic_sampling_keeps_signal():
  rng = np.random.default_rng(4)
  rewards = rng.choice([0.0, 1.0, -0.5, 0.3], size=(5, 4))
  rewards[1] = 1.0
  valid = rng.random((5, 4)) > 0.2
  valid[0] = True
  valid[3] = [True, False, False, False]
  want = np.zeros((5, 4))
  for p in range(5):
    members = [g for g in range(4) if valid[p, g]]
    if len(members) >= 2:
      mean = np.mean([rewards[p, g] for g in members])
      for g in members:
        want[p, g] = rewards[p, g] - mean
  got = np.asarray(losses.group_advantages(rewards, valid, 1e-4, scale=False))
  np.testing.assert_allclose(got, want, atol=1e-6)
  keep = np.asarray(losses.informative_groups(got))
  assert keep.tolist() == [bool(np.any(want[p] != 0)) for p in range(5)]
  assert not keep[1] and not keep[3]


# ---- dynamic sampling in the train loop --------------------------------------------------

def _fake_round(groups_informative, g=2, width=12, tag=0):
  """A sampling round whose group p is informative iff groups_informative[p]; row values
  identify (round, group) so the assembled batch can be read back."""
  n = len(groups_informative) * g
  adv = np.array([[1.0, -1.0] if x else [0.0, 0.0] for x in groups_informative])
  r = types.SimpleNamespace(
      tokens=np.repeat(np.arange(n)[:, None] + 100 * tag, width, 1).astype(np.int32),
      thinking_ctx=np.zeros((n, width - 1), bool),
      loss_mask=np.ones((n, width - 1), np.float32),
      sampler_logp=np.zeros((n, width - 1), np.float32), generated=n * 5)
  return r, np.ones(n, bool), adv


def test_dynamic_sampling_refills_the_batch_with_informative_groups():
  cfg = grpo.GRPOConfig(prompts_per_step=3, group_size=2, dynamic_sampling=True,
                        dynamic_sampling_tries=2, max_thinking=8, cache_len=32,
                        max_answer_tokens=4, length_bucket=4)
  settings = grpo.loss_settings_for(cfg, (TOK.eos_id,))
  rounds = {0: [True, False, True], 1: [False, False, False], 2: [True, True, False]}
  asked = []

  def sample(k):
    asked.append(k)
    r, valid, adv = _fake_round(rounds[k], tag=k)
    return r, None, valid, adv, None

  rows, n_rounds, generated = grpo_train._loss_batch(cfg, settings, sample, _fake_round(
      rounds[0], tag=0))
  assert asked == [1, 2] and n_rounds == 3 and generated == 2 * 30
  # groups 0 and 2 of round 0, then group 0 of round 2 (round 1 had none)
  assert rows["tokens"][:, 0].tolist() == [0, 1, 4, 5, 200, 201]
  assert rows["advantages"].tolist() == [1, -1, 1, -1, 1, -1]
  assert rows["tokens"].shape == (6, 12) and rows["sampler_logp"].shape == (6, 11)

  rounds[2] = [False, False, False]       # the tries run out: a dropped group fills in, masked
  rows, n_rounds, _ = grpo_train._loss_batch(cfg, settings, sample, _fake_round(rounds[0]))
  assert n_rounds == 3 and rows["tokens"][:, 0].tolist() == [0, 1, 4, 5, 2, 3]
  assert rows["loss_mask"][4:].sum() == 0 and rows["advantages"][4:].tolist() == [0, 0]

  plain = dataclasses.replace(cfg, dynamic_sampling=False)
  rows, n_rounds, _ = grpo_train._loss_batch(plain, settings, sample, _fake_round(rounds[0]))
  assert n_rounds == 1 and rows["tokens"][:, 0].tolist() == [0, 1, 2, 3, 4, 5]


# ---- the update: reference only with kl_coef > 0, TIS with one update per batch ------------

def _tiny():
  c = ModelConfig(vocab_size=TOK.vocab_size, embed_dim=32, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=64)
  return init_params(c, jax.random.key(0)), c


def test_reference_exists_only_with_a_kl_term():
  params, c = _tiny()
  mesh = parallel.make_mesh((1, 1, 1))
  for kl, want in ((0.0, False), (0.1, True)):
    cfg = grpo.GRPOConfig(kl_coef=kl, log_kl=True, mesh_shape=(1, 1, 1))
    assert cfg.uses_reference == want
    opt = grpo.optimizer_for(cfg)
    shardings = grpo.state_shardings(c, opt, mesh, cfg.uses_reference)
    state = grpo_train._initial_state(cfg, params, opt, shardings[1])
    assert (state.ref_params is not None) == want and (shardings[0].ref_params is not None) == want


def test_tis_with_one_update_per_batch_reweights_by_the_sampler():
  """updates_per_batch=1: pi_old is pi_theta's own value, so the PPO ratio is 1; with the
  sampler's log-probs differing, the applied weight min(pi_old / pi_sampler, C) is not, and
  the loss equals the float64 loop with those weights (trainer log-probs from the model)."""
  params, c = _tiny()
  rng = np.random.default_rng(5)
  tokens = rng.integers(4, TOK.vocab_size, (4, 16)).astype(np.int32)
  ctx = np.zeros((4, 15), bool)
  mask = (rng.random((4, 15)) > 0.3).astype(np.float32)
  adv = np.array([1.0, -0.5, 0.7, -1.2], np.float32)
  trainer_logp = np.asarray(grpo.token_logprobs(params, jnp.asarray(tokens), jnp.asarray(ctx),
                                                c, 1.0, (TOK.eos_id,)), np.float64)
  sampler = (trainer_logp + rng.normal(0, 0.6, trainer_logp.shape)).astype(np.float32)
  mesh = parallel.make_mesh((1, 1, 1))
  cfg = grpo.GRPOConfig(updates_per_batch=1, tis_cap=2.0, mesh_shape=(1, 1, 1))
  s = grpo.loss_settings_for(cfg, (TOK.eos_id,))
  assert not s.old_from_batch and s.batch_keys()[-1] == "sampler_logp"
  batch = {"tokens": tokens, "thinking_ctx": ctx, "loss_mask": mask, "advantages": adv,
           "sampler_logp": sampler}
  results = {}
  for cap in (2.0, 0.0):
    s_cap = dataclasses.replace(s, tis_cap=cap)
    opt = grpo.optimizer_for(cfg)
    update = grpo.make_update_fn(c, opt, mesh, s_cap, False)
    state = grpo_train._initial_state(cfg, params, opt,
                                      grpo.state_shardings(c, opt, mesh, False)[1])
    with parallel.activate(mesh, c):
      _, m = update(state, {k: jnp.asarray(batch[k]) for k in s_cap.batch_keys()})
    results[cap] = jax.tree.map(float, m)
  want, _, want_m = _np_loss(trainer_logp, trainer_logp, trainer_logp, sampler, adv, mask,
                             tis_cap=2.0)
  np.testing.assert_allclose(results[2.0]["loss"], want, rtol=1e-4)
  np.testing.assert_allclose(results[2.0]["tis_weight"], want_m["tis_weight"], rtol=1e-4)
  assert results[2.0]["tis_capped_fraction"] > 0
  assert results[0.0]["clip_fraction"] == 0 and "tis_weight" not in results[0.0]
  np.testing.assert_allclose(results[0.0]["loss"], _np_loss(
      trainer_logp, trainer_logp, trainer_logp, sampler, adv, mask)[0], rtol=1e-4)
  assert abs(results[2.0]["loss"] - results[0.0]["loss"]) > 1e-3


def test_sampler_logprobs_are_aligned_with_the_trainers(model):
  """On real think() rollouts (same params, float32) the sampler's recorded log-probs of the
  trained tokens equal the trainer's: the TIS weight is 1 wherever the loss reads it."""
  params, config = model
  cfg = grpo.GRPOConfig(tasks=("addition",), difficulties=(1,), group_size=2,
                        prompts_per_step=2, temperature=1.5, max_thinking=100, cache_len=128,
                        max_answer_tokens=8, mesh_shape=(1, 1, 1))
  tc = grpo.think_config_for(cfg, config, TOK)
  problems, targets = grpo.step_problems(cfg, 1)
  r = grpo.sample_groups(params, TOK, tc, problems, targets, 2, budget=100, seed=3)
  trainer_logp = np.asarray(grpo.token_logprobs(params, jnp.asarray(r.tokens),
                                                jnp.asarray(r.thinking_ctx), config, 1.5,
                                                tuple(tc.eos_ids)))
  on = r.loss_mask > 0
  assert on.sum() > 50 and (r.sampler_logp[on] < 0).any()
  np.testing.assert_allclose(r.sampler_logp[on], trainer_logp[on], atol=2e-4)
  assert (r.sampler_logp[~on][r.tokens[:, 1:][~on] != TOK.pad_id] == 0).all()  # forced: 0


# ---- a cut rollout never outscores a closed one --------------------------------------------

@pytest.mark.parametrize("kind", ["max", "exact"])
def test_a_cut_rollout_never_beats_a_late_close(kind):
  cfg = grpo.GRPOConfig(truncation="penalize", truncation_penalty=-0.5, budget_targets=(8,),
                        budget_reward=kind, budget_alpha=0.5, max_thinking=256, cache_len=300)
  # The case: target 8, a correct answer closed at 200 scores 1 - 0.5 * 192 / 8 = -11.
  reward, _ = grpo.rollout_rewards(cfg, [1, 1], [200, 256], [False, True], [8, 8])
  assert reward[0] == -11 and reward[1] < reward[0]
  for target in (1, 8, 64, 256):
    n = np.arange(0, 257)
    closed = np.concatenate([grpo.rollout_rewards(cfg, np.full(n.size, c), n,
                                                  np.zeros(n.size, bool), [target] * n.size)[0]
                             for c in (0, 1)])
    cut, valid = grpo.rollout_rewards(cfg, [1, 0], [256, 256], [True, True], [target] * 2)
    assert valid.all() and cut.max() < closed.min(), (target, cut, closed.min())
  # Without budget targets the penalty stays what it was (below a wrong answer's 0).
  plain = dataclasses.replace(cfg, budget_targets=())
  assert grpo.rollout_rewards(plain, [1], [256], [True], [None])[0].tolist() == [-0.5]
  with pytest.raises(ValueError, match="truncation_penalty"):
    dataclasses.replace(cfg, truncation_penalty=0.5)
