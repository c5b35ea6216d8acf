"""Hugging Face open weights (Qwen2 / R1-Distill-Qwen, Qwen3, Llama 3.x) in and out of o1jax.

Needs the `hf` extra (safetensors, tokenizers, jinja2); torch and transformers are only
used by the parity tests and the benchmark.
"""

from o1jax.hf.api import load_hf, save_hf, think_on_hf
from o1jax.hf.config import hf_config_from_model, model_config_from_hf
from o1jax.hf.tokenizer import DEFAULT_CLOSE, QWEN3_CLOSE, HFTokenizer, StreamDecoder
from o1jax.hf.weights import tensor_specs
