"""The loop carry: per-sequence controller state next to the decode state."""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from o1jax.model.cache import KVCache
from o1jax.thinking.config import Phase, StopReason, ThinkConfig

Array = jax.Array


class Segment(enum.IntEnum):
  """What each generated token is, so the host can split thinking from answer."""
  PAD = 0
  THINKING = 1
  CLOSE = 2     # the end-of-thinking marker, forced close strings and answer prefixes
  ANSWER = 3


# Forced token sequences, by index into ForcedTable.
FORCED_CLOSE = 0   # close_ids + answer_prefix_ids: thinking stopped from outside
FORCED_PREFIX = 1  # answer_prefix_ids: after the model's own close
FORCED_WAIT = 2    # wait_ids: the model tried to close before the minimum


def forced_table(config: ThinkConfig) -> tuple[np.ndarray, np.ndarray]:
  """([3, L] token table, [3] lengths) of the forced sequences; static numpy constants."""
  seqs = [config.close_ids + config.answer_prefix_ids, config.answer_prefix_ids, config.wait_ids]
  width = max(1, max(len(s) for s in seqs))
  table = np.full((3, width), config.pad_id, np.int32)
  for i, s in enumerate(seqs):
    table[i, : len(s)] = s
  return table, np.array([len(s) for s in seqs], np.int32)


@struct.dataclass
class ThinkInputs:
  """Right-padded prompts (each ending in `<think>`) and their per-request controls.

  Only tokens, lengths, budget and min_thinking are required; a field left None takes the
  ThinkConfig default for every row. `request_key` [batch] is each request's own PRNG key
  (typed): a request samples the same tokens whatever else is in the batch and wherever it
  sits; None keys row b by `fold_in(rng, b)`.
  """
  tokens: Array          # [batch, prompt_width] int32
  lengths: Array         # [batch] int32
  budget: Array          # [batch] int32, max thinking tokens (a large value: unlimited)
  min_thinking: Array    # [batch] int32
  request_key: Array | None = None            # [batch] PRNG keys
  temperature: Array | None = None            # [batch] f32, 0: greedy
  answer_temperature: Array | None = None     # [batch] f32, < 0: the row's temperature
  top_k: Array | None = None                  # [batch] int32, 0: off
  top_p: Array | None = None                  # [batch] f32, 1: off
  max_answer_tokens: Array | None = None      # [batch] int32, <= config.max_answer_tokens
  use_confidence: Array | None = None         # [batch] bool, if the rule is compiled in
  use_converged: Array | None = None          # [batch] bool, likewise
  confidence_threshold: Array | None = None   # [batch] f32
  converge_threshold: Array | None = None     # [batch] f32
  give_up_threshold: Array | None = None      # [batch] f32, 0: off


# The per-request settings the controller carries, with the ThinkConfig field (or rule) that
# gives each one's default.
REQUEST_SETTINGS = ("temperature", "answer_temperature", "top_k", "top_p", "max_answer_tokens", "use_confidence",
                    "use_converged", "confidence_threshold", "converge_threshold",
                    "give_up_threshold")
_SETTING_DTYPES = dict(temperature=jnp.float32, answer_temperature=jnp.float32, top_k=jnp.int32, top_p=jnp.float32,
                       max_answer_tokens=jnp.int32, use_confidence=jnp.bool_,
                       use_converged=jnp.bool_, confidence_threshold=jnp.float32,
                       converge_threshold=jnp.float32, give_up_threshold=jnp.float32)


# `answer_temperature` in the carry: answer at the thinking temperature (the config's None).
ANSWER_AT_THINKING_TEMPERATURE = -1.0


def setting_defaults(config: ThinkConfig) -> dict:
  """The ThinkConfig defaults of every per-request setting (python scalars)."""
  return dict(temperature=config.temperature,
              answer_temperature=(ANSWER_AT_THINKING_TEMPERATURE
                                  if config.answer_temperature is None
                                  else config.answer_temperature),
              top_k=config.top_k, top_p=config.top_p,
              max_answer_tokens=config.max_answer_tokens,
              use_confidence=config.rule("confidence"), use_converged=config.rule("converged"),
              confidence_threshold=config.confidence_threshold,
              converge_threshold=config.converge_threshold,
              give_up_threshold=config.give_up_threshold)


def request_keys(seed, index) -> Array:
  """A request's PRNG key from its seed and its index within the call: the one derivation
  think_texts and the serving engine share, so a request samples alike in both."""
  seed, index = np.broadcast_arrays(np.asarray(seed, np.uint32), np.asarray(index, np.uint32))
  return _request_keys(seed.ravel(), index.ravel())


