"""The device mesh, built from `config.mesh.shape` over the axes in `rules.MESH_AXES`."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from o1jax.parallel.rules import DEFAULT_MESH_SHAPE, MESH_AXES, divisors


def parse_shape(value) -> tuple[int, ...]:
  """'2,1,4' / '(2, 1, 4)' / a sequence -> a tuple of ints (validated by `resolve_shape`)."""
  if isinstance(value, str):
    parts = [p for p in value.strip().strip("()[]").split(",") if p.strip()]
    try:
      return tuple(int(p) for p in parts)
    except ValueError:
      raise ValueError(f"mesh shape must be integers like '2,1,4' or '-1,1,1', got {value!r}")
  return tuple(int(v) for v in value)


def resolve_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 by the devices left; raises a ValueError naming the sizes that fit."""
  shape = parse_shape(shape)
  names = ", ".join(MESH_AXES)
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries ({names})")
  if any(s == 0 or s < -1 for s in shape) or list(shape).count(-1) > 1:
    raise ValueError(f"mesh shape {shape}: entries must be positive, with at most one -1 "
                     f"(meaning 'the remaining devices')")
  fixed = int(np.prod([s for s in shape if s != -1]))
  fits = ", ".join(map(str, divisors(num_devices)))
  if -1 in shape:
    if num_devices % fixed:
      raise ValueError(f"mesh shape {shape} over ({names}): the fixed axes multiply to {fixed}, "
                       f"which does not divide the {num_devices} devices; the product of the "
                       f"fixed axes must be one of {fits}")
    return tuple(num_devices // fixed if s == -1 else s for s in shape)
  if num_devices % fixed:
    raise ValueError(f"mesh shape {shape} over ({names}) needs {fixed} devices, which does not "
                     f"divide the {num_devices} available; the axis sizes must multiply to one "
                     f"of {fits}, or use -1 for the axis that takes the rest, "
                     f"e.g. {tuple(-1 if i == 0 else s for i, s in enumerate(shape))}")
  return shape


def make_mesh(shape: Sequence[int] = DEFAULT_MESH_SHAPE, devices=None) -> Mesh:
  """A mesh over `devices` (default: every device of every process; a shape whose size only
  divides the device count uses the first ones).

  Axes are Auto (GSPMD propagates shardings from inputs and `with_sharding_constraint`), the
  style the model's `nn.with_logical_constraint` calls are written for. With several
  processes, each process's devices form one contiguous block of the mesh in row-major
  order, so the leading (data) axis splits across hosts, every process feeds one contiguous
  block of batch rows (`process_data_shard`), and the tensor axis, which talks the most,
  stays within a host when it fits there.
  """
  devices = list(jax.devices() if devices is None else devices)
  devices.sort(key=lambda d: (d.process_index, d.id))
  shape = resolve_shape(shape, len(devices))
  size = int(np.prod(shape))
  if size < len(devices):
    # A smaller mesh (e.g. (1, 1, 1) to stay on one device) takes the first devices; with
    # several processes every process must own part of the mesh, so all devices are needed.
    if jax.process_count() > 1:
      raise ValueError(f"mesh shape {tuple(shape)} uses {size} of the {len(devices)} devices; "
                       f"a multi-process mesh must use all of them (-1 takes the rest)")
    devices = devices[:size]
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if len({d.process_index for d in devices}) == 1:
    # One process: let JAX order the devices along the chips' torus (ring-friendly axes).
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  # Several processes: jax.make_mesh would also reorder by torus position, which on pods
  # (e.g. v4-32, v5e-16) interleaves the processes along the data axis, so a process's batch
  # rows are no longer one block. Keep the process-major order instead; within a host the
  # chips are neighbours on the torus anyway.
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES,
              axis_types=axis_types)


def mesh_shape_from_config(config) -> tuple[int, ...]:
  mesh_cfg = config.get("mesh") if hasattr(config, "get") else None
  shape = mesh_cfg.get("shape", DEFAULT_MESH_SHAPE) if mesh_cfg is not None else None
  return parse_shape(DEFAULT_MESH_SHAPE if shape is None else shape)


def mesh_from_config(config, devices=None) -> Mesh:
  """`config.mesh.shape` (default (-1, 1, 1)) over every device."""
  return make_mesh(mesh_shape_from_config(config), devices)
