"""Safetensors <-> o1jax params, one tensor at a time.

HF stores every Linear as (out, in) and fuses heads into one axis; we store (in, heads,
head_dim) so the einsums in transformer.py need no reshapes. Each tensor is read, cast to the
param dtype, re-laid-out and put on its device(s) before the next is read: peak host memory
is one tensor, never a full copy of the model (a 32B model in fp32 would not fit).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from o1jax.hf._deps import require
from o1jax.model.config import ModelConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
# Buffers some exporters write that carry nothing our model needs (RoPE is recomputed).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One HF tensor: where it goes in our params and how its layout differs.

  Every conversion is an optional transpose of the 2-D (out, in) matrix plus a reshape that
  splits or fuses the heads axis, so the two shapes and one flag describe it both ways.
  """
  path: tuple[str, ...]
  hf_shape: tuple[int, ...]
  our_shape: tuple[int, ...]
  transposed: bool = False

  def to_ours(self, x: np.ndarray) -> np.ndarray:
    return (x.T if self.transposed else x).reshape(self.our_shape)

  def to_hf(self, x: np.ndarray) -> np.ndarray:
    if self.transposed:
      return x.reshape(self.hf_shape[::-1]).T
    return x.reshape(self.hf_shape)


def tensor_specs(c: ModelConfig) -> dict[str, TensorSpec]:
  """HF tensor name -> TensorSpec, in the order HF's own state dict lists them."""
  e, h, kvh, d, f, v = (c.embed_dim, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim,
                        c.vocab_size)
  S = TensorSpec
  specs = {"model.embed_tokens.weight": S(("embedding",), (v, e), (v, e))}
  for i in range(c.num_layers):
    p, L = f"model.layers.{i}.", f"layers_{i}"
    for name, n in (("q", h), ("k", kvh), ("v", kvh)):
      specs[f"{p}self_attn.{name}_proj.weight"] = S((L, "attn", name), (n * d, e), (e, n, d),
                                                    True)
      if c.qkv_bias:
        specs[f"{p}self_attn.{name}_proj.bias"] = S((L, "attn", f"{name}_bias"), (n * d,),
                                                    (n, d))
    specs[f"{p}self_attn.o_proj.weight"] = S((L, "attn", "o"), (e, h * d), (h, d, e), True)
    if c.qk_norm:
      for name in ("q", "k"):
        specs[f"{p}self_attn.{name}_norm.weight"] = S((L, "attn", f"{name}_norm", "scale"),
                                                      (d,), (d,))
    for name in ("gate", "up"):
      specs[f"{p}mlp.{name}_proj.weight"] = S((L, "mlp", name), (f, e), (e, f), True)
    specs[f"{p}mlp.down_proj.weight"] = S((L, "mlp", "down"), (e, f), (f, e), True)
    specs[f"{p}input_layernorm.weight"] = S((L, "attn_norm", "scale"), (e,), (e,))
    specs[f"{p}post_attention_layernorm.weight"] = S((L, "mlp_norm", "scale"), (e,), (e,))
  specs["model.norm.weight"] = S(("final_norm", "scale"), (e,), (e,))
  if not c.tie_embeddings:
    specs["lm_head.weight"] = S(("lm_head",), (v, e), (e, v), True)
  return specs


def weight_files(model_dir: str) -> dict[str, str]:
  """HF tensor name -> the safetensors file (full path) that holds it."""
  index_path = os.path.join(model_dir, INDEX_FILE)
  if os.path.isfile(index_path):
    with open(index_path, encoding="utf-8") as f:
      weight_map = json.load(f).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index_path} has no 'weight_map'")
    files = {n: os.path.join(model_dir, fn) for n, fn in weight_map.items()}
    for path in sorted(set(files.values())):
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} (listed in {index_path}) not found")
    return files
  single = os.path.join(model_dir, SINGLE_FILE)
  if not os.path.isfile(single):
    others = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []
    hint = (" (.bin / .pth checkpoints are not supported: convert them to safetensors)"
            if any(o.endswith((".bin", ".pth", ".pt")) for o in others) else "")
    raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {model_dir}{hint}")
  safe_open = require("safetensors").safe_open
  with safe_open(single, framework="np") as f:
    return {n: single for n in f.keys()}


def _sharding_for(shardings, path: tuple[str, ...]):
  if shardings is None:
    return None
  if callable(shardings):
    return shardings("/".join(path))
  node = shardings
  for key in path:
    node = node[key]
  return node


