"""Fits the thinking predictor (a budget head at `<think>`) that `spf` and `pools` schedule by.

  python launch/fit_thinking_predictor.py                       # refits the shipped head
  python launch/fit_thinking_predictor.py --out=runs/predictor --per_level=64

Trains on the embedded reasoner's greedy thinking lengths over training-split problems
(o1jax/serving/predictor.py); prints the error on a held-back 20%.
"""

from absl import app, flags

from o1jax.serving import predictor
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint dir (default: embedded).")
_OUT = flags.DEFINE_string("out", predictor.SHIPPED_DIR, "Where to write budget_head.*.")
_PER_LEVEL = flags.DEFINE_integer("per_level", 32, "Training problems per task and level.")
_SEED = flags.DEFINE_integer("seed", 0, "Problem draw and head init.")


def main(argv):
  del argv
  params, model_config, _ = load_params(_CHECKPOINT.value or embedded_checkpoint_dir())
  head, info = predictor.fit_thinking_head(params, model_config, CharTokenizer(),
                                           per_level=_PER_LEVEL.value, seed=_SEED.value)
  predictor.save_thinking_head(_OUT.value, head, model_config.embed_dim, info)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
