"""GRPO rollouts through engine slots (o1jax/rl/rollouts.py) against the one-batch think()
path they replace: the same rows token for token, each prompt prefilled once, finished rows'
slots refilled. On the embedded reasoner, sampled (temperature 1), with per-prompt budgets,
minimums and a budget-conditioned prompt, so rows finish at different steps."""

import dataclasses

import numpy as np
import pytest

from o1jax import tasks
from o1jax.rl import rollouts
from o1jax.serving.engine import Engine, Request
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import StopReason, make_think_config, request_keys
from o1jax.training import grpo

TOK = CharTokenizer()
G = 3
BUDGETS = [6, 90, 12, 30, 4]      # rows end from ~10 to ~100 tokens in
MINS = [0, 25, 0, 0, 4]
TARGETS = [None, None, 16, None, None]
FIELDS = ("tokens", "loss_mask", "thinking_ctx", "stop_reason", "thinking_tokens", "correct",
          "truncated")


@pytest.fixture(scope="module")
def setup(model):
  params, model_config = model
  config = make_think_config(model_config, TOK, 128, temperature=1.0, max_answer_tokens=8)
  problems = tasks.get_task("addition").generate_problems(11, 1, len(BUDGETS), split="eval")
  args = (params, TOK, config, problems, TARGETS, G, BUDGETS, 5)
  return args, rollouts.sample_groups_in_one_batch(*args, min_thinking=MINS)


def _differences(a, b) -> list[str]:
  bad = [f for f in FIELDS if not np.array_equal(getattr(a, f), getattr(b, f))]
  bad += [f for f in ("answers", "prompts", "generated") if getattr(a, f) != getattr(b, f)]
  # Log-probs: a row's logits differ in the last bits between batch shapes (~1e-6).
  if not np.allclose(a.sampler_logp, b.sampler_logp, atol=2e-5):
    bad.append("sampler_logp")
  return bad


def test_engine_rollouts_equal_the_one_batch_path_with_refills(setup, monkeypatch):
  args, want = setup
  # The reference has power: rows of a group differ (sampled), rows end at different times,
  # and some hit their budget while others close on their own.
  rows = want.tokens.reshape(len(BUDGETS), G, -1)
  assert any(not np.array_equal(rows[i, 0], rows[i, 1]) for i in range(len(BUDGETS)))
  ends = (want.tokens != TOK.pad_id).sum(1)
  assert len(set(ends.tolist())) >= 4
  assert {int(StopReason.BUDGET), int(StopReason.NATURAL)} <= set(want.stop_reason.tolist())
  assert want.prompts[2 * G].startswith("[budget 16] ")

  prefilled = []
  real = Engine.prefill_batch
  monkeypatch.setattr(Engine, "prefill_batch",
                      lambda self, reqs: prefilled.extend(r.prompt for r in reqs) or
                      real(self, reqs))
  got, sched = rollouts.sample_groups_with_schedule(*args, min_thinking=MINS, slots=4)
  assert _differences(want, got) == []
  # Each prompt prefilled once (not once per row), in order; 4 slots took 15 rows.
  assert prefilled == [want.prompts[i * G] for i in range(len(BUDGETS))]
  assert sched.prefilled == len(BUDGETS) and sched.inserted == len(BUDGETS) * G
  assert sched.refills == len(BUDGETS) * G - 4 and sched.rounds > 1
  # No row waited for the longest: fewer decode steps than rows x longest / slots would take.
  assert sched.steps < ends.max() * len(ends) / 4


def test_every_result_field_matches_and_wrong_forks_are_told_apart(setup):
  """Below the layout: the engine loop's whole ThinkResult (the sampler's log-probs, the
  probe and similarity fields included) equals one think() over every row. Then wrong
  variants of the fork through the same loop: every row of a group keyed alike (a fork
  without new keys), and rows keyed by slot instead of by row; the comparison of the test
  above must tell each from the reference."""
  args, want = setup
  params, tok, config, problems, targets, g, budgets, seed = args
  prompts, reference = rollouts.think_groups(*args, min_thinking=MINS)
  requests = [Request(p, budget=b, min_thinking=m)
              for p, b, m in zip(prompts, budgets, MINS)]
  n = len(prompts) * g
  result, _ = rollouts.decode_groups(Engine(params, tok, config, 4), requests, g,
                                     request_keys(seed, np.arange(n)))
  assert (reference.logprobs < 0).any()
  for f in dataclasses.fields(reference):
    got, ref = getattr(result, f.name), getattr(reference, f.name)
    if f.name == "logprobs":
      # XLA's CPU matmuls round a row differently at batch 4 than at batch 15 (about 1e-6 in
      # a logit): the draws agree, their float32 log-probs to that rounding.
      np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-5, err_msg=f.name)
    else:
      np.testing.assert_array_equal(got, ref, err_msg=f.name)
  wrong_keys = {"one key per group": request_keys(seed, np.arange(n) // g * g),
                "keyed by slot": request_keys(seed, np.arange(n) % 4)}
  for name, keys in wrong_keys.items():
    result, _ = rollouts.decode_groups(Engine(params, tok, config, 4), requests, g, keys)
    wrong = rollouts._layout(problems, prompts, g, result, tok, config.cache_len)
    assert _differences(want, wrong), name


def test_grpo_reexports_and_bad_input(setup):
  assert grpo.sample_groups is rollouts.sample_groups
  assert grpo.Rollouts is rollouts.Rollouts
  args, _ = setup
  with pytest.raises(ValueError, match="slots must be a positive integer"):
    rollouts.sample_groups(*args, slots=0)
  with pytest.raises(ValueError, match="budget has 2 entries for 5 problems"):
    rollouts.sample_groups(*args[:6], [4, 4], *args[7:])
  with pytest.raises(ValueError, match="min_thinking .* is above the thinking budget"):
    rollouts.sample_groups(*args, min_thinking=7)
  with pytest.raises(ValueError, match="rollout_slots must be a non-negative integer"):
    dataclasses.replace(grpo.GRPOConfig(), rollout_slots=-1)
