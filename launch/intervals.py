"""95% confidence intervals for a sweep's tables (issue 34, item 3), from its rows.csv.

  python launch/intervals.py --sweep=docs/sweep

Writes SWEEP/intervals.csv: one row per table cell (table, setting, scope, metric,
estimate, lo, hi, n, method): Wilson intervals for every accuracy, a bootstrap over problems
(paired with the natural+budget run of the same prompt; 2000 resamples, seed 0) for each
stop rule's tokens saved and accuracy change and for acc(8) - acc(0). Deterministic: the
same rows.csv gives the same file. o1jax/analysis/intervals.py holds the methods.
"""

import csv
import os

from absl import app, flags

from o1jax.analysis import intervals

_SWEEP = flags.DEFINE_string("sweep", "docs/sweep", "A launch/sweep.py output directory.")
_N_BOOT = flags.DEFINE_integer("n_boot", 2000, "Bootstrap resamples.")
_SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")


def main(argv):
  del argv
  with open(os.path.join(_SWEEP.value, "rows.csv")) as f:
    rows = list(csv.DictReader(f))
  table = intervals.sweep_intervals(rows, n_boot=_N_BOOT.value, seed=_SEED.value)
  path = os.path.join(_SWEEP.value, "intervals.csv")
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(table[0]))
    w.writeheader()
    for r in table:
      w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})
  for r in table:
    if r["scope"] == "all":
      print(f"{r['table']:20s} {r['setting']:40s} {r['metric']:20s} {r['estimate']:8.3f} "
            f"[{r['lo']:.3f}, {r['hi']:.3f}] n={r['n']}")
  print(f"wrote {path} ({len(table)} rows)")


if __name__ == "__main__":
  app.run(main)
