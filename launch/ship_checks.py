r"""Issue 31's ship checks of a reasoner candidate (o1jax/analysis/ship_checks.py).

  python launch/sweep.py --checkpoint=C --split_key=canonical --nostop_rule_sweep --out=S
  python launch/eval_budget.py --policy=C --base=C --split_key=canonical --out=B
  python launch/ship_checks.py --sweep=S --budget=B --out=S/ship_checks.json

Prints PASS/MISS with the number for each check and writes them as JSON; exits 0 either way
(a miss is a result, not an error).
"""

import dataclasses
import json
import os
import sys

from absl import app, flags

_SWEEP = flags.DEFINE_string("sweep", None, "launch/sweep.py output directory.", required=True)
_BUDGET = flags.DEFINE_string("budget", None, "launch/eval_budget.py output directory.",
                              required=True)
_OUT = flags.DEFINE_string("out", None, "Where to write the checks as JSON.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from o1jax.analysis import ship_checks
  try:
    sweep_rows = ship_checks.read_rows(os.path.join(_SWEEP.value, "rows.csv"))
    budget_rows = ship_checks.read_rows(os.path.join(_BUDGET.value, "budget_rows.csv"))
    checks = (ship_checks.forced_checks(sweep_rows)
              + ship_checks.conditioned_checks(budget_rows))
  except (ValueError, FileNotFoundError, KeyError) as e:
    sys.exit(f"error: {e}")
  print(ship_checks.format_report(checks))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"sweep": _SWEEP.value, "budget": _BUDGET.value,
                 "checks": [dataclasses.asdict(c) for c in checks]}, f, indent=2)


if __name__ == "__main__":
  app.run(main)
