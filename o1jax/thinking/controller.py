"""The budget controller: the per-token logic that every decoding path shares.

`think()`'s plain step (loop.py), the speculative step (speculative.py), the serving engine
and search all drive sequences through these functions, so budgets, minimums, forced closes,
stop rules and the recorded output behave the same everywhere. This module sits below both
loops: it imports neither.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from o1jax.model.cache import KVCache
from o1jax.model.decode import prompt_positions
from o1jax.model.transformer import forward
from o1jax.thinking import kv_eviction
from o1jax.thinking.config import Phase, StopReason, ThinkConfig
from o1jax.thinking.sampling import sample
from o1jax.thinking.state import (FORCED_CLOSE, FORCED_PREFIX, FORCED_WAIT, Segment,
                                  ThinkInputs, ThinkResult, ThinkState, draw_temperature)


def _where(cond, a, b):
  """jnp.where that keeps int32 carries int32 (IntEnum operands would widen them)."""
  return jnp.where(cond, a, b).astype(jnp.int32)


def is_eos(token, config: ThinkConfig):
  """Whether each token is one of the model's end-of-answer ids."""
  return jnp.isin(token, jnp.asarray(config.eos_ids, jnp.int32))


def controller_logits(s: ThinkState, logits, config: ThinkConfig):
  """The logits [batch, vocab] the controller lets each sequence sample its next token from.

  Thinking ends with </think>, never with EOS; below the minimum, without a wait string,
  the close itself is suppressed (s1 budget forcing)."""
  thinking = s.phase == Phase.THINKING
  below_min = s.thinking_tokens < s.min_thinking
  eos = jnp.asarray(config.eos_ids, jnp.int32)
  logits = logits.at[:, eos].set(jnp.where(thinking[:, None], -jnp.inf, logits[:, eos]))
  suppress_close = thinking & below_min & (len(config.wait_ids) == 0)
  return logits.at[:, config.end_think_id].set(
      jnp.where(suppress_close, -jnp.inf, logits[:, config.end_think_id]))


def choose_token(s: ThinkState, config: ThinkConfig, table, table_len):
  """Picks every sequence's next token and advances its phase.

  Returns (state, token, segment, logprob): logprob [batch] is the token's log-probability
  under the distribution it was drawn from, 0 where the controller emitted a forced token or
  padding (nothing was drawn) and for greedy rows."""
  logits = controller_logits(s, s.logits, config)
  # A request's n-th token folds n into its own key: the draw depends on the request alone,
  # not on the loop step, its batch row or when a serving slot took it in.
  step_keys = jax.vmap(jax.random.fold_in)(s.keys, s.num_generated)
  sampled, logprob = sample(logits, step_keys, draw_temperature(s), s.top_k, s.top_p)
  s, token, segment, is_draw = advance_controller(s, sampled, config, table, table_len)
  return s, token, segment, jnp.where(is_draw, logprob, 0.0)


