"""think(): prefill, then one `lax.while_loop` that decodes the whole batch.

Each iteration every live sequence (1) picks its next token from the carried logits, as its
controller phase dictates: sample while THINKING, emit a forced sequence while CLOSING, sample
while ANSWERING; (2) feeds that token through the model at its own position; (3) updates its
stop-rule statistics (convergence windows, confidence probes). Budgets, minimums and stop
reasons are arrays in the carry, so one compiled program serves a batch whose sequences
think for different lengths and stop for different reasons, with no host round trip.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from o1jax.model.transformer import forward
from o1jax.thinking import kv_eviction
from o1jax.thinking import probe as probe_lib
from o1jax.thinking import speculative
from o1jax.thinking.config import Phase, StopReason, ThinkConfig
from o1jax.thinking.controller import (check_heads, choose_token, early_stop, estimate_due,
                                       prefill, record_token, stop_when_cache_full, to_result,
                                       token_stop_rules)
from o1jax.thinking.state import (Segment, ThinkInputs, ThinkResult, ThinkState, fill_settings,
                                  forced_table, init_state)


def decode_step(s: ThinkState, params, config: ThinkConfig, heads=None) -> ThinkState:
  """One token for every live sequence: choose it, feed it, update the stop rules.

  The single step of the budget controller: `think()`, the serving engine and search all
  run it.
  """
  return decode_step_with_hidden(s, params, config, heads)[0]


def decode_step_with_hidden(s: ThinkState, params, config: ThinkConfig, heads=None):
  """`decode_step`, also returning the final hidden state [batch, embed] of the token each
  row fed (garbage for rows that fed nothing): search scores a finished step with a PRM
  head from it, with no second forward pass."""
  table, table_len = forced_table(config)
  s, token, segment, logprob = choose_token(s, config, table, table_len)
  s, live = record_token(s, token, segment, logprob)

  # Feed the token at its position (finished sequences at -1: nothing written or attended).
  position = jnp.where(live, s.position, -1)
  if config.thinking_kv_budget is None:
    logits, hidden, cache = forward(params, token[:, None], position[:, None], s.cache,
                                    config.model)
  else:  # thinking tokens share a fixed number of KV slots
    logits, hidden, cache = kv_eviction.forward_evicting(
        params, token, position, segment == Segment.THINKING, s.cache, config)
  s = s.replace(logits=logits[:, 0].astype(jnp.float32), cache=cache,
                position=s.position + live)

  fed_thinking = segment == Segment.THINKING
  s = token_stop_rules(s, hidden[:, 0], token, fed_thinking, config, heads)
  if config.rule("confidence") and config.confidence_estimate == "probe":
    due = estimate_due(s, token, fed_thinking, config)
    due &= s.position + probe_lib.probe_length(config) <= config.cache_len
    s = jax.lax.cond(due.any(), lambda st: probe_lib.run_probe(st, due, params, config),
                     lambda st: st, s)
    s = early_stop(s, due & probe_lib.is_confident(s, config), StopReason.CONFIDENCE)
  return stop_when_cache_full(s, config), hidden[:, 0]


def run_steps(s: ThinkState, params, config: ThinkConfig, max_steps, heads=None,
              return_on_finish=False):
  """Up to `max_steps` decode steps while any sequence is live. Returns (state, steps run).

  With `return_on_finish` (a traced bool), it also returns as soon as a sequence finishes,
  so a server hands back a finished request (and its slot) at once, not at the end of k.
  """
  live_at_start = jnp.sum(s.phase != Phase.DONE)

  def cond_fn(carry):
    s, step = carry
    live = jnp.sum(s.phase != Phase.DONE)
    return ((live > 0)                           # someone is still thinking or answering
            & (step < max_steps)                 # bounded: each step writes one token a row
            & ~(return_on_finish & (live < live_at_start)))  # a request just finished

  def body_fn(carry):
    s, step = carry
    return decode_step(s, params, config, heads), step + 1

  return jax.lax.while_loop(cond_fn, body_fn, (s, jnp.zeros((), jnp.int32)))


@functools.partial(jax.jit, static_argnames=("config",))
def _think(params, inputs: ThinkInputs, config: ThinkConfig, heads,
           draft_params=None) -> ThinkResult:
  if config.speculative is not None:
    return to_result(speculative.run(params, draft_params, inputs, config, heads).think, config)
  logits, _, cache = prefill(params, inputs, config)
  state = init_state(inputs, logits, cache, config)
  final, _ = run_steps(state, params, config, config.cache_len, heads)
  return to_result(final, config)


class _Think:
  """`think(params, inputs, config, rng=None, heads=None) -> ThinkResult`.

  Thinks and answers for a batch of prompts in one compiled program. Per-request settings
  left None in `inputs` take the config's defaults; the program is compiled for
  `config.compile_key()`, so changing a temperature or a threshold does not recompile. Row b
  samples from `inputs.request_key[b]`, or from `fold_in(rng, b)` when the inputs carry no
  keys. `heads` (optional): a dict of trained heads (o1jax/model/heads.py);
  `config.confidence_estimate == "head"` needs heads["confidence"], give-up heads["value"].

  `draft_params`: the draft model's params when `config.speculative.draft_model` is set.

  `think.lower(...)` takes the same arguments and returns a lowering whose `compile()`
  gives a callable `(params, inputs, rng=None, heads=None, draft_params=None)`, for
  ahead-of-time compilation (e.g. with compiler options, or to inspect the program).
  """

  def __call__(self, params, inputs: ThinkInputs, config: ThinkConfig, rng=None,
               heads=None, draft_params=None) -> ThinkResult:
    check_heads(config, heads)
    return _think(params, fill_settings(inputs, config, rng), config.compile_key(), heads,
                  draft_params)

  def lower(self, params, inputs: ThinkInputs, config: ThinkConfig, rng=None, heads=None,
            draft_params=None):
    check_heads(config, heads)
    lowered = _think.lower(params, fill_settings(inputs, config, rng), config.compile_key(),
                           heads, draft_params)
    return _LoweredThink(lowered, config)


@dataclasses.dataclass(frozen=True)
class _LoweredThink:
  lowered: Any
  config: ThinkConfig

  def as_text(self) -> str:
    return self.lowered.as_text()

  def compile(self, *args, **kwargs):
    compiled = self.lowered.compile(*args, **kwargs)
    config = self.config
    return lambda params, inputs, rng=None, heads=None, draft_params=None: compiled(
        params, fill_settings(inputs, config, rng), heads, draft_params)


think = _Think()
