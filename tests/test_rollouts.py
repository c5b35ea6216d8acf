"""Rollouts (`continue_thinking`, what STaR, the PRM labels and the heads sweep sample with)
batch through think_texts: a continuation from a thinking prefix is the rest of the run
that wrote it, and a rollout does not depend on the batch it was sampled in."""

import pytest

from o1jax import tasks
from o1jax.thinking import UNLIMITED, make_think_config, think_texts
from o1jax.training import rollouts as rl

ADD = tasks.get_task("addition")


@pytest.fixture(scope="module")
def setup(model):
  params, mc = model
  problems = ADD.generate_problems(7, 2, 6, split="eval")
  return params, make_think_config(mc, rl.TOK, 128, max_answer_tokens=8), problems


def test_a_continuation_from_a_greedy_prefix_is_the_rest_of_that_greedy_run(setup):
  params, config, problems = setup
  prompts = [p.prompt for p in problems]
  greedy = think_texts(params, rl.TOK, prompts, config)
  prefixes = [g.thinking[:g.thinking.index(";") + 1] for g in greedy]
  rest = rl.continue_thinking(params, config, prompts, prefixes, batch_size=4)
  for g, x, r in zip(greedy, prefixes, rest):
    assert r.thinking == g.thinking[len(x):] and r.answer == g.answer
    assert r.thinking_tokens == g.thinking_tokens - len(rl.TOK.encode(x))
    assert r.prompt == g.prompt and r.stop_reason == g.stop_reason
  assert any(g.stop_reason == "natural" for g in greedy)


def test_rollouts_batch_through_think_texts_whatever_the_batch(setup, monkeypatch):
  params, config, problems = setup
  config = config.__class__(**{**config.__dict__, "temperature": 1.0})
  prompts = [p.prompt for p in problems]
  prefixes = ["", "1", "", "", "2", ""]
  calls = []
  real = rl.think_texts

  def spy(*args, **kwargs):
    calls.append(kwargs)
    return real(*args, **kwargs)

  monkeypatch.setattr(rl, "think_texts", spy)
  # A budget beyond the context is the context's cap, exactly as an unlimited one.
  runs = [rl.continue_thinking(params, config, prompts, prefixes, seed=4, batch_size=b,
                               budgets=budgets)
          for b, budgets in ((4, None), (8, [10**6] * 6))]
  assert [c["batch_size"] for c in calls] == [4, 8]
  assert calls[1]["budgets"] == [UNLIMITED] * 6 and calls[0]["prefixes"] == prefixes
  assert runs[0] == runs[1]
  assert len({r.thinking for r in runs[0]}) > 1   # sampled: a wrong key would show
