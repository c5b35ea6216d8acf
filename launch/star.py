"""STaR iterations from a base reasoner; rerunning the same command resumes after a kill.

  python launch/train.py --config=configs/star.py --workdir=runs/star_base   # the base
  python launch/star.py --config=configs/star.py --workdir=runs/star \
      [--config.star.iterations=6 --config.star.samples=8 ...]
  # STaR against its two baselines at equal fine-tuning compute -> docs/star/
  python launch/star.py --config=configs/star.py --workdir=runs/star_compare --compare \
      --out=docs/star

Prints the per-iteration table (problems, rationales kept, rationalised, held-out accuracy by
task and level) and writes it to <workdir>/table.csv and table.json; each iteration's model
is in <workdir>/iter_NN/ (a checkpoint directory launch/think.py --checkpoint reads).
`--compare` runs `star`, `star_no_rationalisation` and `answers_only` one after another in
<workdir>/<run>/ (each resumable) and writes <out>/star.csv and <out>/star.png.
"""

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/star.py", "Config with a `star` "
                                          "section.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for iterations and tables.",
                               required=True)
_COMPARE = flags.DEFINE_bool("compare", False, "Run STaR and its two baselines (no "
                             "rationalisation; answers only) and write the comparison.")
_OUT = flags.DEFINE_string("out", "docs/star", "With --compare: where star.csv and star.png go.")


def _held_back(config) -> tuple[int, ...]:
  """The levels the base had no worked solutions for (data.answer_only), for the summary."""
  answer_only = config.get("data", {}).get("answer_only", {}) if "data" in config else {}
  levels = sorted({int(d) for ds in dict(answer_only).values() for d in ds})
  return tuple(levels) or tuple(config.star.difficulties)


def _compare(cfg, config) -> None:
  from o1jax.training import star, star_report
  held_back = _held_back(config)
  rows = []
  for run, run_cfg in star_report.variants(cfg).items():
    t0 = time.time()
    print(f"== {run} ==", flush=True)
    table = star.run_star(run_cfg, os.path.join(_WORKDIR.value, run),
                          log=lambda s: print(s, flush=True))
    rows += star_report.csv_rows(run, table, run_cfg.tasks, run_cfg.difficulties)
    print(f"{run}: {time.time() - t0:.0f} s", flush=True)
  csv_path = os.path.join(_OUT.value, "star.csv")
  star_report.write_csv(csv_path, rows)
  star_report.plot(rows, held_back, os.path.join(_OUT.value, "star.png"),
                   f"STaR vs baselines ({cfg.eval_problems} held-out problems per level)")
  curves = star_report.held_back_accuracy(rows, held_back)
  for run, curve in curves.items():
    print(f"{run:>24}: levels {held_back} " + " -> ".join(f"{a:.3f}" for a in curve))
  for k, v in star_report.gains(rows, held_back).items():
    print(f"{k}: {100 * v:+.1f} points")
  print(f"table: {csv_path}; plot: {os.path.join(_OUT.value, 'star.png')}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax.training import star
  try:
    cfg = star.StarConfig.from_config_dict(_CONFIG.value.star)
    if _COMPARE.value:
      _compare(cfg, _CONFIG.value)
      return
    rows = star.run_star(cfg, _WORKDIR.value, log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError) as e:  # StarError is a ValueError
    sys.exit(f"error: {e}")
  print(f"table: {_WORKDIR.value}/table.csv ({len(rows)} rows)")


if __name__ == "__main__":
  app.run(main)
