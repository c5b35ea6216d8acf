"""STaR experiment: a base reasoner with few worked solutions for the harder levels.

The same file configures both stages (sections model/data/train/mesh are what
launch/train.py reads; `star` is what launch/star.py reads):

  # 1. the base model: addition with worked solutions for levels 1-2, answers (and 4% worked
  #    solutions) for levels 3-4
  python launch/train.py --config=configs/star.py --workdir=runs/star_base
  # 2. STaR iterations from it
  python launch/star.py --config=configs/star.py --workdir=runs/star
  # or STaR and its two baselines at equal fine-tuning compute -> docs/star/star.csv, .png
  python launch/star.py --config=configs/star.py --workdir=runs/star_compare --compare

Sized for a 2-core CPU: the base trains in 2.5-7 minutes, each STaR iteration (sample,
filter, rationalise, fine-tune 300 steps, evaluate) takes about a minute, and --compare
(three runs of ten iterations) about 24 minutes (docs/REASONING_TRAINING.md).
"""

import ml_collections

from o1jax.training.config_files import sibling_config


def get_config(variant: str = ""):
  """`--config=configs/star.py` is the answer-only experiment above;
  `--config=configs/star.py:embedded` runs STaR on the embedded reasoner over every task (a
  base whose sampler does find rationales at every level)."""
  c = sibling_config(__file__, "tiny.py")
  # Addition alone keeps sequences short (<= 70 tokens), so training and sampling are
  # cheap. Levels 1-2 (2- and 3-digit operands) carry worked solutions; levels 3-4 (4 and 5
  # digits) carry answers, and worked solutions in only 4% of their examples: STaR's few
  # rationale examples beside a large set of answers. With none at all there, no base this
  # size wrote a correct 4-digit rationale: in the column form or Nye et al.'s scratchpad,
  # it does not extend the steps to operands longer than it has seen
  # (docs/REASONING_TRAINING.md), and STaR can only bootstrap what sampling sometimes finds. A share of the worked examples shows the answer as a hint,
  # the format rationalisation samples with.
  c.data.tasks = ("addition",)
  c.data.difficulties = (1, 2, 3, 4)
  c.data.answer_only = ml_collections.ConfigDict({"addition": (3, 4)})
  c.data.answer_only_worked_fraction = 0.04
  c.data.hint_fraction = 0.3
  c.data.hint_template = " [hint: {answer}]"
  c.train.update(steps=900, batch_size=32, seq_len=96, learning_rate=3e-3, warmup_steps=50,
                 eval_every=300, eval_problems=16, checkpoint_every=100,
                 export_dir="")
  c.star = ml_collections.ConfigDict(dict(
      base="runs/star_base",       # checkpoint dir or training workdir of the base model
      iterations=10,
      tasks=("addition",),
      difficulties=(1, 2, 3, 4),
      curriculum=3,                # STaR's curriculum: levels 1-3, then 1-4
      method="rationales",         # or "answers_only" (the baseline; launch/star.py --compare)
      problems_per_level=256,      # fresh training problems per (task, level) per iteration
      samples=8,                   # K rationales sampled per problem
      temperature=1.0,
      min_thinking=8,              # suppress an immediate close (see docs/REASONING_TRAINING.md)
      require_correct_steps=False, # True: also drop right answers reached by wrong steps
      rationalize=True,
      rationalize_samples=4,
      hint_template=" [hint: {answer}]",
      # Each iteration continues from the last one's policy on everything kept so far (the
      # paper restarts from the base): with few worked solutions, a restart's short fine-tune
      # never moved the held-back levels (docs/REASONING_TRAINING.md).
      restart_from_base=False,
      # A fixed number of steps per iteration, whatever the kept set's size, so STaR and its
      # baselines fine-tune with equal compute.
      finetune_steps=300,
      finetune_epochs=0,
      finetune_batch_size=32,
      finetune_lr=1e-3,
      seq_len=96,
      cache_len=128,               # the longest hinted prompt and its steps
      eval_problems=32,            # distinct held-out problems per (task, level)
      eval_seed=1234,
      on_empty="error",            # or "skip": warn, fine-tune on earlier iterations' examples
      batch_size=256,
      seed=0))
  if variant == "embedded":
    # Reasoner v2's reflective traces run to ~600 tokens at level 5.
    c.star.update(base="", tasks=("addition", "equation", "countdown"),
                  difficulties=(1, 2, 3, 4, 5), curriculum=0, min_thinking=0,
                  problems_per_level=16, seq_len=640, cache_len=704, finetune_lr=3e-4,
                  finetune_steps=200, finetune_epochs=4, finetune_batch_size=16,
                  restart_from_base=True,
                  eval_problems=16, iterations=2)
  elif variant:
    raise ValueError(f"unknown configs/star.py variant {variant!r}; known: 'embedded'")
  return c
