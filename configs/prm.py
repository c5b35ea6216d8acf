"""Process reward model and the thinking heads (confidence, budget) on the tiny reasoner.

  python launch/train_prm.py --config=configs/prm.py --workdir=runs/prm
  python launch/train_heads.py --config=configs/prm.py --workdir=runs/heads

Sizes are for a shared 2-core CPU (a few minutes per stage); docs/REASONING_TRAINING.md has
the tables they produced. `policy=""` is the embedded tiny reasoner.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.policy = ""
  c.tasks = ("addition", "equation", "countdown")
  c.difficulties = (1, 2, 3, 4, 5)
  c.cache_len = 704  # level-5 reflective traces run to ~600 tokens
  c.max_answer_tokens = 16
  c.batch_size = 128
  c.seed = 0
  c.head = ml_collections.ConfigDict(dict(hidden_dim=64, steps=400, batch_size=256,
                                          learning_rate=3e-3, weight_decay=1e-4, seed=0))
  c.prm = ml_collections.ConfigDict(dict(
      train_problems_per_level=32, train_samples=4, temperature=1.0,
      mc_samples=4, mc_rollouts=256, trunk="policy",
      eval_problems_per_level=4, best_of=(4, 16, 64), subsets=32, aggregate="min"))
  c.heads = ml_collections.ConfigDict(dict(
      train_problems_per_level=16, eval_problems_per_level=12, every=4, temperature=0.0,
      probe_every=4, head_every=(4, 1), probe_thresholds=(0.8, 0.9, 0.95, 0.99),
      head_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8), give_up_with=(0.5,),
      give_up_thresholds=(0.1, 0.2, 0.3), budget_margin=1.25, budget_slack=4, article_scale=0.1))
  return c
