"""The GRPO update on a device mesh: per-token log-probs under the sampling distribution, the
policy loss (o1jax/rl/losses.py), and one jitted, state-donating optimizer step laid out as the
trainer's (o1jax/training/grpo.py configures it; grpo_train.py runs it).

`LossSettings` is everything the step needs statically, so a run compiles its update once."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import optax
from flax import struct

from o1jax import parallel
from o1jax.rl import logprobs as logprobs_lib
from o1jax.rl import losses
from o1jax.training import trainer


def token_logprobs(params, tokens, thinking_ctx, model_config, temperature: float,
                   eos_ids: tuple[int, ...], chunk: int = 512, remat: bool = True):
  """log pi(tokens[:, t+1] | tokens[:, :t+1]) [B, L-1] under the sampling distribution:
  logits / temperature, EOS banned where the token was drawn while thinking; chunked over
  positions, never the [B, L, V] logits (o1jax/rl/logprobs.py; chunk 0: the full path)."""
  return logprobs_lib.token_logprobs(params, tokens, thinking_ctx, model_config, temperature,
                                     eos_ids, chunk=chunk, remat=remat)


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps: float, kl_coef: float):
  """The clipped token-level GRPO objective and its metrics, symmetric clip, no TIS
  (o1jax/rl/losses.py has the variants). ref_logp may be None (no reference: no KL)."""
  s = losses.PolicyLoss("grpo", clip_eps, clip_eps, kl_coef)
  return losses.policy_loss(logp, old_logp, advantages, mask, s, ref_logp=ref_logp)


@struct.dataclass
class GRPOState:
  step: jax.Array          # [] int32: optimizer steps taken
  params: Any
  opt_state: Any
  ref_params: Any = None   # the frozen reference policy (None: none kept)


@dataclasses.dataclass(frozen=True)
class LossSettings:
  """What the jitted step needs to know statically.

  old_from_batch: the batch carries `old_logp` (the policy before the batch's first update,
  needed when a batch is used for several updates); False: pi_old is the current policy's
  own value (stop-gradient), exact for one update per batch, and saves a forward.
  tis_cap > 0: the batch carries `sampler_logp` and the loss weights tokens by TIS."""
  temperature: float
  clip_eps: float
  kl_coef: float
  eos_ids: tuple[int, ...]
  loss_type: str = "grpo"
  clip_eps_low: float | None = None
  clip_eps_high: float | None = None
  tis_cap: float = 0.0
  max_len: int = 0
  chunk: int = 512
  remat: bool = True
  old_from_batch: bool = True

  def policy_loss(self) -> losses.PolicyLoss:
    low = self.clip_eps if self.clip_eps_low is None else self.clip_eps_low
    high = self.clip_eps if self.clip_eps_high is None else self.clip_eps_high
    return losses.PolicyLoss(self.loss_type, low, high, self.kl_coef, self.tis_cap,
                             self.max_len)

  def batch_keys(self) -> tuple[str, ...]:
    keys = ("tokens", "thinking_ctx", "loss_mask", "advantages")
    return (keys + (("old_logp",) if self.old_from_batch else ())
            + (("sampler_logp",) if self.tis_cap > 0 else ()))


def _update(state: GRPOState, batch, model_config, optimizer, s: LossSettings):
  logprobs = lambda params: token_logprobs(params, batch["tokens"], batch["thinking_ctx"],
                                           model_config, s.temperature, s.eos_ids,
                                           chunk=s.chunk, remat=s.remat)
  ref_logp = None
  if state.ref_params is not None:
    ref_logp = jax.lax.stop_gradient(logprobs(state.ref_params))
  policy = s.policy_loss()

  def loss_of(params):
    logp = logprobs(params)
    old = batch["old_logp"] if s.old_from_batch else jax.lax.stop_gradient(logp)
    return losses.policy_loss(logp, old, batch["advantages"], batch["loss_mask"], policy,
                              ref_logp=ref_logp, sampler_logp=batch.get("sampler_logp"))

  (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def state_shardings(model_config, optimizer, mesh, with_reference: bool):
  """(abstract GRPOState, GRPOState of NamedShardings): the trainer's layout, and the
  reference laid out like the policy."""
  abstract, sh = trainer.state_shardings(model_config, optimizer, mesh)
  ref = lambda x: x if with_reference else None
  return (GRPOState(step=abstract.step, params=abstract.params, opt_state=abstract.opt_state,
                    ref_params=ref(abstract.params)),
          GRPOState(step=sh.step, params=sh.params, opt_state=sh.opt_state,
                    ref_params=ref(sh.params)))


def batch_shardings(mesh, s: LossSettings) -> dict:
  """The update's batch layout: rows over the batch mesh axes."""
  return {k: parallel.batch_sharding(mesh, 1 if k == "advantages" else 2)
          for k in s.batch_keys()}


@functools.lru_cache(maxsize=16)
def make_update_fn(model_config, optimizer, mesh, s: LossSettings, with_reference: bool):
  """The update jitted for `mesh`, state donated and laid out as `state_shardings` (as the
  trainer's step); call it inside `parallel.activate(mesh, model_config)`. Its batch holds
  exactly `s.batch_keys()`. Cached: a resumed or repeated run in one process reuses the
  compiled step."""
  shardings = state_shardings(model_config, optimizer, mesh, with_reference)[1]
  step = functools.partial(_update, model_config=model_config, optimizer=optimizer, s=s)
  return jax.jit(step, in_shardings=(shardings, batch_shardings(mesh, s)),
                 out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)


@functools.partial(jax.jit, static_argnames=("model_config", "temperature", "eos_ids",
                                             "chunk"))
def _old_logprobs(params, tokens, thinking_ctx, model_config, temperature, eos_ids,
                  chunk: int = 512):
  return token_logprobs(params, tokens, thinking_ctx, model_config, temperature, eos_ids,
                        chunk=chunk, remat=False)
