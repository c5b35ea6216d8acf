"""The one table that maps logical axis names to mesh axes, and the checks that go with it.

The model names every parameter and activation axis logically (`embed`, `heads`, ...); this
module is the only place in the codebase that names mesh axes (`data`, `fsdp`, `tensor`).
Everything else asks it for shardings, so changing the parallelism layout is an edit here.
"""

from __future__ import annotations

import contextlib
import logging

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

from o1jax.model.config import ModelConfig

log = logging.getLogger("o1jax.parallel")

MESH_AXES = ("data", "fsdp", "tensor")
DEFAULT_MESH_SHAPE = (-1, 1, 1)  # pure data parallelism over every device

# Order matters: Flax gives a mesh axis to the first rule that claims it within one array.
# Activations [batch, length, embed] therefore shard batch over (data, fsdp) and leave embed
# whole, while parameters (which have no batch axis) shard embed over fsdp: that is FSDP.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("length", None),
    ("cache_len", None),
    ("head_dim", None),
    ("norm", None),
)

# Logical axes that may fall back to replication when the tensor axis does not divide them:
# GQA models often have fewer KV heads than tensor shards (Qwen2.5-0.5B has 2), and odd vocab
# sizes are common. Query heads and the MLP must divide: replicating them would silently
# multiply compute by the tensor size.
_REPLICABLE = ("kv_heads", "vocab")


def divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def _axis_size(mesh, name: str) -> int:
  return dict(zip(mesh.axis_names, mesh.devices.shape))[name]


def mesh_axes_of(logical: str) -> tuple[str, ...]:
  """The mesh axes a logical axis maps to in the table (empty for replicated)."""
  target = dict(LOGICAL_AXIS_RULES)[logical]
  if target is None:
    return ()
  return (target,) if isinstance(target, str) else tuple(target)


def shards_of(mesh, logical: str) -> int:
  """How many ways the table splits a logical axis on this mesh."""
  n = 1
  for axis in mesh_axes_of(logical):
    n *= _axis_size(mesh, axis)
  return n


def check_model_fits(model_config: ModelConfig, mesh) -> None:
  """Raises a ValueError naming the sizes that would divide, before anything is compiled."""
  tensor = shards_of(mesh, "heads")
  problems = []
  need = {"num_heads": model_config.num_heads, "mlp_dim": model_config.mlp_dim}
  bad = {k: v for k, v in need.items() if v % tensor}
  if bad:
    ok = [d for d in divisors(min(need.values())) if all(v % d == 0 for v in need.values())]
    problems.append(f"the tensor axis ({tensor}) must divide "
                    + ", ".join(f"{k}={v}" for k, v in bad.items())
                    + f"; tensor sizes that divide num_heads and mlp_dim: {ok}")
  fsdp = shards_of(mesh, "embed")
  if model_config.embed_dim % fsdp:
    problems.append(f"the fsdp axis ({fsdp}) must divide embed_dim={model_config.embed_dim}; "
                    f"fsdp sizes that divide it: {divisors(model_config.embed_dim)}")
  if problems:
    raise ValueError("mesh " + _shape_str(mesh) + " does not fit the model: "
                     + "; ".join(problems))


def _shape_str(mesh) -> str:
  return "(" + ", ".join(f"{a}={n}" for a, n in zip(mesh.axis_names, mesh.devices.shape)) + ")"


_warned: set[tuple] = set()


def rules_for(model_config: ModelConfig, mesh):
  """The table, with replicable axes the mesh does not divide switched to replication.

  Validates the rest (`check_model_fits`), so every entry point fails early and clearly.
  The fallback is logged once per (axis, size, shards) on process 0.
  """
  check_model_fits(model_config, mesh)
  sizes = {"kv_heads": model_config.num_kv_heads, "vocab": model_config.vocab_size}
  rules = []
  for logical, target in LOGICAL_AXIS_RULES:
    if logical in _REPLICABLE and sizes[logical] % shards_of(mesh, logical):
      key = (logical, sizes[logical], shards_of(mesh, logical))
      if key not in _warned and jax.process_index() == 0:
        _warned.add(key)
        log.warning("%s=%d is not divisible by the %s axis (%d): %s is replicated over it "
                    "instead of sharded", logical, sizes[logical], target,
                    shards_of(mesh, logical), logical)
      target = None
    rules.append((logical, target))
  return tuple(rules)


@contextlib.contextmanager
def activate(mesh, model_config: ModelConfig):
  """Makes `nn.with_logical_constraint` in the model (and the KV cache) bind to `mesh`.

  Functions must be *traced* inside this context. `jax.set_mesh` is part of jit's cache key,
  so a function traced here is not reused on another mesh; the Flax rules are not, but they
  are a pure function of (mesh, model config), and the config is always a static argument.
  """
  rules = rules_for(model_config, mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_sharding(mesh, logical: tuple[str | None, ...], rules=None) -> NamedSharding:
  spec = nn.logical_to_mesh_axes(logical, rules if rules is not None else LOGICAL_AXIS_RULES)
  return NamedSharding(mesh, spec)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh, ndim: int = 2) -> NamedSharding:
  """Leading axis over the batch mesh axes, the rest whole."""
  return logical_sharding(mesh, ("batch",) + (None,) * (ndim - 1))


def check_batch(batch_size: int, mesh, what: str = "train.batch_size") -> None:
  n = shards_of(mesh, "batch")
  if batch_size % n:
    near = sorted({max(n, batch_size - batch_size % n), batch_size + n - batch_size % n})
    raise ValueError(f"{what}={batch_size} must be a multiple of the batch shards "
                     f"(data*fsdp = {n} on mesh {_shape_str(mesh)}), e.g. "
                     + " or ".join(map(str, near)))
