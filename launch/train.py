"""Trains a reasoner; rerunning the same command after a kill resumes where it stopped.

  python launch/train.py --config=configs/tiny.py --workdir=runs/tiny \
      [--config.train.steps=2000 ...]
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from o1jax.training import trainer

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.jsonl.",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
  try:
    _, _, evals = trainer.train(_CONFIG.value, _WORKDIR.value)
  except ValueError as e:  # configuration problems: one clear line, no traceback
    sys.exit(f"error: {e}")
  print("final eval:", evals)


if __name__ == "__main__":
  app.run(main)
