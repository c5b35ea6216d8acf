"""Speculative decoding inside the compiled thinking loop (`ThinkConfig.speculative`).

One iteration of the loop, for every sequence at once:
  1. the draft proposes `gamma` tokens, each chosen by the budget controller from the
     draft's distribution q (on a scratch copy of the controller state: forced close strings
     and answer prefixes are proposed as the controller would emit them);
  2. the policy runs ONE forward over gamma + 1 positions: the last emitted token (not yet
     fed) followed by the gamma proposals, giving its distribution p at every candidate;
  3. the real controller walks the candidates one by one (`advance_controller`, the one
     copy of the phase logic that the plain step also calls): before each choice it runs
     the plain step's post-feed bookkeeping for the token just fed (stop rules, cache-full);
     it draws each token with the standard rule (accept the proposal d with probability
     min(1, p(d)/q(d)), else draw from normalize(max(p - q, 0)); after gamma acceptances a
     bonus token from p), and stops at the first emitted token that differs from the
     proposal: a rejection, or a token the controller forces or replaces.
So budgets, the forced close, minimums, answer caps and EOS act token by token exactly as in
plain decoding; greedy output is token for token the plain output, and sampled output has
the plain distribution (p and q both use the request's temperature, top-k and top-p).

The emitted token that ends an iteration is fed at the start of the next one (in the
policy's verify forward and the draft's first forward), so each iteration costs one policy
forward. Candidates past the accepted point leave stale cache entries beyond the position,
which attention never reads (it masks by position) and later tokens overwrite.

Not supported: the confidence rule with probes (a probe writes into the cache slots the
candidates occupy; ThinkConfig refuses the combination). The serving engine runs the plain
step only.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct

from o1jax.model.cache import KVCache
from o1jax.model.config import ModelConfig
from o1jax.model.decode import prompt_positions
from o1jax.model.transformer import forward
from o1jax.thinking.config import Phase, ThinkConfig
from o1jax.thinking.controller import (choose_token, advance_controller, check_heads,
                                 controller_logits, prefill, record_token, stop_when_cache_full,
                                 to_result, token_stop_rules)
from o1jax.thinking.sampling import categorical, filter_logits
from o1jax.thinking.state import (Segment, ThinkInputs, ThinkState, draw_temperature,
                                  fill_settings, forced_table, init_state)

Array = jax.Array

# Tags folded into a request's n-th key (fold_in(key, n)) for the draws about token n.
_DRAFT, _ACCEPT, _RESIDUAL, _BONUS = 1, 2, 3, 4


@struct.dataclass
class SpecState:
  """The speculative loop's carry: the controller's ThinkState plus the draft's side."""
  think: ThinkState
  draft_cache: KVCache
  pending: Array          # [B] int32: the last emitted token, fed by the next iteration
  pending_segment: Array  # [B] int32: its Segment (PAD: nothing to feed)
  catch_up: Array         # [B] int32: a token the draft still needs, at position - 1 (-1: none)
  drafted: Array          # [B] int32: proposals made while the sequence was live
  accepted: Array         # [B] int32: proposals emitted as proposed
  iterations: Array       # [] int32


def draft_of(params, draft_params, config: ThinkConfig):
  """(draft params, draft ModelConfig): a separate draft model, or the policy's first layers
  with its embedding, final norm and unembedding (self-speculative)."""
  spec = config.speculative
  if spec.draft_model is not None:
    if draft_params is None:
      raise ValueError("SpeculativeConfig.draft_model is set: pass its params as "
                       "think(..., draft_params=...)")
    return draft_params, spec.draft_model
  if draft_params is not None:
    raise ValueError("draft_params given but SpeculativeConfig.draft_model is None (the "
                     "self-speculative draft is the policy's own first layers)")
  kept = {k: v for k, v in params.items()
          if not k.startswith("layers_") or int(k.split("_")[1]) < spec.draft_layers}
  return kept, config.model.replace(num_layers=spec.draft_layers)


def token_distribution(logits, temperature, top_k, top_p) -> Array:
  """The distribution [B, V] that `sample` draws from: softmax of the filtered, scaled
  logits, or a one-hot argmax for greedy rows (temperature 0)."""
  greedy = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=jnp.float32)
  scaled = logits / jnp.where(temperature > 0, temperature, 1.0)[:, None]
  probs = jax.nn.softmax(filter_logits(scaled, top_k, top_p), axis=-1)
  return jnp.where((temperature > 0)[:, None], probs, greedy)


