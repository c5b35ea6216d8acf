"""The slot engine's compiled operations on the batched thinking-loop state (o1jax/serving/
engine.py drives them): one `ThinkState` of S rows, a row per slot, moved in and out whole.

Each is a module-level `jax.jit`, so every Engine in a process shares one compiled program
per shape (`Engine.compilations` counts them); the state is donated wherever the result
replaces it."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.cache import KVCache
from o1jax.thinking.config import Phase, ThinkConfig
from o1jax.thinking.controller import to_result
from o1jax.thinking.loop import run_steps
from o1jax.thinking.state import ThinkInputs, ThinkState, fill_settings, init_state, request_keys


def stub(keys) -> ThinkState:
  """A loop state holding only PRNG keys: a prefix that has no KV yet."""
  return ThinkState(**{f.name: None for f in dataclasses.fields(ThinkState)}).replace(
      keys=keys)


# A slot's row set aside by evict(): a one-row ThinkState whose PRNG keys are their raw key
# data, its leaves on the device (the pause pool) or numpy on host. resume() takes either.
SavedSlot = ThinkState


def rows(state: ThinkState, slot, n: int = 1) -> ThinkState:
  return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, slot, n, 0), state)


@functools.partial(jax.jit, donate_argnames=("state",))
def insert(state: ThinkState, rows: ThinkState, row, slot) -> ThinkState:
  """Row `row` of `rows` (a prefilled request, or a saved slot) into slot `slot`."""
  return jax.tree.map(
      lambda a, r: jax.lax.dynamic_update_slice_in_dim(
          a, jax.lax.dynamic_slice_in_dim(r, row, 1, 0), slot, 0), state, rows)


@jax.jit
def take(state: ThinkState, slot) -> ThinkState:
  """The slot's row, PRNG keys as raw key data (what host numpy can hold)."""
  row = rows(state, slot)
  return row.replace(keys=jax.random.key_data(row.keys))


@functools.partial(jax.jit, donate_argnames=("state",))
def free(state: ThinkState, slot) -> ThinkState:
  return state.replace(phase=state.phase.at[slot].set(Phase.DONE))


@functools.partial(jax.jit, donate_argnames=("state",))
def resume(state: ThinkState, saved: SavedSlot, slot) -> ThinkState:
  """A saved row (raw key data; device or host arrays) back into slot `slot`."""
  impl = jax.random.key_impl(state.keys)
  row = saved.replace(keys=jax.random.wrap_key_data(saved.keys, impl=impl))
  return jax.tree.map(lambda a, r: jax.lax.dynamic_update_slice_in_dim(a, r, slot, 0),
                      state, row)


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def generate(state: ThinkState, params, config: ThinkConfig, k, return_on_finish, heads):
  return run_steps(state, params, config, k, heads, return_on_finish)


@functools.partial(jax.jit, static_argnames=("config", "slots"))
def empty(config: ThinkConfig, slots: int) -> ThinkState:
  """S free slots (phase DONE): a well-formed state for the slot functions to fill."""
  inputs = ThinkInputs(tokens=jnp.zeros((slots, 1), jnp.int32),
                       lengths=jnp.ones((slots,), jnp.int32),
                       budget=jnp.zeros((slots,), jnp.int32),
                       min_thinking=jnp.zeros((slots,), jnp.int32),
                       request_key=request_keys(0, np.arange(slots)))
  inputs = fill_settings(inputs, config)
  logits = jnp.zeros((slots, config.model.vocab_size), jnp.float32)
  state = init_state(inputs, logits, KVCache.init(config.model, slots, config.cache_len), config)
  return state.replace(phase=jnp.full((slots,), int(Phase.DONE), jnp.int32))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SlotView:
  """What the host reads after a `generate` call (numpy, [slots, ...])."""
  phase: np.ndarray
  tokens: np.ndarray
  segments: np.ndarray
  num_generated: np.ndarray
  thinking_tokens: np.ndarray
  answer_tokens: np.ndarray
  stop_reason: np.ndarray
  finished: np.ndarray


@functools.partial(jax.jit, static_argnames=("config",))
def view(state: ThinkState, config: ThinkConfig) -> SlotView:
  r = to_result(state, config)
  return SlotView(phase=state.phase, tokens=r.tokens, segments=r.segments,
                  num_generated=r.num_generated, thinking_tokens=r.thinking_tokens,
                  answer_tokens=r.answer_tokens, stop_reason=r.stop_reason, finished=r.finished)