@jax.jit
def _request_keys(seed, index):  # jitted: an eager vmap re-traces on every call
  return jax.vmap(lambda s, i: jax.random.fold_in(jax.random.key(s), i))(seed, index)


def fill_settings(inputs: ThinkInputs, config: ThinkConfig, rng=None) -> ThinkInputs:
  """Fills every None per-request field from the config (and `rng`), checking shapes."""
  batch = inputs.lengths.shape[0]
  defaults = setting_defaults(config)
  filled = {}
  for name in REQUEST_SETTINGS:
    value = getattr(inputs, name)
    value = defaults[name] if value is None else value
    value = jnp.asarray(value, _SETTING_DTYPES[name])
    if value.ndim == 0:
      value = jnp.broadcast_to(value, (batch,))
    if value.shape != (batch,):
      raise ValueError(f"ThinkInputs.{name} has shape {value.shape}, expected ({batch},)")
    filled[name] = value
  key = inputs.request_key
  if key is None:
    if rng is None:
      raise ValueError("ThinkInputs.request_key is None and no rng was given")
    key = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(batch))
  return inputs.replace(request_key=key, **filled)


@struct.dataclass
class ThinkState:
  """The loop carry: one row per sequence (a serving slot), every field batch-major."""
  # decode state
  cache: KVCache
  logits: Array            # [batch, vocab] f32: prediction for the token at `position`
  position: Array          # [batch] int32: where the next token is written
  keys: Array              # [batch] PRNG keys, one stream per request
  # what was generated
  tokens: Array            # [batch, max_new] int32
  segments: Array          # [batch, max_new] int32 (Segment)
  # log-prob of each token under the distribution it was drawn from; 0: forced, greedy, pad
  logprobs: Array          # [batch, max_new] f32
  num_generated: Array     # [batch] int32: also the step a request's sampling key folds in
  # budget controller
  phase: Array             # [batch] int32 (Phase)
  cap: Array               # [batch] int32: min(budget, room the cache leaves for thinking)
  cap_reason: Array        # [batch] int32: BUDGET, or CONTEXT when the cache was the tighter cap
  min_thinking: Array      # [batch] int32
  thinking_tokens: Array   # [batch] int32
  answer_tokens: Array     # [batch] int32
  stop_reason: Array       # [batch] int32 (StopReason)
  forced: Array            # [batch] int32: which forced sequence CLOSING emits
  forced_cursor: Array     # [batch] int32: next index into it
  # per-request settings (REQUEST_SETTINGS): data, not static config
  temperature: Array       # [batch] f32
  answer_temperature: Array  # [batch] f32, < 0: `temperature` (see draw_temperature)
  top_k: Array             # [batch] int32
  top_p: Array             # [batch] f32
  max_answer_tokens: Array  # [batch] int32
  use_confidence: Array    # [batch] bool
  use_converged: Array     # [batch] bool
  confidence_threshold: Array  # [batch] f32
  converge_threshold: Array    # [batch] f32
  give_up_threshold: Array     # [batch] f32
  # convergence: tumbling windows of final-layer hidden states of thinking tokens
  window_sum: Array        # [batch, embed] f32
  window_count: Array      # [batch] int32
  prev_window_mean: Array  # [batch, embed] f32
  has_prev_window: Array   # [batch] bool
  # last window-to-window cosine: nan before two windows, and always nan unless the
  # `converged` rule is compiled in (stop_rules), since only then are windows tracked
  similarity: Array        # [batch] f32
  # confidence probes
  probe_history: Array     # [batch, max(agreement,1), probe_answer_tokens] int32, newest first
  num_probes: Array        # [batch] int32
  confidence: Array        # [batch] f32, last probe's estimate (nan before the first)
  probe_agrees: Array      # [batch] bool, last probe's answer equalled the previous ones


@struct.dataclass
class ThinkResult:
  tokens: Array            # [batch, max_new] generated tokens
  segments: Array          # [batch, max_new] Segment of each
  logprobs: Array          # [batch, max_new] f32 sampling log-prob of each (0: not drawn)
  num_generated: Array     # [batch]
  thinking_tokens: Array   # [batch]
  answer_tokens: Array     # [batch]
  stop_reason: Array       # [batch] StopReason
  num_probes: Array        # [batch]
  confidence: Array        # [batch] last probe's estimate
  similarity: Array        # [batch] last window similarity (nan without the converged rule)
  finished: Array          # [batch] bool: reached EOS or the answer cap (not cut by the cache)


