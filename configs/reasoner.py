"""Reasoner v2, the embedded default (issue 19): reflective traces, level 5, answers from any
budget. Fine-tunes the v1 reasoner (configs/tiny.py, shipped as o1jax/checkpoints/tiny_v1)
in one command:
  python launch/train.py --config=configs/reasoner.py --workdir=runs/reasoner
Wall time and evaluations are recorded in o1jax/checkpoints/tiny/model.json and
docs/RESULTS.md.

What changes from v1, and why:
- Every trace checks its candidate by another route and, in `error_fraction` of training
  traces, catches an injected slip and corrects it (o1jax/tasks/reflection.py); the slip
  itself is masked out of the loss.
- `truncated_thinking_fraction` of traces are cut at a random character and closed with
  the best answer the cut part holds, so a forced close at any budget answers from the work
  done (v1 was never shown a cut trace: 8 thinking tokens gave 2.8% where none gave 26%).
- Level 5 of every task (eight-digit addition, nested brackets, four-number countdown) with
  traces of 200-560 characters: rows of 640 tokens, a decode cache of 704.
"""

from o1jax.training.config_files import sibling_config


def get_config():
  c = sibling_config(__file__, "tiny.py")
  c.model.max_seq_len = 704
  c.data.difficulties = (1, 2, 3, 4, 5)
  c.data.trace_style = "reflective"
  c.data.no_thinking_fraction = 0.1
  c.data.truncated_thinking_fraction = 0.25
  c.data.error_fraction = 0.3
  c.train.update(dict(
      init_params="o1jax/checkpoints/tiny_v1", steps=3000, batch_size=8, seq_len=640,
      learning_rate=1e-3, warmup_steps=50, final_lr_fraction=0.05, log_every=50,
      eval_every=1500, eval_problems=16, checkpoint_every=100))
  return c