def _place(array: np.ndarray, sharding) -> jax.Array:
  if sharding is None:
    return jax.device_put(array)
  # Works on multi-host meshes too: each process builds only its addressable shards.
  return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def load_params(model_dir: str, config: ModelConfig, shardings=None) -> dict[str, Any]:
  """Reads all tensors `config` needs into a params pytree (see module docstring)."""
  safe_open = require("safetensors").safe_open
  specs = tensor_specs(config)
  files = weight_files(model_dir)
  missing = [n for n in specs if n not in files]
  if missing:
    raise ValueError(f"{model_dir}: missing tensors {missing[:5]}"
                     f"{' and %d more' % (len(missing) - 5) if len(missing) > 5 else ''}"
                     " for the architecture in config.json")
  # A tied checkpoint may still store lm_head.weight (a copy of the embedding): skip it.
  ignored = {"lm_head.weight"} if config.tie_embeddings else set()
  unexpected = [n for n in files if n not in specs and n not in ignored
                and not n.endswith(_IGNORED_SUFFIXES)]
  if unexpected:
    raise ValueError(f"{model_dir}: unexpected tensors {unexpected[:5]} that config.json does "
                     "not account for (a different architecture?)")
  by_file: dict[str, list[str]] = {}
  for name in specs:
    by_file.setdefault(files[name], []).append(name)
  # Check every header first (cheap), so a bad tensor fails before minutes of reading.
  for path, names in by_file.items():
    with safe_open(path, framework="np") as f:
      for name in names:
        _check_tensor(f.get_slice(name), name, path, specs[name].hf_shape)
  if config.tie_embeddings and "lm_head.weight" in files:
    _check_tied(files)

  np_dtype = np.dtype(config.jnp_param_dtype)
  params: dict[str, Any] = {}
  for path, names in by_file.items():
    with safe_open(path, framework="np") as f:
      for name in names:
        spec = specs[name]
        # Cast as read: a bf16 checkpoint loaded for bf16 never exists in fp32 on the host.
        array = np.ascontiguousarray(spec.to_ours(f.get_tensor(name).astype(np_dtype,
                                                                            copy=False)))
        node = params
        for key in spec.path[:-1]:
          node = node.setdefault(key, {})
        node[spec.path[-1]] = _place(array, _sharding_for(shardings, spec.path))
        del array  # the device copy is all we keep
  return params


def _check_tensor(info, name: str, path: str, hf_shape: tuple[int, ...]) -> None:
  shape, dtype = tuple(info.get_shape()), info.get_dtype()
  where = f"tensor {name} in {os.path.basename(path)}"
  if shape != hf_shape:
    raise ValueError(f"{where} has shape {shape}, config.json implies {hf_shape}")
  if dtype not in _FLOAT_DTYPES:
    raise ValueError(f"{where} has dtype {dtype}; only {_FLOAT_DTYPES} are supported "
                     "(quantized checkpoints are not)")


def _check_tied(files: dict[str, str]) -> None:
  """Some tied checkpoints also store lm_head.weight: harmless if it is the embedding, but if
  it differs the config is wrong and tying would silently compute other logits."""
  safe_open = require("safetensors").safe_open
  tensors = {}
  for name in ("model.embed_tokens.weight", "lm_head.weight"):
    with safe_open(files[name], framework="np") as f:
      tensors[name] = f.get_tensor(name)
  if not np.array_equal(tensors["model.embed_tokens.weight"], tensors["lm_head.weight"]):
    raise ValueError("config.json says tie_word_embeddings=true but lm_head.weight differs from "
                     "model.embed_tokens.weight")


def _get(params, path: tuple[str, ...]):
  node = params
  for key in path:
    if not isinstance(node, dict) or key not in node:
      raise ValueError(f"params have no {'/'.join(path)} (does the config match the params?)")
    node = node[key]
  return node


def save_params(params, config: ModelConfig, out_dir: str,
                max_shard_size: int = 5 * 2**30) -> list[str]:
  """Writes params as HF safetensors (sharded with an index above max_shard_size bytes).

  Tensors keep their dtype; each shard is gathered to the host only while it is written.
  Returns the files written.
  """
  st_np = require("safetensors.numpy")
  specs = tensor_specs(config)
  shards: list[list[str]] = [[]]
  size = 0
  for name, spec in specs.items():
    leaf = _get(params, spec.path)
    if tuple(leaf.shape) != spec.our_shape:
      raise ValueError(f"param {'/'.join(spec.path)} has shape {tuple(leaf.shape)}, the config "
                       f"implies {spec.our_shape}")
    nbytes = leaf.size * np.dtype(leaf.dtype).itemsize
    if shards[-1] and size + nbytes > max_shard_size:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  os.makedirs(out_dir, exist_ok=True)
  n = len(shards)
  names = ([SINGLE_FILE] if n == 1 else
           [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
  weight_map, total = {}, 0
  for fname, shard in zip(names, shards):
    tensors = {}
    for name in shard:
      host = np.asarray(jax.device_get(_get(params, specs[name].path)))
      tensors[name] = np.ascontiguousarray(specs[name].to_hf(host))
      total += tensors[name].nbytes
      weight_map[name] = fname
    # transformers refuses safetensors files whose metadata does not say "pt".
    st_np.save_file(tensors, os.path.join(out_dir, fname), metadata={"format": "pt"})
    del tensors
  if n > 1:
    with open(os.path.join(out_dir, INDEX_FILE), "w", encoding="utf-8") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  return [os.path.join(out_dir, x) for x in names]
