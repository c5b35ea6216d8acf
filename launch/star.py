"""STaR iterations from a base reasoner; rerunning the same command resumes after a kill.

  python launch/train.py --config=configs/star.py --workdir=runs/star_base   # the base
  python launch/star.py --config=configs/star.py --workdir=runs/star \
      [--config.star.iterations=6 --config.star.samples=8 ...]

Prints the per-iteration table (problems, rationales kept, rationalised, held-out accuracy by
task and level) and writes it to <workdir>/table.csv and table.json; each iteration's model
is in <workdir>/iter_NN/ (a checkpoint directory launch/think.py --checkpoint reads).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/star.py", "Config with a `star` "
                                          "section.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for iterations and tables.",
                               required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax.training import star
  try:
    cfg = star.StarConfig.from_config_dict(_CONFIG.value.star)
    rows = star.run_star(cfg, _WORKDIR.value, log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError) as e:  # StarError is a ValueError
    sys.exit(f"error: {e}")
  print(f"table: {_WORKDIR.value}/table.csv ({len(rows)} rows)")


if __name__ == "__main__":
  app.run(main)
