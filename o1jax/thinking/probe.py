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
  whether each ended with EOS within A tokens.

  Verified speculatively against the previous probe's answer: one forward call over
  [close, prefix, previous answer] gives the greedy token at every answer position whose
  prefix agreed, so a stable answer costs a single call; rows that diverge finish the
  answer token by token from their first disagreement.
  """
  model = config.model
  forced = jnp.asarray(config.close_ids + config.answer_prefix_ids, jnp.int32)
  batch, n_forced, n_answer = state.position.shape[0], forced.shape[0], config.probe_answer_tokens
  guess = state.probe_history[:, 0]                  # [B, A], -1 before the first probe
  guess = jnp.where(guess < 0, config.pad_id, guess)
  start = jnp.where(due, state.position, -1)
  chunk = jnp.concatenate([jnp.broadcast_to(forced, (batch, n_forced)), guess], axis=1)
  offsets = jnp.arange(n_forced + n_answer)[None, :]
  positions = jnp.where(due[:, None], start[:, None] + offsets, -1)
  logits, _, cache = forward(params, chunk, positions, state.cache, model)
  # Prediction for answer token j given the forced tokens and guess[:j].
  probs = jax.nn.softmax(logits[:, n_forced - 1: n_forced - 1 + n_answer].astype(jnp.float32), -1)
  greedy = jnp.argmax(probs, -1).astype(jnp.int32)
  greedy_prob = jnp.max(probs, -1)
  # greedy[j] is the true greedy token while guess[:j] matched greedy[:j]. Up to and including
  # the first disagreement (or the first EOS) the speculative answer is exact.
  agree = greedy == guess
  is_eos = jnp.isin(greedy, jnp.asarray(config.eos_ids, jnp.int32))
  stop = ~agree | is_eos
  first_stop = jnp.where(stop.any(-1), jnp.argmax(stop, -1), n_answer - 1)   # [B]
  idx = jnp.arange(n_answer)[None, :]
  known = idx <= first_stop[:, None]
  answers = jnp.where(known, greedy, config.pad_id)
  prob_sum = jnp.sum(jnp.where(known, greedy_prob, 0.0), -1)
  ended = jnp.take_along_axis(is_eos, first_stop[:, None], 1)[:, 0]
  # Rows that disagreed before EOS continue from their first disagreement.
  cursor = first_stop + 1                                  # next answer index to produce
  token = jnp.take_along_axis(greedy, first_stop[:, None], 1)[:, 0]
  live = due & ~ended & (cursor < n_answer)

  eos_ids = jnp.asarray(config.eos_ids, jnp.int32)

  def body(c):
    cursor, token, cache, answers, prob_sum, live, ended = c
    pos = jnp.where(live, start + n_forced + cursor - 1, -1)  # feed the last known token
    logits, _, cache = forward(params, token[:, None], pos[:, None], cache, model)
    p = jax.nn.softmax(logits[:, 0].astype(jnp.float32), -1)
    nxt = jnp.argmax(p, -1).astype(jnp.int32)
    batch_idx = jnp.arange(batch)
    write = jnp.where(live, cursor, n_answer)
    answers = answers.at[batch_idx, write].set(nxt, mode="drop")
    prob_sum = prob_sum + jnp.where(live, jnp.max(p, -1), 0.0)
    ended = ended | (live & jnp.isin(nxt, eos_ids))
    cursor = cursor + live
    live = live & ~jnp.isin(nxt, eos_ids) & (cursor < n_answer)
    return cursor, jnp.where(live, nxt, token), cache, answers, prob_sum, live, ended

  c = (cursor, token, cache, answers, prob_sum, live, ended)
  c = jax.lax.while_loop(lambda c: c[5].any(), body, c)   # while some row still decodes
  cursor, _, cache, answers, prob_sum, _, ended = c
  # `cursor` counts the answer tokens produced, EOS included. Counting "not pad" instead
  # misses an EOS that equals the pad id (models without a pad token): confidence > 1.
  confidence = prob_sum / jnp.maximum(cursor, 1)
  return answers, confidence, ended & due, cache


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
  del config  # the threshold is per request, in the state
  return (state.confidence >= state.confidence_threshold) | state.probe_agrees
