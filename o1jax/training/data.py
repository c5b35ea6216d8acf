"""Deterministic grain pipelines of rendered reasoning problems.

Example i of a mixture is a pure function of (seed, i): a fresh generator seeded with
[seed, i] picks the task, the difficulty, whether the thinking is shown, and the problem.
So the data order is fixed by the seed alone, and resuming only needs grain's iterator state
(the next batch index), which is checkpointed with the model.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import grain
import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.tasks.tokenizer import END_THINK_TEXT, THINK_TEXT, CharTokenizer

# Effectively infinite: grain indexes it lazily, nothing is materialised.
_SOURCE_LEN = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Mixture:
  """What a training stream draws from.

  `no_thinking_fraction` of examples have an empty thinking section, so that answering
  without thinking is a real baseline (the article's "GPT-4" row), not a distribution shift.
  `truncated_thinking_fraction` of the others have their thinking cut after a uniform
  number of characters and then the answer: what the thinking loop produces when a budget
  forces the close mid-thought, so a small budget gives a best guess from the partial work
  instead of an answer the model never learned to give. In both cases the `</think>` is
  context, not a target (the loop forces it): the model only ever learns to close its
  thinking when the thinking is complete.
  `answer_only_difficulties` maps a task to the difficulty levels whose examples carry
  answers alone (no worked solution): the starting point of STaR experiments.
  """
  tasks: tuple[str, ...] = ("addition", "equation", "countdown")
  difficulties: tuple[int, ...] = (1, 2, 3, 4)
  no_thinking_fraction: float = 0.15
  truncated_thinking_fraction: float = 0.0
  seed: int = 0
  answer_only_difficulties: tuple[tuple[str, tuple[int, ...]], ...] = ()
  # Consecutive runs of `task_run` examples share a task, so a batch built from one run is
  # padded only to that task's length (countdown traces are twice as long as the others).
  # Runs that also shared the difficulty level padded less (0.75 vs ~1 s/step) but learned
  # much slower per step in the one run that tried them (docs/RESULTS.md).
  task_run: int = 1

  def __post_init__(self):
    for name in self.tasks:
      task = tasks_lib.get_task(name)  # raises, naming the known tasks
      for d in self.difficulties:
        if d not in task.difficulties:
          raise ValueError(f"difficulty {d} is not a level of task {name!r}; "
                           f"levels: {tuple(task.difficulties)}")
    for name in ("no_thinking_fraction", "truncated_thinking_fraction"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

  def max_text_len(self) -> int:
    return max(tasks_lib.get_task(t).max_text_len(d)
               for t in self.tasks for d in self.difficulties)

  def example(self, index: int) -> tuple[tasks_lib.Problem, int | None]:
    """(problem, thinking shown): None = all of it, else its first that many characters."""
    task_rng = np.random.default_rng([self.seed, index // self.task_run, 1])
    task = tasks_lib.get_task(self.tasks[task_rng.integers(len(self.tasks))])
    rng = np.random.default_rng([self.seed, index])
    difficulty = int(self.difficulties[rng.integers(len(self.difficulties))])
    with_thinking = bool(rng.random() >= self.no_thinking_fraction)
    truncate = bool(rng.random() < self.truncated_thinking_fraction)
    if difficulty in dict(self.answer_only_difficulties).get(task.name, ()):
      with_thinking = False
    problem = task.generate(rng, difficulty, split="train")
    if not with_thinking:
      return problem, 0
    if truncate:
      return problem, int(rng.integers(1, len(tasks_lib.thinking_text(problem))))
    return problem, None

  def text(self, index: int) -> tuple[str, str, bool]:
    """(training text, its prompt, whether the model closed the thinking itself)."""
    problem, shown = self.example(index)
    if shown is None:
      return tasks_lib.render(problem), problem.prompt, True
    thinking = tasks_lib.thinking_text(problem)[:shown]
    return (f"{problem.prompt}{THINK_TEXT}{thinking}{END_THINK_TEXT}{problem.answer}",
            problem.prompt, False)


def encode_example(text: str, prompt: str, seq_len: int, tokenizer: CharTokenizer,
                   close_is_target: bool = True) -> dict[str, np.ndarray]:
  """inputs/targets [seq_len] and a loss mask over the thinking, answer and EOS tokens.

  The prompt and the `<think>` that follows it are context, not targets: the thinking loop
  always supplies them; so is the `</think>` when `close_is_target` is False (a close the
  budget forced).
  """
  ids = tokenizer.encode(text, add_eos=True)
  if len(ids) > seq_len + 1:
    raise ValueError(f"example of {len(ids)} tokens does not fit seq_len={seq_len}: "
                     f"{text[:60]!r}...; raise train.seq_len")
  context = len(tokenizer.encode(prompt)) + 1  # prompt tokens + <think>
  ids = np.asarray(ids, np.int32)
  inputs = np.full(seq_len, tokenizer.pad_id, np.int32)
  targets = np.full(seq_len, tokenizer.pad_id, np.int32)
  mask = np.zeros(seq_len, np.float32)
  inputs[: len(ids) - 1] = ids[:-1]
  targets[: len(ids) - 1] = ids[1:]
  mask[context - 1: len(ids) - 1] = 1.0
  if not close_is_target:
    mask[targets == tokenizer.end_think_id] = 0.0
  return {"inputs": inputs, "targets": targets, "loss_mask": mask}


class _EncodeIndex(grain.transforms.Map):
  """Index -> encoded example; a module-level class so grain workers can pickle it."""

  def __init__(self, mixture: Mixture, seq_len: int):
    self.mixture, self.seq_len, self.tokenizer = mixture, seq_len, CharTokenizer()

  def map(self, index):
    text, prompt, closed_by_model = self.mixture.text(int(index))
    return encode_example(text, prompt, self.seq_len, self.tokenizer, closed_by_model)


def make_dataset(mixture: Mixture, batch_size: int, seq_len: int, *,
                 process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """Batches of {inputs, targets, loss_mask}; each process reads its own strided slice."""
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} must divide evenly over {process_count} processes")
  ds = grain.MapDataset.range(_SOURCE_LEN)
  ds = ds[process_index::process_count]  # per-process shard, same global order
  ds = ds.map(_EncodeIndex(mixture, seq_len))
  ds = ds.batch(batch_size // process_count, drop_remainder=True).map(_TrimPadding())
  return ds.to_iter_dataset()


class _TrimPadding(grain.transforms.Map):
  """Drops padding columns past the batch's longest example (to a multiple of 16, so only
  a handful of shapes are ever compiled)."""

  def map(self, batch):
    used = int(np.max(np.nonzero(batch["loss_mask"].any(0))[0], initial=0)) + 1
    width = min(batch["inputs"].shape[1], -(-used // 16) * 16)
    return {k: v[:, :width] for k, v in batch.items()}


def heldout_problems(task_names: Sequence[str], difficulties: Sequence[int], n: int,
                     seed: int = 1234) -> dict[tuple[str, int], list[tasks_lib.Problem]]:
  """n held-out problems per (task, difficulty), disjoint from every training stream."""
  return {(t, d): tasks_lib.get_task(t).generate_problems(seed, d, n, split="eval")
          for t in task_names for d in difficulties}
