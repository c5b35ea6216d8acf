"""A ~25M-parameter char-level policy (d=512, 8 layers) for the speculative-decoding benchmark.

  python launch/train.py --config=configs/policy25m.py --workdir=runs/policy25m

Same data as configs/tiny.py; batches of 8 packed rows, since a step of this size takes
~4-8 s on the 2-core dev CPU. It is a stand-in for a larger policy whose traces the embedded
tiny model can draft: a few hundred steps teach it the traces' format, not the arithmetic
(docs/BENCHMARKS.md says how far the benchmarked one got). Not shipped: 100 MB of weights.
"""

from o1jax.training.config_files import sibling_config


def get_config():
  c = sibling_config(__file__, "tiny.py")
  c.model.update(embed_dim=512, num_layers=8, num_heads=8, num_kv_heads=4, head_dim=64,
                 mlp_dim=1536)
  c.train.update(steps=350, batch_size=8, learning_rate=2e-3, log_every=10, eval_problems=0,
                 checkpoint_every=25, export_dir="")
  return c
