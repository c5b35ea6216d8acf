"""Token log-probs of sampled tokens without the [B, L, V] logits.

GRPO needs log pi(y_{t+1} | y_{<=t}) for every position of every rollout under the
distribution the loop sampled from (logits / temperature, EOS banned while thinking). The
plain way (`token_logprobs_full`, kept as the reference and for the memory comparison in
launch/grpo_memory.py) builds the whole [B, L, V] float32 logits tensor, and its backward
keeps it: at V = 151,936 that is ~2.5 GB per 4k-token row. Here:

  * the decoder trunk runs to the final hidden states with each layer under
    `jax.checkpoint` (remat: only a layer's input is kept for the backward, its attention
    and MLP intermediates are recomputed), and
  * the unembedding, the EOS ban, the logsumexp and the gather of the sampled token's logit
    run over chunks of `chunk` positions in a `lax.map` whose body is itself checkpointed,
    so the forward and the backward each hold one [B, chunk, V] block at a time.

The values are the plain path's (same matmuls in the same dtype; logsumexp in float32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.config import ModelConfig
from o1jax.model.transformer import Block, RMSNorm, forward


def _eos_mask(vocab: int, eos_ids) -> jax.Array:
  return jnp.zeros(vocab, bool).at[jnp.asarray(eos_ids, jnp.int32)].set(True)


def token_logprobs_full(params, tokens, thinking_ctx, model_config: ModelConfig,
                        temperature: float, eos_ids: tuple[int, ...]):
  """log pi(tokens[:, t+1] | tokens[:, :t+1]) [B, L-1] from the full logits (the path GRPO
  used before issue 30; O(B L V) memory)."""
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  logits = forward(params, tokens, positions, None, model_config)[0][:, :-1]
  logits = logits.astype(jnp.float32) / temperature
  logits = jnp.where(thinking_ctx[..., None] & _eos_mask(logits.shape[-1], eos_ids), -jnp.inf,
                     logits)
  logp = jax.nn.log_softmax(logits, -1)
  return jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]


def final_hidden(params, tokens, positions, model_config: ModelConfig, remat: bool = True):
  """The Decoder's final-norm hidden states [B, T, E] (no unembedding), each layer
  rematerialised in the backward when `remat`. The same modules as `forward`."""
  c = model_config
  x = params["embedding"].astype(c.jnp_dtype)[tokens]
  t = tokens.shape[1]
  mask_positions = jnp.where(positions >= 0, jnp.arange(t)[None, :], -1)

  def layer(x, layer_params):
    return Block(c).apply({"params": layer_params}, x, positions, mask_positions, None)[0], None

  if remat:
    # A scan over the stacked layers, not a Python loop: XLA:CPU scheduled an unrolled
    # loop's recomputations early, so checkpointing there saved nothing (45 MB per layer
    # either way at L=1024, E=256), while a scan's backward must recompute each layer in turn.
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs),
                           *[params[f"layers_{i}"] for i in range(c.num_layers)])
    x, _ = jax.lax.scan(jax.checkpoint(layer), x, stacked)
  else:
    for i in range(c.num_layers):
      x = layer(x, params[f"layers_{i}"])[0]
  return RMSNorm(c.norm_eps, c.jnp_param_dtype).apply({"params": params["final_norm"]}, x)


def _unembed(params, hidden, c: ModelConfig):
  """hidden [..., E] -> logits [..., V] float32, as the Decoder computes them."""
  dt = c.jnp_dtype
  flat = hidden.reshape(-1, c.embed_dim)
  if c.tie_embeddings:
    logits = jax.lax.dot_general(flat, params["embedding"].astype(dt),
                                 (((1,), (1,)), ((), ())))
  else:
    logits = flat @ params["lm_head"].astype(dt)
  return logits.reshape(*hidden.shape[:-1], -1).astype(jnp.float32)


def token_logprobs(params, tokens, thinking_ctx, model_config: ModelConfig,
                   temperature: float, eos_ids: tuple[int, ...], chunk: int = 512,
                   remat: bool = True):
  """log pi(tokens[:, t+1] | tokens[:, :t+1]) [B, L-1] under the sampling distribution
  (logits / temperature, EOS banned where `thinking_ctx` [B, L-1]), holding at most one
  [B, chunk, V] logits block (module docstring). chunk <= 0: the full-logits path."""
  if chunk <= 0:
    return token_logprobs_full(params, tokens, thinking_ctx, model_config, temperature,
                               eos_ids)
  c = model_config
  b, length = tokens.shape
  positions = jnp.broadcast_to(jnp.arange(length), tokens.shape)
  hidden = final_hidden(params, tokens, positions, c, remat)[:, :-1]
  targets, n = tokens[:, 1:], length - 1
  chunk = min(chunk, n)
  blocks = -(-n // chunk)
  pad = blocks * chunk - n
  if pad:  # padded positions predict token 0 outside the thinking context; dropped below
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    thinking_ctx = jnp.pad(thinking_ctx, ((0, 0), (0, pad)))
  to_blocks = lambda x: jnp.moveaxis(x.reshape(b, blocks, chunk, *x.shape[2:]), 1, 0)
  eos = _eos_mask(c.vocab_size, eos_ids)

  @jax.checkpoint  # the backward recomputes each block's logits instead of keeping them all
  def block_logprobs(h, y, ctx):
    logits = _unembed(params, h, c) / temperature
    logits = jnp.where(ctx[..., None] & eos, -jnp.inf, logits)
    picked = jnp.take_along_axis(logits, y[..., None], -1)[..., 0]
    return picked - jax.nn.logsumexp(logits, -1)

  out = jax.lax.map(lambda xs: block_logprobs(*xs),
                    (to_blocks(hidden), to_blocks(targets), to_blocks(thinking_ctx)))
  return jnp.moveaxis(out, 0, 1).reshape(b, blocks * chunk)[:, :n]


def packed_width(loss_mask, bucket: int, full_width: int) -> int:
  """The token width a batch needs: up to the token after its last trained position over
  all rows, rounded up to a multiple of `bucket` (few distinct widths, so few compiles),
  at most `full_width`. Causal attention makes the log-probs of the kept positions exactly
  those of the full-width rows."""
  mask = np.asarray(loss_mask)
  used = np.flatnonzero(mask.any(0))
  need = int(used[-1]) + 2 if used.size else 2
  return int(min(full_width, max(2, -(-need // bucket) * bucket)))
