"""GRPO from a reasoner with verifier rewards; rerunning the same command resumes after a kill.

  python launch/grpo.py --config=configs/grpo.py --workdir=runs/grpo \
      [--config.grpo.steps=300 --config.grpo.truncation=penalize ...]
  python launch/grpo.py --config=configs/grpo.py:budget --workdir=runs/grpo_budget

Prints a progress line per step (reward, accuracy, thinking tokens, truncation rate, KL,
tokens/s, ETA), appends the same to <workdir>/metrics.jsonl, checkpoints every
`checkpoint_every` steps, and writes the final policy to <workdir>/final (a checkpoint
directory launch/think.py --checkpoint reads). The config is checked before any model loads.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo.py", "Config with a `grpo` "
                                          "section.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.jsonl.",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
  from o1jax.training import grpo, grpo_train
  try:
    cfg = grpo.GRPOConfig.from_config_dict(_CONFIG.value.grpo)  # validated here, early
    _, _, last = grpo_train.train(cfg, _WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:  # configuration problems: one clear line
    sys.exit(f"error: {e}")
  print("last step:", last)


if __name__ == "__main__":
  app.run(main)
