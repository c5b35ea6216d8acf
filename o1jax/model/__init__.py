"""Model: config, decoder, KV cache and attention dispatch."""

from o1jax.model.cache import KVCache
from o1jax.model.config import ATTENTION_IMPLS, ModelConfig, RopeScaling
from o1jax.model.transformer import (Decoder, count_params, forward, init_params,
                                     param_logical_axes)
