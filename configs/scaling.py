"""The thinking-vs-training study's six models (docs/SCALING.md): three sizes, each trained
with thinking traces and without (answers only), on levels 1-5 of addition, equation and
countdown, training problems from the canonical split's training side.

  python launch/train.py --config=configs/scaling.py:L,think --workdir=runs/scaling/L_think
  python launch/train.py --config=configs/scaling.py:S,answers --workdir=runs/scaling/S_answers

Sizes (training FLOPs = 6 x matmul parameters x trained tokens, o1jax/search/compute.py):
  S: 2 layers, width 64,  0.11M matmul params, 360 steps  (1x)
  M: 3 layers, width 96,  0.34M matmul params, 480 steps  (~4.3x)
  L: 4 layers, width 128, 0.80M matmul params, 600 steps  (~12.6x; the embedded architecture)
Every step is 8 packed rows of 480 tokens (the longest level-5 countdown trace is 459
characters), so a model's trained tokens are steps x 3,840 whether it thinks or not: an
answers-only model sees more problems per row, the same FLOPs.
"think" is the embedded tiny recipe's data (15% of examples answer without thinking, so
budget 0 is a trained mode) plus 20% of traces cut at a random character and answered, so a
budget that forces the close mid-thought still answers. "answers" has every thinking empty.
"""

from o1jax.training.config_files import sibling_config

SIZES = {  # name: (layers, width, heads, kv heads, head dim, mlp, steps)
    "S": (2, 64, 4, 2, 16, 192, 360),
    "M": (3, 96, 4, 2, 24, 288, 480),
    "L": (4, 128, 4, 2, 32, 384, 600),
}
MODES = ("think", "answers")
ROWS, SEQ_LEN = 8, 480

def get_config(arg: str = "S,think"):
  size, _, mode = arg.partition(",")
  if size not in SIZES or mode not in MODES:
    raise ValueError(f"configs/scaling.py takes SIZE,MODE with SIZE in {sorted(SIZES)} and "
                     f"MODE in {MODES}; got {arg!r}")
  layers, width, heads, kv, head_dim, mlp, steps = SIZES[size]
  c = sibling_config(__file__, "tiny.py")
  c.model.update(dict(embed_dim=width, num_layers=layers, num_heads=heads, num_kv_heads=kv,
                      head_dim=head_dim, mlp_dim=mlp, max_seq_len=560))
  c.data.difficulties = (1, 2, 3, 4, 5)
  c.data.split_key = "canonical"
  c.data.no_thinking_fraction = 0.15 if mode == "think" else 1.0
  c.data.truncated_thinking_fraction = 0.2 if mode == "think" else 0.0
  c.train.update(dict(steps=steps, batch_size=ROWS, seq_len=SEQ_LEN, learning_rate=3e-3,
                      warmup_steps=50, log_every=20, eval_problems=0, checkpoint_every=40,
                      max_to_keep=1))
  return c
