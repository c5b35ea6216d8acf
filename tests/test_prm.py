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


# ---- the search PRM: partial Monte Carlo labels, targets, hard negatives, calibration ----

def _addition_items():
  items = []
  for seed, d in [(0, 2), (1, 3), (2, 4)]:
    p = ADD.generate_problems(seed, d, 1)[0]
    steps = list(p.steps)
    items.append(prm.Scored(*_scored(_rollout(p, steps))))
    bad = steps[:1] + [_corrupt(steps[1])] + steps[2:]
    items.append(prm.Scored(*_scored(_rollout(p, bad, answer="0"))))
  return items


def test_monte_carlo_labels_on_chosen_steps_only():
  full, part = _addition_items(), _addition_items()
  prm.mc_labels(full, _oracle_addition, samples=2)
  calls = []
  counting = lambda ps, xs: calls.append(len(ps)) or _oracle_addition(ps, xs)
  choice = prm.mc_step_choice(part, 2, np.random.default_rng(0))
  prm.mc_labels(part, counting, samples=2, steps=choice)
  assert sum(calls) == 2 * sum(map(len, choice))   # a completion per chosen step and sample
  for a, b, chosen in zip(full, part, choice):
    n = len(a.layout.steps)
    assert len(chosen) == min(2, n - 1) and len(set(chosen)) == len(chosen)
    assert n - 1 not in chosen                       # the last step's label is the answer
    np.testing.assert_array_equal(b.mc[chosen], a.mc[chosen])
    assert np.isnan(np.delete(b.mc, chosen)).all()
  # Agreement counts the labelled steps only.
  assert prm.label_agreement(part)["steps"] == sum(map(len, choice))


def test_step_targets_take_mc_where_labelled_and_the_answer_at_the_last_step():
  p = ADD.generate_problems(3, 4, 1)[0]
  steps = list(p.steps)
  # Every step passes the checker but the answer is wrong: the trace a checker PRM rewards.
  sneaky = prm.Scored(*_scored(_rollout(p, steps, answer="0")))
  sneaky.mc = np.array([np.nan, 0.25] + [np.nan] * (len(steps) - 2), np.float32)
  # A wrong step, yet the answer is right (a reflective trace that recovered).
  recovered = prm.Scored(*_scored(_rollout(p, [_corrupt(steps[0])] + steps[1:])))
  for item in (sneaky, recovered):
    ref = []
    for i in range(len(steps)):   # independent restatement of the rule
      if i == len(steps) - 1:
        ref.append(float(item.rollout.correct))
      elif item.mc is not None and not np.isnan(item.mc[i]):
        ref.append(float(item.mc[i]))
      else:
        ref.append(float(item.checker[i]))
    np.testing.assert_array_equal(prm.step_targets(item), np.float32(ref))
  assert prm.step_targets(sneaky)[-1] == 0.0 and sneaky.checker.all()
  assert prm.step_targets(recovered)[-1] == 1.0 and not recovered.checker[-1]


def test_hard_negative_weights_match_a_brute_force_count():
  rng = np.random.default_rng(1)
  y = rng.random(200) < 0.6
  targets = np.where(y, rng.uniform(0.5, 1, 200), rng.uniform(0, 0.5, 200))
  scores = rng.random(200)
  w = prm.hard_negative_weights(targets, scores, 3.0, quantile=0.5)
  pos = sorted(scores[targets >= 0.5])
  m = len(pos)
  median = (pos[(m - 1) // 2] + pos[m // 2]) / 2          # numpy's linear quantile at 0.5
  for t, s, wi in zip(targets, scores, w):
    assert wi == (3.0 if t < 0.5 and s > median else 1.0)
  assert 0 < (w > 1).sum() < (targets < 0.5).sum()
  with pytest.raises(ValueError, match="hard_negative_weight"):
    prm.hard_negative_weights(targets, scores, 0.5)


def test_platt_fit_matches_scipy_and_recovers_the_generating_map():
  import scipy.optimize
  from o1jax.training import prm_calibration as cal
  rng = np.random.default_rng(0)
  z = rng.normal(0, 2, 4000)
  y = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * z - 1.0)))).astype(float)
  a, b = cal.fit_platt(z, y, l2=0.0)
  nll = lambda t: np.sum(np.logaddexp(0, t[0] * z + t[1]) - y * (t[0] * z + t[1]))
  ref = scipy.optimize.minimize(nll, [1.0, 0.0], method="Nelder-Mead",
                                options=dict(xatol=1e-8, fatol=1e-10, maxiter=4000)).x
  np.testing.assert_allclose([a, b], ref, atol=1e-4)
  # The fit finds the map the labels came from, and is far from the plausible wrong ones.
  assert abs(a - 0.5) < 0.06 and abs(b + 1.0) < 0.12
  for wrong in [(1.0, 0.0), (0.5, 1.0), (2.0, -1.0)]:
    assert max(abs(a - wrong[0]), abs(b - wrong[1])) > 0.3
  # Held-out ECE falls after calibration.
  zt = rng.normal(0, 2, 4000)
  yt = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * zt - 1.0)))).astype(float)
  raw, fitted = 1 / (1 + np.exp(-zt)), 1 / (1 + np.exp(-(a * zt + b)))
  assert heads_lib.ece(fitted, yt) < 0.03 < 0.1 < heads_lib.ece(raw, yt)


