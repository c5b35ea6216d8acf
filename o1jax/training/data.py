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
from o1jax.tasks import reflection
from o1jax.tasks.tokenizer import END_THINK_TEXT, THINK_TEXT, CharTokenizer

# Effectively infinite: grain indexes it lazily, nothing is materialised.
_SOURCE_LEN = 2**31 - 1


def hinted_prompt(problem: tasks_lib.Problem, template: str) -> str:
  """The prompt with its answer as a hint (STaR's rationalisation prompt)."""
  return problem.prompt + template.format(answer=problem.answer)


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
  answers alone (no worked solution), but for `answer_only_worked_fraction` of them: the
  starting point of STaR experiments.
  `trace_style` "reflective" writes every thinking as solve, candidate, check by another
  route (o1jax/tasks/reflection.py); `error_fraction` of those traces make one slip that
  their check catches and corrects, the wrong step masked out of the loss. A reflective trace
  cut short closes with the best answer the cut part holds: its latest unrefuted candidate,
  else the true answer (the best guess, as with no thinking). `short_cut_fraction` of the
  cuts are log-uniform in length (most within the first step or two) instead of uniform. A trace with a correction that
  would not fit `max_tokens` is written without the slip.
  `trace_style` "scratchpad" writes addition in Nye et al.'s scratchpad
  (o1jax/tasks/addition.py), the STaR format. `hint_fraction` of the examples with a whole
  worked solution show the answer as a hint after the prompt (`hint_template`), so STaR's
  rationalisation (sampling with the answer given) uses a format the model has seen.
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
  # (task, relative weight) pairs: the share of examples each task of `tasks` gets (1.0 where
  # unlisted; entries for tasks outside `tasks` are ignored, so a config can narrow `tasks`
  # and keep its weights). Empty = uniform, as in the embedded default: a run that favoured
  # countdown (the task learned last) did no better (docs/RESULTS.md).
  task_weights: tuple[tuple[str, float], ...] = ()
  trace_style: str = "plain"
  error_fraction: float = 0.0
  short_cut_fraction: float = 0.0
  max_tokens: int | None = None
  hint_fraction: float = 0.0
  hint_template: str = " [hint: {answer}]"
  # The share of the answer-only levels' examples that still carry a worked solution: STaR's
  # "few rationale examples" (0: answers alone there).
  answer_only_worked_fraction: float = 0.0
  # Which split the training problems come from (o1jax/tasks/base.py): "prompt", the shipped
  # checkpoints' split, or "canonical", whose held-out side has no permuted twin in training.
  split_key: str = tasks_lib.DEFAULT_SPLIT_KEY

  def __post_init__(self):
    tasks_lib.check_split_key(self.split_key)
    reflection.check_style(self.trace_style)
    if "{answer}" not in self.hint_template:
      raise ValueError(f"hint_template must contain '{{answer}}', got {self.hint_template!r}")
    if self.hint_fraction and self.trace_style == "reflective":
      raise ValueError("hint_fraction needs trace_style 'plain' or 'scratchpad'")
    if self.trace_style == "scratchpad":
      for name in self.tasks:  # raises, naming the task without a scratchpad
        task = tasks_lib.get_task(name)
        task.scratchpad_steps(task.generate(np.random.default_rng(0), self.difficulties[0]))
    if self.error_fraction and self.trace_style != "reflective":
      raise ValueError(f"error_fraction={self.error_fraction} needs trace_style='reflective' "
                       "(a plain trace has no check to catch the error)")
    for name, weight in self.task_weights:
      tasks_lib.get_task(name)  # raises, naming the known tasks
      if not weight >= 0:
        raise ValueError(f"task weight of {name!r} must be >= 0, got {weight}")
    if self.task_weights and not sum(self._task_probabilities()) > 0:
      raise ValueError(f"task_weights {dict(self.task_weights)} give every task of "
                       f"{self.tasks} weight 0")
    for name in self.tasks:
      task = tasks_lib.get_task(name)  # raises, naming the known tasks
      for d in self.difficulties:
        if d not in task.difficulties:
          raise ValueError(f"difficulty {d} is not a level of task {name!r}; "
                           f"levels: {tuple(task.difficulties)}")
    for name in ("no_thinking_fraction", "truncated_thinking_fraction", "error_fraction",
                 "short_cut_fraction", "hint_fraction", "answer_only_worked_fraction"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

  def _task_probabilities(self) -> np.ndarray:
    weights = dict(self.task_weights)
    return np.asarray([float(weights.get(t, 1.0)) for t in self.tasks], np.float64)

  def max_text_len(self) -> int:
    """The longest training text of plain traces; a reflective trace's length is checked
    per example (its corrections make an exhaustive bound expensive), see `max_tokens`."""
    if self.trace_style != "scratchpad" and not self.hint_fraction:
      return max(tasks_lib.get_task(t).max_text_len(d)
                 for t in self.tasks for d in self.difficulties)
    return max(len(self._plain_text(self._longest_problem(t, d), self.hint_fraction > 0))
               for t in self.tasks for d in self.difficulties)

  def example(self, index: int) -> tuple[tasks_lib.Problem, int | None]:
    """(problem, thinking shown): None = all of it, else its first that many characters."""
    task_rng = np.random.default_rng([self.seed, index // self.task_run, 1])
    if self.task_weights:
      p = self._task_probabilities()
      which = task_rng.choice(len(self.tasks), p=p / p.sum())
    else:  # uniform: the stream every run before task_weights drew
      which = task_rng.integers(len(self.tasks))
    task = tasks_lib.get_task(self.tasks[which])
    rng = np.random.default_rng([self.seed, index])
    difficulty = int(self.difficulties[rng.integers(len(self.difficulties))])
    with_thinking = bool(rng.random() >= self.no_thinking_fraction)
    truncate = bool(rng.random() < self.truncated_thinking_fraction)
    if difficulty in dict(self.answer_only_difficulties).get(task.name, ()):
      # Its own stream, so the fraction changes nothing else about the example.
      worked = np.random.default_rng([self.seed, index, 4]).random()
      with_thinking = with_thinking and worked < self.answer_only_worked_fraction
    problem = task.generate(rng, difficulty, split="train", split_key=self.split_key)
    if not with_thinking:
      return problem, 0
    if truncate:
      return problem, int(rng.integers(1, len(tasks_lib.thinking_text(problem))))
    return problem, None

  def text(self, index: int) -> tuple[str, str, bool]:
    """(training text, its prompt, whether the model closed the thinking itself)."""
    example = self.render(index)
    return example.text, example.prompt, example.closed_by_model

  def render(self, index: int) -> "Example":
    """Example `index` as text, with the spans of thinking kept out of the loss."""
    if self.trace_style == "reflective":
      return self._render_reflective(index)
    problem, shown = self.example(index)
    thinking = self._thinking(problem)
    if shown is None:
      hinted = np.random.default_rng([self.seed, index, 3]).random() < self.hint_fraction
      prompt = hinted_prompt(problem, self.hint_template) if hinted else problem.prompt
      return Example(tasks_lib.render_text(prompt, thinking, problem.answer), prompt, True)
    return Example(tasks_lib.render_text(problem.prompt, thinking[:shown], problem.answer),
                   problem.prompt, False)

  def _thinking(self, problem: tasks_lib.Problem) -> str:
    if self.trace_style == "scratchpad":
      return tasks_lib.STEP_SEP.join(
          tasks_lib.get_task(problem.task).scratchpad_steps(problem))
    return tasks_lib.thinking_text(problem)

  def _longest_problem(self, task: str, difficulty: int) -> tasks_lib.Problem:
    """The problem whose text is longest: all-9 operands for addition (exact, in either
    style), else the longest of 256 drawn (with a hint, the answer appears twice)."""
    pool = tasks_lib.get_task(task).generate_problems(0, difficulty, 256, split="any")
    if task == "addition":
      from o1jax.tasks import addition
      nines = 10**(addition.LEVEL5_DIGITS if difficulty == 5 else difficulty + 1) - 1
      pool = [addition.build(nines, nines)]
    return max(pool, key=lambda p: len(tasks_lib.render(p)) + len(p.answer))

  def _plain_text(self, problem: tasks_lib.Problem, with_hint: bool) -> str:
    prompt = hinted_prompt(problem, self.hint_template) if with_hint else problem.prompt
    return tasks_lib.render_text(prompt, self._thinking(problem), problem.answer)

  def _render_reflective(self, index: int) -> "Example":
    # The plain example's draws come first, so both styles see the same problems.
    problem, _ = self.example(index)
    rng = np.random.default_rng([self.seed, index, 2])
    no_thinking = bool(rng.random() < self.no_thinking_fraction)
    truncate = bool(rng.random() < self.truncated_thinking_fraction)
    error = bool(rng.random() < self.error_fraction)
    task = tasks_lib.get_task(problem.task)
    if no_thinking or problem.difficulty in dict(self.answer_only_difficulties).get(
        task.name, ()):
      return Example(tasks_lib.render_text(problem.prompt, "", problem.answer),
                     problem.prompt, False)
    trace = task.reflective_trace(problem, rng, error)
    if self.max_tokens is not None and trace.wrong_step is not None and (
        _reflective_tokens(problem, trace) > self.max_tokens):
      trace = task.reflective_trace(problem)
    steps = list(trace.steps)
    thinking = tasks_lib.STEP_SEP.join(steps)
    masked = ()
    if trace.wrong_step is not None:
      start = len(tasks_lib.STEP_SEP.join(steps[:trace.wrong_step] + [""]))
      masked = ((start, start + len(steps[trace.wrong_step])),)
    if not truncate:
      return Example(tasks_lib.render_text(problem.prompt, thinking, problem.answer),
                     problem.prompt, True, masked)
    if rng.random() < self.short_cut_fraction:
      # Log-uniform: a budget of 8 or 16 tokens cuts the first step or two, a regime a
      # uniform cut over a 100-500 character trace almost never shows.
      cut = int(np.exp(rng.uniform(0.0, np.log(len(thinking)))))
      cut = min(max(cut, 1), len(thinking) - 1)
    else:
      cut = int(rng.integers(1, len(thinking)))
    answer = reflection.best_answer(problem, tasks_lib.whole_steps(steps, cut))
    masked = tuple((a, min(b, cut)) for a, b in masked if a < cut)
    return Example(tasks_lib.render_text(problem.prompt, thinking[:cut], answer),
                   problem.prompt, False, masked)


def _reflective_tokens(problem, trace) -> int:
  # Characters are tokens except <think> and </think> (one each); plus EOS.
  return (len(problem.prompt) + 2 + len(tasks_lib.STEP_SEP.join(trace.steps))
          + len(problem.answer) + 1)


@dataclasses.dataclass(frozen=True)
class Example:
  """A training text; `masked` are (start, end) character spans of its thinking whose
  tokens are context but not targets (an injected wrong step)."""
  text: str
  prompt: str
  closed_by_model: bool
  masked: tuple[tuple[int, int], ...] = ()


def encode_example(text: str, prompt: str, seq_len: int, tokenizer: CharTokenizer,
                   close_is_target: bool = True, masked=()) -> dict[str, np.ndarray]:
  """inputs/targets [seq_len] and a loss mask over the thinking, answer and EOS tokens.

  The prompt and the `<think>` that follows it are context, not targets: the thinking loop
  always supplies them; so is the `</think>` when `close_is_target` is False (a close the
  budget forced).
  """
  example = encode_unpadded(text, prompt, seq_len, tokenizer, close_is_target, masked)
  n = len(example["inputs"])
  padded = {"inputs": np.full(seq_len, tokenizer.pad_id, np.int32),
            "targets": np.full(seq_len, tokenizer.pad_id, np.int32),
            "loss_mask": np.zeros(seq_len, np.float32)}
  for k, v in example.items():
    padded[k][:n] = v
  return padded


def encode_unpadded(text: str, prompt: str, seq_len: int, tokenizer: CharTokenizer,
                    close_is_target: bool = True, masked=()) -> dict[str, np.ndarray]:
  """`encode_example` without the padding: arrays of the example's own length. `masked`:
  (start, end) character spans of the thinking whose tokens are not targets (the character
  tokenizer maps each thinking character to one token)."""
  ids = tokenizer.encode(text, add_eos=True)
  if len(ids) > seq_len + 1:
    raise ValueError(f"example of {len(ids)} tokens does not fit seq_len={seq_len}: "
                     f"{text[:60]!r}...; raise train.seq_len")
  context = len(tokenizer.encode(prompt)) + 1  # prompt tokens + <think>
  ids = np.asarray(ids, np.int32)
  inputs, targets = ids[:-1], ids[1:]
  mask = np.zeros(len(inputs), np.float32)
  mask[context - 1:] = 1.0
  if not close_is_target:
    mask[targets == tokenizer.end_think_id] = 0.0
  for start, end in masked:
    # Thinking character c is token context + c, predicted at position context + c - 1.
    mask[context - 1 + start: context - 1 + end] = 0.0
  return {"inputs": inputs, "targets": targets, "loss_mask": mask}


class _EncodeIndex(grain.transforms.Map):
  """Index -> encoded example; a module-level class so grain workers can pickle it."""

  def __init__(self, mixture: Mixture, seq_len: int, padded: bool = True):
    self.mixture, self.seq_len, self.tokenizer = mixture, seq_len, CharTokenizer()
    self.padded = padded

  def map(self, index):
    example = self.mixture.render(int(index))
    encode = encode_example if self.padded else encode_unpadded
    return encode(example.text, example.prompt, self.seq_len, self.tokenizer,
                  example.closed_by_model, example.masked)


# Bins filled at once by the packer: more bins fill each row closer to seq_len (a round ends
# when an example fits no bin), at the price of a longer reorder window.
_PACKING_BINS_PER_ROW = 4


def make_dataset(mixture: Mixture, batch_size: int, seq_len: int, *, pack: bool = False,
                 process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """This process's rows (batch_size / process_count) of each global batch of
  {inputs, targets, loss_mask}.

  `pack=False`: one example a row, padded and trimmed to the batch's longest example; each
  process reads its own strided slice of the stream.
  `pack=True`: rows of exactly `seq_len` tokens, each holding as many whole examples as fit
  (grain's first-fit packing), with `inputs_positions` (restarting at 0 in each example) and
  `inputs_segment_ids` (1, 2, ... per example, 0 for padding) beside them. On these tasks a
  padded batch is ~47% real tokens and a packed one ~97%: the same compute trains on about
  twice the examples.
  """
  if batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} must divide evenly over {process_count} processes")
  rows = batch_size // process_count
  ds = grain.MapDataset.range(_SOURCE_LEN)
  if not pack:
    ds = ds[process_index::process_count]  # per-process shard, same global order
    ds = ds.map(_EncodeIndex(mixture, seq_len))
    ds = ds.batch(rows, drop_remainder=True).map(_TrimPadding())
    return ds.to_iter_dataset()
  # Packing depends on which examples meet in a round, so every process packs the whole
  # global batch and keeps its own rows: batches (and results) do not depend on the process
  # count. The price is that each host generates every example, ~0.6 ms each here.
  # In-process reads (num_threads=0): generation is ~0.3 ms of Python an example, and the
  # default 16-thread read-ahead spends ~2 ms an element polling its futures.
  ds = ds.map(_EncodeIndex(mixture, seq_len, padded=False)).to_iter_dataset(
      grain.ReadOptions(num_threads=0))
  lengths = {"inputs": seq_len, "targets": seq_len, "loss_mask": seq_len}
  # Emitted rounds are whole multiples of a batch, so every batch is rows of one round and
  # the iterator state (checkpointed with the model) restores exactly.
  ds = grain.experimental.FirstFitPackIterDataset(
      ds, length_struct=lengths, num_packing_bins=_PACKING_BINS_PER_ROW * batch_size,
      shuffle_bins=False, meta_features=("targets", "loss_mask"))
  ds = ds.batch(batch_size, drop_remainder=True)
  if process_count > 1:
    ds = ds.map(_Rows(process_index * rows, (process_index + 1) * rows))
  # One batch read ahead on a thread: generation and packing (~50 ms of Python for 24 rows)
  # overlap the train step, whose XLA compute releases the GIL.
  return grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=1)


class _Rows(grain.transforms.Map):
  """This process's rows [start, stop) of a global batch."""

  def __init__(self, start: int, stop: int):
    self.start, self.stop = start, stop

  def map(self, batch):
    return {k: v[self.start:self.stop] for k, v in batch.items()}


class _TrimPadding(grain.transforms.Map):
  """Drops padding columns past the batch's longest example (to a multiple of 16, so only
  a handful of shapes are ever compiled)."""

  def map(self, batch):
    used = int(np.max(np.nonzero(batch["loss_mask"].any(0))[0], initial=0)) + 1
    width = min(batch["inputs"].shape[1], -(-used // 16) * 16)
    return {k: v[:, :width] for k, v in batch.items()}


def heldout_problems(task_names: Sequence[str], difficulties: Sequence[int], n: int,
                     seed: int = 1234, split_key: str = tasks_lib.DEFAULT_SPLIT_KEY
                     ) -> dict[tuple[str, int], list[tasks_lib.Problem]]:
  """n held-out problems per (task, difficulty), disjoint from every training stream that
  draws from the same `split_key`."""
  return {(t, d): tasks_lib.get_task(t).generate_problems(seed, d, n, split="eval",
                                                          split_key=split_key)
          for t in task_names for d in difficulties}
