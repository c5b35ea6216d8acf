"""STaR experiment: a base reasoner that never saw worked solutions for the harder levels.

The same file configures both stages (sections model/data/train/mesh are what
launch/train.py reads; `star` is what launch/star.py reads):

  # 1. the base model: addition with worked steps for levels 1-2, answers alone for 3-4
  python launch/train.py --config=configs/star.py --workdir=runs/star_base
  # 2. STaR iterations from it
  python launch/star.py --config=configs/star.py --workdir=runs/star

Sized for a shared 2-core CPU: the base trains in a few minutes, each STaR iteration (sample,
filter, rationalise, fine-tune, evaluate) takes a few minutes more.
"""

import importlib.util
import os

import ml_collections


def _tiny():
  # Config files are loaded by path (the repo root need not be importable): load the
  # sibling the same way.
  spec = importlib.util.spec_from_file_location(
      "_o1jax_tiny_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_config(variant: str = ""):
  """`--config=configs/star.py` is the answer-only experiment above;
  `--config=configs/star.py:embedded` runs STaR on the embedded reasoner over every task (a
  base whose sampler does find rationales at every level)."""
  c = _tiny()
  # Addition alone keeps every sequence short (<= 70 tokens), so training and sampling are
  # cheap; levels 3-4 (4- and 5-digit operands) carry answers alone, no column steps.
  c.data.tasks = ("addition",)
  c.data.difficulties = (1, 2, 3, 4)
  c.data.answer_only = ml_collections.ConfigDict({"addition": (3, 4)})
  c.train.update(steps=900, batch_size=32, seq_len=96, learning_rate=3e-3, warmup_steps=50,
                 eval_every=300, eval_problems=16, checkpoint_every=100,
                 export_dir="")
  c.star = ml_collections.ConfigDict(dict(
      base="runs/star_base",       # checkpoint dir or training workdir of the base model
      iterations=4,
      tasks=("addition",),
      difficulties=(1, 2, 3, 4),
      problems_per_level=32,       # fresh training problems per (task, level) per iteration
      samples=4,                   # K rationales sampled per problem
      temperature=1.0,
      min_thinking=8,              # suppress an immediate close (see docs/REASONING_TRAINING.md)
      require_correct_steps=False, # True: also drop right answers reached by wrong steps
      rationalize=True,
      rationalize_samples=2,
      hint_template=" [hint: {answer}]",
      restart_from_base=True,      # STaR: fine-tune the base each iteration on all kept data
      finetune_steps=200,
      finetune_epochs=4,           # steps = min(200, 4 epochs of the kept set)
      finetune_batch_size=32,
      finetune_lr=5e-4,
      seq_len=96,
      eval_problems=32,            # held-out problems per (task, level)
      eval_seed=1234,
      on_empty="error",            # or "skip": warn, fine-tune on earlier iterations' examples
      batch_size=256,
      seed=0))
  if variant == "embedded":
    # Reasoner v2's reflective traces run to ~600 tokens at level 5.
    c.star.update(base="", tasks=("addition", "equation", "countdown"),
                  difficulties=(1, 2, 3, 4, 5), min_thinking=0, problems_per_level=16,
                  seq_len=640, cache_len=704, finetune_lr=3e-4, finetune_batch_size=16,
                  eval_problems=16, iterations=2)
  elif variant:
    raise ValueError(f"unknown configs/star.py variant {variant!r}; known: 'embedded'")
  return c
