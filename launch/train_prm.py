"""Trains PRM and ORM heads on the tiny reasoner and measures them.

  python launch/train_prm.py --config=configs/prm.py --workdir=runs/prm \
      [--config.prm.trunk=separate --config.prm.mc_samples=8 ...]
  python launch/train_prm.py --config=configs/prm.py:search --workdir=runs/prm_search

Steps: sample solutions; label every step by the tasks' checkers and (for a subset) by
Monte Carlo completions, reporting how often the two agree; train PRMs on each label source
and an ORM on answer correctness; report step-level AUC and best-of-N accuracy (PRM vs ORM
vs majority vote) on held-out problems. Heads and prm_results.json go to the workdir.
With `prm.cells` set (`configs/prm.py:search`) it trains the search PRM instead
(o1jax/training/prm_experiment.py, docs/PRM.md).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/prm.py", "PRM config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def parse_cells(text: str) -> tuple[tuple[str, int], ...]:
  """"countdown:5,countdown:4" -> (("countdown", 5), ("countdown", 4))."""
  out = []
  for cell in filter(None, (x.strip() for x in text.split(","))):
    task, _, level = cell.partition(":")
    if not level.isdigit():
      raise ValueError(f"prm.cells: {cell!r} is not task:level")
    out.append((task, int(level)))
  return tuple(out)


def prm_config(c):
  from o1jax.training import heads, prm
  p = c.prm
  return prm.PrmConfig(
      policy=c.policy, tasks=tuple(c.tasks), difficulties=tuple(c.difficulties),
      cache_len=c.cache_len, max_answer_tokens=c.max_answer_tokens, batch_size=c.batch_size,
      seed=c.seed, head=heads.HeadTrainConfig(**c.head.to_dict()),
      train_problems_per_level=p.train_problems_per_level, train_samples=p.train_samples,
      temperature=p.temperature, mc_samples=p.mc_samples, mc_rollouts=p.mc_rollouts,
      trunk=p.trunk, eval_problems_per_level=p.eval_problems_per_level,
      best_of=tuple(p.best_of), subsets=p.subsets, aggregate=p.aggregate,
      cells=parse_cells(p.cells), mc_steps=p.mc_steps,
      hard_negative_weight=p.hard_negative_weight,
      calibration_fraction=p.calibration_fraction,
      calibration_edges=tuple(p.calibration_edges), baseline=p.baseline,
      pool_cache=p.pool_cache, eval_samples=tuple(p.eval_samples),
      train_cell_problems=tuple(p.train_cell_problems),
      stages=tuple(x for x in p.stages.split(",") if x))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax.training import prm, prm_experiment
  log = lambda s: print(s, flush=True)
  try:
    cfg = prm_config(_CONFIG.value)
    (prm_experiment.run if cfg.cells else prm.run_prm)(cfg, _WORKDIR.value, log=log)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
