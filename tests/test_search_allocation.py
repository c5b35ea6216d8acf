"""Compute-optimal allocation on constructed outcomes (issue 33 item 4): the baseline curve
starts at N = 1, and nothing of the evaluation half (its predictions, its outcomes) reaches
the bin edges, the targets or the chosen policy."""

import numpy as np
import pytest

from o1jax.search import allocation
from o1jax.search.allocation import Outcome


def _world(seed=0, flip_eval=False, eval_predicted_shift=0.0):
  """40 problems, predicted difficulty 0..39; even ones select, odd ones evaluate. Easy
  problems (predicted < 19) are solved by one sample (100 tokens); hard ones need 4
  samples (400 tokens) to be right about half of the time, 16 (1600) to be always right.
  `flip_eval` flips every evaluation-half outcome; `eval_predicted_shift` moves the
  evaluation half's predictions."""
  del seed
  outcomes, predicted = [], []
  for p in range(40):
    hard = p >= 19
    predicted.append(p + (eval_predicted_shift if p % 2 else 0.0))
    for n, tokens in ((1, 100), (4, 400), (16, 1600)):
      right = (not hard) or n == 16 or (n == 4 and p % 4 < 2)
      if flip_eval and p % 2:
        right = not right
      outcomes.append(Outcome(p, "vote", n, right, tokens))
  select, evaluate = list(range(0, 40, 2)), list(range(1, 40, 2))
  return outcomes, predicted, select, evaluate


def test_baseline_curve_starts_at_n1_and_the_policy_spends_where_it_pays():
  outcomes, predicted, select, evaluate = _world()
  rows = allocation.compute_optimal(outcomes, predicted, select, evaluate, "vote", 2)
  assert [r["n"] for r in rows] == [1, 4, 16]
  # Selection targets: N=1 0.5 (easy half right), N=4 0.75 (hard 0, 4: p % 4 < 2 -> even
  # hard ones with p % 4 == 0: half of them), N=16 1.0.
  assert [r["select_target"] for r in rows] == [0.5, 0.75, 1.0]
  # Edge 19 (the selection half's median): bin 0 holds evaluation problems 1..17 (9, easy),
  # bin 1 holds 19..39 (11, hard). Target 0.5: bin 0 at N=1, bin 1 needs N=4 (0.5 on its
  # selection problems): 9 + 5 right of 20 at (9 * 100 + 11 * 400) / 20 = 265 tokens; the
  # baseline's evaluation curve (N=1: 0.45 at 100, N=4: 0.7 at 400) needs 400 for 0.7.
  assert rows[0]["policy"] == "bin0=vote@1;bin1=vote@4"
  assert (rows[0]["optimal_accuracy"], rows[0]["optimal_tokens"]) == (0.7, 265.0)
  assert rows[0]["baseline_accuracy"] == 0.45 and rows[0]["baseline_tokens"] == 100.0
  assert rows[0]["baseline_tokens_at_that_accuracy"] == 400.0
  assert rows[0]["ratio"] == pytest.approx(400 / 265, abs=1e-3)
  # Targets 0.75 and 1.0: bin 1 needs N=16: all right at (900 + 11 * 1600) / 20 = 925
  # tokens, where the baseline needs N=16 (1600).
  for top in rows[1:]:
    assert top["policy"] == "bin0=vote@1;bin1=vote@16"
    assert (top["optimal_accuracy"], top["optimal_tokens"]) == (1.0, 925.0)
    assert top["baseline_tokens_at_that_accuracy"] == 1600.0
    assert top["ratio"] == pytest.approx(1600 / 925, abs=1e-3)


def test_nothing_of_the_evaluation_half_reaches_a_choice():
  outcomes, predicted, select, evaluate = _world()
  base = allocation.compute_optimal(outcomes, predicted, select, evaluate, "vote", 2)
  moved = allocation.compute_optimal(*_world(eval_predicted_shift=7.5)[:2], select, evaluate,
                                     "vote", 2)
  flipped = allocation.compute_optimal(*_world(flip_eval=True)[:2], select, evaluate,
                                       "vote", 2)
  for a, b, c in zip(base, moved, flipped):
    assert a["edges"] == b["edges"] == c["edges"]     # edges: selection predictions only
    assert a["select_target"] == b["select_target"] == c["select_target"]
    assert a["policy"] == c["policy"]                  # outcomes of the other half unused
  # The edge is the selection half's median (19: between 18 and 20), not all problems'.
  np.testing.assert_allclose(allocation.difficulty_edges(
      np.asarray(predicted)[select], 2), [19.0])
  assert base[0]["edges"] == "19.0"
  with pytest.raises(ValueError, match="share problems"):
    allocation.compute_optimal(outcomes, predicted, select, select[:3] + evaluate, "vote", 2)


def test_tokens_to_reach_interpolates_in_log_tokens_from_the_cheapest_point():
  pts = [(100.0, 0.5), (400.0, 0.75), (1600.0, 1.0)]
  assert allocation.tokens_to_reach(pts, 0.4) == 100.0
  assert allocation.tokens_to_reach(pts, 0.625) == pytest.approx(200.0)   # log midpoint
  assert allocation.tokens_to_reach(pts, 1.01) is None
