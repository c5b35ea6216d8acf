"""Checkpoints: orbax for resumable training state, one msgpack file for shipped weights.

A training checkpoint holds the train state, the grain iterator state (so the data order
continues exactly) and the model config (so a mismatched restore fails by naming the field).
"""

from __future__ import annotations

import json
import os
from typing import Any

import flax.serialization
import flax.traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from o1jax.model.config import ModelConfig


class CheckpointMismatchError(ValueError):
  """The checkpoint was written for a different model than the one asked for."""


def config_differences(saved: dict, current: dict) -> list[str]:
  keys = sorted(set(saved) | set(current))
  return [f"{k}: checkpoint has {saved.get(k)!r}, config has {current.get(k)!r}"
          for k in keys if saved.get(k) != current.get(k)]


def check_model_config(saved: dict, config: ModelConfig, where: str) -> None:
  diffs = config_differences(saved, json.loads(json.dumps(config.to_dict())))
  if diffs:
    raise CheckpointMismatchError(
        f"checkpoint {where} does not match the model config: " + "; ".join(diffs))


class TrainCheckpointer:
  """Saves and restores (train state, data iterator state, model config) by step."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, model_config: ModelConfig) -> None:
    meta = {"model_config": model_config.to_dict(), "data_state": data_state, "step": step}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  def restore_latest(self, abstract_state, model_config: ModelConfig):
    """Returns (state, data_state) from the newest complete checkpoint, or None."""
    step = self.manager.latest_step()
    if step is None:
      return None
    where = os.path.join(self.directory, str(step))
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    check_model_config(meta["model_config"], model_config, where)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))
    except (ValueError, KeyError) as e:  # orbax's message is long; lead with ours
      raise CheckpointMismatchError(f"checkpoint {where} could not be restored into the "
                                    f"current train state: {e}") from e
    return restored["state"], meta["data_state"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def save_pretrained(directory: str, params, model_config: ModelConfig,
                    info: dict[str, Any] | None = None) -> None:
  """Writes `params.msgpack` and `model.json` (config plus free-form info such as evals)."""
  os.makedirs(directory, exist_ok=True)
  params = jax.tree.map(np.asarray, params)
  with open(os.path.join(directory, "params.msgpack"), "wb") as f:
    f.write(flax.serialization.to_bytes(params))
  with open(os.path.join(directory, "model.json"), "w") as f:
    json.dump({"model_config": model_config.to_dict(), **(info or {})}, f, indent=2)


def load_pretrained(directory: str, model_config: ModelConfig | None = None):
  """Reads (params, model_config, info); checks the weights' shapes against the config."""
  from o1jax.model.transformer import init_params  # local: keeps this module light
  config_path = os.path.join(directory, "model.json")
  params_path = os.path.join(directory, "params.msgpack")
  for path in (config_path, params_path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"checkpoint file {path} is missing")
  with open(config_path) as f:
    info = json.load(f)
  saved_config = ModelConfig.from_dict(info.pop("model_config"))
  if model_config is not None:
    check_model_config(saved_config.to_dict(), model_config, directory)
  template = jax.eval_shape(lambda: init_params(saved_config, jax.random.key(0)))
  with open(params_path, "rb") as f:
    raw = f.read()
  try:
    state = flax.serialization.msgpack_restore(raw)
  except Exception as e:  # msgpack raises several types on corrupt bytes
    raise CheckpointMismatchError(f"{params_path} is corrupt or not a params file: {e}") from e
  flat_t = flax.traverse_util.flatten_dict(flax.serialization.to_state_dict(template), sep="/")
  flat_s = flax.traverse_util.flatten_dict(state, sep="/") if isinstance(state, dict) else {}
  problems = [f"{k}: missing" for k in flat_t if k not in flat_s]
  problems += [f"{k}: unexpected" for k in flat_s if k not in flat_t]
  problems += [f"{k}: shape {tuple(flat_s[k].shape)} != {flat_t[k].shape}"
               for k in flat_t if k in flat_s and tuple(flat_s[k].shape) != flat_t[k].shape]
  if problems:
    raise CheckpointMismatchError(f"{params_path} does not match model.json: "
                                  + "; ".join(problems[:8]))
  params = flax.serialization.from_state_dict(template, state)
  params = jax.tree.map(lambda x: jax.numpy.asarray(x, saved_config.jnp_param_dtype), params)
  return params, saved_config, info


def load_params(path: str, model_config: ModelConfig | None = None):
  """(params, model_config, info) from a shipped checkpoint directory (model.json +
  params.msgpack) or from a training workdir (its newest orbax checkpoint)."""
  if os.path.exists(os.path.join(path, "model.json")):
    return load_pretrained(path, model_config)
  ckpt_dir = os.path.join(path, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise FileNotFoundError(f"{path} is neither a checkpoint directory (model.json + "
                            "params.msgpack) nor a training workdir (checkpoints/)")
  manager = ocp.CheckpointManager(os.path.abspath(ckpt_dir))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"training workdir {path} has no complete checkpoint yet")
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  saved_config = ModelConfig.from_dict(meta["model_config"])
  if model_config is not None:
    check_model_config(meta["model_config"], model_config, f"{ckpt_dir}/{step}")
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return state["state"]["params"], saved_config, {"step": step}


def embedded_checkpoint_dir() -> str:
  """The tiny reasoner shipped inside the package."""
  return os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints", "tiny")