def advance_controller(s: ThinkState, sampled, config: ThinkConfig, table, table_len):
  """The budget controller's transition for one token: given each sequence's draw `sampled`
  [batch] from its `controller_logits`, emits the token (the draw, a forced token or padding)
  and advances the phase. Returns (state, token, segment, is_draw): is_draw [batch] marks
  the rows whose emitted token is their draw (not a forced token, not padding).

  The one copy of the phase logic: the plain step and the speculative step
  (o1jax/thinking/speculative.py, once per accepted candidate) both call it."""
  thinking = s.phase == Phase.THINKING
  waiting = (s.phase == Phase.CLOSING) & (s.forced == FORCED_WAIT)
  below_min = s.thinking_tokens < s.min_thinking

  # Transitions out of THINKING, in priority order: the cap, then the model's own close.
  hit_cap = (thinking | waiting) & (s.thinking_tokens >= s.cap)
  tries_close = thinking & ~hit_cap & (sampled == config.end_think_id)
  start_wait = tries_close & below_min  # only reachable when a wait string exists
  natural = tries_close & ~below_min
  has_prefix = len(config.answer_prefix_ids) > 0

  phase, forced, cursor = s.phase, s.forced, s.forced_cursor
  stop_reason = _where(hit_cap, s.cap_reason, s.stop_reason)
  stop_reason = _where(natural, StopReason.NATURAL, stop_reason)
  phase = _where(hit_cap | start_wait, Phase.CLOSING, phase)
  forced = _where(hit_cap, FORCED_CLOSE, _where(start_wait, FORCED_WAIT, forced))
  cursor = _where(hit_cap | start_wait, 0, cursor)

  # Emit: a forced token while CLOSING (including sequences that just entered it).
  closing = phase == Phase.CLOSING
  forced_token = jnp.asarray(table)[forced, jnp.minimum(cursor, table.shape[1] - 1)]
  cursor_after = cursor + 1
  forced_done = closing & (cursor_after >= jnp.asarray(table_len)[forced])
  answering = s.phase == Phase.ANSWERING
  done = s.phase == Phase.DONE

  token = jnp.where(closing, forced_token, sampled)
  token = jnp.where(natural, config.end_think_id, token)
  token = jnp.where(done, config.pad_id, token)

  segment = jnp.full_like(token, Segment.THINKING)
  segment = jnp.where(closing & (forced != FORCED_WAIT), Segment.CLOSE, segment)
  segment = jnp.where(natural, Segment.CLOSE, segment)
  segment = jnp.where(answering, Segment.ANSWER, segment)
  segment = jnp.where(done, Segment.PAD, segment)

  # Phase after emitting.
  after_forced = _where(forced == FORCED_WAIT, Phase.THINKING, Phase.ANSWERING)
  phase = _where(forced_done, after_forced, phase)
  phase = _where(natural, Phase.CLOSING if has_prefix else Phase.ANSWERING, phase)
  forced = _where(natural, FORCED_PREFIX, forced)
  cursor = _where(natural, 0, _where(closing, cursor_after, cursor))
  answer_tokens = s.answer_tokens + answering
  finished_answer = answering & (is_eos(token, config) |
                                 (answer_tokens >= s.max_answer_tokens))
  phase = _where(finished_answer, Phase.DONE, phase)
  thinking_tokens = s.thinking_tokens + (segment == Segment.THINKING)

  s = s.replace(phase=phase, forced=forced, forced_cursor=cursor, stop_reason=stop_reason,
                answer_tokens=answer_tokens, thinking_tokens=thinking_tokens)
  return s, token, segment, ~closing & ~done


def early_stop(s: ThinkState, fire, reason: int) -> ThinkState:
  """Switches the sequences where `fire` holds from THINKING to the forced close.

  Every early stop obeys the minimum; only the cap (budget or context) cuts below it."""
  fire = fire & (s.phase == Phase.THINKING) & (s.thinking_tokens >= s.min_thinking)
  return s.replace(phase=_where(fire, Phase.CLOSING, s.phase),
                   forced=_where(fire, FORCED_CLOSE, s.forced),
                   forced_cursor=_where(fire, 0, s.forced_cursor),
                   stop_reason=_where(fire, reason, s.stop_reason))


def _update_convergence(s: ThinkState, hidden, fed_thinking, config: ThinkConfig):
  """Tumbling windows of W thinking tokens: compare each window's mean hidden state with
  the previous window's (the article's rule, evaluated at every window boundary)."""
  window_sum = s.window_sum + jnp.where(fed_thinking[:, None], hidden.astype(jnp.float32), 0.0)
  count = s.window_count + fed_thinking
  full = count >= config.converge_window
  mean = window_sum / config.converge_window
  cos = jnp.sum(mean * s.prev_window_mean, -1) / (
      jnp.linalg.norm(mean, axis=-1) * jnp.linalg.norm(s.prev_window_mean, axis=-1) + 1e-9)
  compared = full & s.has_prev_window
  s = s.replace(
      similarity=jnp.where(compared, cos, s.similarity),
      prev_window_mean=jnp.where(full[:, None], mean, s.prev_window_mean),
      has_prev_window=s.has_prev_window | full,
      window_sum=jnp.where(full[:, None], 0.0, window_sum),
      window_count=jnp.where(full, 0, count))
  if config.rule("converged"):
    s = early_stop(s, compared & s.use_converged & (cos >= s.converge_threshold),
                    StopReason.CONVERGED)
  return s


def _head_confidence(s: ThinkState, due, hidden, heads, config: ThinkConfig) -> ThinkState:
  """The `confidence` rule with a trained head (issue 7): P(right if stopped now) read off
  the hidden state of the token just fed, recorded in the same carry fields a probe fills."""
  from o1jax.model.heads import head_probability  # local: only traced with a head
  conf = head_probability(heads["confidence"], hidden)
  return s.replace(confidence=jnp.where(due, conf, s.confidence),
                   num_probes=s.num_probes + due)


