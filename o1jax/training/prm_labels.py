"""Step labels for the process reward model (o1jax/training/prm.py).

* The tasks' exact step checkers: step i of a solution is good iff steps 0..i all pass
  `check_step` (a step after an error cannot lead to the right answer any more, which is
  what a PRM is asked to predict).
* Monte Carlo rollouts (Math-Shepherd): K completions by think() from the prefix that ends
  with step i; the soft label is the fraction that reach the right answer.
* The training target mixing them (`step_targets`), hard-negative weights, and how often the
  two label sources agree (`label_agreement`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.tasks.base import Problem
from o1jax.training import heads as heads_lib
from o1jax.training import rollouts as rl


@dataclasses.dataclass
class Scored:
  """A rollout laid out in tokens, with its step labels."""
  rollout: rl.Rollout
  layout: rl.Layout
  checker: np.ndarray          # [steps] bool, prefix-correct
  mc: np.ndarray | None = None  # [steps] float, Monte Carlo soft labels


def checker_labels(problem: Problem, steps: Sequence[str]) -> np.ndarray:
  """Prefix-correct labels: True while every step so far passes the task's checker."""
  task = tasks_lib.get_task(problem.task)
  out, ok = [], True
  for i, step in enumerate(steps):
    ok = ok and task.check_step(problem, list(steps[:i]), step)
    out.append(ok)
  return np.asarray(out, bool)


def lay_out(rollouts: Sequence[rl.Rollout], tokenizer=None) -> list[Scored]:
  out = []
  for r in rollouts:
    lay = rl.layout(r.problem.prompt, r.thinking, r.answer, tokenizer)
    out.append(Scored(r, lay, checker_labels(r.problem, lay.steps)))
  return out


def step_prefixes(lay: rl.Layout, tokenizer=None) -> list[str]:
  """The thinking text up to and including each step's delimiter (the last step without
  its `</think>`): exactly the tokens the policy had written, so completions are on-policy."""
  out = []
  for i, end in enumerate(lay.step_ends):
    stop = end if i == len(lay.step_ends) - 1 else end + 1
    text = rl.tokenizer_or_default(tokenizer).decode(lay.ids[lay.think_at + 1: stop],
                                                     stop_at_eos=False)
    out.append(text)
  return out


Completer = Callable[[Sequence[Problem], Sequence[str]], Sequence[str]]


def think_completer(params, think_config, *, seed: int = 0, batch_size: int = 128,
                    tokenizer=None) -> Completer:
  """Completions by think() from `prompt<think>prefix`: (problems, prefixes) -> answers."""
  def complete(problems, prefixes):
    thoughts = rl.continue_thinking(params, think_config, [p.prompt for p in problems],
                                    prefixes, seed=seed, batch_size=batch_size,
                                    tokenizer=tokenizer)
    return [t.answer for t in thoughts]
  return complete


def mc_labels(items: Sequence[Scored], complete: Completer, samples: int,
              tokenizer=None, steps: Sequence[Sequence[int]] | None = None) -> None:
  """Fills `item.mc`: per step, the fraction of `samples` completions from its prefix whose
  answer verifies (with greedy completions every sample agrees, and the label is 0 or 1).
  `steps[i]`: the steps of item i to label (default: all); the others stay nan, since a
  completion per step of a 30-step trace is the whole cost of Monte Carlo labelling."""
  problems, prefixes, owner = [], [], []
  for i, item in enumerate(items):
    chosen = set(range(len(item.layout.steps)) if steps is None else steps[i])
    for j, prefix in enumerate(step_prefixes(item.layout, tokenizer)):
      if j not in chosen:
        continue
      for _ in range(samples):
        problems.append(item.rollout.problem)
        prefixes.append(prefix)
        owner.append((i, j))
  answers = complete(problems, prefixes) if problems else []
  for i, item in enumerate(items):
    item.mc = np.full(len(item.layout.steps), np.nan, np.float32)
    item.mc[sorted(set(j for k, j in owner if k == i))] = 0.0
  for (i, j), p, a in zip(owner, problems, answers):
    items[i].mc[j] += rl.verify(p, a) / samples


def mc_step_choice(items: Sequence[Scored], per_item: int, rng: np.random.Generator
                   ) -> list[list[int]]:
  """`per_item` step indices per item for Monte Carlo labels, drawn without replacement
  from its steps but the last (whose label is the answer's correctness, known already)."""
  out = []
  for s in items:
    inner = max(len(s.layout.steps) - 1, 0)
    out.append(sorted(rng.permutation(inner)[:per_item].tolist()))
  return out


def step_targets(item: Scored) -> np.ndarray:
  """What the PRM is trained to predict at each step: the checker's prefix-correct label,
  replaced by the Monte Carlo value where a step has one, and at the last step (the
  `</think>` read) whether the answer verifies. The last rule is what keeps a PRM from
  ranking a trace whose steps all pass but whose answer is wrong (a short confident trace
  that stops before it has solved anything) above a right one under `min`."""
  y = item.checker.astype(np.float32).copy()
  if item.mc is not None:
    has = ~np.isnan(item.mc)
    y[has] = item.mc[has]
  if len(y):
    y[-1] = float(item.rollout.correct)
  return y


def hard_negative_weights(targets: np.ndarray, scores: np.ndarray, weight: float,
                          quantile: float = 0.5) -> np.ndarray:
  """Per-step loss weights for a second round of training: a negative step (target < 0.5)
  the first-round head scores above the `quantile` of the positive steps' scores (it looks
  as confident as a typical good step) weighs `weight`; every other step weighs 1."""
  targets, scores = np.asarray(targets, np.float64), np.asarray(scores, np.float64)
  if len(targets) != len(scores):
    raise ValueError(f"{len(targets)} targets for {len(scores)} scores")
  if weight < 1:
    raise ValueError(f"hard_negative_weight must be >= 1, got {weight}")
  out = np.ones(len(targets), np.float32)
  pos, neg = targets >= 0.5, targets < 0.5
  if pos.any():
    out[neg & (scores > np.quantile(scores[pos], quantile))] = weight
  return out


def label_agreement(items: Sequence[Scored]) -> dict[str, float]:
  """Checker (prefix-correct) vs Monte Carlo labels, over every step that has both.

  `hard`: MC > 0 (Math-Shepherd's hard estimate: some completion succeeds); `soft`: MC >= .5.
  """
  with_mc = [s for s in items if s.mc is not None]
  has = [~np.isnan(s.mc) for s in with_mc]     # steps left unlabelled are nan
  checker = np.concatenate([s.checker[h] for s, h in zip(with_mc, has)] or [[]]).astype(bool)
  mc = np.concatenate([s.mc[h] for s, h in zip(with_mc, has)] or [[]])
  if len(mc) == 0:
    return {"steps": 0}
  hard, soft = mc > 0, mc >= 0.5
  return {"steps": int(len(mc)), "checker_good": float(checker.mean()),
          "mc_mean": float(mc.mean()), "agree_hard": float(np.mean(hard == checker)),
          "agree_soft": float(np.mean(soft == checker)),
          "checker_good_mc_zero": float(np.mean(checker & (mc == 0))),
          "checker_bad_mc_positive": float(np.mean(~checker & (mc > 0))),
          "auc_mc_vs_checker": heads_lib.auc(mc, checker)}
