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
  """Right-padded prompts (each ending in `<think>`) and their per-sequence controls."""
  tokens: Array          # [batch, prompt_width] int32
  lengths: Array         # [batch] int32
  budget: Array          # [batch] int32, max thinking tokens (a large value: unlimited)
  min_thinking: Array    # [batch] int32


@struct.dataclass
class ThinkState:
  # decode state
  cache: KVCache
  logits: Array            # [batch, vocab] f32: prediction for the token at `position`
  position: Array          # [batch] int32: where the next token is written
  keys: Array              # [batch] PRNG keys, one stream per sequence
  step: Array              # [] int32: loop iterations so far
  # what was generated
  tokens: Array            # [batch, max_new] int32
  segments: Array          # [batch, max_new] int32 (Segment)
  num_generated: Array     # [batch] int32
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
  # convergence: tumbling windows of final-layer hidden states of thinking tokens
  window_sum: Array        # [batch, embed] f32
  window_count: Array      # [batch] int32
  prev_window_mean: Array  # [batch, embed] f32
  has_prev_window: Array   # [batch] bool
  similarity: Array        # [batch] f32, last window-to-window cosine (nan before two windows)
  # confidence probes
  probe_history: Array     # [batch, max(agreement,1), probe_answer_tokens] int32, newest first
  num_probes: Array        # [batch] int32
  confidence: Array        # [batch] f32, last probe's estimate (nan before the first)
  probe_agrees: Array      # [batch] bool, last probe's answer equalled the previous ones


@struct.dataclass
class ThinkResult:
  tokens: Array            # [batch, max_new] generated tokens
  segments: Array          # [batch, max_new] Segment of each
  num_generated: Array     # [batch]
  thinking_tokens: Array   # [batch]
  answer_tokens: Array     # [batch]
  stop_reason: Array       # [batch] StopReason
  num_probes: Array        # [batch]
  confidence: Array        # [batch] last probe's estimate
  similarity: Array        # [batch] last window similarity
  finished: Array          # [batch] bool: reached EOS or the answer cap (not cut by the cache)


def initial_controller(inputs: ThinkInputs, config: ThinkConfig) -> dict:
  """Per-sequence controller fields at the start of thinking."""
  batch = inputs.lengths.shape[0]
  room = config.cache_len - inputs.lengths - config.reserve
  cap = jnp.minimum(inputs.budget, room)
  zeros = jnp.zeros((batch,), jnp.int32)
  return dict(
      phase=jnp.full((batch,), Phase.THINKING, jnp.int32),
      cap=cap,
      cap_reason=jnp.where(inputs.budget <= room, StopReason.BUDGET, StopReason.CONTEXT
                           ).astype(jnp.int32),
      min_thinking=jnp.minimum(inputs.min_thinking, cap),
      thinking_tokens=zeros, answer_tokens=zeros,
      stop_reason=jnp.full((batch,), StopReason.NONE, jnp.int32),
      forced=zeros, forced_cursor=zeros)