def record_token(s: ThinkState, token, segment, logprob):
  """Appends each live sequence's emitted token, its segment and its sampling log-prob
  (choose_token's) to its output. Returns (state, live)."""
  live = segment != Segment.PAD
  batch = jnp.arange(token.shape[0])
  index = jnp.where(live, s.num_generated, s.tokens.shape[1])
  s = s.replace(tokens=s.tokens.at[batch, index].set(token, mode="drop"),
                segments=s.segments.at[batch, index].set(segment, mode="drop"),
                logprobs=s.logprobs.at[batch, index].set(logprob, mode="drop"),
                num_generated=s.num_generated + live)
  return s, live


def estimate_due(s: ThinkState, fed_token, fed_thinking, config: ThinkConfig):
  """Confidence estimates are taken every probe_every thinking tokens, or right after each
  step-end token (`config.confidence_reads`), once the minimum is reached (below it no rule
  may stop, so an estimate there would be wasted work). `fed_token` [batch]: the token each
  row just fed."""
  if config.confidence_reads == "step_ends":
    at_read = jnp.isin(fed_token, jnp.asarray(config.step_end_ids, jnp.int32))
  else:
    at_read = s.thinking_tokens % config.probe_every == 0
  return (fed_thinking & (s.phase == Phase.THINKING) & s.use_confidence & at_read &
          (s.thinking_tokens >= s.min_thinking))


def token_stop_rules(s: ThinkState, hidden, fed_token, fed_thinking, config: ThinkConfig,
                     heads=None):
  """The stop rules that read the hidden state [batch, embed] of one fed token `fed_token`
  [batch]: convergence and a confidence (and give-up) head. The probe rule is
  decode_step's own."""
  if config.rule("converged"):
    # Only compiled in with its rule: the windows cost ~10 ops a step on every row, a
    # visible share of a small model's step at batch 1. Without it `similarity` stays nan.
    s = _update_convergence(s, hidden, fed_thinking, config)
  if config.rule("confidence") and config.confidence_estimate == "head":
    due = estimate_due(s, fed_token, fed_thinking, config)
    s = _head_confidence(s, due, hidden, heads, config)
    s = early_stop(s, due & (s.confidence >= s.confidence_threshold), StopReason.CONFIDENCE)
    if config.gives_up:
      from o1jax.model.heads import head_probability  # local: only traced with a head
      hopeless = head_probability(heads["value"], hidden) < s.give_up_threshold
      s = early_stop(s, due & hopeless, StopReason.GIVE_UP)
  return s


def stop_when_cache_full(s: ThinkState, config: ThinkConfig) -> ThinkState:
  """A sequence whose cache is full stops wherever it is."""
  return s.replace(phase=_where(s.position >= config.cache_len, Phase.DONE, s.phase))


def prefill(params, inputs: ThinkInputs, config: ThinkConfig):
  """Runs the prompts through the model into a fresh cache.

  Returns (logits [batch, vocab] and final hidden states [batch, embed] after each
  prompt's last token (`<think>`: a budget head reads it), cache)."""
  batch, width = inputs.tokens.shape
  if config.thinking_kv_budget is None:
    cache = KVCache.init(config.model, batch, config.cache_len)
  else:
    cache = kv_eviction.init_cache(config, batch, inputs.lengths, width)
  logits, hidden, cache = forward(params, inputs.tokens,
                                  prompt_positions(inputs.lengths, width), cache, config.model)
  last = jnp.maximum(inputs.lengths - 1, 0)
  at_last = lambda x: jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
  return at_last(logits), at_last(hidden), cache


def check_heads(config: ThinkConfig, heads) -> None:
  if (config.rule("confidence") and config.confidence_estimate == "head"
      and (heads is None or "confidence" not in heads)):
    raise ValueError("confidence_estimate='head' needs think(..., heads={'confidence': head})")
  if config.gives_up and (heads is None or "value" not in heads):
    raise ValueError("give_up_threshold > 0 needs think(..., heads={..., 'value': head})")


def to_result(s: ThinkState, config: ThinkConfig) -> ThinkResult:
  last_token = jnp.take_along_axis(s.tokens, jnp.maximum(s.num_generated - 1, 0)[:, None],
                                   axis=1)[:, 0]
  finished = (s.answer_tokens >= s.max_answer_tokens) | (
      (s.answer_tokens > 0) & is_eos(last_token, config))
  return ThinkResult(tokens=s.tokens, segments=s.segments, logprobs=s.logprobs,
                     num_generated=s.num_generated, thinking_tokens=s.thinking_tokens,
                     answer_tokens=s.answer_tokens, stop_reason=s.stop_reason,
                     num_probes=s.num_probes, confidence=s.confidence,
                     similarity=s.similarity, finished=finished)
