"""Trains PRM and ORM heads on the tiny reasoner and measures them.

  python launch/train_prm.py --config=configs/prm.py --workdir=runs/prm \
      [--config.prm.trunk=separate --config.prm.mc_samples=8 ...]

Steps: sample solutions; label every step by the tasks' checkers and (for a subset) by
Monte Carlo completions, reporting how often the two agree; train PRMs on each label source
and an ORM on answer correctness; report step-level AUC and best-of-N accuracy (PRM vs ORM
vs majority vote) on held-out problems. Heads and prm_results.json go to the workdir.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/prm.py", "PRM config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


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
      best_of=tuple(p.best_of), subsets=p.subsets, aggregate=p.aggregate)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax.training import prm
  try:
    prm.run_prm(prm_config(_CONFIG.value), _WORKDIR.value, log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
