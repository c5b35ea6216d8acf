"""A slot engine: S decode slots whose rows are the thinking loop's own carry.

In the spirit of JetStream's engine API, with eviction added. The decode state is one
`ThinkState` of S rows: the KV cache plus, per slot, the budget controller that `think()`
runs (phase, cap, minimum, counters, stop-rule statistics) and the request's own settings
(temperature, top-k/top-p, thresholds, which stop rules it uses, its PRNG key). Every
operation is a compiled function of that state:

  prefill(request) -> Prefix     the prompt through the model into a one-row state
                                 (prefill_batch: a burst of arrivals in one call)
  insert(prefix, slot)           that row into a slot
  generate(k)                    up to k `decode_step`s for every live slot, one call; it
                                 returns early when no slot is live (or, if asked, as soon
                                 as one finishes)
  evict(slot) -> SavedSlot       the slot's row (KV and controller) copied to host, slot freed
  resume(saved, slot)            the row back, bit for bit, in any free slot
  free(slot)                     the slot marked DONE (a cancel, or after reading a result)

`generate` runs `o1jax.thinking.loop.run_steps`, i.e. exactly `think()`'s step, so a
request's tokens equal `think()` on that request alone (tested), however it was scheduled.
The slot step is the plain one-token step: a config with `ThinkConfig.speculative` set is
refused at construction (ValueError), never silently decoded without it.
Per-request settings are arrays, so one program serves requests with any settings;
prefill batches and prompt widths are bucketed to powers of two, so prefill compiles once
per (batch, width) bucket.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.cache import KVCache
from o1jax.model.heads import apply_head
from o1jax.thinking.api import parse_budget, prepare_inputs
from o1jax.thinking.config import Phase, ThinkConfig
from o1jax.thinking.controller import check_heads, prefill as prefill_prompts, to_result
from o1jax.thinking.loop import run_steps
from o1jax.thinking.state import (REQUEST_SETTINGS, ThinkInputs, ThinkState, fill_settings,
                                  init_state, request_keys, setting_defaults)


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


@dataclasses.dataclass
class Prefix:
  """A prefilled request, ready for a slot: row `row` of a prefill batch's loop state (the
  batch's rows share one state until each is inserted)."""
  state: ThinkState
  row: int
  prompt_tokens: int
  predicted_thinking: float     # the budget head's prediction; nan without a head


# A slot's row on the host (numpy leaves; PRNG keys as their raw key data): what evict()
# returns and resume() takes.
SavedSlot = ThinkState


def _rows(state: ThinkState, slot, n: int = 1) -> ThinkState:
  return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, slot, n, 0), state)


@functools.partial(jax.jit, donate_argnames=("state",))
def _insert(state: ThinkState, rows: ThinkState, row, slot) -> ThinkState:
  """Row `row` of `rows` (a prefill batch, or a saved slot) into slot `slot`."""
  return jax.tree.map(
      lambda a, r: jax.lax.dynamic_update_slice_in_dim(
          a, jax.lax.dynamic_slice_in_dim(r, row, 1, 0), slot, 0), state, rows)


_take = jax.jit(_rows)


@functools.partial(jax.jit, donate_argnames=("state",))
def _free(state: ThinkState, slot) -> ThinkState:
  return state.replace(phase=state.phase.at[slot].set(Phase.DONE))


@functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("state",))
def _generate(state: ThinkState, params, config: ThinkConfig, k, return_on_finish, heads):
  return run_steps(state, params, config, k, heads, return_on_finish)


@functools.partial(jax.jit, static_argnames=("config",))
def _prefill(params, inputs: ThinkInputs, config: ThinkConfig, budget_head):
  inputs = fill_settings(inputs, config)  # shapes and dtypes only: every setting is given
  logits, hidden, cache = prefill_prompts(params, inputs, config)
  if budget_head is None:
    predicted = jnp.full(hidden.shape[:1], jnp.nan)
  else:  # the head predicts log(1 + thinking tokens) from the hidden state at <think>
    predicted = jnp.expm1(jnp.maximum(apply_head(budget_head, hidden), 0.0))
  return init_state(inputs, logits, cache, config), predicted


