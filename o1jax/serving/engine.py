"""A slot engine: S decode slots whose rows are the thinking loop's own carry.

In the spirit of JetStream's engine API, with eviction added. The decode state is one
`ThinkState` of S rows: the KV cache plus, per slot, the budget controller that `think()`
runs (phase, cap, minimum, counters, stop-rule statistics) and the request's own settings
(temperature, top-k/top-p, thresholds, which stop rules it uses, its PRNG key). Every
operation is a compiled function of that state:

  prefill_batch(requests)        each request encoded (token ids, settings, PRNG key) and,
    -> [Prefix]                  while the pre-prefill pool has room, prefilled into a
                                 one-row state of its own; beyond the pool it holds no KV
  insert(prefix, slot)           that row into a slot; a prefix without KV is prefilled
                                 straight into the slot's KV rows (chunked)
  generate(k)                    up to k `decode_step`s for every live slot, one call; it
                                 returns early when no slot is live (or, if asked, as soon
                                 as one finishes)
  evict(slot) -> SavedSlot       the slot's row (KV and controller) set aside, slot freed:
                                 kept on the device while the pause pool has room, else
                                 copied to host
  resume(saved, slot)            the row back, bit for bit, in any free slot
  free(slot)                     the slot marked DONE (a cancel, or after reading a result)

`generate` runs `o1jax.thinking.loop.run_steps`, i.e. exactly `think()`'s step, so a
request's tokens equal `think()` on that request alone (tested), however it was scheduled.
The slot step is the plain one-token step: a config with `ThinkConfig.speculative` set is
refused at construction (ValueError), never silently decoded without it.

Nothing compiles after `warm_up`, whatever the prompts: per-request settings are arrays, and
prefill runs in chunks of one fixed width (o1jax/serving/chunked_prefill.py) over prompts
padded to the context, one request at a time, so its programs have one shape each.

Device memory is bounded by configuration, not by the queue: the slots, at most
`prefill_pool` prefilled rows waiting for a slot, and at most `pause_pool` paused rows
(beyond it a paused row goes to host). A waiting request past the pool holds its token
ids on host and a PRNG key; it costs a prefill when it gets a slot (and, with a budget
head, one more at `prefill_batch` for its prediction, whose KV is dropped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.serving import slot_ops
from o1jax.serving.chunked_prefill import padded_width, prefill_into, prefill_row
from o1jax.serving.slot_ops import SavedSlot, SlotView
from o1jax.thinking.api import parse_budget, prepare_inputs
from o1jax.thinking.config import ThinkConfig
from o1jax.thinking.controller import check_heads
from o1jax.thinking.state import (REQUEST_SETTINGS, ThinkInputs, ThinkState, fill_settings,
                                  request_keys, setting_defaults)


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


@dataclasses.dataclass(eq=False)   # identity: the engine counts the live ones holding KV
class Prefix:
  """A request ready for a slot.

  `state`: its one-row loop state (row `row`), KV cache included, when it was prefilled
  (`has_kv`); otherwise a stub whose only field is `keys`, the request's PRNG key (a fork
  may replace it, as o1jax/rl/rollouts.py does), every other field None: the request then
  holds only `inputs`, its token ids and settings on host, and is prefilled into the slot
  it is inserted into. Dropping a prefix frees its place in the engine's pre-prefill pool.
  """
  state: ThinkState
  row: int
  prompt_tokens: int
  predicted_thinking: float     # the budget head's prediction; nan without a head
  inputs: ThinkInputs | None = None   # one row on host (numpy), tokens at the padded width

  @property
  def has_kv(self) -> bool:
    return self.state.cache is not None


class Engine:
  """S slots of the thinking loop over one set of weights. Not thread-safe: one driver
  (the scheduler) calls it."""

  def __init__(self, params, tokenizer, config: ThinkConfig, slots: int, *, heads=None,
               budget_head=None, mesh=None, prefill_chunk: int = 64,
               prefill_pool: int | None = None, pause_pool: int | None = None):
    """`mesh` (optional): slots split over its batch axes (data, fsdp), weights by the rule
    table (o1jax/parallel/rules.py); every slot function is traced under it.
    `prefill_chunk`: tokens per prefill chunk. `prefill_pool`: prefilled requests that may
    wait for a slot holding KV (default slots // 4, at least 1; 0: every request is
    prefilled when it is inserted). `pause_pool`: paused rows kept on the device (default
    slots // 4, at least 1; further ones go to host)."""
    if slots < 1:
      raise ValueError(f"slots must be >= 1, got {slots}")
    if prefill_chunk < 1:
      raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
    default_pool = max(1, slots // 4)
    prefill_pool = default_pool if prefill_pool is None else prefill_pool
    pause_pool = default_pool if pause_pool is None else pause_pool
    for name, value in (("prefill_pool", prefill_pool), ("pause_pool", pause_pool)):
      if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
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
    self.prefill_chunk, self.prefill_pool, self.pause_pool = (prefill_chunk, prefill_pool,
                                                              pause_pool)
    self._width = padded_width(config.cache_len, prefill_chunk)
    self._pooled: weakref.WeakSet[Prefix] = weakref.WeakSet()   # live prefixes with KV
    self._paused: list[weakref.ref] = []                         # saved rows on the device
    # Host dtypes of a filled one-row input, so every request reaches the prefill programs
    # with the same avals (an int temperature must not compile a second program).
    spec = jax.eval_shape(lambda: fill_settings(ThinkInputs(
        tokens=jnp.zeros((1, self._width), jnp.int32), lengths=jnp.ones((1,), jnp.int32),
        budget=jnp.zeros((1,), jnp.int32), min_thinking=jnp.zeros((1,), jnp.int32),
        request_key=jax.random.split(jax.random.key(0), 1)), self._compiled))
    self._input_dtypes = {k: v.dtype for k, v in vars(spec).items()
                          if k != "request_key"}
    if mesh is not None:
      from o1jax import parallel
      shards = parallel.shards_of(mesh, "batch")
      if slots % shards:
        raise ValueError(f"{slots} slots do not divide over the mesh's {shards} batch shards")
      params = parallel.shard_params(params, config.model, mesh)
    self.params = params
    with self._on_mesh():
      self.state = slot_ops.empty(self._compiled, slots)
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
    negative budget, bad settings) before any compute. At the engine's one padded width:
    even the host-to-device copy of the ids has one shape (a conversion compiled per width
    otherwise)."""
    budget = parse_budget(request.budget)
    return prepare_inputs(self.tokenizer, [request.prompt], self.config, [budget],
                          [request.min_thinking], width=self._width, **dict(request.settings))

  def _encode(self, request: Request) -> ThinkInputs:
    """One row on host, every setting given (defaults filled here), tokens padded to the
    engine's one width; the PRNG key as think_texts(seed=[...]) derives it."""
    defaults = setting_defaults(self.config)
    settings = {k: [request.settings.get(k, defaults[k])] for k in REQUEST_SETTINGS}
    inputs = prepare_inputs(self.tokenizer, [request.prompt], self.config,
                            [parse_budget(request.budget)], [request.min_thinking],
                            width=self._width, **settings)
    host = jax.device_get(inputs.replace(request_key=None))
    host = host.replace(**{k: np.asarray(getattr(host, k), dtype)
                           for k, dtype in self._input_dtypes.items()})
    return host.replace(request_key=request_keys([request.seed], 0))

  def prefill(self, request: Request) -> Prefix:
    return self.prefill_batch([request])[0]

  def prefill_batch(self, requests: Sequence[Request]) -> list[Prefix]:
    """Encodes every request (all checked before any compute), then prefills each, in
    order, while the pre-prefill pool has room (`prefill_room`); the others hold token ids
    only and are prefilled when inserted. One program serves every prompt length."""
    encoded = [self._encode(r) for r in requests]
    out = []
    for inputs in encoded:
      length = int(inputs.lengths[0])
      if self.prefill_room() > 0:
        state, predicted = self._prefill_row(inputs)
        prefix = Prefix(state, 0, length, float(np.asarray(predicted)[0]), inputs)
        self._pooled.add(prefix)
      else:
        predicted = (np.nan if self.budget_head is None else
                     float(np.asarray(self._prefill_row(inputs)[1])[0]))  # KV dropped
        prefix = Prefix(slot_ops.stub(inputs.request_key), 0, length, predicted, inputs)
      out.append(prefix)
    return out

  def _prefill_row(self, inputs: ThinkInputs):
    with self._on_mesh():
      return prefill_row(self.params, inputs, self._compiled, self.prefill_chunk,
                         self.budget_head)

  def prefill_room(self) -> int:
    """How many more requests `prefill_batch` / `prefetch` would prefill now (the pool's
    free places: a place frees when its prefix is dropped)."""
    return self.prefill_pool - len(self._pooled)

  def prefetch(self, prefix: Prefix) -> bool:
    """Prefills a prefix that has no KV yet, if the pool has room (for the request next in
    line when a slot is about to free: its insert is then a copy). True if it holds KV."""
    if not prefix.has_kv and self.prefill_room() > 0:
      inputs = prefix.inputs.replace(request_key=prefix.state.keys)
      prefix.state = self._prefill_row(inputs)[0]
      self._pooled.add(prefix)
    return prefix.has_kv

  def insert(self, prefix: Prefix, slot: int) -> None:
    self._check_slot(slot)
    with self._on_mesh():
      if prefix.has_kv:
        self.state = slot_ops.insert(self.state, prefix.state, jnp.int32(prefix.row),
                                     jnp.int32(slot))
      else:   # its prompt goes straight into the slot's KV rows
        inputs = prefix.inputs.replace(request_key=prefix.state.keys)   # one row: row 0
        self.state = prefill_into(self.state, self.params, inputs, jnp.int32(slot),
                                  self._compiled, self.prefill_chunk)

  # -- decoding ---------------------------------------------------------------------------

  def generate(self, k: int, return_on_finish: bool = False) -> int:
    """Up to k decode steps for every live slot in one compiled call; returns the steps run
    (fewer than k when every slot finished, or, with `return_on_finish`, when one did)."""
    with self._on_mesh():
      self.state, steps = slot_ops.generate(self.state, self.params, self._compiled,
                                            jnp.int32(k), jnp.bool_(return_on_finish),
                                            self.heads)
    return int(steps)

  def view(self) -> SlotView:
    with self._on_mesh():
      return jax.device_get(slot_ops.view(self.state, self._compiled))

  # -- slots ------------------------------------------------------------------------------

  def evict(self, slot: int, to_host: bool | None = None) -> SavedSlot:
    """The slot's row (KV cache and controller) set aside; the slot is freed. It stays on
    the device while the pause pool has room (`pause_room`), else (or with `to_host`) it
    is copied to host. Dropping a saved row frees its place in the pool."""
    self._check_slot(slot)
    with self._on_mesh():
      row = slot_ops.take(self.state, jnp.int32(slot))
    if to_host or (to_host is None and self.pause_room() <= 0):
      row = jax.device_get(row)
    else:
      self._paused.append(weakref.ref(row))
    self.free(slot)
    return row

  def pause_room(self) -> int:
    """Places left in the device pool for paused rows."""
    self._paused = [r for r in self._paused if r() is not None]
    return self.pause_pool - len(self._paused)

  def resume(self, saved: SavedSlot, slot: int) -> None:
    """Puts an evicted row back (into any free slot); decoding continues bit for bit."""
    self._check_slot(slot)
    with self._on_mesh():
      self.state = slot_ops.resume(self.state, saved, jnp.int32(slot))

  def free(self, slot: int) -> None:
    self._check_slot(slot)
    with self._on_mesh():
      self.state = slot_ops.free(self.state, jnp.int32(slot))

  def _check_slot(self, slot: int) -> None:
    if not 0 <= slot < self.slots:
      raise ValueError(f"slot {slot} is out of range for {self.slots} slots")

  # -- compilation ------------------------------------------------------------------------

  def warm_up(self, prompts: Sequence[Any], max_batch: int | None = None) -> dict[str, int]:
    """Compiles every program serving will use, so no request waits for one: a prefill
    into the pool and one into a slot (each serves any prompt length), insert, generate,
    view, evict and resume (device and host rows), free. `prompts[0]` is the request it
    runs (its width does not matter; `max_batch` is accepted and ignored: prefill has no
    batch buckets any more). Leaves every slot free and the pools empty; returns
    `compilations()`."""
    del max_batch
    request = Request(prompts[0], budget=1)
    inputs = self._encode(request)
    # The pool path (also the budget head's prediction), then the into-a-slot path.
    pooled = Prefix(self._prefill_row(inputs)[0], 0, int(inputs.lengths[0]), np.nan, inputs)
    self.insert(pooled, 0)
    self.free(0)
    stub = Prefix(slot_ops.stub(inputs.request_key), 0, pooled.prompt_tokens, np.nan, inputs)
    self.insert(stub, 0)
    self.generate(1, return_on_finish=True)
    self.view()
    for to_host in (False, True):
      self.resume(self.evict(0, to_host=to_host), 0)
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

  def waiting_kv_bytes(self) -> int:
    """Device bytes of KV held outside the slots: prefilled prefixes still referenced and
    paused rows kept on the device. At most (prefill_pool + pause_pool) rows."""
    rows = [p.state.cache for p in list(self._pooled)]
    rows += [r().cache for r in self._paused if r() is not None]
    return sum(c.nbytes for c in rows)

  @staticmethod
  def compilations() -> dict[str, int]:
    """Programs compiled so far by each slot function (all engines in the process)."""
    return {name: fn._cache_size() for name, fn in
            (("prefill", prefill_row), ("prefill_into", prefill_into),
             ("insert", slot_ops.insert), ("generate", slot_ops.generate),
             ("evict", slot_ops.take), ("resume", slot_ops.resume), ("free", slot_ops.free),
             ("view", slot_ops.view))}


def requests_from(prompts: Sequence[Any], **kw) -> list[Request]:
  return [Request(prompt=p, id=str(i), **kw) for i, p in enumerate(prompts)]
