"""The thinking loop: one compiled `lax.while_loop` with a per-sequence budget controller."""

from o1jax.thinking.api import (UNLIMITED, Thought, bucket_width, decode_result,
                                make_think_config, parse_budget, prepare_inputs, think_texts)
from o1jax.thinking.budget import ARTICLE_BUDGETS, article_budget, scaled_policy
from o1jax.thinking.config import (DEFAULT_STOP_RULES, STOP_RULES, Phase, SpeculativeConfig,
                                   StopReason, ThinkConfig)
from o1jax.thinking.loop import decode_step, prefill, run_steps, think
from o1jax.thinking.state import (REQUEST_SETTINGS, Segment, ThinkInputs, ThinkResult,
                                  ThinkState, request_keys)
