"""PRM: checker and Monte Carlo step labels (equal where completions are deterministic),
step delimiter layout, best-of-N selection and the AUC it is judged by."""

import re

import jax
import numpy as np
import pytest

from o1jax import tasks
from o1jax.model import ModelConfig, init_params
from o1jax.tasks.base import split_steps
from o1jax.thinking import make_think_config
from o1jax.training import heads as heads_lib
from o1jax.training import prm
from o1jax.training import rollouts as rl
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

ADD = tasks.get_task("addition")


def _rollout(p, steps, answer=None):
  answer = p.answer if answer is None else answer
  return rl.Rollout(p, p.prompt, "; ".join(steps), answer, rl.verify(p, answer), 0, "natural")


def _corrupt(step):
  """Changes the written column sum, so its digit (hence the answer) is wrong."""
  lhs, total = step.split("=")
  return f"{lhs}={(int(total) + 1) % 10 if int(total) < 10 else int(total) - 1}"


def _oracle_addition(problems, prefixes):
  """A deterministic completer: keeps the written column sums, computes the remaining
  columns exactly and reads the answer off the digits, as a perfect policy would."""
  out = []
  for p, prefix in zip(problems, prefixes):
    a, b = p.data
    digits, carry = [], 0
    steps = split_steps(prefix)
    for s in steps:
      m = re.fullmatch(r"([0-9])\+([0-9])\+([0-9])=([0-9]{1,2})", s)
      if m is None:
        out.append("?")
        break
      total = int(m.group(4))
      digits.append(total % 10)
      carry = int(total >= 10)
    else:
      for col in range(len(steps), max(len(str(a)), len(str(b)))):
        total = a // 10**col % 10 + b // 10**col % 10 + carry
        digits.append(total % 10)
        carry = int(total >= 10)
      out.append(("1" if carry else "") + "".join(map(str, reversed(digits))))
  return out


def test_checker_labels_are_prefix_correct():
  p = ADD.generate_problems(1, 3, 1)[0]
  steps = list(p.steps)
  assert prm.checker_labels(p, steps).tolist() == [True] * len(steps)
  bad = steps[:1] + [_corrupt(steps[1])] + steps[2:]
  # Everything from the first wrong step on is bad, even locally correct later steps.
  assert prm.checker_labels(p, bad).tolist() == [True] + [False] * (len(steps) - 1)


def test_layout_puts_each_step_at_its_delimiter():
  thinking = "1+2+0=3;  ; 4+5+0=9 ;6+1+0=7"
  lay = rl.layout("12+34=", thinking, " 46 ")
  assert lay.steps == ("1+2+0=3", "4+5+0=9", "6+1+0=7")
  assert [lay.ids[e] for e in lay.step_ends] == [rl.SEMI_ID, rl.SEMI_ID, rl.TOK.end_think_id]
  assert lay.ids[lay.think_at] == rl.TOK.think_id and lay.ids[lay.eos_at] == rl.TOK.eos_id
  assert rl.TOK.decode(lay.ids, stop_at_eos=False) == f"12+34=<think>{thinking}</think>46"
  # The prefix of a step is what was written up to its delimiter (the last: no </think>).
  assert prm.step_prefixes(lay) == ["1+2+0=3;", "1+2+0=3;  ; 4+5+0=9 ;", thinking]


def test_monte_carlo_labels_equal_checker_labels_with_deterministic_completions():
  items = []
  for seed, d in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 4)]:
    p = ADD.generate_problems(seed, d, 1)[0]
    steps = list(p.steps)
    items.append(prm.Scored(*_scored(_rollout(p, steps))))
    for at in range(len(steps)):
      bad = steps[:at] + [_corrupt(steps[at])] + steps[at + 1:]
      items.append(prm.Scored(*_scored(_rollout(p, bad, answer="0"))))
  prm.mc_labels(items, _oracle_addition, samples=3)
  for s in items:
    np.testing.assert_array_equal(s.mc, s.checker.astype(np.float32))
  agreement = prm.label_agreement(items)
  assert agreement["agree_hard"] == agreement["agree_soft"] == 1.0
  assert 0 < agreement["checker_good"] < 1


