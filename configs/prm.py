"""Process reward model and the thinking heads (confidence, budget) on the tiny reasoner.

  python launch/train_prm.py --config=configs/prm.py --workdir=runs/prm
  python launch/train_prm.py --config=configs/prm.py:search --workdir=runs/prm_search
  python launch/train_heads.py --config=configs/prm.py --workdir=runs/heads

Sizes are for a shared 2-core CPU (a few minutes per stage); docs/REASONING_TRAINING.md has
the tables they produced. `policy=""` is the embedded tiny reasoner. `:search` is the PRM
that search reads (docs/PRM.md): trained and judged on the search regime only (level 5 and
countdown level 4, where greedy is under 70%), at the search temperature.
"""

import ml_collections


def get_config(variant: str = ""):
  if variant not in ("", "search"):
    raise ValueError(f"configs/prm.py variant must be '' or 'search', got {variant!r}")
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
      eval_problems_per_level=4, best_of=(4, 16, 64), subsets=32, aggregate="min",
      cells="", mc_steps=4, hard_negative_weight=3.0, calibration_fraction=0.25,
      calibration_edges=(4, 12, 24), baseline="", pool_cache="", eval_samples=(),
      train_cell_problems=(), stages="train,eval"))
  if variant == "search":
    # Per cell: 32, 32, 16, 16 training problems x 8 samples; 24 held-out problems, with
    # pools of 64 samples for addition 5 and 16 for the others (what a shared, overloaded
    # 2-core CPU allowed in one session: ~0.25 samples/s per process at load 25).
    c.prm.update(dict(cells="addition:5,equation:5,countdown:5,countdown:4",
                      train_problems_per_level=32, train_cell_problems=(32, 32, 16, 16),
                      train_samples=8, temperature=1.5,
                      mc_rollouts=16, mc_samples=2, mc_steps=2, eval_problems_per_level=24,
                      best_of=(1, 4, 16, 64), eval_samples=(64, 16, 16, 16)))
  c.heads = ml_collections.ConfigDict(dict(
      train_problems_per_level=16, eval_problems_per_level=12, every=4, temperature=0.0,
      probe_every=4, head_every=(4, 1), probe_thresholds=(0.8, 0.9, 0.95, 0.99),
      head_thresholds=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8), give_up_with=(0.5,),
      give_up_thresholds=(0.1, 0.2, 0.3), budget_margin=1.25, budget_slack=4, article_scale=0.1))
  return c
