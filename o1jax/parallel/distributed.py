"""Multi-host start-up: `jax.distributed.initialize` from flags, or detected on TPU VMs and SLURM.

Call `initialize` before anything touches a JAX device: the backend is created once, and a
process that has already created it can no longer join a cluster.
"""

from __future__ import annotations

import glob
import logging
import os

import jax

log = logging.getLogger("o1jax.parallel")

_PCI_DEVICES = "/sys/bus/pci/devices"  # a module attribute so tests can fake the tree
_GOOGLE_PCI_VENDOR = "0x1ae0"
# PCI device ids of TPU chips (v3, an unnamed one, v4, v5p, v5e, v6e, TPU7x), as in JAX's own
# TPU detection (jax/_src/hardware_utils.py). The vendor id alone is not enough: the gVNIC
# network card of GCP VMs (A3 H100/H200 GPU VMs among them) is a Google device too.
_TPU_PCI_DEVICE_IDS = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f",
                                 "0x0076"})


def _read(path: str) -> str | None:
  try:
    with open(path) as f:
      return f.read().strip()
  except OSError:
    return None


def _tpu_device_ids() -> frozenset[str]:
  """Ours plus any JAX knows (a newer JAX may know newer chips); JAX's table is private."""
  try:
    from jax._src import hardware_utils
    return _TPU_PCI_DEVICE_IDS | frozenset(hardware_utils._TPU_PCI_DEVICE_IDS)
  except (ImportError, AttributeError):
    return _TPU_PCI_DEVICE_IDS


def _on_tpu_vm() -> bool:
  """A Google PCI device whose device id is a TPU chip's."""
  tpu_ids = _tpu_device_ids()
  for device in glob.glob(os.path.join(_PCI_DEVICES, "*")):
    if (_read(os.path.join(device, "vendor")) == _GOOGLE_PCI_VENDOR
        and _read(os.path.join(device, "device")) in tpu_ids):
      return True
  return False


def _in_slurm_job() -> bool:
  """Inside an `srun` step with several tasks (a lone task needs no cluster)."""
  env = os.environ
  return ("SLURM_JOB_ID" in env and "SLURM_PROCID" in env
          and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1"))) > 1)


def detected_cluster() -> str | None:
  if _in_slurm_job():
    return "slurm"
  if _on_tpu_vm():
    return "tpu"
  return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """Joins the cluster; returns whether this is a multi-process run.

  With `coordinator_address`, the three values are taken as given (any machine, e.g. several
  processes on one host for tests). Without it, `jax.distributed.initialize()` detects them
  on TPU VMs (from the metadata server) and under SLURM (from SLURM_* variables); elsewhere
  this is a no-op and the run is single-process.
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must be in [0, {num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  elif num_processes not in (None, 1) or process_id not in (None, 0):
    raise ValueError("--num_processes/--process_id need --coordinator_address (or run under "
                     "SLURM or on a TPU VM, where they are detected)")
  else:
    cluster = detected_cluster()
    if cluster is None:
      return False
    log.warning("distributed: detected %s; initialising from its environment", cluster)
    # Under SLURM with one task per node, JAX would restrict each process to GPU
    # SLURM_LOCALID; JAX_LOCAL_DEVICE_IDS (set by launch/slurm_gpu.sbatch) overrides that.
    jax.distributed.initialize()
  if jax.process_index() == 0:
    log.warning("distributed: %d processes, %d devices (%d local)", jax.process_count(),
                jax.device_count(), jax.local_device_count())
  return jax.process_count() > 1


def is_primary() -> bool:
  """Only process 0 prints and writes metrics and exports."""
  return jax.process_index() == 0