def test_platt_fit_never_reverses_the_heads_ranking():
  """A bin where the head is anti-informative (labels fall as its logit rises) gets slope 0
  and the bin's base rate, the bounded optimum (scipy, a >= 0): the unconstrained fit, the
  wrong variant, would hand search an inverted score to maximise."""
  import scipy.optimize
  from o1jax.training import prm_calibration as cal
  rng = np.random.default_rng(3)
  z = rng.normal(0, 2, 3000)
  y = (rng.random(3000) < 1 / (1 + np.exp(-(-0.4 * z + 0.3)))).astype(float)
  a, b = cal.fit_platt(z, y)
  nll = lambda t: (np.sum(np.logaddexp(0, t[0] * z + t[1]) - y * (t[0] * z + t[1]))
                   + 0.5e-4 * (t[0] ** 2 + t[1] ** 2))
  ref = scipy.optimize.minimize(nll, [1.0, 0.0], method="L-BFGS-B",
                                bounds=[(0, None), (None, None)]).x
  np.testing.assert_allclose([a, b], ref, atol=1e-4)
  assert a == 0.0 and abs(1 / (1 + np.exp(-b)) - y.mean()) < 1e-3
  unconstrained = scipy.optimize.minimize(nll, [1.0, 0.0], method="L-BFGS-B").x
  assert unconstrained[0] < -0.3                       # the wrong variant inverts the bin
  # A bin with signal keeps its unconstrained fit.
  y2 = (rng.random(3000) < 1 / (1 + np.exp(-(0.7 * z)))).astype(float)
  free = scipy.optimize.minimize(
      lambda t: (np.sum(np.logaddexp(0, t[0] * z + t[1]) - y2 * (t[0] * z + t[1]))
                 + 0.5e-4 * (t[0] ** 2 + t[1] ** 2)), [1.0, 0.0], method="L-BFGS-B").x
  np.testing.assert_allclose(cal.fit_platt(z, y2), free, atol=1e-4)


def test_binned_calibration_and_folding_into_the_head():
  from o1jax.model.heads import HeadConfig, init_head
  from o1jax.training import prm_calibration as cal
  edges = (2, 5)
  assert cal.position_bins(7, edges).tolist() == [1, 1, 2, 2, 2, 3, 0]
  assert cal.position_bins(1, edges).tolist() == [0]
  with pytest.raises(ValueError, match="edges"):
    cal.position_bins(3, (4, 2))
  rng = np.random.default_rng(2)
  bins = rng.integers(0, 4, 3000)
  z = rng.normal(0, 2, 3000)
  true_a, true_b = np.array([2.0, 0.5, 1.0, 1.0]), np.array([0.0, 1.0, -1.0, 0.0])
  y = (rng.random(3000) < 1 / (1 + np.exp(-(true_a[bins] * z + true_b[bins])))).astype(float)
  y[bins == 3] = 1.0                                   # one class only: falls back
  c = cal.fit(z, y, bins, edges)
  for k in range(3):                                   # each bin is its own Platt fit
    np.testing.assert_allclose((c.a[k], c.b[k]), cal.fit_platt(z[bins == k], y[bins == k]))
  assert (c.a[3], c.b[3]) == cal.fit_platt(z, y)
  np.testing.assert_allclose(cal.apply(c, z, bins),
                             1 / (1 + np.exp(-(np.array(c.a)[bins] * z + np.array(c.b)[bins]))))
  assert cal.Calibration.from_dict(c.to_dict()) == c
  head = init_head(HeadConfig(16, 8, "prm"), jax.random.key(0), 0.3)
  x = rng.normal(size=(20, 16))
  np.testing.assert_allclose(cal.logits(cal.fold(head, 1.7, -0.4), x),
                             1.7 * cal.logits(head, x) - 0.4, rtol=1e-5, atol=1e-5)