def boundary_fields(position, num_generated, thinking_tokens, logits,
                    config: ThinkConfig) -> dict:
  """Every per-row field a thinking boundary fixes, for rows at `position` [batch] after
  `num_generated` tokens of which `thinking_tokens` were thinking, predicting `logits`
  [batch, vocab] next: the controller back in THINKING with no stop reason and nothing
  forced, no answer, fresh stop-rule statistics (convergence windows, probes), and no
  tokens recorded past the boundary.

  The one copy of a fresh row's controller state: `init_state` (the boundary at the prompt)
  and `reset_rows` (search backing a row up to a step end) both build it here. Request-level
  fields (cache, PRNG key, cap, minimum, per-request settings) are not a boundary's: they
  stay the request's.
  """
  batch = logits.shape[0]
  num_generated = jnp.broadcast_to(jnp.asarray(num_generated, jnp.int32), (batch,))
  zeros = jnp.zeros((batch,), jnp.int32)
  max_new = config.cache_len
  agreement = max(config.probe_agreement, 1)
  return dict(
      logits=logits.astype(jnp.float32),
      position=jnp.broadcast_to(jnp.asarray(position, jnp.int32), (batch,)),
      num_generated=num_generated,
      thinking_tokens=jnp.broadcast_to(jnp.asarray(thinking_tokens, jnp.int32), (batch,)),
      tokens=jnp.full((batch, max_new), config.pad_id, jnp.int32),
      segments=jnp.zeros((batch, max_new), jnp.int32),
      logprobs=jnp.zeros((batch, max_new), jnp.float32),
      phase=jnp.full((batch,), int(Phase.THINKING), jnp.int32),
      stop_reason=jnp.full((batch,), int(StopReason.NONE), jnp.int32),
      answer_tokens=zeros, forced=zeros, forced_cursor=zeros,
      window_sum=jnp.zeros((batch, config.model.embed_dim), jnp.float32),
      window_count=zeros,
      prev_window_mean=jnp.zeros((batch, config.model.embed_dim), jnp.float32),
      has_prev_window=jnp.zeros((batch,), bool),
      similarity=jnp.full((batch,), jnp.nan, jnp.float32),
      probe_history=jnp.full((batch, agreement, config.probe_answer_tokens), -1, jnp.int32),
      num_probes=zeros,
      confidence=jnp.full((batch,), jnp.nan, jnp.float32),
      probe_agrees=jnp.zeros((batch,), bool))


# What a row generated: reset_rows keeps it below the boundary, clears it past it.
_KEPT_BELOW_BOUNDARY = ("tokens", "segments", "logprobs")


def draw_temperature(s: ThinkState) -> Array:
  """[batch] the temperature each row's next draw uses: its answer temperature while it
  answers (where one is set), else its temperature."""
  own = (s.phase == Phase.ANSWERING) & (s.answer_temperature >= 0)
  return jnp.where(own, s.answer_temperature, s.temperature)


def reset_rows(state: ThinkState, rows, position, num_generated, thinking_tokens, logits,
               config: ThinkConfig) -> ThinkState:
  """Rows where `rows` [batch] (bool) go back to a thinking boundary (`boundary_fields`):
  exactly the controller state `init_state` gives a row there; their tokens below the
  boundary, KV cache, PRNG key, cap and settings are kept. Other rows are untouched."""
  fresh = boundary_fields(position, num_generated, thinking_tokens, logits, config)
  below = jnp.arange(config.cache_len)[None, :] < fresh["num_generated"][:, None]
  for name in _KEPT_BELOW_BOUNDARY:
    fresh[name] = jnp.where(below, getattr(state, name), fresh[name])
  sel = lambda new, old: jnp.where(rows.reshape(rows.shape + (1,) * (old.ndim - 1)), new, old)
  return state.replace(**{name: sel(new, getattr(state, name)) for name, new in fresh.items()})


def init_state(inputs: ThinkInputs, logits: Array, cache: KVCache,
               config: ThinkConfig) -> ThinkState:
  """The carry at the start of thinking, after prefill gave `logits` [batch, vocab] (the
  prediction after each prompt's last token) and `cache`. `inputs` must be filled
  (`fill_settings`)."""
  room = config.cache_len - inputs.lengths - config.reserve
  cap = jnp.minimum(inputs.budget, room)
  return ThinkState(
      cache=cache, keys=inputs.request_key,
      cap=cap,
      cap_reason=jnp.where(inputs.budget <= room, StopReason.BUDGET, StopReason.CONTEXT
                           ).astype(jnp.int32),
      min_thinking=jnp.minimum(inputs.min_thinking, cap),
      **{name: getattr(inputs, name) for name in REQUEST_SETTINGS},
      **boundary_fields(inputs.lengths, 0, 0, logits, config))