def accept_or_resample(p, q, proposal, key_accept, key_residual):
  """The speculative sampling rule for one position: a token distributed exactly as p.

  p, q [B, V]: target and draft distributions; proposal [B] was drawn from q. Accepts it
  with probability min(1, p/q), else draws from normalize(max(p - q, 0)).
  keys: [B] typed PRNG keys. Returns (token [B] int32, accepted [B] bool)."""
  p_d = jnp.take_along_axis(p, proposal[:, None], -1)[:, 0]
  q_d = jnp.take_along_axis(q, proposal[:, None], -1)[:, 0]
  u = jax.vmap(jax.random.uniform)(key_accept)
  accepted = u * q_d < p_d  # u < p/q without dividing (q_d > 0: proposal ~ q)
  residual = jnp.maximum(p - q, 0.0)
  # All mass cancelled only if p == q, where a rejection cannot happen; rounding aside.
  residual = jnp.where(residual.sum(-1, keepdims=True) > 0, residual, p)
  resampled, _ = categorical(key_residual, jnp.log(residual))
  return jnp.where(accepted, proposal, resampled.astype(jnp.int32)), accepted


def bonus_token(p, keys):
  """The token after gamma acceptances: a fresh draw from the target p [B, V]."""
  return categorical(keys, jnp.log(p))[0]


def _keys(s: ThinkState, n, tag: int):
  """Each request's key for the draw of its n-th token, kind `tag`."""
  return jax.vmap(lambda k, i: jax.random.fold_in(jax.random.fold_in(k, i), tag))(s.keys, n)


def _positions(position, live, cache_len: int):
  """Feed positions: -1 (nothing written or attended) for dead rows and past the cache."""
  return jnp.where(live & (position < cache_len), position, -1)


def _propose(sp: SpecState, draft_params, draft_model: ModelConfig, config: ThinkConfig,
             table, table_len):
  """gamma proposals [B, gamma] (the tokens the controller would emit), the draft's raw
  draws they came from [B, gamma], their distributions q [B, gamma, V], the draft cache."""
  s, gamma = sp.think, config.speculative.gamma
  sampling = (s.temperature > 0).any() | (s.answer_temperature > 0).any()
  has_catch_up = sp.catch_up >= 0
  chunk = jnp.stack([jnp.where(has_catch_up, sp.catch_up, config.pad_id), sp.pending], 1)
  pos = jnp.stack([_positions(s.position - 1, has_catch_up, config.cache_len),
                   _positions(s.position, sp.pending_segment != Segment.PAD,
                              config.cache_len)], 1)
  logits, _, cache = forward(draft_params, chunk, pos, sp.draft_cache, draft_model)

  def choose(scratch, n, q_logits):
    """The controller's choice from the draft's distribution, on the scratch state."""
    masked = controller_logits(scratch, q_logits, config)
    q = jax.lax.cond(sampling, lambda m: token_distribution(m, draw_temperature(scratch),
                                                           s.top_k, s.top_p),
                     lambda m: jax.nn.one_hot(jnp.argmax(m, -1), m.shape[-1]), masked)
    drawn = jax.lax.cond(
        sampling, lambda q: categorical(_keys(s, n, _DRAFT), jnp.log(q))[0],
        lambda q: jnp.argmax(q, -1), q).astype(jnp.int32)
    scratch, token, segment, _ = advance_controller(scratch, drawn, config, table, table_len)
    return scratch, n + (segment != Segment.PAD), token, drawn, q

  def body(carry, _):
    scratch, n, position, q_logits, cache = carry
    scratch, n_next, token, drawn, q = choose(scratch, n, q_logits)
    live = n_next > n
    logits, _, cache = forward(draft_params, token[:, None],
                               _positions(position, live, config.cache_len)[:, None], cache,
                               draft_model)
    return (scratch, n_next, position + live, logits[:, 0], cache), (token, drawn, q)

  small = s.replace(cache=None, tokens=None, segments=None, logprobs=None, logits=None)
  carry = (small, s.num_generated, s.position + 1, logits[:, 1], cache)
  # gamma - 1 proposals are fed to the draft; the last one only when it is accepted
  # (SpecState.catch_up).
  (scratch, n, _, q_logits, cache), (tokens, draws, qs) = jax.lax.scan(body, carry, None,
                                                                       gamma - 1)
  _, _, last, last_draw, last_q = choose(scratch, n, q_logits)
  proposals = jnp.concatenate([tokens, last[None]], 0).T                 # [B, gamma]
  draws = jnp.concatenate([draws, last_draw[None]], 0).T                 # [B, gamma]
  qs = jnp.moveaxis(jnp.concatenate([qs, last_q[None]], 0), 0, 1)        # [B, gamma, V]
  return proposals, draws, qs, cache


