"""Thinking-KV eviction (`ThinkConfig.thinking_kv_budget`): the slot table keeps every
prompt, close and answer position and at most K thinking tokens, at every step; budgets
stay exact; a budget above the thinking length changes nothing; the window keeps the last W
queries; importance (the window's attention) and redundancy equal float64 computations from
the stored queries and cached keys, each eviction takes the float64 argmin of the score, and
both scores are computed only on steps where a row evicts."""

from __future__ import annotations

import collections
import dataclasses

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax import tasks
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, prepare_inputs, think_texts
from o1jax.thinking import kv_eviction
from o1jax.thinking.config import StopReason
from o1jax.thinking.controller import prefill
from o1jax.thinking.loop import decode_step
from o1jax.thinking.state import Segment, fill_settings, init_state
from o1jax.model.transformer import forward

TOK = CharTokenizer()


def _config(model_config, **kw):
  return make_think_config(model_config, TOK, max_answer_tokens=12, **kw)


def _prompts(n=3):
  """Countdown 3-4: the embedded model's longest traces (~100-200 thinking tokens)."""
  return [p.prompt for d in (3, 4)
          for p in tasks.get_task("countdown").generate_problems(5, d, n, split="eval")]


def test_bad_eviction_settings_raise_early(model):
  _, mc = model
  with pytest.raises(ValueError, match="above kv_evict_window"):
    _config(mc, thinking_kv_budget=8)
  with pytest.raises(ValueError, match="attention_impl 'xla'"):
    _config(mc.replace(attention_impl="pallas"), thinking_kv_budget=32)
  with pytest.raises(ValueError, match="confidence probes"):
    _config(mc, thinking_kv_budget=32, stop_rules=("natural", "budget", "confidence"))
  from o1jax.serving import Engine
  with pytest.raises(ValueError, match="does not support thinking_kv_budget"):
    Engine(model[0], TOK, _config(mc, thinking_kv_budget=32), slots=1)


def test_budget_above_the_thinking_length_changes_nothing(model):
  """A fixed KV budget the thinking never fills: a smaller cache, the same greedy tokens."""
  params, mc = model
  prompts = _prompts()
  plain = think_texts(params, TOK, prompts, _config(mc))
  longest = max(t.thinking_tokens for t in plain)
  config = _config(mc, thinking_kv_budget=longest + 1)
  assert kv_eviction.num_slots(config, 12) < config.cache_len  # the slot path, not a no-op
  evicting = think_texts(params, TOK, prompts, config)
  for a, b in zip(plain, evicting):
    assert (a.thinking, a.answer, a.thinking_tokens) == (b.thinking, b.answer, b.thinking_tokens)


def _run_stepwise(params, config, prompts, budgets):
  """decode_step by decode_step, returning the state after each step."""
  inputs = fill_settings(prepare_inputs(TOK, prompts, config, budgets, 0), config,
                         jax.random.key(0))
  logits, _, cache = jax.jit(prefill, static_argnums=2)(params, inputs, config)
  s = init_state(inputs, logits, cache, config)
  step = jax.jit(decode_step, static_argnums=2)
  states = []
  while bool(np.any(np.asarray(s.phase) != 3)):
    s = step(s, params, config)
    states.append(jax.tree.map(np.asarray, s.replace(keys=jax.random.key_data(s.keys))))
  return np.asarray(inputs.lengths), states


def _redundancy64(k_layers, slot, others):
  """Sum over `others` of the cosine similarity of slot's keys, averaged over layers and
  heads, in float64 from the cached keys."""
  total = 0.0
  for k in k_layers:
    k = np.asarray(k, np.float64)
    unit = k / (np.linalg.norm(k, axis=-1, keepdims=True) + 1e-6)
    total = total + np.einsum("shd,hd->sh", unit[others], unit[slot]).mean(-1).sum()
  return total / len(k_layers)


def _keys64(cache, b):
  """Row b's cached keys per layer [S, KVH, D], float64 (an int8 cache dequantised)."""
  keys = [np.asarray(k[b], np.float64) for k in cache.k]
  if cache.k_scale is not None:
    keys = [k * np.asarray(s[b], np.float64)[..., None] for k, s in zip(keys, cache.k_scale)]
  return keys