def _scored(rollout):
  [s] = prm.lay_out([rollout])
  return s.rollout, s.layout, s.checker


def test_greedy_think_completions_give_hard_labels():
  params, mc, _ = load_params(embedded_checkpoint_dir())
  config = make_think_config(mc, rl.TOK, 128, temperature=0.0, max_answer_tokens=8)
  problems = ADD.generate_problems(5, 2, 3, split="eval")
  items = prm.lay_out([_rollout(p, list(p.steps)) for p in problems])
  complete = prm.think_completer(params, config, batch_size=32)
  prm.mc_labels(items, complete, samples=3)
  once = prm.lay_out([s.rollout for s in items])
  prm.mc_labels(once, complete, samples=1)
  for a, b in zip(items, once):
    assert set(a.mc.tolist()) <= {0.0, 1.0}  # three identical greedy completions
    np.testing.assert_array_equal(a.mc, b.mc)


def test_best_of_n_selects_by_score_and_majority():
  p = ADD.generate_problems(0, 1, 1)[0]
  right = _rollout(p, p.steps)
  wrong = [_rollout(p, p.steps, answer=str(int(p.answer) + k)) for k in (1, 1, 2)]
  pool = [right] + wrong                     # majority answer is wrong
  scores = {"perfect": [np.array([1.0, 0, 0, 0])], "inverted": [np.array([0, 1.0, 1, 1])]}
  res = prm.best_of_n([pool], scores, ns=(2, 4), subsets=64)
  assert res["perfect"][4] == 1.0 and res["inverted"][4] == 0.0
  assert res["majority"][4] == 0.0 and res["oracle"][4] == 1.0
  # Weighted vote: the right answer's total score (1) beats the wrong ones' (0), and inverted.
  assert res["perfect+vote"][4] == 1.0 and res["inverted+vote"][4] == 0.0
  assert res["perfect"][2] == pytest.approx(res["oracle"][2])  # picks right whenever drawn
  assert res["oracle"][2] == pytest.approx(0.5, abs=0.15)
  with pytest.raises(ValueError, match="best-of-8"):
    prm.best_of_n([pool], scores, ns=(8,))


def test_auc_and_ece():
  assert heads_lib.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  assert heads_lib.auc([0.5, 0.5], [0, 1]) == 0.5
  assert np.isnan(heads_lib.auc([0.5, 0.6], [1, 1]))
  assert heads_lib.ece([0.9] * 10, [1] * 9 + [0]) == pytest.approx(0.0)
  assert heads_lib.ece([0.95, 0.05], [0, 1]) == pytest.approx(0.95)


def test_reward_heads_train_and_score_on_both_trunks():
  mc = ModelConfig(embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                   mlp_dim=64, max_seq_len=128)
  params = init_params(mc, jax.random.key(0))
  rollouts = []
  for seed in range(6):
    p = ADD.generate_problems(seed, 2, 1)[0]
    rollouts += [_rollout(p, p.steps), _rollout(p, [_corrupt(p.steps[0])] + list(p.steps[1:]),
                                                 answer="1")]
  items = prm.lay_out(rollouts)
  prm.mc_labels(items[:4], _oracle_addition, samples=1)
  small = (("embed_dim", 16), ("num_layers", 1), ("num_heads", 2), ("num_kv_heads", 1),
           ("head_dim", 8), ("mlp_dim", 32))
  for trunk in ("policy", "separate"):
    cfg = prm.PrmConfig(trunk=trunk, separate_model=small,
                        head=heads_lib.HeadTrainConfig(hidden_dim=16, steps=30, batch_size=16))
    models = prm.train_reward_heads(items, params, mc, cfg)
    assert set(models) == {"prm_checker", "prm_mc", "orm"}
    assert models["orm"].separate == (trunk == "separate")
    for name, model in models.items():
      scores = prm.score(items, model, params, mc, batch_size=8)
      sizes = [1 if name == "orm" else len(s.layout.steps) for s in items]
      assert [len(x) for x in scores] == sizes
      assert all(((x >= 0) & (x <= 1)).all() for x in scores)
