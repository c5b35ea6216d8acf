"""Verified rationales as fine-tune examples, and the plain fine-tune on them: what STaR
(o1jax/training/star.py) keeps each iteration and what rejection-sampling fine-tuning
(launch/grpo_level5.py --method=rft) trains on.

A rollout becomes an example only if its answer verifies (re-checked, not trusted), and the
example is always rebuilt on the problem's own prompt, so a hint used to rationalise never
reaches training text."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from o1jax import tasks as tasks_lib
from o1jax.tasks.base import Problem
from o1jax.training import data as data_lib
from o1jax.training import rollouts as rl
from o1jax.training import trainer
from o1jax.training.trainer import TrainState


class StarError(ValueError):
  """STaR cannot go on: e.g. an iteration produced nothing to fine-tune on."""


@dataclasses.dataclass(frozen=True)
class Example:
  task: str
  difficulty: int
  prompt: str          # the problem's prompt: never the hinted one
  text: str            # prompt<think>rationale</think>answer
  rationalized: bool
  steps_correct: bool  # every step passes the task's checker (a diagnostic, not a filter)


hinted_prompt = data_lib.hinted_prompt  # the format the base saw in training (data.Mixture)


def _hint_marker(template: str) -> str:
  """The fixed text that introduces a hint ('[hint:'), to reject rationales that quote it."""
  return template.split("{answer}")[0].strip() or template.strip()


def _steps_correct(problem: Problem, thinking: str) -> bool:
  task = tasks_lib.get_task(problem.task)
  steps = tasks_lib.split_steps(thinking)
  return bool(steps) and all(task.check_step(problem, steps[:i], s) for i, s in enumerate(steps))


def filter_rationales(rollouts: Sequence[rl.Rollout], *, rationalized: bool = False,
                      hint_template: str = " [hint: {answer}]", require_thinking: bool = True,
                      require_correct_steps: bool = False,
                      seen: set | None = None) -> list[Example]:
  """The verified, deduplicated rationales as training examples on the problem's own prompt.

  A rollout is kept iff its answer verifies (re-checked here, not trusted from the rollout),
  its thinking is non-empty when required, neither thinking nor answer quotes the hint, every
  step passes the checker if `require_correct_steps`, and (prompt, thinking, answer) was not
  kept before (`seen` carries that across calls).
  """
  seen = set() if seen is None else seen
  marker = _hint_marker(hint_template)
  out = []
  for r in rollouts:
    thinking, answer = r.thinking.strip(), r.answer.strip()
    if not rl.verify(r.problem, answer):
      continue
    if require_thinking and not tasks_lib.split_steps(thinking):
      continue
    if marker in thinking or marker in answer or r.problem.prompt not in r.prompt:
      continue
    key = (r.problem.prompt, thinking, answer)
    steps_ok = _steps_correct(r.problem, thinking)
    if key in seen or (require_correct_steps and not steps_ok):
      continue
    seen.add(key)
    text = f"{r.problem.prompt}<think>{thinking}</think>{answer}"
    out.append(Example(r.problem.task, r.problem.difficulty, r.problem.prompt, text,
                       rationalized, steps_ok))
  return out


@functools.cache
def _finetune_optimizer() -> optax.GradientTransformation:
  """The one optimizer of every fine-tune. The train step takes its optimizer as a static
  argument, so a new optax object (each iteration's schedule has its own step count) was a
  new jit cache key: a full recompile of the step every STaR iteration. The learning rate is
  instead a leaf of the optimizer state, set from the host's schedule before each step."""
  return optax.inject_hyperparams(trainer.adamw, static_args=("grad_clip", "weight_decay"))(
      learning_rate=0.0, grad_clip=1.0, weight_decay=0.0)


def finetune(params, model_config, examples: Sequence[Example], *, steps: int,
             batch_size: int, learning_rate: float, seq_len: int, seed: int = 0,
             tokenizer=None):
  """A plain fine-tune on `examples` with the trainer's loss, optimizer and step.

  Returns (params, losses). Raises StarError on an empty set: a fine-tune on nothing would
  silently return the starting model under a new name.
  """
  if not examples:
    raise StarError("no examples to fine-tune on")
  tok = rl.tokenizer_or_default(tokenizer)
  encoded = [data_lib.encode_example(e.text, e.prompt, seq_len, tok) for e in examples]
  arrays = {k: np.stack([x[k] for x in encoded]) for k in encoded[0]}
  t = ml_collections.ConfigDict(dict(
      learning_rate=learning_rate, warmup_steps=min(20, steps // 5), steps=steps,
      final_lr_fraction=0.1))
  lrs = np.asarray(trainer.lr_schedule(t)(np.arange(steps)), np.float32)
  optimizer = _finetune_optimizer()
  params = jax.tree.map(jnp.array, params)  # a copy: the step donates its state
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=optimizer.init(params))
  rng = np.random.default_rng(seed)
  losses = []
  order = np.array([], np.int64)
  for i in range(steps):
    if len(order) < batch_size:  # epochs of reshuffled examples
      order = np.concatenate([order, rng.permutation(len(examples))])
      while len(order) < batch_size:
        order = np.concatenate([order, rng.permutation(len(examples))])
    idx, order = order[:batch_size], order[batch_size:]
    batch = {k: jnp.asarray(v[idx]) for k, v in arrays.items()}
    # Step i runs at lrs[i], what the schedule inside the optimizer would have given it.
    opt_state = state.opt_state
    hyper = {**opt_state.hyperparams, "learning_rate": jnp.asarray(lrs[i])}
    state = state.replace(opt_state=opt_state._replace(hyperparams=hyper))
    state, metrics = trainer.train_step(state, batch, model_config, optimizer)
    losses.append(metrics["loss"])
  return state.params, [float(x) for x in losses]


def answer_examples(problems: Sequence[Problem]) -> list[Example]:
  """The answers-only baseline's examples: each problem with its answer and no rationale."""
  return [Example(p.task, p.difficulty, p.prompt,
                  tasks_lib.render_text(p.prompt, "", p.answer), False, False)
          for p in problems]
