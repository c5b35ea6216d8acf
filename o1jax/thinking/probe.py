"""Confidence probes: force a close, greedily decode a short trial answer, score it.

The trial answer is written into the cache slots *after* the sequence's current position.
The main sequence then writes its next thinking token at its current position and attends
only to keys at or before it, so the probe's slots are never read again: nothing is copied
or restored. The estimate is the trial answer's mean token probability (DEER); a probe also
counts as confident when its answer equals the previous `probe_agreement` probes' answers
(Dynasor's certainty).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from o1jax.model.transformer import forward
from o1jax.thinking.config import ThinkConfig


def probe_length(config: ThinkConfig) -> int:
  return len(config.close_ids) + len(config.answer_prefix_ids) + config.probe_answer_tokens


def _greedy(logits):
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return token, jnp.take_along_axis(probs, token[:, None], axis=-1)[:, 0]


def trial_answer(state, due, params, config: ThinkConfig):
  """Greedy trial answers [B, A] (pad after EOS), their mean token probability [B] and
  whether each ended with EOS within A tokens."""
  model = config.model
  forced = jnp.asarray(config.close_ids + config.answer_prefix_ids, jnp.int32)
  batch, n_forced, n_answer = state.position.shape[0], forced.shape[0], config.probe_answer_tokens
  start = jnp.where(due, state.position, -1)
  offsets = jnp.arange(n_forced)[None, :]
  positions = jnp.where(due[:, None], start[:, None] + offsets, -1)
  logits, _, cache = forward(params, jnp.broadcast_to(forced, (batch, n_forced)), positions,
                             state.cache, model)
  token, prob = _greedy(logits[:, -1])

  def cond(c):
    i, _, _, _, _, _, ended = c
    return (i < n_answer) & ~(ended | ~due).all()   # stop once every probed row hit EOS

  def body(c):
    i, token, prob, cache, answers, prob_sum, ended = c
    live = due & ~ended
    answers = answers.at[:, i].set(jnp.where(live, token, config.pad_id))
    prob_sum = prob_sum + jnp.where(live, prob, 0.0)
    count_ended = ended | (token == config.eos_id)
    pos = jnp.where(live, start + n_forced + i, -1)
    logits, _, cache = forward(params, token[:, None], pos[:, None], cache, model)
    next_token, next_prob = _greedy(logits[:, 0])
    return i + 1, next_token, next_prob, cache, answers, prob_sum, count_ended

  answers = jnp.full((batch, n_answer), config.pad_id, jnp.int32)
  init = (jnp.zeros((), jnp.int32), token, prob, cache, answers,
          jnp.zeros((batch,), jnp.float32), jnp.zeros((batch,), bool))
  _, _, _, cache, answers, prob_sum, ended = jax.lax.while_loop(cond, body, init)
  length = jnp.sum(answers != config.pad_id, axis=-1)
  confidence = prob_sum / jnp.maximum(length, 1)
  return answers, confidence, ended, cache


def run_probe(state, due, params, config: ThinkConfig):
  answers, confidence, ended, cache = trial_answer(state, due, params, config)
  history = state.probe_history
  agree = ended & (state.num_probes >= config.probe_agreement)
  if config.probe_agreement > 0:
    agree &= jnp.all(history[:, : config.probe_agreement] == answers[:, None, :], axis=(1, 2))
  shifted = jnp.concatenate([answers[:, None], history[:, :-1]], axis=1)
  return state.replace(
      cache=cache,
      probe_history=jnp.where(due[:, None, None], shifted, history),
      num_probes=state.num_probes + due,
      confidence=jnp.where(due, confidence, state.confidence),
      probe_agrees=jnp.where(due, agree & (config.probe_agreement > 0), state.probe_agrees))


def is_confident(state, config: ThinkConfig):
  return (state.confidence >= config.confidence_threshold) | state.probe_agrees