@functools.partial(jax.jit, static_argnames=("config", "slots"))
def _empty(config: ThinkConfig, slots: int) -> ThinkState:
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
def _view(state: ThinkState, config: ThinkConfig) -> SlotView:
  r = to_result(state, config)
  return SlotView(phase=state.phase, tokens=r.tokens, segments=r.segments,
                  num_generated=r.num_generated, thinking_tokens=r.thinking_tokens,
                  answer_tokens=r.answer_tokens, stop_reason=r.stop_reason, finished=r.finished)


class Engine:
  """S slots of the thinking loop over one set of weights. Not thread-safe: one driver
  (the scheduler) calls it."""

  def __init__(self, params, tokenizer, config: ThinkConfig, slots: int, *, heads=None,
               budget_head=None, mesh=None):
    """`mesh` (optional): slots split over its batch axes (data, fsdp), weights by the rule
    table (o1jax/parallel/rules.py); every slot function is traced under it."""
    if slots < 1:
      raise ValueError(f"slots must be >= 1, got {slots}")
    if config.speculative is not None:
      # A slot's row is a ThinkState and the slot step the plain one-token decode_step;
      # the speculative loop's carry adds the draft's KV cache and a pending, not yet fed
      # token, which no slot function carries. Refused rather than silently ignored.
      raise ValueError("the serving engine does not support speculative decoding "
                       "(ThinkConfig.speculative is set): its slot step is the plain "
                       "one-token decode_step; set speculative=None, or use think() / "
                       "think_texts")
    if config.thinking_kv_budget is not None:
      # An eviction cache is sized by its prefill batch's prompt width, so rows of different
      # prefill batches would not fit one slot array.
      raise ValueError("the serving engine does not support thinking_kv_budget (thinking-KV "
                       "eviction) yet; use think() / think_texts")
    check_heads(config, heads)
    self.tokenizer, self.heads = tokenizer, heads
    self.config = config                   # its per-request values are the defaults
    self._compiled = config.compile_key()  # what every function compiles for
    self.slots = slots
    self.budget_head = budget_head         # predicts log(1 + thinking tokens) at <think>
    self.mesh = mesh
    if mesh is not None:
      from o1jax import parallel
      shards = parallel.shards_of(mesh, "batch")
      if slots % shards:
        raise ValueError(f"{slots} slots do not divide over the mesh's {shards} batch shards")
      params = parallel.shard_params(params, config.model, mesh)
    self.params = params
    with self._on_mesh():
      self.state = _empty(self._compiled, slots)
      if mesh is not None:
        self.state = parallel.put_batch(self.state, mesh)

  def _on_mesh(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    from o1jax import parallel
    return parallel.activate(self.mesh, self.config.model)

  # -- requests in ------------------------------------------------------------------------

  def validate(self, request: Request) -> ThinkInputs:
    """Encodes and checks a request (clear errors: prompt plus budget beyond the context,
    negative budget, bad settings) before any compute."""
    budget = parse_budget(request.budget)
    return prepare_inputs(self.tokenizer, [request.prompt], self.config, [budget],
                          [request.min_thinking], **dict(request.settings))

  def prefill(self, request: Request) -> Prefix:
    return self.prefill_batch([request])[0]

  def prefill_batch(self, requests: Sequence[Request]) -> list[Prefix]:
    """Prefills several requests in one call (a burst of arrivals costs one prefill). The
    batch is padded to a power of two and the width bucketed, so this compiles a handful
    of times. Each request is keyed by its own seed, as think_texts(seed=[...]) keys it."""
    n = len(requests)
    size = 1 << (n - 1).bit_length()
    rows = list(requests) + [requests[0]] * (size - n)
    # Every setting given per row (defaults filled here), so nothing is left to fill and the
    # whole batch goes to the device as a few arrays.
    defaults = setting_defaults(self.config)
    settings = {k: [r.settings.get(k, defaults[k]) for r in rows] for k in REQUEST_SETTINGS}
    inputs = prepare_inputs(self.tokenizer, [r.prompt for r in rows], self.config,
                            [parse_budget(r.budget) for r in rows],
                            [r.min_thinking for r in rows], **settings)
    inputs = inputs.replace(request_key=request_keys([r.seed for r in rows], 0))
    with self._on_mesh():
      state, predicted = _prefill(self.params, inputs, self._compiled, self.budget_head)
    lengths, predicted = np.asarray(inputs.lengths), np.asarray(predicted)
    return [Prefix(state, i, int(lengths[i]), float(predicted[i])) for i in range(n)]

  def insert(self, prefix: Prefix, slot: int) -> None:
    self._check_slot(slot)
    with self._on_mesh():
      self.state = _insert(self.state, prefix.state, jnp.int32(prefix.row), jnp.int32(slot))

  # -- decoding ---------------------------------------------------------------------------

  def generate(self, k: int, return_on_finish: bool = False) -> int:
    """Up to k decode steps for every live slot in one compiled call; returns the steps run
    (fewer than k when every slot finished, or, with `return_on_finish`, when one did)."""
    with self._on_mesh():
      self.state, steps = _generate(self.state, self.params, self._compiled, jnp.int32(k),
                                    jnp.bool_(return_on_finish), self.heads)
    return int(steps)

  def view(self) -> SlotView:
    with self._on_mesh():
      return jax.device_get(_view(self.state, self._compiled))

  # -- slots ------------------------------------------------------------------------------

  def evict(self, slot: int) -> SavedSlot:
    """The slot's row (KV cache and controller) copied to host; the slot is freed."""
    self._check_slot(slot)
    with self._on_mesh():
      row = _take(self.state, jnp.int32(slot))
    saved = jax.device_get(row.replace(keys=jax.random.key_data(row.keys)))
    self.free(slot)
    return saved

  def resume(self, saved: SavedSlot, slot: int) -> None:
    """Puts an evicted row back (into any free slot); decoding continues bit for bit."""
    self._check_slot(slot)
    impl = jax.random.key_impl(self.state.keys)
    row = saved.replace(keys=jax.random.wrap_key_data(saved.keys, impl=impl))
    with self._on_mesh():
      self.state = _insert(self.state, row, jnp.int32(0), jnp.int32(slot))

  def free(self, slot: int) -> None:
    self._check_slot(slot)
    with self._on_mesh():
      self.state = _free(self.state, jnp.int32(slot))

  def _check_slot(self, slot: int) -> None:
    if not 0 <= slot < self.slots:
      raise ValueError(f"slot {slot} is out of range for {self.slots} slots")

  # -- compilation ------------------------------------------------------------------------

  def warm_up(self, prompts: Sequence[Any], max_batch: int | None = None) -> dict[str, int]:
    """Compiles what serving these prompts will use, so no request waits for it: prefill
    at every batch bucket up to `max_batch` (default 2x slots, the scheduler's largest)
    for every prompt-width bucket among `prompts`, then insert, generate, view, evict,
    resume and free. Leaves every slot free; returns `compilations()`."""
    from o1jax.thinking.api import bucket_width
    max_batch = max_batch or 2 * self.slots
    width = lambda p: bucket_width(len(self.tokenizer.encode_prompt(p)), self.config.cache_len)
    shortest = min(prompts, key=width)
    for w in sorted({width(p) for p in prompts}):
      longest = next(p for p in prompts if width(p) == w)
      b = 1
      while b <= max_batch:
        prefixes = self.prefill_batch([Request(longest, budget=1)] +
                                      [Request(shortest, budget=1)] * (b - 1))
        b *= 2
    self.insert(prefixes[0], 0)
    self.generate(1, return_on_finish=True)
    self.view()
    self.resume(self.evict(0), 0)
    self.free(0)
    return self.compilations()

  # -- accounting -------------------------------------------------------------------------

  def kv_bytes_per_token(self) -> int:
    m = self.config.model
    if m.kv_dtype == "int8":  # int8 values plus one scale per token and KV head
      from o1jax.model.cache import SCALE_DTYPE
      per_head = m.head_dim + jnp.dtype(SCALE_DTYPE).itemsize
      return 2 * m.num_layers * m.num_kv_heads * per_head
    return 2 * m.num_layers * m.num_kv_heads * m.head_dim * jnp.dtype(m.jnp_dtype).itemsize

  @staticmethod
  def compilations() -> dict[str, int]:
    """Programs compiled so far by each slot function (all engines in the process)."""
    return {name: fn._cache_size() for name, fn in
            (("prefill", _prefill), ("insert", _insert), ("generate", _generate),
             ("evict", _take), ("free", _free), ("view", _view))}


def requests_from(prompts: Sequence[Any], **kw) -> list[Request]:
  return [Request(prompt=p, id=str(i), **kw) for i, p in enumerate(prompts)]
