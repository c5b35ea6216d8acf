"""The compiled half of search: rows of one batch that fork, extend by whole steps, and
back up to an earlier step, all driven by the thinking loop's own `decode_step`.

A search holds, per problem, several partial solutions ("rows"). Every row is a row of one
`ThinkState`, so budgets, the forced close, answer caps and EOS are the budget controller's
(never a second copy), and per-request settings (temperature, budget, PRNG key) are arrays.
Next to the state, `SearchRows` records what a search needs per row: the PRM's score at each
step end, read off the hidden state the policy computed when it fed the step's delimiter
(no second forward), where each step ended (so a row can back up to it), the ORM's score at
EOS, and how many tokens the row has decoded (compute accounting).

One call of `advance` is one search round: fork (gather whole rows, KV cache included, from
their parents: never a re-prefill), optionally back rows up to an earlier step boundary and
retire rows, then decode until every live row has finished one more step (or, without
pausing, until every row is done). The host sees rows only between rounds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from o1jax.model.heads import head_probability
from o1jax.model.transformer import forward
from o1jax.thinking.config import Phase, ThinkConfig
from o1jax.thinking.controller import is_eos, prefill
from o1jax.thinking.loop import decode_step_with_hidden
from o1jax.thinking.state import (Segment, ThinkInputs, ThinkState, init_state,
                                  reset_rows)

Array = jax.Array

NO_RESTORE = -2     # `advance(restore_step=...)`: leave the row where it is
TO_PROMPT = -1      # back up to the start of thinking


@struct.dataclass
class SearchRows:
  state: ThinkState
  prompt_length: Array   # [rows] int32: where thinking starts
  step_scores: Array     # [rows, max_steps] f32: PRM P(step good) at each step end (nan: none)
  step_position: Array   # [rows, max_steps] int32: the row's position just after that step
  step_generated: Array  # [rows, max_steps] int32: num_generated just after that step
  step_thinking: Array   # [rows, max_steps] int32: thinking tokens just after that step
  num_steps: Array       # [rows] int32: steps ended so far on this row's path
  step_len: Array        # [rows] int32: content tokens in the step being written
  final_score: Array     # [rows] f32: ORM P(correct) read at the answer's EOS (nan: none)
  decoded: Array         # [rows] int32: tokens this row fed (discarded work included)
  refed: Array           # [rows] int32: extra single-token forwards to back up
  paused: Array          # [rows] bool: finished its step this round


def check_config(config: ThinkConfig) -> None:
  """Refuses what search's rows cannot run, before any compute.

  `ThinkConfig.speculative`: search pauses, scores and forks rows at the token that ends a
  step (reading that token's hidden state), so it runs the plain one-token `decode_step`;
  a speculative iteration emits several tokens at once (and carries a draft cache and a
  pending token that rows do not hold). Refused rather than silently decoded without it.
  `thinking_kv_budget`: forking and backing up assume cache slot == position, which an
  evicting cache breaks."""
  if config.speculative is not None:
    raise ValueError("search does not support speculative decoding (ThinkConfig.speculative "
                     "is set): its step-level forks and back-ups run the plain one-token "
                     "step; set speculative=None")
  if config.thinking_kv_budget is not None:
    raise ValueError("search does not support thinking-KV eviction (thinking_kv_budget); "
                     "use a full or int8 cache")


def _score(heads, name, hidden):
  if heads is None or name not in heads:
    return jnp.full(hidden.shape[:1], jnp.nan, jnp.float32)
  return head_probability(heads[name], hidden)


@functools.partial(jax.jit, static_argnames=("config", "max_steps"))
def start(params, inputs: ThinkInputs, config: ThinkConfig, max_steps: int) -> SearchRows:
  """Prefills each prompt once: one row per problem, before any fork."""
  check_config(config)
  logits, _, cache = prefill(params, inputs, config)
  state = init_state(inputs, logits, cache, config)
  rows = inputs.lengths.shape[0]
  zeros = jnp.zeros((rows,), jnp.int32)
  per_step = lambda dtype, fill: jnp.full((rows, max_steps), fill, dtype)
  return SearchRows(
      state=state, prompt_length=inputs.lengths.astype(jnp.int32),
      step_scores=per_step(jnp.float32, jnp.nan), step_position=per_step(jnp.int32, 0),
      step_generated=per_step(jnp.int32, 0), step_thinking=per_step(jnp.int32, 0),
      num_steps=zeros, step_len=zeros, final_score=jnp.full((rows,), jnp.nan, jnp.float32),
      decoded=zeros, refed=zeros, paused=jnp.zeros((rows,), bool))


def _fork(rows: SearchRows, parent, salt) -> SearchRows:
  """Row i becomes a copy of row parent[i] (KV cache and controller included), and, where
  salt >= 0, samples from fold_in(parent's key, salt) from now on. Compute counters restart:
  the host has already read them for the round that ended."""
  rows = jax.tree.map(lambda x: jnp.take(x, parent, axis=0), rows)
  state = rows.state
  keys = jnp.where(salt >= 0, jax.vmap(jax.random.fold_in)(state.keys, jnp.maximum(salt, 0)),
                   state.keys)
  zeros = jnp.zeros_like(rows.decoded)
  return rows.replace(state=state.replace(keys=keys), decoded=zeros, refed=zeros)


def _restore(rows: SearchRows, step, params, config: ThinkConfig) -> SearchRows:
  """Backs rows with step >= TO_PROMPT up to the end of their step `step` (TO_PROMPT: the
  start of thinking): position, token count and thinking count return to that boundary,
  later steps are forgotten, and the boundary token is fed again for its logits (the cache
  below the boundary is untouched: later tokens were written at later positions). The
  controller is reset by `reset_rows`, the one copy of init_state's fresh row: stop-rule
  statistics gathered on the discarded path (convergence windows, probe answers) go too."""
  s = rows.state
  on = step >= TO_PROMPT
  k = jnp.clip(step, 0, rows.step_scores.shape[1] - 1)
  pick = lambda a: jnp.take_along_axis(a, k[:, None], axis=1)[:, 0]
  at_prompt = step == TO_PROMPT
  position = jnp.where(at_prompt, rows.prompt_length, pick(rows.step_position))
  generated = jnp.where(at_prompt, 0, pick(rows.step_generated))
  thinking = jnp.where(at_prompt, 0, pick(rows.step_thinking))
  last = jnp.take_along_axis(s.tokens, jnp.maximum(generated - 1, 0)[:, None], axis=1)[:, 0]
  token = jnp.where(generated > 0, last, config.think_id)
  logits, _, cache = forward(params, token[:, None],
                             jnp.where(on, position - 1, -1)[:, None], s.cache, config.model)
  state = reset_rows(s.replace(cache=cache), on, position, generated, thinking, logits[:, 0],
                     config)
  sel = lambda new, old: jnp.where(on, new, old)
  num_steps = sel(jnp.where(at_prompt, 0, k + 1), rows.num_steps)
  forget = jnp.arange(rows.step_scores.shape[1])[None, :] >= num_steps[:, None]
  return rows.replace(
      state=state, num_steps=num_steps, step_len=sel(0, rows.step_len),
      step_scores=jnp.where(forget, jnp.nan, rows.step_scores),
      final_score=sel(jnp.nan, rows.final_score), refed=rows.refed + on)


def _extend(rows: SearchRows, params, config: ThinkConfig, heads, delimiter_ids,
            pause_at_step_end: bool, max_tokens: int) -> SearchRows:
  """Decodes until every live row has ended one more thinking step (it then pauses) or is
  done; without pausing, until every row is done. A row that closes its thinking ends its
  last step there and goes on to finish its answer in the same round."""
  delimiters = jnp.asarray(delimiter_ids, jnp.int32)
  max_steps = rows.step_scores.shape[1]

  def cond_fn(carry):
    rows, t = carry
    live = (rows.state.phase != Phase.DONE) & ~rows.paused
    return live.any() & (t < max_tokens)   # someone still writing; bounded either way

  def body_fn(carry):
    rows, t = carry
    s = rows.state
    hold = rows.paused
    # A paused row must not move: it is DONE for this step, and gets its phase and logits
    # back afterwards (DONE rows feed nothing and write nothing).
    s2, hidden = decode_step_with_hidden(
        s.replace(phase=jnp.where(hold, Phase.DONE, s.phase).astype(jnp.int32)),
        params, config, heads)
    s2 = s2.replace(phase=jnp.where(hold, s.phase, s2.phase),
                    logits=jnp.where(hold[:, None], s.logits, s2.logits))
    fed_now = s2.num_generated > s.num_generated
    at = jnp.maximum(s2.num_generated - 1, 0)[:, None]
    token = jnp.take_along_axis(s2.tokens, at, axis=1)[:, 0]
    segment = jnp.take_along_axis(s2.segments, at, axis=1)[:, 0]
    thinking = fed_now & (segment == Segment.THINKING)
    is_delim = thinking & jnp.isin(token, delimiters)
    is_close = fed_now & (segment == Segment.CLOSE) & (token == config.end_think_id)
    step_len = rows.step_len + (thinking & ~is_delim)
    ends = (is_delim | is_close) & (step_len > 0)   # empty steps (";;") are not steps
    index = jnp.where(ends, rows.num_steps, max_steps)
    batch = jnp.arange(index.shape[0])
    put = lambda a, v: a.at[batch, index].set(v, mode="drop")
    eos_fed = fed_now & (segment == Segment.ANSWER) & is_eos(token, config)
    rows = rows.replace(
        state=s2,
        step_scores=put(rows.step_scores, _score(heads, "prm", hidden)),
        step_position=put(rows.step_position, s2.position),
        step_generated=put(rows.step_generated, s2.num_generated),
        step_thinking=put(rows.step_thinking, s2.thinking_tokens),
        num_steps=rows.num_steps + ends,
        step_len=jnp.where(is_delim | is_close, 0, step_len),
        final_score=jnp.where(eos_fed, _score(heads, "orm", hidden), rows.final_score),
        decoded=rows.decoded + fed_now,
        paused=rows.paused | (pause_at_step_end & is_delim & ends))
    return rows, t + 1

  rows, _ = jax.lax.while_loop(cond_fn, body_fn, (rows, jnp.zeros((), jnp.int32)))
  return rows.replace(paused=jnp.zeros_like(rows.paused))


@functools.partial(jax.jit, static_argnames=("config", "delimiter_ids", "pause_at_step_end",
                                             "max_tokens"))
def advance(rows: SearchRows, params, parent, salt, restore_step, retire, heads, *,
            config: ThinkConfig, delimiter_ids: tuple[int, ...], pause_at_step_end: bool,
            max_tokens: int) -> SearchRows:
  """One round: fork rows from `parent` [rows] (re-keying where `salt` >= 0), back rows up
  to `restore_step` [rows] (NO_RESTORE: stay), retire rows where `retire` (they are DONE and
  cost nothing but their place in the batch), then extend (see `_extend`).

  `heads`: {"prm": head, "orm": head} (either optional) read off the policy's hidden states.
  """
  rows = _fork(rows, parent, salt)
  # Backing up costs a forward over the batch: only when some row does.
  rows = jax.lax.cond((restore_step >= TO_PROMPT).any(),
                      lambda r: _restore(r, restore_step, params, config), lambda r: r, rows)
  state = rows.state
  rows = rows.replace(state=state.replace(
      phase=jnp.where(retire, Phase.DONE, state.phase).astype(jnp.int32)))
  return _extend(rows, params, config, heads, delimiter_ids, pause_at_step_end, max_tokens)
