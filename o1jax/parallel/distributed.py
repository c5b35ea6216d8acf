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

_GOOGLE_PCI_VENDOR = "0x1ae0"  # how JAX itself recognises a Cloud TPU VM


def _on_tpu_vm() -> bool:
  for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(path) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
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
