"""GRPO from a reasoner with verifier rewards; rerunning the same command resumes after a kill.

  python launch/grpo.py --config=configs/grpo.py --workdir=runs/grpo \
      [--config.grpo.steps=300 --config.grpo.truncation=penalize ...]
  python launch/grpo.py --config=configs/grpo.py:budget --workdir=runs/grpo_budget

Prints a progress line per step (reward, accuracy, thinking tokens, truncation rate, KL,
tokens/s, ETA), appends the same to <workdir>/metrics.jsonl, checkpoints every
`checkpoint_every` steps, and writes the final policy to <workdir>/final (a checkpoint
directory launch/think.py --checkpoint reads). The config is checked before any model loads.

Multi-host (docs/REASONING_TRAINING.md, "GRPO at scale: multi-host"): every process runs the
same command; each samples its share of the prompts and the update is one SPMD step.
  python launch/grpo.py --workdir=runs/g --config.grpo.mesh_shape=-1,1,2 \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=0   # once per process
On TPU VMs and under SLURM the cluster is detected without the three process flags
(launch/tpu_pod.sh and launch/slurm_gpu.sbatch start it with SCRIPT=launch/grpo.py).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from o1jax import parallel

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo.py", "Config with a `grpo` "
                                          "section.")
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
  from o1jax.training import grpo, grpo_train
  try:
    cfg = grpo.GRPOConfig.from_config_dict(_CONFIG.value.grpo)  # validated here, early
    # Before any JAX computation: joining a cluster must precede backend creation.
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    _, _, last = grpo_train.train(cfg, _WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:  # configuration problems: one clear line
    sys.exit(f"error: {e}")
  if parallel.is_primary():
    print("last step:", last)


if __name__ == "__main__":
  app.run(main)
