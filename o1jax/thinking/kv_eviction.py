"""Thinking-KV eviction (R-KV style): thinking runs in a fixed number of KV slots.

With `ThinkConfig.thinking_kv_budget = K` the cache holds the prompt, at most K thinking
tokens, and the close and answer: `slots = prompt width + K + reserve` instead of
`cache_len`. Slots are not positions: a `SlotTable` (o1jax/model/cache.py) records which
position each slot holds, keys are cached after RoPE, and attention masks by the table. When
a thinking token arrives and K thinking tokens are cached, it overwrites the thinking slot
with the lowest score (R-KV, Cai et al. 2025):

  score = lambda * importance - (1 - lambda) * redundancy

  * importance: the attention the slot receives from the queries of the last `window`
    positions (R-KV's observation window), averaged over those queries, layers and query
    heads, normalised over the evictable slots;
  * redundancy: mean cosine similarity of the slot's keys (every layer and KV head) to the
    other cached thinking keys, softmax-normalised over the evictable slots, as in R-KV.

The `window` most recent thinking tokens (R-KV's observation window) and every prompt,
close and answer token are never evicted.

What a step costs beyond attention: the model writes each layer's query into the slot
table's window (`SlotTable.queries`, W entries per layer, no pass over the keys). Both
scores are computed only on steps where some row evicts (one `lax.cond`): importance, the
window's attention against every layer's keys, and redundancy, one pass over every layer's
keys in closed form (each slot's unit keys against the sum of the thinking slots' unit
keys). Steps that evict nothing, e.g. all of them while the thinking is shorter than K, read
no keys for either. (Importance was a running sum before, decayed by 1 - 1/window per step
and fed by every step's attention weights: one more pass over every layer's keys on every
step. It is now R-KV's own definition, the window's attention at eviction time.)

`kv_evict_policy="oldest"` evicts the oldest evictable thinking token instead (a sliding
window over the thinking, StreamingLLM-like): the baseline the scores must beat. It reads
neither score, so its table keeps no queries.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from o1jax.model.attention import attention_received
from o1jax.model.cache import KVCache, SlotTable
from o1jax.model.transformer import forward


def num_slots(config, width: int) -> int:
  """Cache slots for prompts `width` wide: the prompt, K thinking tokens, the reserve."""
  return min(config.cache_len, width + config.thinking_kv_budget + config.reserve)


def init_cache(config, batch: int, lengths: jax.Array, width: int) -> KVCache:
  """An empty eviction cache whose first slots are assigned to the prompt positions."""
  slots = num_slots(config, width)
  cache = KVCache.init(config.model, batch, slots)
  j = jnp.arange(slots)[None, :]
  positions = jnp.where(j < lengths[:, None], j, -1).astype(jnp.int32)
  table = SlotTable(positions=positions, thinking=jnp.zeros((batch, slots), bool))
  if config.kv_evict_policy == "rkv":  # the window of queries importance is scored by
    mc, window = config.model, config.kv_evict_window
    shape = (batch, window, mc.num_heads, mc.head_dim)
    table = table.replace(
        queries=tuple(jnp.zeros(shape, mc.jnp_dtype) for _ in range(mc.num_layers)),
        query_positions=jnp.full((batch, window), -1, jnp.int32))
  return cache.replace(slots=table)


def importance(cache: KVCache) -> jax.Array:
  """[B, S] the attention each slot receives from the window's queries (the last W
  positions fed), averaged over the queries, layers and query heads (R-KV's importance).
  A slot gets attention only from queries at or after its position."""
  table = cache.slots
  total = 0.0
  for i, k in enumerate(cache.k):
    scale = None if cache.k_scale is None else cache.k_scale[i]
    total = total + attention_received(table.queries[i], k, table.query_positions,
                                       table.positions, scale)
  n_queries = (table.query_positions >= 0).sum(-1, keepdims=True)
  return total / (len(cache.k) * jnp.maximum(n_queries, 1))


def redundancy(cache: KVCache) -> jax.Array:
  """[B, S] each slot's summed cosine similarity to the keys of the other thinking slots
  (per layer and KV head, averaged over them): unit_j . (sum over thinking i of unit_i -
  unit_j) for a thinking slot j. One pass over the keys instead of all pairs. Scale-free,
  so an int8 cache needs no dequantising."""
  thinking = cache.slots.thinking
  total = 0.0
  for k in cache.k:
    keys = k.astype(jnp.float32)                                       # [B, S, KVH, D]
    unit = keys / (jnp.linalg.norm(keys, axis=-1, keepdims=True) + 1e-6)
    unit = jnp.where(thinking[:, :, None, None], unit, 0.0)
    pooled = unit.sum(1, keepdims=True)                                # [B, 1, KVH, D]
    total = total + jnp.einsum("bshd,bshd->bsh", unit, pooled - unit,
                               precision=jax.lax.Precision.HIGHEST).mean(-1)
  return total / len(cache.k)


def _scores(importance: jax.Array, redundancy: jax.Array, evictable: jax.Array,
            n_thinking: jax.Array, weight: float):
  big = jnp.float32(1e30)
  importance = jnp.where(evictable, importance, 0.0)
  importance = importance / jnp.maximum(importance.sum(-1, keepdims=True), 1e-30)
  mean_sim = redundancy / jnp.maximum(n_thinking - 1, 1)[:, None]
  redundancy = jax.nn.softmax(jnp.where(evictable, mean_sim, -big), axis=-1)
  return jnp.where(evictable, weight * importance - (1 - weight) * redundancy, big)


def forward_evicting(params, token, position, is_thinking, cache: KVCache, config):
  """`forward` of one token per row [B] at `position` [B] (-1: nothing fed), choosing its
  slot first (evicting a thinking token if the budget is full); the model records the
  token's queries in the window after. Returns what `forward` returns."""
  table, budget, window = cache.slots, config.thinking_kv_budget, config.kv_evict_window
  batch, n_slots = jnp.arange(token.shape[0]), cache.slots.positions.shape[1]
  live = position >= 0
  n_thinking = table.thinking.sum(-1, dtype=jnp.int32)
  evictable = table.thinking & (table.positions < position[:, None] - window)
  evict = live & is_thinking & (n_thinking >= budget) & evictable.any(-1)
  if config.kv_evict_policy == "oldest":
    victim = jnp.argmin(jnp.where(evictable, table.positions, jnp.iinfo(jnp.int32).max), -1)
  else:
    # Only when a row evicts: both scores read every layer's keys.
    victim = jax.lax.cond(
        evict.any(),
        lambda: jnp.argmin(_scores(importance(cache), redundancy(cache), evictable,
                                   n_thinking, config.kv_importance_weight),
                           -1).astype(jnp.int32),
        lambda: jnp.zeros(token.shape, jnp.int32))
  empty = table.positions < 0
  first_empty = jnp.where(empty.any(-1), jnp.argmax(empty, -1), -1)
  slot = jnp.where(evict, victim, first_empty).astype(jnp.int32)
  write = live & (slot >= 0)     # always true when the slots are sized by `num_slots`
  at = jnp.where(write, slot, n_slots)  # out of range: dropped

  set_at = lambda a, v: a.at[batch, at].set(v, mode="drop")
  table = table.replace(
      positions=set_at(table.positions, position), thinking=set_at(table.thinking, is_thinking))
  return forward(params, token[:, None], position[:, None], cache.replace(slots=table),
                 config.model)


def check(config) -> None:
  """Raises a ValueError naming what does not fit eviction (called by ThinkConfig)."""
  budget = config.thinking_kv_budget
  problems = []
  if not isinstance(budget, int) or budget <= config.kv_evict_window:
    problems.append(f"thinking_kv_budget must be an int above kv_evict_window "
                    f"({config.kv_evict_window}), got {budget!r}")
  if config.kv_evict_policy not in ("rkv", "oldest"):
    problems.append(f"kv_evict_policy must be 'rkv' or 'oldest', got {config.kv_evict_policy!r}")
  if config.kv_evict_window < 1:
    problems.append(f"kv_evict_window must be >= 1, got {config.kv_evict_window}")
  if not 0.0 <= config.kv_importance_weight <= 1.0:
    problems.append(f"kv_importance_weight must be in [0, 1], got {config.kv_importance_weight}")
  if config.model.attention_impl != "xla":
    problems.append("thinking_kv_budget needs model attention_impl 'xla' (the Pallas and "
                    f"cuDNN paths mask by slot index), got {config.model.attention_impl!r}")
  if "confidence" in config.stop_rules and config.confidence_estimate == "probe":
    problems.append("thinking_kv_budget does not combine with confidence probes (a probe "
                    "writes scratch tokens past the position, which an eviction cache has no "
                    "slots for); use confidence_estimate='head'")
  if problems:
    raise ValueError("invalid ThinkConfig: " + "; ".join(problems))
