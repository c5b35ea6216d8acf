"""Trains a reasoner; rerunning the same command after a kill resumes where it stopped.

  python launch/train.py --config=configs/tiny.py --workdir=runs/tiny \
      [--config.train.steps=2000 ...]

Sharded and multi-host (docs/PARALLEL.md):
  python launch/train.py --workdir=runs/x --config.mesh.shape=-1,1,4   # data x tensor
  python launch/train.py --workdir=runs/x --coordinator_address=host0:1234 \
      --num_processes=2 --process_id=0                                  # once per process
On TPU VMs and under SLURM the cluster is detected without the three process flags.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from o1jax import parallel
from o1jax.training import trainer  # importing builds no arrays: the backend is not started

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.jsonl.",
                               required=True)
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
  try:
    # Before any JAX computation: joining a cluster must precede backend creation.
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    _, _, evals = trainer.train(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:  # configuration problems: one clear line, no traceback
    sys.exit(f"error: {e}")
  if parallel.is_primary():
    print("final eval:", evals)


if __name__ == "__main__":
  app.run(main)
