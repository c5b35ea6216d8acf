"""`reset_rows`, the one "back to a thinking boundary" of the controller: a reset row is
field for field what `init_state` builds for it, other rows are untouched, and a reset to a
later boundary keeps what the row generated below it."""

import dataclasses

import jax
import numpy as np
import pytest

from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, prepare_inputs
from o1jax.thinking.controller import prefill
from o1jax.thinking.loop import run_steps
from o1jax.thinking.state import ThinkState, fill_settings, init_state, reset_rows

TOK = CharTokenizer()
PROMPTS = ["12+34=", "2x+5=13", "7+8+9=", "98+7="]
ROWS = np.array([True, False, True, False])


@pytest.fixture(scope="module")
def states(model):
  """(fresh state, the same after 20 decode steps, prefill logits, inputs, config), with
  every stop-rule statistic compiled in and moving (windows, probes, a sampled row)."""
  params, mc = model
  config = make_think_config(mc, TOK, 96, max_answer_tokens=8,
                             stop_rules=("natural", "budget", "confidence", "converged"),
                             converge_window=4, probe_every=3, probe_answer_tokens=4)
  inputs = prepare_inputs(TOK, PROMPTS, config, [40, 6, 40, 40], [0, 0, 5, 0],
                          temperature=[0.0, 0.0, 1.0, 0.0])
  inputs = fill_settings(inputs, config, jax.random.key(3))
  logits, _, cache = jax.jit(prefill, static_argnames="config")(params, inputs, config)
  fresh = init_state(inputs, logits, cache, config)
  moved, _ = jax.jit(run_steps, static_argnames="config")(fresh, params, config, 20)
  return fresh, moved, logits, inputs, config


def _rows(state: ThinkState, rows) -> dict:
  return {f.name: np.asarray(getattr(state, f.name))[rows]
          for f in dataclasses.fields(state) if f.name not in ("cache", "keys")}


def _assert_fields_equal(got: dict, want: dict):
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_the_steps_moved_every_kind_of_field(states):
  """Otherwise the comparisons below could not fail."""
  fresh, moved, *_ = states
  a, b = _rows(fresh, ROWS), _rows(moved, ROWS)
  for name in ("position", "num_generated", "thinking_tokens", "tokens", "window_sum",
               "prev_window_mean", "probe_history", "num_probes", "confidence", "logits"):
    assert not np.array_equal(a[name], b[name]), name
  assert (np.asarray(moved.phase) != 0).any() and (np.asarray(moved.stop_reason) != 0).any()


def test_a_reset_to_the_prompt_is_init_state_and_leaves_other_rows(states):
  fresh, moved, logits, inputs, config = states
  reset = reset_rows(moved, ROWS, inputs.lengths, 0, 0, logits, config)
  _assert_fields_equal(_rows(reset, ROWS), _rows(fresh, ROWS))
  np.testing.assert_array_equal(jax.random.key_data(reset.keys),
                                jax.random.key_data(moved.keys))
  # Untouched rows: every field, KV cache included, bit for bit.
  _assert_fields_equal(_rows(reset, ~ROWS), _rows(moved, ~ROWS))
  for a, b in zip(jax.tree.leaves(reset.cache), jax.tree.leaves(moved.cache)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_reset_to_a_later_boundary_keeps_the_tokens_below_it(states):
  fresh, moved, logits, inputs, config = states
  generated = np.array([5, 0, 3, 0])
  position = np.asarray(inputs.lengths) + generated
  new_logits = np.asarray(moved.logits) * 2.0
  reset = reset_rows(moved, ROWS, position, generated, generated - 1, new_logits, config)
  got, want = _rows(reset, ROWS), _rows(fresh, ROWS)
  want.update(position=position[ROWS], num_generated=generated[ROWS],
              thinking_tokens=generated[ROWS] - 1, logits=new_logits[ROWS])
  for name in ("tokens", "segments", "logprobs"):  # the row's own below the boundary, blank past
    old = np.asarray(getattr(moved, name))[ROWS]
    below = np.arange(old.shape[1])[None] < generated[ROWS][:, None]
    want[name] = np.where(below, old, want[name])
  _assert_fields_equal(got, want)
  _assert_fields_equal(_rows(reset, ~ROWS), _rows(moved, ~ROWS))
