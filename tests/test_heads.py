"""Heads: their losses fall on a short run, they round-trip through files, and the
confidence and budget heads plug into think() and change its stop decisions as they say."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax import tasks
from o1jax.model import ModelConfig
from o1jax.model.heads import HeadConfig, head_probability, init_head, load_head, save_head
from o1jax.thinking import UNLIMITED, make_think_config, prepare_inputs, think
from o1jax.training import heads as heads_lib
from o1jax.training import rollouts as rl
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

SHORT = heads_lib.HeadTrainConfig(hidden_dim=16, steps=60, batch_size=64, learning_rate=1e-2)


@pytest.fixture(scope="module")
def model():
  params, config, _ = load_params(embedded_checkpoint_dir())
  return params, config


def _problems(seed=0):
  """Eight held-out problems of every task; all prompts fit a width of 16 tokens."""
  return [p for t, d in [("addition", 1), ("addition", 3), ("equation", 1), ("equation", 2),
                         ("equation", 3), ("countdown", 1), ("countdown", 2), ("countdown", 4)]
          for p in tasks.get_task(t).generate_problems(seed, d, 1, split="eval")]


def _constant_head(embed_dim, value):
  """A head whose output is `value` whatever the hidden state."""
  head = init_head(HeadConfig(embed_dim, 8, "confidence"), jax.random.key(0), value)
  return {**head, "w2": jnp.zeros_like(head["w2"])}


@pytest.mark.parametrize("kind", ["prm", "confidence", "budget"])
def test_head_loss_falls_on_a_short_run(kind):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(512, 24)).astype(np.float32)
  signal = x[:, 0] - 0.5 * x[:, 1]
  y = signal * 2 + 3 if kind == "budget" else (signal > 0).astype(np.float32)
  head, losses = heads_lib.train_head(x, y, kind, SHORT)
  assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
  if kind != "budget":
    assert heads_lib.auc(heads_lib.predict(head, x), y) > 0.9


def test_auc_and_ece_match_their_definitions():
  rng = np.random.default_rng(0)
  scores, labels = np.round(rng.random(60), 1), rng.random(60) < 0.4  # rounded: many ties
  pos, neg = scores[labels], scores[~labels]
  pairs = (pos[:, None] > neg).mean() + 0.5 * (pos[:, None] == neg).mean()
  assert heads_lib.auc(scores, labels) == pytest.approx(pairs)
  assert np.isnan(heads_lib.auc(scores, np.ones(60, bool)))
  probs = rng.random(200)
  labels = rng.random(200) < probs ** 2  # overconfident
  which = np.minimum((probs * 10).astype(int), 9)
  ref = sum((which == b).sum() * abs(probs[which == b].mean() - labels[which == b].mean())
            for b in range(10) if (which == b).any()) / len(probs)
  assert heads_lib.ece(probs, labels) == pytest.approx(ref)
  # By hand: bins 0, 1 and 9 (two examples) are off by 0.05, 0.85 and 0.45.
  assert heads_lib.ece([0.05, 0.15, 0.95, 0.95], [0, 1, 1, 0]) == pytest.approx(0.45)
  with pytest.raises(ValueError, match="probabilities in"):
    heads_lib.ece([1.5], [1])


def test_separate_reward_model_loss_falls_and_round_trips(tmp_path):
  # Label: "is this token a ';'", which the small decoder must read off its input.
  texts = [tasks.render(p) for p in tasks.get_task("addition").generate_problems(0, 2, 24)]
  seqs = [rl.TOK.encode(t) for t in texts]
  positions = [list(range(len(s))) for s in seqs]
  labels = [[float(t == rl.SEMI_ID) for t in s] for s in seqs]
  trunk = ModelConfig(embed_dim=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                      mlp_dim=32, max_seq_len=128)
  model, losses = heads_lib.train_sequence_head(seqs, positions, labels, "prm", trunk,
                                                dataclasses.replace(SHORT, batch_size=8))
  assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
  save_head(str(tmp_path), model, {"note": "x"}, name="prm_small")
  loaded, info = load_head(str(tmp_path), "prm_small")
  assert info["note"] == "x" and loaded.trunk_config == trunk
  for a, b in zip(jax.tree.leaves((model.head, model.trunk)),
                  jax.tree.leaves((loaded.head, loaded.trunk))):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match="no orm head"):
    load_head(str(tmp_path), "orm")


def test_confidence_head_changes_stop_decisions_as_it_says(model):
  params, mc = model
  prompts = [p.prompt for p in _problems(seed=2)]
  base = make_think_config(mc, rl.TOK, 192, max_answer_tokens=12)
  head_cfg = dataclasses.replace(base, stop_rules=("natural", "budget", "confidence"),
                                 confidence_estimate="head", probe_every=4,
                                 confidence_threshold=0.5)
  # Every run here has the same shapes (8 rows, width 16): two compiled programs in all.
  run = lambda cfg, head=None: rl.continue_thinking(
      params, cfg, prompts, batch_size=8, heads=None if head is None else {"confidence": head})
  plain = run(base)
  # Sure: every sequence that thinks past 4 tokens stops at the first check, at 4.
  sure = run(head_cfg, _constant_head(mc.embed_dim, 10.0))
  for p, s in zip(plain, sure):
    if p.thinking_tokens > 4:
      assert s.stop_reason == "confidence" and s.thinking_tokens == 4
    else:
      assert (s.stop_reason, s.thinking) == (p.stop_reason, p.thinking)
  # Unsure, a real head whose output varies with the hidden state but stays below the
  # threshold: nothing stops early, the tokens are the plain run's, and the recorded estimate
  # is the head on the hidden state of the last checked thinking token (recomputed here).
  head = init_head(HeadConfig(mc.embed_dim, 8, "confidence"), jax.random.key(3), -3.0)
  head = {**head, "w2": head["w2"] * 10}
  unsure = run(head_cfg, head)
  seqs, checked = [], []
  for prompt, p, u in zip(prompts, plain, unsure):
    assert (u.thinking, u.answer, u.stop_reason) == (p.thinking, p.answer, p.stop_reason)
    assert u.num_probes == p.thinking_tokens // 4
    if u.num_probes:
      seqs.append(rl.TOK.encode_prompt(prompt) + rl.TOK.encode(u.thinking)[:u.num_probes * 4])
      checked.append(u.confidence)
  # One plain causal forward pass over the sequences (not the loop's cached decoding).
  hidden = rl.hidden_at(params, mc, seqs, [[len(s) - 1] for s in seqs], batch_size=8)
  expect = [float(head_probability(head, h[0])) for h in hidden]
  np.testing.assert_allclose(checked, expect, rtol=1e-4)
  assert len(checked) >= 3 and np.std(expect) > 1e-4  # the estimate really varies
  inputs = prepare_inputs(rl.TOK, prompts, base, UNLIMITED)
  with pytest.raises(ValueError, match="needs think"):
    think(params, inputs, head_cfg, jax.random.key(0))


def test_budget_head_sets_auto_budgets_that_bind(model):
  params, mc = model
  prompts = [p.prompt for p in _problems(seed=4)]
  head = _constant_head(mc.embed_dim, float(np.log1p(6.0)))
  budgets = heads_lib.head_budgets(params, mc, head, prompts, margin=1.0, slack=0)
  assert budgets == [6] * len(prompts)
  policy = heads_lib.budget_policy(params, mc, head, margin=2.0, slack=1)
  assert policy(prompts[:2]) == [13, 13]
  config = make_think_config(mc, rl.TOK, 192, max_answer_tokens=12)
  thoughts = rl.continue_thinking(params, config, prompts, budgets=budgets, batch_size=8)
  assert all(t.thinking_tokens <= 6 for t in thoughts)


def test_confidence_data_and_needed_thinking(model):
  params, mc = model
  problems = _problems(seed=6)[:4]
  config = make_think_config(mc, rl.TOK, 192, max_answer_tokens=12)
  data = heads_lib.confidence_data(params, mc, config, problems, every=8, batch_size=8)
  n = len(data.labels)
  assert data.features.shape == (n, mc.embed_dim) and data.probe.shape == (n,)
  assert set(np.unique(data.labels)) <= {0.0, 1.0} and ((data.probe > 0) & (data.probe <= 1)).all()
  assert data.prompt_features.shape == (4, mc.embed_dim)
  for i in range(4):
    ks = data.prefix[data.rollout == i]
    assert ks[0] == 0 and ks[-1] == data.natural[i]
  # needed: the shortest prefix from which everything is right; all, when the run ends wrong.
  nt = heads_lib.needed_thinking
  assert nt(np.array([0, 4, 8, 10]), np.array([0, 1, 1, 1]), 10, True) == 4
  assert nt(np.array([0, 4, 8, 10]), np.array([1, 0, 1, 1]), 10, True) == 8
  assert nt(np.array([0, 4, 8, 10]), np.array([1, 1, 1, 1]), 10, False) == 10


def test_value_head_gives_up_on_hopeless_thinking(model):
  params, mc = model
  prompts = [p.prompt for p in _problems(seed=2)]
  base = make_think_config(mc, rl.TOK, 192, max_answer_tokens=12)
  cfg = dataclasses.replace(base, stop_rules=("natural", "budget", "confidence"),
                            confidence_estimate="head", probe_every=4, confidence_threshold=0.5,
                            give_up_threshold=0.5)
  never_sure = _constant_head(mc.embed_dim, -10.0)
  run = lambda value: rl.continue_thinking(
      params, cfg, prompts, batch_size=8,
      heads={"confidence": never_sure, "value": _constant_head(mc.embed_dim, value)})
  plain = rl.continue_thinking(params, base, prompts, batch_size=8)
  hopeless, hopeful = run(-10.0), run(10.0)
  for p, a, b in zip(plain, hopeless, hopeful):
    if p.thinking_tokens > 4:
      assert a.stop_reason == "give_up" and a.thinking_tokens == 4
    assert (b.thinking, b.stop_reason) == (p.thinking, p.stop_reason)
  with pytest.raises(ValueError, match="'value'"):
    rl.continue_thinking(params, cfg, prompts, batch_size=8, heads={"confidence": never_sure})
  with pytest.raises(ValueError, match="give_up_threshold"):
    dataclasses.replace(base, give_up_threshold=0.5)  # only with the head estimate


def test_think_launch_reads_heads_from_a_directory(tmp_path, model):
  """`launch/think.py --heads_dir`: a sure confidence head stops every trace at the first
  check, a budget head's prediction becomes the budget, and a missing dir is named."""
  import json
  import subprocess
  import sys
  from o1jax.model.heads import RewardModel
  _, mc = model
  e = mc.embed_dim
  save_head(str(tmp_path), RewardModel(HeadConfig(e, 8, "confidence"), _constant_head(e, 10.0)))
  # A budget head predicting log(1 + 3): head_budgets gives ceil(3 * 1.25) + 4 = 8 tokens.
  budget = {**_constant_head(e, float(np.log1p(3.0)))}
  save_head(str(tmp_path), RewardModel(HeadConfig(e, 8, "budget"), budget))
  launch = [sys.executable, "launch/think.py", "--prompt=347+285=", "--prompt=2x+5=13", "--json"]
  run = lambda *flags: subprocess.run(launch + list(flags), capture_output=True, text=True,
                                      timeout=300)
  sure = run(f"--heads_dir={tmp_path}", "--stop_rules=natural,budget,confidence",
             "--confidence_estimate=head", "--probe_every=4", "--confidence_threshold=0.5")
  assert sure.returncode == 0, sure.stderr
  for row in map(json.loads, sure.stdout.splitlines()):
    assert (row["stop_reason"], row["thinking_tokens"]) == ("confidence", 4)
  budgeted = run(f"--heads_dir={tmp_path}", "--max_thinking_tokens=head")
  assert budgeted.returncode == 0, budgeted.stderr
  for row in map(json.loads, budgeted.stdout.splitlines()):
    assert (row["stop_reason"], row["thinking_tokens"]) == ("budget", 8)
  # 'auto' reads the heads shipped beside the checkpoint; one without heads/ names the flag.
  missing = run("--checkpoint=o1jax/checkpoints/tiny_v1", "--max_thinking_tokens=auto")
  assert missing.returncode != 0 and "--heads_dir" in missing.stderr


def test_oracle_savings_by_hand():
  # Two right runs (needing 4 of 10 and 6 of 20 thinking tokens) and a wrong one (30 used):
  # 60 tokens in all; the oracle keeps 4 + 6 (wrong runs stop at once) or 4 + 6 + 30.
  from o1jax.training.heads import ConfidenceData, oracle_savings
  empty = np.zeros(0)
  data = ConfidenceData(features=empty, labels=empty, probe=empty, prefix=empty, rollout=empty,
                        prompt_features=empty, natural=np.array([10, 20, 30]),
                        correct=np.array([True, True, False]), needed=np.array([4, 6, 30]),
                        problems=[])
  saved, right_only = oracle_savings(data)
  assert saved == pytest.approx(1 - 10 / 60) and right_only == pytest.approx(1 - 40 / 60)
