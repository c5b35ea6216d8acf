"""GRPO's policy losses: GRPO, Dr. GRPO, DAPO's clip-higher and dynamic sampling, and
truncated importance sampling (TIS) against the sampler's own log-probs.

Per policy-sampled token t of row b (mask_t = 1), with A_b the row's advantage:

    rho_t = pi_theta(y_t) / pi_old(y_t)
    pg_t  = -w_t * min(rho_t A_b, clip(rho_t, 1 - eps_low, 1 + eps_high) A_b)
    w_t   = min(pi_old(y_t) / pi_sampler(y_t), C)       (TIS; w_t = 1 when off)
    k3_t  = pi_ref/pi_theta - log(pi_ref/pi_theta) - 1  (only with a reference, kl_coef > 0)

  loss_type "grpo":    sum_bt mask (pg + beta k3) / sum_bt mask   (token-level, as DAPO)
                       with A = (r - mean_group) / (std_group + eps)
  loss_type "dr_grpo": sum_bt mask (pg + beta k3) / (rows * max_len)  (Dr. GRPO, Liu et al.
                       2025: a constant normaliser, so a row's weight does not depend on its
                       length or the batch's) with A = r - mean_group (no std division).

pi_old is the trainer's policy before the batch's first update (with one update per batch it
equals pi_theta's value, so rho_t = 1 and only its gradient acts). pi_sampler is what the
sampling loop recorded (ThinkResult.logprobs): where sampler and trainer disagree (bf16
sampler, other kernels) w_t reweights the sampled tokens towards the trainer's policy, as in
Yao et al. 2025 ("Your efficient RL framework secretly brings you off-policy RL training"),
truncated at C so one token cannot dominate. DAPO clip-higher is eps_high > eps_low.
Dynamic sampling (DAPO) drops groups whose advantages are all zero (every member scored the
same, so they carry no gradient) and refills the batch with new prompts; the train loop does
the refill (`informative_groups` says which to keep).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

LOSS_TYPES = ("grpo", "dr_grpo")


@dataclasses.dataclass(frozen=True)
class PolicyLoss:
  """Static settings of the objective (hashable: part of the jitted update's key)."""
  loss_type: str = "grpo"
  eps_low: float = 0.2
  eps_high: float = 0.2
  kl_coef: float = 0.0
  tis_cap: float = 0.0     # C; 0: no TIS weight
  max_len: int = 0         # dr_grpo's constant per-row length (>0 for dr_grpo)

  def __post_init__(self):
    if self.loss_type not in LOSS_TYPES:
      raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
    if not 0 < self.eps_low < 1 or self.eps_high <= 0:
      raise ValueError(f"clip range needs 0 < eps_low < 1 and eps_high > 0, got "
                       f"eps_low={self.eps_low}, eps_high={self.eps_high}")
    if self.tis_cap < 0:
      raise ValueError(f"tis_cap must be >= 0 (0: off), got {self.tis_cap}")
    if self.loss_type == "dr_grpo" and self.max_len <= 0:
      raise ValueError(f"loss_type 'dr_grpo' needs max_len > 0, got {self.max_len}")


@functools.partial(jax.jit, static_argnames=("eps", "scale"))
def group_advantages(rewards, valid, eps: float, scale: bool = True):
  """r - mean within each group [P, G] over its valid members, divided by (population
  std + eps) when `scale` (GRPO; Dr. GRPO does not divide); invalid members and groups with
  under two valid members get 0."""
  rewards = jnp.asarray(rewards, jnp.float32)
  valid = jnp.asarray(valid, jnp.float32)
  count = valid.sum(-1, keepdims=True)
  mean = (rewards * valid).sum(-1, keepdims=True) / jnp.maximum(count, 1.0)
  adv = rewards - mean
  if scale:
    var = (((rewards - mean) ** 2) * valid).sum(-1, keepdims=True) / jnp.maximum(count, 1.0)
    adv = adv / (jnp.sqrt(var) + eps)
  return jnp.where((valid > 0) & (count >= 2), adv, 0.0)


def informative_groups(advantages) -> jax.Array:
  """[P] True where a group [P, G] has a non-zero advantage (DAPO's dynamic sampling keeps
  these: a group whose members all scored the same contributes no policy gradient)."""
  return jnp.any(jnp.asarray(advantages) != 0, axis=-1)


def policy_loss(logp, old_logp, advantages, mask, s: PolicyLoss, ref_logp=None,
                sampler_logp=None):
  """(loss, metrics) of the module docstring's objective. logp, old_logp, ref_logp,
  sampler_logp, mask: [B, T]; advantages [B]. ref_logp None: no KL term or metric;
  sampler_logp None or s.tis_cap == 0: no TIS weight."""
  mask = mask.astype(jnp.float32)
  tokens = jnp.maximum(mask.sum(), 1.0)
  if s.loss_type == "dr_grpo":
    denom = jnp.float32(mask.shape[0] * s.max_len)
  else:
    denom = tokens
  ratio = jnp.exp(logp - old_logp)
  adv = advantages[:, None]
  pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - s.eps_low, 1 + s.eps_high) * adv)
  clipped = (ratio < 1 - s.eps_low) | (ratio > 1 + s.eps_high)
  metrics = {"clip_fraction": (clipped * mask).sum() / tokens}
  if sampler_logp is not None and s.tis_cap > 0:
    behaviour = jnp.exp(jax.lax.stop_gradient(old_logp) - sampler_logp)
    weight = jnp.minimum(behaviour, s.tis_cap)
    pg = weight * pg
    metrics["tis_weight"] = (weight * mask).sum() / tokens
    metrics["tis_capped_fraction"] = ((behaviour > s.tis_cap) * mask).sum() / tokens
  per_token = pg
  if ref_logp is not None:
    log_r = ref_logp - logp
    k3 = jnp.exp(log_r) - log_r - 1.0
    metrics["kl"] = (k3 * mask).sum() / tokens
    if s.kl_coef > 0:
      per_token = pg + s.kl_coef * k3
  metrics["pg_loss"] = (pg * mask).sum() / denom
  return (per_token * mask).sum() / denom, metrics
