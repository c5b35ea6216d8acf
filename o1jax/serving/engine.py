"""A slot engine: S decode slots whose rows are the thinking loop's own carry.

In the spirit of JetStream's engine API, with eviction added. The decode state is one
`ThinkState` of S rows: the KV cache plus, per slot, the budget controller that `think()`
runs (phase, cap, minimum, counters, stop-rule statistics) and the request's own settings
(temperature, top-k/top-p, thresholds, which stop rules it uses, its PRNG key). Every
operation is a compiled function of that state:

  prefill(request) -> Prefix     the prompt through the model into a one-row state
  insert(prefix, slot)           that row into a slot
  generate(k)                    up to k `decode_step`s for every live slot, one call; it
                                 returns early when no slot is live
  evict(slot) -> SavedSlot       the slot's row (KV and controller) copied to host, slot freed
  resume(saved, slot)            the row back, bit for bit, in any free slot
  free(slot)                     the slot marked DONE (a cancel, or after reading a result)

`generate` runs `o1jax.thinking.loop.run_steps`, i.e. exactly `think()`'s step, so a
request's tokens equal `think()` on that request alone (tested), however it was scheduled.
Per-request settings are arrays, so one program serves requests with any settings;
prompt widths are bucketed to powers of two, so prefill compiles once per bucket.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.cache import KVCache
from o1jax.model.heads import apply_head
from o1jax.thinking.api import parse_budget, prepare_inputs
from o1jax.thinking.config import Phase, ThinkConfig
from o1jax.thinking.loop import check_heads, prefill as prefill_prompts, run_steps, to_result
from o1jax.thinking.state import ThinkInputs, ThinkState, fill_settings, init_state, request_keys


@dataclasses.dataclass(frozen=True)
class Request:
  """One thinking request. `prompt` is text (or chat messages, for HF tokenizers);
  `settings` overrides the engine config's per-request defaults (REQUEST_SETTINGS)."""
  prompt: Any
  budget: Any = None           # thinking tokens: int >= 0, or None / "inf" for unlimited
  min_thinking: int = 0
  seed: int = 0
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  id: str = ""


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Prefix:
  """A prefilled request: a one-row loop state, ready for a slot."""
  state: ThinkState
  hidden: jax.Array             # [1, embed] final hidden state at `<think>`
  prompt_tokens: int = dataclasses.field(metadata=dict(static=True), default=0)


# A slot's row on the host (numpy leaves): what evict() returns and resume() takes.
SavedSlot = ThinkState


def _rows(state: ThinkState, slot, n: int = 1) -> ThinkState:
  return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, slot, n, 0), state)


@functools.partial(jax.jit, donate_argnames=("state",))
def _insert(state: ThinkState, row: ThinkState, slot) -> ThinkState:
  return jax.tree.map(lambda a, r: jax.lax.dynamic_update_slice_in_dim(a, r, slot, 0),
                      state, row)


_take = jax.jit(_rows)


@functools.partial(jax.jit, donate_argnames=("state",))
def _free(state: ThinkState, slot) -> ThinkState:
  return state.replace(phase=state.phase.at[slot].set(Phase.DONE))


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def _generate(state: ThinkState, params, config: ThinkConfig, k, heads):
  return run_steps(state, params, config, k, heads)


@functools.partial(jax.jit, static_argnames=("config",))
def _prefill(params, inputs: ThinkInputs, config: ThinkConfig):
  logits, hidden, cache = prefill_prompts(params, inputs, config)
  return init_state(inputs, logits, cache, config), hidden


@functools.partial(jax.jit, static_argnames=("config", "slots"))
def _empty(config: ThinkConfig, slots: int) -> ThinkState:
  """S free slots (phase DONE): a well-formed state for the slot functions to fill."""
  inputs = ThinkInputs(tokens=jnp.zeros((slots, 1), jnp.int32),
                       lengths=jnp.ones((slots,), jnp.int32),
                       budget=jnp.zeros((slots,), jnp.int32),
                       min_thinking=jnp.zeros((slots,), jnp.int32),
                       request_key=request_keys(0, jnp.arange(slots)))
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
def _view(state: ThinkState, config: ThinkConfig) -> SlotView:
  r = to_result(state, config)
  return SlotView(phase=state.phase, tokens=r.tokens, segments=r.segments,
                  num_generated=r.num_generated, thinking_tokens=r.thinking_tokens,
                  answer_tokens=r.answer_tokens, stop_reason=r.stop_reason, finished=r.finished)