def test_wilson_bootstrap_and_per_problem_best_of_n():
  from o1jax.training import prm_experiment as exp
  lo, hi = exp.wilson(0.5, 100)
  assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
  lo, hi = exp.wilson(0.0, 20)
  assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.1611, abs=1e-4)
  rng = np.random.default_rng(3)
  labels = [rng.random(30) < 0.5 for _ in range(40)]
  scores = [lab + rng.normal(0, 1, 30) for lab in labels]
  point, lo, hi = exp.cluster_auc_ci(scores, labels, boots=100)
  assert point == heads_lib.auc(np.concatenate(scores), np.concatenate(labels))
  assert lo < point < hi and hi - lo < 0.1
  d, dlo, dhi = exp.paired_diff_ci(np.ones(50), np.r_[np.ones(25), np.zeros(25)])
  assert d == 0.5 and dlo < 0.5 < dhi
  p = ADD.generate_problems(0, 1, 1)[0]
  pool = [_rollout(p, p.steps)] + [_rollout(p, p.steps, answer="1")] * 3
  s = {"x": [np.array([0.2, 0.9, 0.1, 0.3]), np.array([0.9, 0.2, 0.1, 0.3])]}
  mean = prm.best_of_n([pool, pool], s, (1, 2, 4), subsets=16)
  per = prm.best_of_n([pool, pool], s, (1, 2, 4), subsets=16, per_problem=True)
  for m in mean:
    for n in (1, 2, 4):
      assert len(per[m][n]) == 2 and np.mean(per[m][n]) == pytest.approx(mean[m][n])


def test_report_takes_each_n_over_the_pools_that_hold_it(tmp_path):
  from o1jax.training import prm_experiment as exp
  cfg = prm.PrmConfig(cells=(("addition", 2), ("addition", 3)), best_of=(1, 2, 4),
                      eval_samples=(4, 2), subsets=8)
  rng = np.random.default_rng(0)
  problems = [ADD.generate_problems(s, d, 1)[0] for s, d in [(0, 2), (1, 2), (2, 3), (3, 3)]]
  pools = []
  for p, k in zip(problems, (4, 4, 2, 2)):
    pools.append([_rollout(p, p.steps, answer=p.answer if rng.random() < 0.5 else "0")
                  for _ in range(k)])
  items = prm.lay_out([r for pool in pools for r in pool])
  heads = {name: [rng.random(len(s.checker)) for s in items]
           for name in ("old", "new_raw", "new", "new_binned")}
  res = exp.report(cfg, str(tmp_path), heads, items, problems, pools, {}, {}, 0, 0.0,
                   lambda s: None)
  assert res["problems_per_n"] == {"1": 4, "2": 4, "4": 2}
  # N=4 is judged on the two pools of four only, exactly as best_of_n on those alone.
  starts = np.r_[0, np.cumsum([len(p) for p in pools])]
  sol = [np.array([prm.aggregate(heads["new"][j], "min") for j in range(starts[i], starts[i + 1])])
         for i in range(4)]
  ref = prm.best_of_n(pools[:2], {"new_min": sol[:2]}, (4,), cfg.subsets, cfg.seed)
  assert res["best_of_n"]["new_min"]["4"][0] == pytest.approx(ref["new_min"][4])
  lo, hi = exp.wilson(ref["new_min"][4], 2)
  assert res["best_of_n"]["new_min"]["4"][1:] == pytest.approx([lo, hi])
  assert set(res["best_of_n_by_cell"]["new_min"]["addition3"]) == {"1", "2"}
  table = (tmp_path / "prm_results.md").read_text()
  assert f"| new_min | {res['best_of_n']['new_min']['1'][0]:.3f}" in table
