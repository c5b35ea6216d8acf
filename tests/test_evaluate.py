"""Evaluation during training: the thinking loop's greedy answers equal a plain greedy decoding
that recomputes the whole sequence every token, with and without thinking, and one compiled
program serves both modes and every prompt width of the held-out set."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from o1jax.model.transformer import forward
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.training import data as data_lib
from o1jax.training import evaluate as eval_lib
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def _count_compiles():
  count = [0]

  def listener(event, duration, **kwargs):
    count[0] += event == _COMPILE_EVENT

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _reference_answers(params, config, contexts, max_new):
  """Greedy decoding without cache or loop: every token is the argmax of a full forward pass
  over the sequence so far. EOS cannot end thinking (the loop's rule); the answer is what
  follows `</think>`, up to EOS."""
  tok = CharTokenizer()
  seqs = [tok.encode(c) for c in contexts]
  answers = [[] for _ in seqs]
  answering = [tok.end_think_id in s for s in seqs]
  done = [False] * len(seqs)
  width = max(map(len, seqs)) + max_new
  logits_fn = jax.jit(lambda t: forward(params, t, jnp.broadcast_to(jnp.arange(width), t.shape),
                                        None, config)[0])
  for _ in range(max_new):
    if all(done):
      break
    logits = np.asarray(logits_fn(jnp.asarray(tok.pad_batch(seqs, width))))
    for b, s in enumerate(seqs):
      if done[b]:
        continue
      row = logits[b, len(s) - 1].copy()
      if not answering[b]:
        row[tok.eos_id] = -np.inf
      token = int(row.argmax())
      s.append(token)
      if answering[b]:
        done[b] = token == tok.eos_id
        answers[b].append(token)
      answering[b] |= token == tok.end_think_id
  assert all(done), "the reference ran out of tokens"
  return [tok.decode(a) for a in answers]


def test_answers_match_a_full_recompute_greedy_reference():
  params, config, _ = load_params(embedded_checkpoint_dir())
  # Two tasks of different prompt widths, in batches of 3: two batches, the second padded.
  heldout = data_lib.heldout_problems(("addition", "countdown"), (1,), 2, seed=1234)
  prompts = [p.prompt for ps in heldout.values() for p in ps]
  assert len({len(p) for p in prompts}) > 1
  direct = eval_lib.generate_answers(params, config, prompts, with_thinking=False,
                                     batch_size=3)
  # The thinking mode reuses the program the direct mode compiled: the budget is data.
  with _count_compiles() as compiles:
    table = eval_lib.evaluate(params, config, heldout, with_thinking=True, batch_size=3)
  assert compiles[0] == 0
  thought = eval_lib.generate_answers(params, config, prompts, batch_size=3)
  assert thought == _reference_answers(params, config, [p + "<think>" for p in prompts], 160)
  assert direct == _reference_answers(params, config,
                                      [p + "<think></think>" for p in prompts], 16)
  assert table == eval_lib.accuracy_table(heldout, thought)
  assert table["mean"] == 1.0  # the shipped model solves these
