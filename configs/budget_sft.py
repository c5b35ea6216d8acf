"""The supervised stage of budget-conditioned thinking (launch/budget_sft.py).

  python launch/budget_sft.py --config=configs/budget_sft.py --workdir=runs/l1_sft
  python launch/budget_sft.py --config=configs/budget_sft.py:smoke --workdir=runs/l1_smoke

Field meanings: o1jax/training/budget_sft.py (SFTConfig). `base` "" is the embedded
reasoner v2. Sized for the 2-core CPU: 16-18 minutes with one other job running (11 min of CPU).
"""

import ml_collections


def get_config(variant: str = ""):
  c = ml_collections.ConfigDict()
  c.base = ""
  c.sft = ml_collections.ConfigDict(dict(
      tasks=("addition", "equation", "countdown"),
      difficulties=(1, 2, 3, 4),
      targets=(8, 16, 32, 64, 128, 256),
      target_weights=(3.0, 4.0, 4.0, 2.0, 1.0, 1.0),
      between_fraction=0.2,
      plain_fraction=0.1,
      search_reserve=0.125,
      num_examples=48_000,
      steps=3600,
      batch_size=32,
      learning_rate=7e-4,
      warmup_steps=30,
      final_lr_fraction=0.1,
      buckets=(96, 128, 320),
      seed=0,
      split_key="prompt",    # the training side of v2's split; "canonical" for v3
      forced_fraction=0.0,   # v2's stage had none
      forced_budgets=(8, 16, 32, 64, 128, 256),
      forced_weights=(4.0, 4.0, 3.0, 2.0, 1.0, 1.0)))
  if variant == "smoke":
    c.sft.update(num_examples=200, steps=4, batch_size=8, warmup_steps=1)
  elif variant == "v3":
    # Reasoner v3's folded-in stage (launch/reasoner_v3.sh; base given there): the canonical
    # split's training side, and level 5 too, so the plain and budgeted prompts of the level
    # RL trains next are not left to drift; a plain countdown level-5 trace runs to ~540
    # characters, hence the fourth bucket (under 1% of rows land there).
    # And plain prompts cut by a forced budget (o1jax/training/budget_sft.py), so that
    # forced budgets of 8-32 tokens answer at least as well as none (v2 did not).
    # At v2's stage settings (7e-4, 10% plain) this stage cost level 5 of the plain prompts
    # 27 points (88% -> 62% greedy on the 216 unseen problems; countdown 24/24 -> 3/24):
    # hence a lower rate and 30% plain examples to hold the base's behaviour.
    c.sft.update(split_key="canonical", difficulties=(1, 2, 3, 4, 5),
                 buckets=(96, 128, 320, 544), forced_fraction=0.2, plain_fraction=0.3,
                 learning_rate=3e-4)
  elif variant:
    raise ValueError(f"unknown configs/budget_sft.py variant {variant!r}; known: 'smoke', 'v3'")
  return c
