"""Exact-answer accuracy of greedy generation, per task and difficulty.

Generation is the compiled thinking loop (o1jax.thinking): one program decodes a whole batch
with no host round trip per token, every batch has the held-out set's widest prompt width
(so an evaluation compiles once per training run), and the numbers are those `think()`
gets at inference, budget controller and close string included.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.model.config import ModelConfig
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, think_texts

# Room for the answer after `</think>`: the tasks' answers are a few characters, a 7-token
# reference at most (countdown expressions). A model that rambles past it is wrong anyway.
MAX_ANSWER_TOKENS = 32


def generate_answers(params, config: ModelConfig, prompts: Sequence[str],
                     with_thinking: bool = True, batch_size: int = 64,
                     batch_multiple: int = 1) -> list[str]:
  """Greedy answers (the text after `</think>`, EOS stripped) for each prompt.

  With thinking the model thinks until it closes (or the context is full, when the close is
  forced); without, the budget is 0: the loop forces `</think>` right after `<think>`, the
  context `prompt<think></think>` the no-thinking training examples have. Batches hold
  `batch_size` prompts, fewer for a smaller set, rounded up to `batch_multiple` (the batch
  shards of a mesh); short batches are padded.
  """
  tok = CharTokenizer()
  if tok.close_ids() != (tok.end_think_id,):  # what no-thinking training examples hold
    raise ValueError(f"a forced close of {tok.close_ids()} is not the bare </think> of the "
                     "no-thinking training examples")
  think_config = make_think_config(config, tok, max_answer_tokens=MAX_ANSWER_TOKENS)
  batch = -(-min(batch_size, len(prompts)) // batch_multiple) * batch_multiple
  thoughts = think_texts(params, tok, list(prompts), think_config,
                         budgets=None if with_thinking else 0, batch_size=batch)
  return [t.answer for t in thoughts]


def accuracy_table(problems: Mapping[tuple[str, int], Sequence[tasks_lib.Problem]],
                   answers: Sequence[str]) -> dict[str, float]:
  """{"task/d": accuracy} plus "mean" (over levels); `answers` follow the problems in order."""
  keys = list(problems)
  flat = [(k, p) for k in keys for p in problems[k]]
  if len(answers) != len(flat):
    raise ValueError(f"{len(answers)} answers for {len(flat)} problems")
  correct: dict[tuple[str, int], list[bool]] = {k: [] for k in keys}
  for (k, p), answer in zip(flat, answers):
    correct[k].append(tasks_lib.get_task(p.task).verify(p, answer))
  table = {f"{t}/{d}": float(np.mean(v)) for (t, d), v in correct.items()}
  table["mean"] = float(np.mean([np.mean(v) for v in correct.values()]))
  return table


def evaluate(params, config: ModelConfig, problems, with_thinking: bool = True,
             batch_size: int = 64, batch_multiple: int = 1) -> dict[str, float]:
  prompts = [p.prompt for ps in problems.values() for p in ps]
  return accuracy_table(problems, generate_answers(params, config, prompts, with_thinking,
                                                   batch_size, batch_multiple))