class Engine:
  """S slots of the thinking loop over one set of weights. Not thread-safe: one driver
  (the scheduler) calls it."""

  def __init__(self, params, tokenizer, config: ThinkConfig, slots: int, *, heads=None,
               budget_head=None):
    if slots < 1:
      raise ValueError(f"slots must be >= 1, got {slots}")
    check_heads(config, heads)
    self.params, self.tokenizer, self.heads = params, tokenizer, heads
    self.config = config                   # its per-request values are the defaults
    self._compiled = config.compile_key()  # what every function compiles for
    self.slots = slots
    self.budget_head = budget_head         # predicts log(1 + thinking tokens) at <think>
    self.state = _empty(self._compiled, slots)

  # -- requests in ------------------------------------------------------------------------

  def validate(self, request: Request) -> ThinkInputs:
    """Encodes and checks a request (clear errors: prompt plus budget beyond the context,
    negative budget, bad settings) before any compute."""
    budget = parse_budget(request.budget)
    return prepare_inputs(self.tokenizer, [request.prompt], self.config, [budget],
                          [request.min_thinking], **dict(request.settings))

  def prefill(self, request: Request) -> Prefix:
    inputs = self.validate(request)
    inputs = inputs.replace(request_key=request_keys(request.seed, 0))
    inputs = fill_settings(inputs, self.config)
    state, hidden = _prefill(self.params, inputs, self._compiled)
    return Prefix(state=state, hidden=hidden, prompt_tokens=int(inputs.lengths[0]))

  def predicted_thinking(self, prefix: Prefix) -> float:
    """The budget head's prediction of the thinking this prompt needs, from the prompt
    alone (the hidden state prefill computed); nan without a head."""
    if self.budget_head is None:
      return math.nan
    return float(math.expm1(max(float(apply_head(self.budget_head, prefix.hidden)[0]), 0.0)))

  def insert(self, prefix: Prefix, slot: int) -> None:
    self._check_slot(slot)
    self.state = _insert(self.state, prefix.state, jnp.int32(slot))

  # -- decoding ---------------------------------------------------------------------------

  def generate(self, k: int) -> int:
    """Up to k decode steps for every live slot in one compiled call; returns the steps run
    (fewer than k when every slot finished)."""
    self.state, steps = _generate(self.state, self.params, self._compiled, jnp.int32(k),
                                  self.heads)
    return int(steps)

  def view(self) -> SlotView:
    return jax.device_get(_view(self.state, self._compiled))

  # -- slots ------------------------------------------------------------------------------

  def evict(self, slot: int) -> SavedSlot:
    """The slot's row (KV cache and controller) copied to host; the slot is freed."""
    self._check_slot(slot)
    saved = jax.device_get(_take(self.state, jnp.int32(slot)))
    self.free(slot)
    return saved

  def resume(self, saved: SavedSlot, slot: int) -> None:
    """Puts an evicted row back (into any free slot); decoding continues bit for bit."""
    self._check_slot(slot)
    self.state = _insert(self.state, saved, jnp.int32(slot))

  def free(self, slot: int) -> None:
    self._check_slot(slot)
    self.state = _free(self.state, jnp.int32(slot))

  def _check_slot(self, slot: int) -> None:
    if not 0 <= slot < self.slots:
      raise ValueError(f"slot {slot} is out of range for {self.slots} slots")

  # -- accounting -------------------------------------------------------------------------

  def kv_bytes_per_token(self) -> int:
    m = self.config.model
    return 2 * m.num_layers * m.num_kv_heads * m.head_dim * jnp.dtype(m.jnp_dtype).itemsize

  @staticmethod
  def compilations() -> dict[str, int]:
    """Programs compiled so far by each slot function (all engines in the process)."""
    return {name: fn._cache_size() for name, fn in
            (("prefill", _prefill), ("insert", _insert), ("generate", _generate),
             ("evict", _take), ("free", _free), ("view", _view))}


def requests_from(prompts: Sequence[Any], **kw) -> list[Request]:
  return [Request(prompt=p, id=str(i), **kw) for i, p in enumerate(prompts)]