def _select(active, new, old):
  """Per-row choice between two pytrees of [B, ...] arrays."""
  def pick(a, b):
    if a is b:  # untouched fields (keys, settings): nothing to select
      return a
    return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, new, old)


def speculative_step(sp: SpecState, params, draft_params, config: ThinkConfig,
                     heads=None) -> SpecState:
  """One draft-and-verify iteration: every live sequence emits 1 to gamma + 1 tokens."""
  table, table_len = forced_table(config)
  gamma = config.speculative.gamma
  draft_params, draft_model = draft_of(params, draft_params, config)
  live_rows = sp.think.phase != Phase.DONE
  proposals, draws, qs, draft_cache = _propose(sp, draft_params, draft_model, config, table,
                                               table_len)

  s = sp.think
  fed_live = sp.pending_segment != Segment.PAD
  chunk = jnp.concatenate([sp.pending[:, None], proposals], 1)      # [B, gamma + 1]
  pos = _positions(s.position[:, None] + jnp.arange(gamma + 1)[None, :], fed_live[:, None],
                   config.cache_len)
  logits, hidden, cache = forward(params, chunk, pos, s.cache, config.model)
  sampling = (s.temperature > 0).any() | (s.answer_temperature > 0).any()

  def candidate(carry, x):
    """The token at chunk index j was fed; the controller chooses the one after it."""
    (small, tokens, segments, logprobs, active, fed_segment, pending, pending_segment,
     accepted) = carry
    p_logits, fed_hidden, fed_token, proposed, draft_draw, q, is_bonus = x
    # decode_step's bookkeeping after its forward, for the fed token.
    cur = small.replace(position=small.position + (active & (fed_segment != Segment.PAD)))
    cur = token_stop_rules(cur, fed_hidden, fed_token, fed_segment == Segment.THINKING,
                           config, heads)
    cur = stop_when_cache_full(cur, config)
    masked = controller_logits(cur, p_logits, config)
    n = cur.num_generated
    greedy = jnp.argmax(masked, -1).astype(jnp.int32)

    def stochastic(m):
      p = token_distribution(m, draw_temperature(cur), cur.top_k, cur.top_p)
      # Accept or reject the draft's own draw, the token q is the distribution of: the
      # controller may have emitted something else in its place (a wait string for a close
      # below the minimum), and the rule is only exact for the draw itself.
      drawn, _ = accept_or_resample(p, q, jnp.maximum(draft_draw, 0),
                                    _keys(cur, n, _ACCEPT), _keys(cur, n, _RESIDUAL))
      drawn = jnp.where(is_bonus, bonus_token(p, _keys(cur, n, _BONUS)), drawn)
      logprob = jnp.log(jnp.take_along_axis(p, drawn[:, None], -1)[:, 0])
      sampled = draw_temperature(cur) > 0
      return jnp.where(sampled, drawn, greedy), jnp.where(sampled, logprob, 0.0)

    drawn, logprob = jax.lax.cond(sampling, stochastic,
                                  lambda m: (greedy, jnp.zeros(greedy.shape, jnp.float32)),
                                  masked)
    new, token, segment, is_draw = advance_controller(cur, drawn, config, table, table_len)
    segment = jnp.where(active, segment, Segment.PAD)
    # record_token writes the live rows only (inactive rows were given PAD above).
    recorded, live = record_token(new.replace(tokens=tokens, segments=segments,
                                              logprobs=logprobs),
                                  token, segment, jnp.where(is_draw, logprob, 0.0))
    small = _select(active, recorded.replace(tokens=None, segments=None, logprobs=None), small)
    # Emitted tokens decide whether the iteration goes on: the state after the same emitted
    # token is the same, whichever draw produced it.
    goes_on = active & live & (token == proposed)     # proposed is -1 at the bonus
    ends = active & ~goes_on
    carry = (small, recorded.tokens, recorded.segments, recorded.logprobs, goes_on, segment,
             jnp.where(ends, token, pending), jnp.where(ends, segment, pending_segment),
             accepted + goes_on)
    return carry, None

  pad = lambda x, value: jnp.concatenate([x, jnp.full_like(x[:, :1], value)], 1)
  xs = (logits, hidden, chunk, pad(proposals, -1), pad(draws, -1), pad(qs, 0.0),
        jnp.arange(gamma + 1)[None, :] == gamma)
  xs = jax.tree.map(lambda x: jnp.moveaxis(x, 1, 0), xs)   # candidate-major for the scan
  small = s.replace(cache=None, tokens=None, segments=None, logprobs=None, logits=None)
  carry = (small, s.tokens, s.segments, s.logprobs, fed_live, sp.pending_segment, sp.pending,
           sp.pending_segment, jnp.zeros_like(sp.accepted))
  carry, _ = jax.lax.scan(candidate, carry, xs)
  small, tokens, segments, logprobs, _, _, pending, pending_segment, accepted = carry

  think = small.replace(cache=cache, tokens=tokens, segments=segments, logprobs=logprobs,
                        logits=s.logits)
  return SpecState(
      think=think, draft_cache=draft_cache, pending=pending, pending_segment=pending_segment,
      # After gamma acceptances the draft has not been fed the last proposal yet.
      catch_up=jnp.where(accepted == gamma, proposals[:, -1], -1),
      drafted=sp.drafted + gamma * live_rows, accepted=sp.accepted + accepted,
      iterations=sp.iterations + 1)


