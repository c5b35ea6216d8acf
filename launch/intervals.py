"""95% confidence intervals for the docs' tables (issue 34, item 3).

  python launch/intervals.py --sweep=docs/sweep --out=docs/sweep/intervals.csv
  python launch/intervals.py --star=docs/star --out=docs/star/intervals.csv

--sweep: from a launch/sweep.py directory's rows.csv, Wilson intervals for every accuracy and
a bootstrap over problems (paired with the natural+budget run of the same prompt; 2000
resamples, seed 0) for each stop rule's tokens saved and accuracy change and for
acc(8) - acc(0). --star: from star.csv, Wilson intervals for every held-out accuracy (each
cell is --star_eval_problems problems) and for levels 3-4 together. Rows: table, setting,
scope, metric, estimate, lo, hi, n, method. Deterministic: the same input gives the same
file. o1jax/analysis/intervals.py holds the methods.
"""

import csv
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from o1jax.analysis import intervals  # noqa: E402

_SWEEP = flags.DEFINE_string("sweep", None, "A launch/sweep.py output directory.")
_STAR = flags.DEFINE_string("star", None, "A launch/star.py --compare output directory.")
_STAR_N = flags.DEFINE_integer("star_eval_problems", 32, "Held-out problems per STaR cell "
                               "(configs/star.py: star.eval_problems).")
_OUT = flags.DEFINE_string("out", None, "The CSV to write.", required=True)
_N_BOOT = flags.DEFINE_integer("n_boot", 2000, "Bootstrap resamples.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")


def read(path):
  with open(path) as f:
    return list(csv.DictReader(line for line in f if not line.startswith("#")))


def main(argv):
  del argv
  if (_SWEEP.value is None) == (_STAR.value is None):
    raise app.UsageError("give exactly one of --sweep and --star")
  if _SWEEP.value:
    table = intervals.sweep_intervals(read(os.path.join(_SWEEP.value, "rows.csv")),
                                      n_boot=_N_BOOT.value, seed=_SEED.value)
  else:
    table = intervals.star_intervals(read(os.path.join(_STAR.value, "star.csv")),
                                     _STAR_N.value)
  with open(_OUT.value, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(table[0]))
    w.writeheader()
    for r in table:
      w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})
  for r in table:
    if r["scope"] in ("all", "levels 3-4"):
      print(f"{r['table']:20s} {r['setting']:40s} {r['metric']:20s} {r['estimate']:8.3f} "
            f"[{r['lo']:.3f}, {r['hi']:.3f}] n={r['n']}")
  print(f"wrote {_OUT.value} ({len(table)} rows)")


if __name__ == "__main__":
  app.run(main)
