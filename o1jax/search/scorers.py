"""Host-side step scorers for `search(..., host_scorer=...)`, beside the in-loop PRM head.

* `checker_scorer`: the tasks' exact step checkers (1 while every step so far is right):
  an oracle PRM, for tests and for measuring how much a perfect verifier would give.
A scorer may carry `forward_cost(i, steps, closed) -> (tokens, flops)`: what one call
costs; search counts it (`Compute.scorer_tokens`, `flops`).

* `separate_prm_scorer`: a PRM on its own small trunk (`RewardModel.separate`, trained by
  launch/train_prm.py with `--config.prm.trunk=separate`). It reads text, so it costs a
  forward of its trunk over the path at every step end: the price of not sharing the
  policy's hidden states. The path is re-encoded as the PRM saw it in training (steps
  joined by "; ", read at the newest step's delimiter or at `</think>`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from o1jax.tasks.base import Problem


def checker_scorer(problems: Sequence[Problem]):
  from o1jax.training.prm import checker_labels  # local: training imports are heavier

  def score(i: int, steps: Sequence[str], closed: bool = False) -> float:
    del closed
    return float(checker_labels(problems[i], list(steps))[-1])
  return score


def separate_prm_scorer(model, prompts: Sequence[str]):
  """`model`: a RewardModel with its own trunk (char-tokenizer tasks)."""
  from o1jax.training import heads as heads_lib
  from o1jax.training import rollouts as rl
  if not model.separate:
    raise ValueError("separate_prm_scorer needs a PRM with its own trunk; a policy-trunk "
                     "PRM head is read inside the loop: pass it as heads={'prm': head}")

  from o1jax.search import compute
  # Training read a step at its ";" and the last one at "</think>".
  lay_out = lambda i, steps, closed: rl.layout(prompts[i],
                                              "; ".join(steps) + ("" if closed else ";"))

  def score(i: int, steps: Sequence[str], closed: bool = False) -> float:
    lay = lay_out(i, steps, closed)
    hidden = rl.hidden_at(model.trunk, model.trunk_config, [lay.ids], [[lay.step_ends[-1]]],
                          batch_size=1)[0]
    return float(np.asarray(heads_lib.predict(model.head, hidden))[0])

  def forward_cost(i: int, steps: Sequence[str], closed: bool = False) -> tuple[int, float]:
    """(tokens, FLOPs) of one `score` call: a forward of the PRM's trunk over the laid-out
    path, and its head once. Search adds these to `Compute.scorer_tokens` and `flops`."""
    tokens = len(lay_out(i, steps, closed).ids)
    return tokens, compute.count(model.trunk_config, generated=0, prompt=tokens,
                                 evaluations=1, mean_context=tokens / 2,
                                 head_hidden=model.head_config.hidden_dim).flops

  score.forward_cost = forward_cost
  return score
