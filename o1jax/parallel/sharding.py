"""Placing things on the mesh: parameters, optimizer state, batches, and bringing results back.

Every function here works the same with one process or many: arrays are global `jax.Array`s,
and anything a host reads back goes through `to_host`, which gathers across processes when
the array is not all on this host (all processes must then call it together).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from o1jax.model.config import ModelConfig
from o1jax.model.transformer import init_params, param_logical_axes
from o1jax.parallel import rules as rules_lib

log = logging.getLogger("o1jax.parallel")


def param_shardings(model_config: ModelConfig, mesh):
  """NamedShardings for the parameters, from their logical axes and the rule table."""
  rules = rules_lib.rules_for(model_config, mesh)
  return nn.logical_to_mesh_sharding(param_logical_axes(model_config), mesh, rules)


def opt_state_shardings(optimizer: optax.GradientTransformation, abstract_opt_state,
                        params_sharding, mesh):
  """Optimizer moments shard like their parameters; counters and other leaves replicate."""
  return optax.tree_map_params(optimizer, lambda _, sh: sh, abstract_opt_state, params_sharding,
                               transform_non_params=lambda _: rules_lib.replicated(mesh),
                               is_leaf=lambda x: isinstance(x, NamedSharding))


def init_sharded(init_fn: Callable[[], Any], shardings, compiler_options=None):
  """Runs `init_fn` under jit with its outputs born sharded: no full copy on any device
  (nor on the host). Call it inside `activate` so the model's constraints see the mesh."""
  return jax.jit(init_fn, out_shardings=shardings, compiler_options=compiler_options)()


def init_params_sharded(model_config: ModelConfig, mesh, seed: int = 0):
  """Random parameters initialised directly in their shards (inference and benchmarks)."""
  with rules_lib.activate(mesh, model_config):
    return init_sharded(lambda: init_params(model_config, jax.random.key(seed)),
                        param_shardings(model_config, mesh))


def abstract_with(tree, shardings):
  """ShapeDtypeStructs carrying `shardings`: what orbax restores into (any mesh shape)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def _put_leaf(x, sharding: NamedSharding):
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    data = _put_leaf(jax.random.key_data(x), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)  # device to device when x is already on devices
  # Many processes: each holds the same value and builds only its own shards from it.
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put(tree, shardings):
  """Places a pytree (host or device values, identical on every process) on the mesh."""
  if isinstance(shardings, NamedSharding):
    return jax.tree.map(lambda x: _put_leaf(x, shardings), tree)
  return jax.tree.map(_put_leaf, tree, shardings)


def shard_params(params, model_config: ModelConfig, mesh):
  """Puts existing (e.g. loaded) parameters on the mesh with the table's shardings."""
  return put(params, param_shardings(model_config, mesh))


def put_batch(tree, mesh):
  """Places a pytree whose leaves all lead with the batch axis, batch over (data, fsdp).

  A batch the batch shards do not divide is replicated instead (and said so), so inference
  on an odd number of prompts still runs.
  """
  leaves = jax.tree.leaves(tree)
  batch = leaves[0].shape[0]
  shards = rules_lib.shards_of(mesh, "batch")
  if batch % shards:
    if jax.process_index() == 0:
      log.warning("batch of %d is not divisible by the %d batch shards: replicated instead",
                  batch, shards)
    return put(tree, rules_lib.replicated(mesh))
  return jax.tree.map(lambda x: _put_leaf(x, rules_lib.batch_sharding(mesh, x.ndim)), tree)


def _host_leaf(x):
  if not isinstance(x, jax.Array):
    return np.asarray(x)
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host(tree):
  """numpy copies of a pytree's global values (a collective when arrays span processes)."""
  return jax.tree.map(_host_leaf, tree)


def process_data_shard(mesh, global_batch: int, process_index: int | None = None
                       ) -> tuple[int, int]:
  """(index, count): this process (or `process_index`) feeds rows [index*n, (index+1)*n) of
  each global batch, n = global_batch / count. Processes whose devices hold the same rows
  share an index."""
  rules_lib.check_batch(global_batch, mesh)
  process_index = jax.process_index() if process_index is None else process_index
  index_map = rules_lib.batch_sharding(mesh, 1).devices_indices_map((global_batch,))
  mine = {(s.start or 0, global_batch if s.stop is None else s.stop)
          for d, (s,) in index_map.items() if d.process_index == process_index}
  start, stop = min(a for a, _ in mine), max(b for _, b in mine)
  covered = sum(b - a for a, b in mine)
  if covered != stop - start or global_batch % (stop - start):
    raise ValueError(f"this process's devices hold rows {sorted(mine)} of the batch, which are "
                     "not one contiguous block; order the mesh devices by process")
  return start // (stop - start), global_batch // (stop - start)


def global_batch(local: Mapping[str, np.ndarray], mesh, global_rows: int,
                 fill: Mapping[str, Any]) -> dict[str, jax.Array]:
  """One global batch of `global_rows` rows from each process's local rows.

  Processes trim padding independently, so their widths can differ: every local leaf is
  padded (axis 1, with `fill[key]`) to that key's widest over the processes first, which is
  the width one process reading the whole batch would have trimmed to, so results do not
  depend on the process count. Leaves with one axis (per-row values) are taken as they are.
  """
  wide = [k for k, v in local.items() if v.ndim > 1]
  widths = np.array([local[k].shape[1] for k in wide], np.int32)
  if wide and jax.process_count() > 1:  # one tiny collective per step
    widths = np.max(multihost_utils.process_allgather(widths).reshape(-1, len(wide)), axis=0)
  out = {}
  for k, v in local.items():
    width = int(widths[wide.index(k)]) if k in wide else 0
    if v.ndim > 1 and v.shape[1] < width:
      pad = [(0, 0), (0, width - v.shape[1])] + [(0, 0)] * (v.ndim - 2)
      v = np.pad(v, pad, constant_values=fill[k])
    out[k] = jax.make_array_from_process_local_data(
        rules_lib.batch_sharding(mesh, v.ndim), v, (global_rows,) + v.shape[1:])
  return out
