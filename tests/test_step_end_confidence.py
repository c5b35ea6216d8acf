"""The confidence rule read at step ends (`confidence_reads="step_ends"`): inside the compiled
loop it stops exactly where a host-side reference says, the first step end whose head
estimate reaches the threshold, and nowhere a plausible wrong reading would."""

import dataclasses

import jax
import numpy as np
import pytest

from o1jax import tasks
from o1jax.model.heads import HeadConfig, init_head
from o1jax.thinking import SpeculativeConfig, make_think_config
from o1jax.training import rollouts as rl

STEP_END = rl.TOK.encode(";")[0]


def _prompts():
  """Eight held-out prompts of every task (all fit a width of 16 tokens)."""
  return [p.prompt for t, d in [("addition", 1), ("addition", 3), ("equation", 1),
                                ("equation", 2), ("equation", 3), ("countdown", 1),
                                ("countdown", 2), ("countdown", 4)]
          for p in tasks.get_task(t).generate_problems(12, d, 1, split="eval")]


def _head_probability_f64(head, hidden):
  """o1jax.model.heads.head_probability in float64 numpy (RMS norm, tanh GELU, sigmoid)."""
  h = {k: np.asarray(v, np.float64) for k, v in head.items()}
  x = np.asarray(hidden, np.float64)
  x = x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)
  u = x @ h["w1"] + h["b1"]
  g = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
  return 1 / (1 + np.exp(-(g @ h["w2"] + h["b2"])))


def _first_read_at_or_above(reads, threshold):
  """(prefix length where the rule fires or None, reads taken up to it)."""
  for n, (k, p) in enumerate(reads, 1):
    if p >= threshold:
      return k, n
  return None, len(reads)


def test_step_end_reads_stop_where_a_host_reference_says(model):
  params, mc = model
  prompts = _prompts()
  base = make_think_config(mc, rl.TOK, 192, max_answer_tokens=12)
  head = init_head(HeadConfig(mc.embed_dim, 16, "confidence"), jax.random.key(5), 0.0)
  head = {**head, "w2": head["w2"] * 40}   # an estimate that swings with the hidden state
  run = lambda cfg, **kw: rl.continue_thinking(params, cfg, prompts, batch_size=8, **kw)
  plain = run(base)

  # The reference: each plain (greedy) trace's hidden states from one causal forward pass
  # over the whole sequence (not the loop's cached decoding), the head in float64 on them.
  seqs = [rl.TOK.encode_prompt(p) + rl.TOK.encode(t.thinking) for p, t in zip(prompts, plain)]
  starts = [len(rl.TOK.encode_prompt(p)) for p in prompts]
  every = [list(range(s, len(q))) for s, q in zip(starts, seqs)]
  hidden = rl.hidden_at(params, mc, seqs, every, batch_size=8)
  prob = [_head_probability_f64(head, h) for h in hidden]   # after thinking token 1, 2, ...
  ids = [np.asarray(q[s:]) for s, q in zip(starts, seqs)]
  step_reads = [[(k + 1, p[k]) for k in np.flatnonzero(t == STEP_END)]
                for t, p in zip(ids, prob)]
  # A threshold that some rows reach at a later step end than their first and some never.
  threshold = float(np.median([max(p for _, p in r) for r in step_reads if r]))
  step_cfg = dataclasses.replace(base, stop_rules=("natural", "budget", "confidence"),
                                 confidence_estimate="head", confidence_reads="step_ends",
                                 step_end_ids=(STEP_END,), confidence_threshold=threshold)
  got = run(step_cfg, heads={"confidence": head})

  expect = [_first_read_at_or_above(r, threshold) for r in step_reads]
  for p, g, (k, reads) in zip(plain, got, expect):
    if k is None:
      assert (g.thinking, g.answer, g.stop_reason) == (p.thinking, p.answer, p.stop_reason)
    else:
      assert (g.stop_reason, g.thinking_tokens) == ("confidence", k)
      assert g.thinking == p.thinking[:k] and g.thinking.endswith(";")
    assert g.num_probes == reads
  fired = [k for k, _ in expect if k is not None]
  assert 2 <= len(fired) < len(prompts)
  assert any(n > 1 for k, n in expect if k is not None)   # a later step end than the first

  # Power: the plausible wrong readings give other stops on these same traces, so the
  # assertions above reject them: reading every token, or the token before each step end.
  every_token = [_first_read_at_or_above([(k + 1, q) for k, q in enumerate(p)], threshold)[0]
                 for p in prob]
  before_end = [_first_read_at_or_above([(k, p[k - 1]) for k in np.flatnonzero(t == STEP_END)],
                                        threshold)[0] for t, p in zip(ids, prob)]
  stops = [k for k, _ in expect]
  assert every_token != stops and before_end != stops

  # The speculative step calls the same controller: greedy, it stops at the same tokens.
  spec = run(dataclasses.replace(step_cfg, speculative=SpeculativeConfig(gamma=3,
                                                                         draft_layers=2)),
             heads={"confidence": head})
  assert [(s.thinking, s.answer, s.stop_reason) for s in spec] == [
      (g.thinking, g.answer, g.stop_reason) for g in got]


def test_step_end_reads_need_their_ids(model):
  _, mc = model
  with pytest.raises(ValueError, match="step_end_ids"):
    make_think_config(mc, rl.TOK, 192, confidence_reads="step_ends")
  with pytest.raises(ValueError, match="confidence_reads"):
    make_think_config(mc, rl.TOK, 192, confidence_reads="every_step")


def test_replayed_threshold_rule_and_selection_by_hand():
  from types import SimpleNamespace
  from o1jax.analysis.stop_rules import replay_threshold_rule, select_threshold
  # Two greedy runs: 10 thinking tokens ending right, reads at 3 and 6 (forced answers wrong
  # then right); 20 tokens ending wrong, reads at 5 and 12 (both wrong). The last prefix of a
  # run is its natural end: never a read, even where its estimate is high.
  data = SimpleNamespace(
      natural=np.array([10, 20]), correct=np.array([True, False]),
      rollout=np.array([0, 0, 0, 1, 1, 1]), prefix=np.array([3, 6, 10, 5, 12, 20]),
      labels=np.array([0, 1, 1, 0, 0, 0], np.float32))
  probs = np.array([0.6, 0.9, 0.99, 0.7, 0.8, 0.99])
  assert replay_threshold_rule(data, probs, 0.95) == (0.0, 0.5)          # nothing fires
  assert replay_threshold_rule(data, probs, 0.85) == (1 - (6 + 20) / 30, 0.5)
  assert replay_threshold_rule(data, probs, 0.75) == (1 - (6 + 12) / 30, 0.5)
  assert replay_threshold_rule(data, probs, 0.5) == (1 - (3 + 5) / 30, 0.0)
  # 0.5 stops run 0 before its answer is known (-50 points); 0.75 saves the most at no loss.
  best, table = select_threshold(data, probs, [0.5, 0.75, 0.85, 0.95], max_loss_pts=1.0)
  assert best == 0.75 and [r["accuracy_delta_pts"] for r in table] == [-50.0, 0.0, 0.0, 0.0]
  assert select_threshold(data, probs, [0.5], max_loss_pts=1.0)[0] is None
