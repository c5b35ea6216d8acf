"""Hugging Face `config.json` <-> ModelConfig, for the Qwen2, Qwen3 and Llama families.

Both config styles are read: transformers 5 writes `rope_parameters` and `dtype`; older
versions (most hub checkpoints, e.g. DeepSeek-R1-Distill) write top-level `rope_theta`,
`rope_scaling` and `torch_dtype`. Anything our decoder would silently compute differently
(sliding windows, MoE, other RoPE types, extra biases) is refused with the field's name.
"""

from __future__ import annotations

import json
import os
from typing import Any

from o1jax.model.config import ModelConfig, RopeScaling

FAMILIES = ("qwen2", "qwen3", "llama")
ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "llama": "LlamaForCausalLM"}
# Fields that only mixture-of-experts configs carry; a dense decoder cannot run those weights.
_MOE_FIELDS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_intermediate_size",
               "num_experts_per_tok", "n_shared_experts", "shared_expert_intermediate_size")
_LLAMA3_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
                "original_max_position_embeddings")


def read_json(path: str) -> dict[str, Any]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found")
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON: {e}") from e


def _rope(hf: dict[str, Any], where: str) -> tuple[float, RopeScaling | None]:
  """(theta, llama3 scaling or None) from either config style."""
  params: dict[str, Any] = {}
  if isinstance(hf.get("rope_scaling"), dict):
    params.update(hf["rope_scaling"])
  if isinstance(hf.get("rope_parameters"), dict):
    params.update(hf["rope_parameters"])
  if "full_attention" in params:  # per-layer-type form: our layers are all full attention
    params = dict(params["full_attention"])
  theta = float(params.get("rope_theta", hf.get("rope_theta", 10_000.0)))
  # Older configs spell the key "type"; both mean the same thing.
  rope_type = params.get("rope_type", params.get("type")) or "default"
  partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  if partial != 1.0:
    raise ValueError(f"{where}: partial_rotary_factor={partial} is not supported (only 1.0)")
  if rope_type == "default":
    return theta, None
  if rope_type != "llama3":
    raise ValueError(f"{where}: rope_type {rope_type!r} is not supported "
                     "(supported: 'default', 'llama3')")
  missing = [k for k in _LLAMA3_KEYS if params.get(k) is None]
  if missing:
    raise ValueError(f"{where}: llama3 rope scaling is missing {missing}")
  return theta, RopeScaling(factor=float(params["factor"]),
                            low_freq_factor=float(params["low_freq_factor"]),
                            high_freq_factor=float(params["high_freq_factor"]),
                            original_max_position_embeddings=int(
                                params["original_max_position_embeddings"]))


def _check_supported(hf: dict[str, Any], where: str) -> str:
  family = hf.get("model_type")
  if family not in FAMILIES:
    raise ValueError(f"{where}: model_type {family!r} is not supported "
                     f"(supported: {', '.join(FAMILIES)})")
  act = hf.get("hidden_act", "silu")
  if act not in ("silu", "swish"):
    raise ValueError(f"{where}: hidden_act {act!r} is not supported (only silu)")
  if hf.get("use_sliding_window"):
    raise ValueError(f"{where}: use_sliding_window=true is not supported: our attention is "
                     "full attention in every layer")
  layer_types = hf.get("layer_types") or []
  other = sorted({t for t in layer_types if t != "full_attention"})
  if other:
    raise ValueError(f"{where}: layer_types {other} are not supported (only full_attention)")
  moe = [k for k in _MOE_FIELDS if hf.get(k)]
  if moe:
    raise ValueError(f"{where}: mixture-of-experts fields {moe} are not supported")
  # Qwen2 always has q/k/v biases and no o_proj bias; in Llama and Qwen3 attention_bias adds
  # an o_proj bias too, which our decoder does not have.
  if family != "qwen2" and hf.get("attention_bias"):
    raise ValueError(f"{where}: attention_bias=true is not supported for {family}")
  if hf.get("mlp_bias"):
    raise ValueError(f"{where}: mlp_bias=true is not supported")
  return family


def model_config_from_hf(hf: dict[str, Any], *, dtype: str = "float32",
                         param_dtype: str | None = None, max_seq_len: int | None = None,
                         where: str = "config.json") -> ModelConfig:
  """Our ModelConfig for an HF config dict; ValueError naming the field if unsupported."""
  family = _check_supported(hf, where)
  required = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads")
  missing = [k for k in required if hf.get(k) is None]
  if missing:
    raise ValueError(f"{where}: missing required fields {missing}")
  heads = int(hf["num_attention_heads"])
  theta, scaling = _rope(hf, where)
  try:
    return ModelConfig(
        vocab_size=int(hf["vocab_size"]), embed_dim=int(hf["hidden_size"]),
        num_layers=int(hf["num_hidden_layers"]), num_heads=heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
        mlp_dim=int(hf["intermediate_size"]),
        max_seq_len=int(max_seq_len or hf.get("max_position_embeddings") or 4096),
        rope_theta=theta, rope_scaling=scaling,
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qk_norm=family == "qwen3", qkv_bias=family == "qwen2",
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        param_dtype=param_dtype or dtype, dtype=dtype)
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from e


def family_of(config: ModelConfig) -> str:
  """The HF model_type that computes exactly what `config` computes."""
  if config.qk_norm and config.qkv_bias:
    raise ValueError("no supported Hugging Face family has both qk_norm and qkv_bias")
  return "qwen3" if config.qk_norm else "qwen2" if config.qkv_bias else "llama"


def hf_config_from_model(config: ModelConfig, **extra) -> dict[str, Any]:
  """A transformers-5 style config.json dict for `config` (extra: e.g. eos_token_id)."""
  family = family_of(config)
  if family == "qwen2" and config.head_dim * config.num_heads != config.embed_dim:
    # Qwen2 derives head_dim from hidden_size; it has no field to say otherwise.
    raise ValueError(f"qwen2 needs head_dim * num_heads == embed_dim, got {config.head_dim} * "
                     f"{config.num_heads} != {config.embed_dim}")
  rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_theta}
  if config.rope_scaling is not None:
    s = config.rope_scaling
    rope.update(rope_type="llama3", factor=s.factor, low_freq_factor=s.low_freq_factor,
                high_freq_factor=s.high_freq_factor,
                original_max_position_embeddings=s.original_max_position_embeddings)
  hf = {
      "architectures": [ARCHITECTURES[family]], "model_type": family,
      "vocab_size": config.vocab_size, "hidden_size": config.embed_dim,
      "intermediate_size": config.mlp_dim, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim, "hidden_act": "silu",
      "max_position_embeddings": config.max_seq_len, "rms_norm_eps": config.norm_eps,
      "tie_word_embeddings": config.tie_embeddings, "rope_parameters": rope,
      "attention_dropout": 0.0, "use_cache": True, "dtype": config.param_dtype,
  }
  if family == "qwen2":
    hf.pop("head_dim")
  if family in ("qwen2", "qwen3"):
    hf["use_sliding_window"] = False
  else:
    hf.update(attention_bias=False, mlp_bias=False)
  if family == "qwen3":
    hf["attention_bias"] = False
  hf.update({k: v for k, v in extra.items() if v is not None})
  return hf