def start(params, draft_params, inputs: ThinkInputs, config: ThinkConfig) -> SpecState:
  """Prefills both models and emits the first token as the plain step would (it is fed by
  the first iteration). `inputs` must be filled (`fill_settings`)."""
  logits, _, cache = prefill(params, inputs, config)
  s = init_state(inputs, logits, cache, config)
  draft_params, draft_model = draft_of(params, draft_params, config)
  batch, width = inputs.tokens.shape
  draft_cache = KVCache.init(draft_model, batch, config.cache_len)
  _, _, draft_cache = forward(draft_params, inputs.tokens,
                              prompt_positions(inputs.lengths, width), draft_cache, draft_model)
  table, table_len = forced_table(config)
  s, token, segment, logprob = choose_token(s, config, table, table_len)
  s, _ = record_token(s, token, segment, logprob)
  zeros = jnp.zeros((batch,), jnp.int32)
  return SpecState(think=s, draft_cache=draft_cache, pending=token, pending_segment=segment,
                   catch_up=zeros - 1, drafted=zeros, accepted=zeros,
                   iterations=jnp.zeros((), jnp.int32))


def run(params, draft_params, inputs: ThinkInputs, config: ThinkConfig,
        heads=None) -> SpecState:
  """Prefill, then draft-and-verify iterations while any sequence is live."""
  sp = start(params, draft_params, inputs, config)

  def cond_fn(sp):
    return (sp.think.phase != Phase.DONE).any() & (sp.iterations < config.cache_len)

  return jax.lax.while_loop(
      cond_fn, lambda sp: speculative_step(sp, params, draft_params, config, heads), sp)


@functools.partial(jax.jit, static_argnames=("config",))
def _think_with_stats(params, inputs: ThinkInputs, config: ThinkConfig, heads, draft_params):
  sp = run(params, draft_params, inputs, config, heads)
  return to_result(sp.think, config), dict(drafted=sp.drafted, accepted=sp.accepted,
                                           iterations=sp.iterations)


def think_with_stats(params, inputs: ThinkInputs, config: ThinkConfig, rng=None, heads=None,
                     draft_params=None):
  """`think()` with speculation, also returning its counters: per sequence the proposals
  made (`drafted`) and emitted as proposed (`accepted`), and the loop's `iterations`."""
  if config.speculative is None:
    raise ValueError("think_with_stats needs ThinkConfig.speculative set")
  check_heads(config, heads)
  return _think_with_stats(params, fill_settings(inputs, config, rng), config.compile_key(),
                           heads, draft_params)
