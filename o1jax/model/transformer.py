"""The decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU; Llama/Qwen2/Qwen3 layouts.

The decode path is pure: `forward(params, tokens, positions, cache, config)` returns
(logits, final hidden states, new cache). Every parameter carries logical axis names
(`embed`, `heads`, `kv_heads`, `head_dim`, `mlp`, `vocab`, `norm`); o1jax/parallel/ maps them
to mesh axes.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from o1jax.model.attention import attend
from o1jax.model.cache import KVCache, record_queries, write_layer
from o1jax.model.config import ModelConfig
from o1jax.model.rope import apply_rope, inverse_frequencies


def _param(module: nn.Module, name: str, init, shape, axes, dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _dense(x, w, contract: int = 1):
  """x [..., *w.shape[:contract]] @ w -> [..., *w.shape[contract:]], as one 2-D matmul.

  Leading dims are merged into rows first: with them kept as batch dims, XLA:CPU lays out
  the backward's weight-gradient dots through full transposes of the activations: the tiny
  config's SwiGLU MLP fwd+bwd took ~80 ms where the 2-D form takes 25-31 (18x240 tokens, 2-core
  CPU; launch/bench_train_step.py). The GPU and TPU compilers treat both forms as one dot
  (not timed here: no GPU was lent).
  """
  lead, out = x.shape[:x.ndim - contract], w.shape[contract:]
  k = math.prod(w.shape[:contract])
  return (x.reshape(-1, k) @ w.reshape(k, -1)).reshape(*lead, *out)


def _fan_in_init(fan_in_axes=(0,)):
  return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                          in_axis=fan_in_axes, out_axis=-1)


class RMSNorm(nn.Module):
  eps: float
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("norm",),
                   self.param_dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * scale.astype(jnp.float32)).astype(x.dtype)


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask_positions, cache_kv, segment_ids=None):
    c = self.config
    dt, pdt = c.jnp_dtype, c.jnp_param_dtype
    e, h, kvh, d = c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim
    wq = _param(self, "q", _fan_in_init(), (e, h, d), ("embed", "heads", "head_dim"), pdt)
    wk = _param(self, "k", _fan_in_init(), (e, kvh, d), ("embed", "kv_heads", "head_dim"), pdt)
    wv = _param(self, "v", _fan_in_init(), (e, kvh, d), ("embed", "kv_heads", "head_dim"), pdt)
    wo = _param(self, "o", _fan_in_init((0, 1)), (h, d, e), ("heads", "head_dim", "embed"), pdt)
    q = _dense(x, wq.astype(dt))
    k = _dense(x, wk.astype(dt))
    v = _dense(x, wv.astype(dt))
    if c.qkv_bias:
      zeros = nn.initializers.zeros
      q = q + _param(self, "q_bias", zeros, (h, d), ("heads", "head_dim"), pdt).astype(dt)
      k = k + _param(self, "k_bias", zeros, (kvh, d), ("kv_heads", "head_dim"), pdt).astype(dt)
      v = v + _param(self, "v_bias", zeros, (kvh, d), ("kv_heads", "head_dim"), pdt).astype(dt)
    if c.qk_norm:  # Qwen3: RMSNorm over head_dim before RoPE
      q = RMSNorm(c.norm_eps, pdt, name="q_norm")(q)
      k = RMSNorm(c.norm_eps, pdt, name="k_norm")(k)
    inv_freq = inverse_frequencies(d, c.rope_theta, c.rope_scaling)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))

    if cache_kv is None:  # training / full forward: keys are this call's tokens
      keys, values, new_kv = k, v, None
    else:  # keys are the whole cache, with this call's tokens written at their positions
      new_kv = write_layer(cache_kv, k, v, positions)
      keys, values = new_kv.k, new_kv.v
    scales = {}
    if new_kv is not None and new_kv.k_scale is not None:  # int8: attention dequantises
      scales = dict(k_scale=new_kv.k_scale, v_scale=new_kv.v_scale)
    else:
      keys, values = keys.astype(dt), values.astype(dt)
    slot_positions = None if new_kv is None else new_kv.slot_positions
    out = attend(q, keys, values, mask_positions, c.attention_impl,
                 from_cache=cache_kv is not None, segment_ids=segment_ids,
                 key_positions=slot_positions, **scales)
    if new_kv is not None and new_kv.queries is not None:
      # Eviction scores slots by the attention of the last W queries: kept here, scored
      # only when a row evicts (o1jax/thinking/kv_eviction.py).
      new_kv = record_queries(new_kv, q, positions)
    return _dense(out, wo.astype(dt), contract=2), new_kv


class Mlp(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    dt, pdt = c.jnp_dtype, c.jnp_param_dtype
    gate = _param(self, "gate", _fan_in_init(), (c.embed_dim, c.mlp_dim), ("embed", "mlp"), pdt)
    up = _param(self, "up", _fan_in_init(), (c.embed_dim, c.mlp_dim), ("embed", "mlp"), pdt)
    down = _param(self, "down", _fan_in_init(), (c.mlp_dim, c.embed_dim), ("mlp", "embed"), pdt)
    hidden = jax.nn.silu(_dense(x, gate.astype(dt))) * _dense(x, up.astype(dt))
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))
    return _dense(hidden, down.astype(dt))


class Block(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask_positions, cache_kv, segment_ids=None):
    c = self.config
    attn_out, new_kv = Attention(c, name="attn")(
        RMSNorm(c.norm_eps, c.jnp_param_dtype, name="attn_norm")(x),
        positions, mask_positions, cache_kv, segment_ids)
    x = x + attn_out
    x = x + Mlp(c, name="mlp")(RMSNorm(c.norm_eps, c.jnp_param_dtype, name="mlp_norm")(x))
    return nn.with_logical_constraint(x, ("batch", "length", "embed")), new_kv


class Decoder(nn.Module):
  """tokens [B, T], positions [B, T] (-1 marks padding) -> (logits, hidden, cache).

  `segment_ids` [B, T] (no cache): rows that pack several examples end to end; positions
  then restart at 0 in each example, and attention stays inside it.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens, positions, cache: Optional[KVCache] = None, segment_ids=None):
    c = self.config
    dt, pdt = c.jnp_dtype, c.jnp_param_dtype
    embedding = _param(self, "embedding", nn.initializers.normal(0.02),
                       (c.vocab_size, c.embed_dim), ("vocab", "embed"), pdt)
    x = embedding.astype(dt)[tokens]
    x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
    if cache is None:
      # Keys are this call's tokens, so the mask compares indices within the call;
      # positions (which may be offset) only rotate q and k.
      t = tokens.shape[1]
      mask_positions = jnp.where(positions >= 0, jnp.arange(t)[None, :], -1)
    else:
      mask_positions = positions  # keys sit in the cache at the index equal to their position
    new_layers = []
    for i in range(c.num_layers):
      layer_kv = None if cache is None else cache.layer(i)
      x, kv = Block(c, name=f"layers_{i}")(x, positions, mask_positions, layer_kv, segment_ids)
      new_layers.append(kv)
    hidden = RMSNorm(c.norm_eps, pdt, name="final_norm")(x)
    if c.tie_embeddings:
      # Contract with the embedding's own [vocab, embed] layout: `hidden @ embedding.T`
      # made XLA:CPU transpose and copy the whole table inside the decode loop, every
      # step (+2 table-sized writes/reads, ~20% of a 26M model's step at batch 1).
      logits = jax.lax.dot_general(hidden.reshape(-1, c.embed_dim), embedding.astype(dt),
                                   (((1,), (1,)), ((), ()))).reshape(*hidden.shape[:-1], -1)
    else:
      head = _param(self, "lm_head", _fan_in_init(), (c.embed_dim, c.vocab_size),
                    ("embed", "vocab"), pdt)
      logits = _dense(hidden, head.astype(dt))
    logits = logits.astype(jnp.float32)
    new_cache = None if cache is None else cache.with_layers(new_layers)
    return logits, hidden, new_cache


def forward(params, tokens, positions, cache: Optional[KVCache], config: ModelConfig,
            segment_ids=None):
  """Pure forward pass: (logits [B,T,V] f32, final hidden [B,T,E], new cache or None).

  `segment_ids` [B, T]: packed training rows (cache None), see `Decoder`."""
  if segment_ids is not None and cache is not None:
    raise ValueError("segment_ids (packed rows) are for full forwards; pass cache=None")
  return Decoder(config).apply({"params": params}, tokens, positions, cache, segment_ids)


def init_params(config: ModelConfig, rng: jax.Array):
  """Plain (unboxed) parameters; use `param_logical_axes` for their logical axis names."""
  return nn.unbox(_boxed_init(config, rng))


def _boxed_init(config: ModelConfig, rng: jax.Array):
  tokens = jnp.zeros((1, 1), jnp.int32)
  return Decoder(config).init(rng, tokens, jnp.zeros((1, 1), jnp.int32))["params"]


def param_logical_axes(config: ModelConfig):
  """A pytree like params whose leaves are PartitionSpecs of logical axis names."""
  boxed = jax.eval_shape(lambda r: _boxed_init(config, r), jax.random.key(0))
  return nn.get_partition_spec(boxed)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
