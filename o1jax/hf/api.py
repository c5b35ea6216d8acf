"""load_hf / save_hf / think_on_hf: Hugging Face checkpoint directories in and out of o1jax."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Sequence

from o1jax.hf import weights
from o1jax.hf.config import hf_config_from_model, model_config_from_hf, read_json
from o1jax.hf.tokenizer import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, HFTokenizer
from o1jax.model.config import ModelConfig

# Copied next to exported weights so the directory is a complete HF model.
_TOKENIZER_FILES = (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, "chat_template.jinja",
                    "special_tokens_map.json", "generation_config.json")


def load_hf(model_dir: str, *, dtype: str = "float32", param_dtype: str | None = None,
            shardings=None, max_seq_len: int | None = None, tokenizer_dir: str | None = None,
            **tokenizer_kwargs) -> tuple[dict[str, Any], ModelConfig, HFTokenizer]:
  """Loads an HF Qwen2 / Qwen3 / Llama checkpoint directory.

  dtype: compute dtype; param_dtype: storage dtype (default: dtype), each tensor is cast to
  it as it is read. shardings: None (default device), a pytree like params of
  `jax.sharding.Sharding`, or a callable "layers_0/attn/q" -> Sharding. max_seq_len: the
  context we allow (default: max_position_embeddings). tokenizer_kwargs go to HFTokenizer
  (close_text=, system_prompt=, think_token=, ...). Config and tokenizer problems are raised
  before any weight is read.
  """
  config_path = os.path.join(model_dir, "config.json")
  hf_config = read_json(config_path)
  config = model_config_from_hf(hf_config, dtype=dtype, param_dtype=param_dtype,
                                max_seq_len=max_seq_len, where=config_path)
  tokenizer = HFTokenizer(tokenizer_dir or model_dir, model_type=hf_config.get("model_type"),
                          **tokenizer_kwargs)
  if tokenizer.vocab_size > config.vocab_size:
    raise ValueError(f"{TOKENIZER_FILE} has {tokenizer.vocab_size} tokens but config.json "
                     f"vocab_size is {config.vocab_size}")
  params = weights.load_params(model_dir, config, shardings)
  return params, config, tokenizer


def save_hf(params, model_config: ModelConfig, out_dir: str, *, tokenizer_dir: str | None = None,
            max_shard_size: int = 5 * 2**30) -> list[str]:
  """Writes `params` as an HF checkpoint directory that `from_pretrained` and `load_hf` read.

  Weights keep their dtype (config.json's `dtype` is model_config.param_dtype). With
  tokenizer_dir, its tokenizer files (and generation_config.json) are copied and the special
  token ids written into config.json. Returns the files written.
  """
  ids: dict[str, Any] = {}
  if tokenizer_dir is not None:
    tok = HFTokenizer(tokenizer_dir, require_thinking=False)
    ids = dict(bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
  hf = hf_config_from_model(model_config, **ids)
  written = weights.save_params(params, model_config, out_dir, max_shard_size)
  path = os.path.join(out_dir, "config.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump(hf, f, indent=2)
  written.append(path)
  if tokenizer_dir is not None and os.path.abspath(tokenizer_dir) != os.path.abspath(out_dir):
    for name in _TOKENIZER_FILES:
      src = os.path.join(tokenizer_dir, name)
      if os.path.isfile(src):
        written.append(shutil.copy(src, os.path.join(out_dir, name)))
  return written


def think_on_hf(model, prompts: str | Sequence[str], budget, *, dtype: str = "float32",
                cache_len: int | None = None, min_thinking=0, seed: int = 0,
                batch_size: int | None = None, **think_overrides):
  """Budgeted thinking on an HF checkpoint: a directory, or the tuple `load_hf` returned.

  cache_len defaults to what the longest prompt, the budget and the answer need, rounded up
  to a power of two (capped at max_seq_len): a 128k-context model does not allocate a 128k
  cache, and calls with other prompts reuse the compiled program.
  think_overrides go to ThinkConfig (temperature=, max_answer_tokens=, stop_rules=, ...).
  Returns a list of `o1jax.thinking.Thought`.
  """
  from o1jax.thinking import (UNLIMITED, bucket_width, make_think_config, parse_budget,
                              think_texts)

  params, config, tokenizer = load_hf(model, dtype=dtype) if isinstance(model, str) else model
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  if cache_len is None:
    probe = make_think_config(config, tokenizer, config.max_seq_len, **think_overrides)
    budgets = budget if isinstance(budget, (list, tuple)) else [budget]
    largest = max(parse_budget(b) for b in budgets)
    longest = max(len(tokenizer.encode_prompt(p)) for p in prompts)
    need = longest + probe.reserve + (0 if largest == UNLIMITED else largest)
    cache_len = (bucket_width(need, config.max_seq_len) if largest != UNLIMITED
                 else config.max_seq_len)
  think_config = make_think_config(config, tokenizer, cache_len, **think_overrides)
  return think_texts(params, tokenizer, prompts, think_config, budgets=budget,
                     min_thinking=min_thinking, seed=seed, batch_size=batch_size)
