"""Trains the confidence head (P(answer right if thinking stops now)) and the budget head
(thinking needed, from the prompt) on the tiny reasoner, then sweeps the stop rules.

  python launch/train_heads.py --config=configs/prm.py --workdir=runs/heads \
      [--config.heads.train_problems_per_level=64 ...]

Writes confidence_head.* and budget_head.* (o1jax.model.heads.load_head reads them) and
heads_results.json: calibration (ECE, AUC) of head vs probe, and accuracy / thinking tokens
of every stop rule on held-out problems. Use the heads with think():
  think(params, inputs, dataclasses.replace(config, stop_rules=(..., "confidence"),
        confidence_estimate="head"), rng, heads={"confidence": head})
and budget="auto" from the head with o1jax.training.heads.head_budgets / budget_policy.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/prm.py", "Config with `heads`.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def heads_config(c):
  from o1jax.training import heads, heads_sweep
  h = c.heads.to_dict()
  h = {k: tuple(v) if isinstance(v, list) else v for k, v in h.items()}
  return heads_sweep.HeadsConfig(
      policy=c.policy, tasks=tuple(c.tasks), difficulties=tuple(c.difficulties),
      cache_len=c.cache_len, max_answer_tokens=c.max_answer_tokens, batch_size=c.batch_size,
      seed=c.seed, head=heads.HeadTrainConfig(**c.head.to_dict()), **h)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax.training import heads_sweep
  try:
    heads_sweep.run_heads(heads_config(_CONFIG.value), _WORKDIR.value,
                          log=lambda s: print(s, flush=True))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