def _importance64(cache, b):
  """[S] the attention each slot receives from the window's stored queries, averaged over
  the queries, layers and query heads, in float64 (R-KV's importance)."""
  table = cache.slots
  q_pos, k_pos = table.query_positions[b], table.positions[b]
  valid = q_pos >= 0
  total = np.zeros(k_pos.shape)
  for q, k in zip(table.queries, _keys64(cache, b)):
    q = np.asarray(q[b], np.float64)[valid]                        # [W', H, D]
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k, group, axis=1)                                # [S, H, D]
    scores = np.einsum("whd,shd->hws", q, k) / np.sqrt(q.shape[-1])
    visible = (k_pos[None, :] >= 0) & (k_pos[None, :] <= q_pos[valid][:, None])  # [W', S]
    scores = np.where(visible[None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs = probs / probs.sum(-1, keepdims=True)
    total += probs.mean(0).sum(0)
  return total / (len(table.queries) * max(int(valid.sum()), 1))


def _scores64(cache, b, position, window, weight):
  """Row b's eviction scores [S] (inf: not evictable) for a token at `position`."""
  table = cache.slots
  thinking = table.thinking[b]
  evictable = thinking & (table.positions[b] < position - window)
  imp = np.where(evictable, _importance64(cache, b), 0.0)
  imp = imp / max(imp.sum(), 1e-30)
  slots = np.flatnonzero(thinking)
  sim = np.zeros(thinking.shape)
  for j in slots:
    sim[j] = _redundancy64(_keys64(cache, b), j, slots[slots != j]) / max(len(slots) - 1, 1)
  red = np.exp(np.where(evictable, sim, -np.inf) - sim[evictable].max())
  red = red / red.sum()
  return np.where(evictable, weight * imp - (1 - weight) * red, np.inf)


@pytest.mark.parametrize("kv_dtype", [None, "int8"])
def test_eviction_keeps_prompt_and_answer_and_at_most_k_thinking_tokens(model, kv_dtype):
  params, mc = model
  k_budget = 24
  # lambda 0.5: importance weighs as much as redundancy in the argmin checked below
  config = _config(mc.replace(kv_dtype=kv_dtype), thinking_kv_budget=k_budget,
                   kv_importance_weight=0.5)
  prompts = _prompts(1)
  budgets = [None, 60]  # the second is cut by its thinking budget, mid-eviction
  lengths, states = _run_stepwise(params, config, prompts, budgets)
  evicted_any, checked = False, 0
  window = config.kv_evict_window
  for before, s in zip(states, states[1:]):
    # Every eviction takes the float64 argmin of the score from the cache before the step.
    old, new = before.cache.slots.positions, s.cache.slots.positions
    for b, j in zip(*np.nonzero((old != new) & (old >= 0))):
      scores = _scores64(before.cache, b, int(new[b, j]), window, config.kv_importance_weight)
      assert scores[j] <= scores.min() + 1e-4, (b, j, scores[j], scores.min())
      checked += 1
    for b in range(len(prompts)):  # the window holds the queries of the last W positions
      fed = int(s.cache.slots.positions[b].max())
      assert sorted(s.cache.slots.query_positions[b].tolist()) == list(range(fed - window + 1,
                                                                             fed + 1))
  assert checked >= 20
  for s in states:
    table = s.cache.slots
    for b in range(len(prompts)):
      held = set(table.positions[b][table.positions[b] >= 0].tolist())
      n = int(s.num_generated[b])
      segs = s.segments[b, :n]
      kept = {int(lengths[b]) + i for i in range(n) if segs[i] != Segment.THINKING}
      prompt = set(range(int(lengths[b])))
      assert prompt <= held, "a prompt position was evicted"
      assert kept <= held, "a close or answer position was evicted"
      thinking_held = held - prompt - kept
      assert len(thinking_held) <= k_budget
      assert int(table.thinking[b].sum()) == len(thinking_held)
      thinking_positions = [int(lengths[b]) + i for i in range(n) if segs[i] == Segment.THINKING]
      # The window's most recent thinking tokens are always there.
      assert set(thinking_positions[-config.kv_evict_window:]) <= thinking_held
      evicted_any |= len(thinking_held) < len(thinking_positions)
  assert evicted_any
  final = states[-1]
  # Budgets stay exact: the cut row thought exactly its 60 tokens, then the forced close.
  assert int(final.thinking_tokens[1]) == 60 and final.stop_reason[1] == StopReason.BUDGET
  # The closed-form redundancy equals the all-pairs sum from the cached keys, importance the
  # float64 attention of the stored queries.
  table = final.cache.slots
  cache = jax.tree.map(jnp.asarray, final.cache)
  got = np.asarray(kv_eviction.redundancy(cache))
  got_importance = np.asarray(kv_eviction.importance(cache))
  for b in range(len(prompts)):
    np.testing.assert_allclose(got_importance[b], _importance64(final.cache, b), rtol=1e-3,
                               atol=1e-6)
  for b in range(len(prompts)):
    slots = np.flatnonzero(table.thinking[b])
    assert len(slots) == k_budget
    for j in slots:
      others = slots[slots != j]
      want = _redundancy64([k[b] for k in final.cache.k], j, others)
      np.testing.assert_allclose(got[b, j], want, rtol=1e-4, atol=1e-4)
    assert np.all(got[b, ~table.thinking[b]] == 0)


def test_think_budgets_are_exact_under_eviction(model):
  params, mc = model
  prompts = _prompts(1)
  budgets = [5, 17, 40, 64, 100]
  config = _config(mc, thinking_kv_budget=16)
  rows = [(p, b) for p in prompts for b in budgets]  # one batch: budgets are data
  out = think_texts(params, TOK, [p for p, _ in rows], config, budgets=[b for _, b in rows])
  for (_, budget), t in zip(rows, out):
    assert t.thinking_tokens <= budget
    if t.stop_reason == "budget":
      assert t.thinking_tokens == budget
  assert sum(t.stop_reason == "budget" for t in out) >= len(rows) - 2


def _primitives(jaxpr, inside_cond=False, found=None):
  """Counter of (primitive name, inside a cond branch) over a jaxpr and every jaxpr nested
  in it."""
  found = collections.Counter() if found is None else found
  for eqn in jaxpr.eqns:
    found[(eqn.primitive.name, inside_cond)] += 1
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      _primitives(sub, inside_cond or eqn.primitive.name == "cond", found)
  return found


@pytest.mark.parametrize("policy", ["rkv", "oldest"])
def test_key_similarities_are_computed_only_under_the_evict_cond(model, policy):
  """The redundancy score normalises keys (a sqrt, which nothing else in a step has: the
  RMSNorms use rsqrt): it must sit only inside the cond branch taken when a row evicts, so
  steps that evict nothing never read the keys for it. The old incremental redundancy
  computed two key similarities at the top level of every step.

  Importance (the window's attention to every slot) must sit there too: outside the cond a
  step has exactly the exps and dot products of a plain forward on a cache of the same
  size (the model's own attention). The old running sum added one attention pass per layer
  on every step."""
  params, mc = model
  config = _config(mc, thinking_kv_budget=24, kv_evict_policy=policy)
  cache = kv_eviction.init_cache(config, 2, jnp.array([5, 7]), 8)
  jaxpr = jax.make_jaxpr(lambda c: kv_eviction.forward_evicting(
      params, jnp.array([3, 4]), jnp.array([9, 9]), jnp.array([True, True]), c, config))(cache)
  found = _primitives(jaxpr.jaxpr)
  assert ("sqrt", False) not in found
  assert (("sqrt", True) in found) == (policy == "rkv")
  plain = _primitives(jax.make_jaxpr(lambda c: forward(
      params, jnp.array([[3], [4]]), jnp.array([[9], [9]]), c, mc))(
          cache.replace(slots=None)).jaxpr)
  for name in ("exp", "dot_general"):
    assert found[(name, False)] == plain[(name, False)] > 0, name
  # the window's attention: one softmax per layer, inside the cond
  assert (found[("exp", True)] >= mc.num_layers) == (policy == "rkv")
