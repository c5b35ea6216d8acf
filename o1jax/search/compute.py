"""Compute accounting, so strategies compare at equal test-time compute.

Every strategy reports the tokens its rows decoded (discarded candidates and backed-up steps
included: they were paid for), the prompt tokens it prefilled, the extra single-token
forwards it spent backing up, and how many PRM/ORM evaluations it read. FLOPs follow the
usual dense-decoder count: 2 x (matmul parameters) per token, plus attention's 4 x layers x
(heads x head_dim) x context, with each token's context approximated by its row's mean
position; a head evaluation is its two matmuls.
"""

from __future__ import annotations

import dataclasses

from o1jax.model.config import ModelConfig


def matmul_params(config: ModelConfig) -> int:
  """Parameters that multiply activations per token (embedding lookup excluded, the
  unembedding included)."""
  e, h, kv, d, f = (config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim,
                    config.mlp_dim)
  per_layer = e * h * d + 2 * e * kv * d + h * d * e + 3 * e * f
  return config.num_layers * per_layer + e * config.vocab_size


def flops_per_token(config: ModelConfig, context: float) -> float:
  attention = 4 * config.num_layers * config.num_heads * config.head_dim * context
  return 2 * matmul_params(config) + attention


def head_flops(embed_dim: int, hidden_dim: int = 64) -> float:
  return 2 * (embed_dim * hidden_dim + hidden_dim)


@dataclasses.dataclass
class Compute:
  generated_tokens: int = 0    # tokens decoded by every row (kept or not)
  prompt_tokens: int = 0       # prefilled once per problem (forks copy the cache)
  refed_tokens: int = 0        # single-token forwards to back a row up to an earlier step
  reward_evaluations: int = 0  # PRM step scores plus ORM reads
  # Tokens a host-side scorer fed its own model (a separate-trunk PRM re-reads the path at
  # every step end); its FLOPs are in `flops`.
  scorer_tokens: int = 0
  flops: float = 0.0

  def add(self, other: "Compute") -> "Compute":
    return Compute(*(getattr(self, f.name) + getattr(other, f.name)
                     for f in dataclasses.fields(self)))


def count(config: ModelConfig, *, generated: int, prompt: int, refed: int = 0,
          evaluations: int = 0, mean_context: float = 0.0, head_hidden: int = 64,
          scorer_tokens: int = 0, scorer_flops: float = 0.0) -> Compute:
  tokens = generated + prompt + refed
  flops = tokens * flops_per_token(config, mean_context) if tokens else 0.0
  flops += evaluations * head_flops(config.embed_dim, head_hidden) + scorer_flops
  return Compute(generated_tokens=generated, prompt_tokens=prompt, refed_tokens=refed,
                 reward_evaluations=evaluations, scorer_tokens=scorer_tokens,
                 flops=float(flops))
