"""Small scalar heads on a decoder's final hidden states: PRM, ORM, confidence, budget.

A head maps a final-layer hidden state [..., E] (the normed state the LM head reads) to one
number: a logit for the reward, confidence and value heads (value: P(the answer ends right
if thinking goes on)), log thinking length for the budget head. Heads are plain pytrees of arrays, separate from the trunk's params, so that

* the thinking loop can run them on the hidden state it already computes for every token
  (no extra forward pass, unlike a probe), and search can score a step at its delimiter
  from the same KV cache it decodes with;
* a frozen policy trunk and a head trained beside it ship as two files, and the trunk's
  checkpoint format does not change.

`RewardModel` adds the option of a separate small trunk (its own decoder) under a head.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.config import ModelConfig

HEAD_KINDS = ("prm", "orm", "confidence", "value", "budget")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """A two-layer MLP: RMS-normalised hidden -> `hidden_dim` GELU units -> one output.

  The input is normalised again because the trunk's final norm has a learned scale that
  a frozen head should not depend on when the trunk is fine-tuned later.
  """
  embed_dim: int
  hidden_dim: int = 64
  kind: str = "prm"

  def __post_init__(self):
    if self.kind not in HEAD_KINDS:
      raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {self.kind!r}")
    if self.embed_dim <= 0 or self.hidden_dim <= 0:
      raise ValueError(f"head dims must be positive, got {self.embed_dim}, {self.hidden_dim}")


def init_head(config: HeadConfig, rng: jax.Array, bias: float = 0.0) -> dict[str, jax.Array]:
  """Fan-in scaled weights; `bias` sets the initial output (e.g. the label's log-odds)."""
  k1, k2 = jax.random.split(rng)
  e, h = config.embed_dim, config.hidden_dim
  return {"w1": jax.random.normal(k1, (e, h), jnp.float32) * e ** -0.5,
          "b1": jnp.zeros((h,), jnp.float32),
          # A small second layer: the head starts close to its bias, a calibrated prior.
          "w2": jax.random.normal(k2, (h,), jnp.float32) * 0.1 * h ** -0.5,
          "b2": jnp.asarray(bias, jnp.float32)}


def apply_head(head: dict[str, jax.Array], hidden: jax.Array) -> jax.Array:
  """hidden [..., E] -> output [...] (float32)."""
  x = hidden.astype(jnp.float32)
  x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)
  x = jax.nn.gelu(x @ head["w1"] + head["b1"])
  return x @ head["w2"] + head["b2"]


def head_probability(head, hidden: jax.Array) -> jax.Array:
  """sigmoid of a logit head: P(correct) for the PRM, ORM and confidence heads."""
  return jax.nn.sigmoid(apply_head(head, hidden))


@dataclasses.dataclass
class RewardModel:
  """A head, on the policy's own trunk (`trunk_config is None`) or on a separate small
  decoder whose params travel with it."""
  head_config: HeadConfig
  head: dict[str, Any]
  trunk_config: ModelConfig | None = None
  trunk: Any = None

  @property
  def separate(self) -> bool:
    return self.trunk_config is not None


def save_head(directory: str, model: RewardModel, info: dict[str, Any] | None = None,
              name: str | None = None) -> None:
  """`<name>_head.msgpack` (+ `<name>_trunk.msgpack`) and `<name>_head.json` in `directory`;
  the name defaults to the head's kind."""
  os.makedirs(directory, exist_ok=True)
  kind = name or model.head_config.kind
  to_np = lambda t: jax.tree.map(np.asarray, t)
  with open(os.path.join(directory, f"{kind}_head.msgpack"), "wb") as f:
    f.write(flax.serialization.msgpack_serialize(to_np(model.head)))
  meta = {"head_config": dataclasses.asdict(model.head_config),
          "trunk_config": model.trunk_config.to_dict() if model.separate else None,
          **(info or {})}
  if model.separate:
    with open(os.path.join(directory, f"{kind}_trunk.msgpack"), "wb") as f:
      f.write(flax.serialization.to_bytes(to_np(model.trunk)))
  with open(os.path.join(directory, f"{kind}_head.json"), "w") as f:
    json.dump(meta, f, indent=2)


def load_head(directory: str, kind: str) -> tuple[RewardModel, dict[str, Any]]:
  """The RewardModel saved by `save_head` under the name `kind` (with its info dict).
  Checks the shapes."""
  from o1jax.model.transformer import init_params  # local: heavy, and only for trunks
  meta_path = os.path.join(directory, f"{kind}_head.json")
  if not os.path.exists(meta_path):
    raise FileNotFoundError(f"no {kind} head in {directory} ({meta_path} is missing)")
  with open(meta_path) as f:
    meta = json.load(f)
  config = HeadConfig(**meta.pop("head_config"))
  with open(os.path.join(directory, f"{kind}_head.msgpack"), "rb") as f:
    raw = flax.serialization.msgpack_restore(f.read())
  template = jax.eval_shape(lambda: init_head(config, jax.random.key(0)))
  head = {}
  for name, spec in template.items():
    if name not in raw or tuple(np.shape(raw[name])) != spec.shape:
      raise ValueError(f"{kind} head in {directory}: parameter {name!r} is missing or has "
                       f"shape {np.shape(raw.get(name))}, expected {spec.shape}")
    head[name] = jnp.asarray(raw[name], jnp.float32)
  trunk_dict = meta.pop("trunk_config")
  trunk_config = trunk = None
  if trunk_dict is not None:
    trunk_config = ModelConfig.from_dict(trunk_dict)
    shape = jax.eval_shape(lambda: init_params(trunk_config, jax.random.key(0)))
    with open(os.path.join(directory, f"{kind}_trunk.msgpack"), "rb") as f:
      trunk = flax.serialization.from_bytes(shape, f.read())
    trunk = jax.tree.map(jnp.asarray, trunk)
  return RewardModel(config, head, trunk_config, trunk), meta
