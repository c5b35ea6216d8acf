"""Problem sets for RL from JSONL files, drawn per step through a grain pipeline.

One JSON object per line:

  {"prompt": "What is 3/4 of 12? Put the final answer in \\boxed{}.", "answer": "9"}
  {"prompt": "12+7=", "answer": "19", "task": "addition"}

`prompt` and `answer` are required non-empty strings; `task` is optional: a built-in task
(o1jax.tasks: addition, equation, countdown) whose own verifier scores the record (its
prompt must be in that task's format and its answer correct), otherwise the run's verifier
(o1jax/rl/verifiers.py) compares the answer. Other keys are ignored; blank lines are skipped.
Every bad record (not JSON, not an object, a missing, empty or non-string field, an unknown
task, an answer its verifier cannot use) raises ValueError naming the file and 1-based line.

Which records a step trains on is a pure function of (seed, step): a grain MapDataset over
record indices, shuffled per epoch with `seed` and repeated, batched `prompts_per_step` at a
time; step s (from 1) is batch s - 1. A resumed run therefore sees the same order with no
iterator state to checkpoint. Each epoch is a fresh permutation, and a step may straddle two
epochs. On several processes each takes a contiguous equal slice of the step's batch
(`shard`), so the processes together train on exactly the one-process batch.

The prompt is the record's text, given to the policy's tokenizer as is: an HF model's
`HFTokenizer.encode_prompt` wraps it in the model's chat template with the generation prompt
and opens thinking (`<think>\\n`), the character tokenizer appends `<think>`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Sequence

import grain
import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.rl import verifiers
from o1jax.tasks.base import Problem

REQUIRED_FIELDS = ("prompt", "answer")


@dataclasses.dataclass(frozen=True)
class RecordProblem(Problem):
  """A problem read from a JSONL file. `task` is "" unless the record named a built-in
  task; `verifier` scores it then (verifiers.verify_problem)."""

  verifier: str = "exact"
  source: str = ""  # "file.jsonl:line", for messages


def _record_problem(path: str, line: int, raw: bytes, verifier: str) -> RecordProblem | None:
  where = f"{path}:{line}"

  def bad(message: str) -> ValueError:
    return ValueError(f"{where}: {message}")

  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise bad(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
  if not text.strip():
    return None
  try:
    record = json.loads(text)
  except json.JSONDecodeError as e:
    raise bad(f"not valid JSON ({e.msg} at column {e.colno})") from None
  if not isinstance(record, dict):
    raise bad(f"a record must be a JSON object with {' and '.join(REQUIRED_FIELDS)}, got "
              f"{type(record).__name__}")
  for field in REQUIRED_FIELDS:
    if field not in record:
      raise bad(f"missing field {field!r} (a record needs {', '.join(REQUIRED_FIELDS)})")
    value = record[field]
    if not isinstance(value, str):
      raise bad(f"field {field!r} must be a string, got {type(value).__name__} "
                f"{json.dumps(value)[:40]} (write it in quotes)")
    if not value.strip():
      raise bad(f"field {field!r} is empty")
  prompt, answer, task = record["prompt"], record["answer"], record.get("task")
  if task is None:
    why = verifiers.check_gold(verifier, answer)
    if why is not None:
      raise bad(why)
    return RecordProblem(task="", difficulty=0, prompt=prompt, steps=(), answer=answer,
                         data=(), verifier=verifier, source=where)
  if not isinstance(task, str) or task not in tasks_lib.TASKS:
    raise bad(f"unknown task {task!r}; known: {', '.join(sorted(tasks_lib.TASKS))} "
              "(or leave 'task' out: the run's verifier scores the record)")
  parsed = tasks_lib.get_task(task).from_prompt(prompt)
  if parsed is None:
    raise bad(f"prompt {prompt[:60]!r} is not a {task} prompt")
  if not tasks_lib.get_task(task).verify(parsed, answer):
    raise bad(f"answer {answer[:60]!r} is not correct for the {task} prompt {prompt[:60]!r}")
  return RecordProblem(task=task, difficulty=parsed.difficulty, prompt=parsed.prompt,
                       steps=parsed.steps, answer=answer, data=parsed.data, verifier=verifier,
                       source=where)


def read_jsonl(path: str, verifier: str = "exact") -> list[RecordProblem]:
  """The records of one JSONL file as problems scored by their task or `verifier`."""
  verifiers.check_name(verifier)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"problem set {path} not found")
  out = []
  with open(path, "rb") as f:
    for line, raw in enumerate(f, 1):
      problem = _record_problem(path, line, raw, verifier)
      if problem is not None:
        out.append(problem)
  if not out:
    raise ValueError(f"{path}: no records (one JSON object per line, with "
                     f"{' and '.join(REQUIRED_FIELDS)})")
  return out


def load_problems(paths: Sequence[str], verifier: str = "exact") -> tuple[RecordProblem, ...]:
  """The records of every file in `paths`, in order. Cached per (paths, verifier, file
  sizes and modification times): each step reads the set without re-parsing it."""
  if isinstance(paths, str) or not paths:
    raise ValueError(f"paths must be a non-empty sequence of JSONL files, got {paths!r}")
  stamps = tuple((os.path.getsize(p), os.path.getmtime(p)) if os.path.isfile(p) else None
                 for p in paths)
  return _load_cached(tuple(paths), verifier, stamps)


@functools.lru_cache(maxsize=8)
def _load_cached(paths, verifier, stamps):
  del stamps  # part of the cache key only
  return tuple(p for path in paths for p in read_jsonl(path, verifier))


@functools.lru_cache(maxsize=32)
def step_dataset(num_records: int, seed: int, per_step: int) -> grain.MapDataset:
  """Batches of record indices: batch s - 1 is step s's (module docstring)."""
  if num_records <= 0 or per_step <= 0:
    raise ValueError(f"need records and a positive batch, got num_records={num_records}, "
                     f"per_step={per_step}")
  return (grain.MapDataset.range(num_records).seed(int(seed) % 2**32).shuffle().repeat()
          .batch(per_step))


def shard_slice(total: int, shard: tuple[int, int] | None) -> slice:
  """Shard (index, count)'s contiguous part of `total` items (None: all of them)."""
  if shard is None:
    return slice(0, total)
  index, count = shard
  if count <= 0 or not 0 <= index < count or total % count:
    raise ValueError(f"cannot split {total} prompts into {count} equal shards (index {index})")
  size = total // count
  return slice(index * size, (index + 1) * size)


def process_shard() -> tuple[int, int]:
  """(this process's index, number of processes), as grain shards by JAX process."""
  s = grain.sharding.ShardByJaxProcess()
  return s.shard_index, s.shard_count


def step_indices(num_records: int, seed: int, step: int, per_step: int,
                 shard: tuple[int, int] | None = None) -> np.ndarray:
  """Record indices of step `step` (from 1), or of `shard`'s part of them."""
  if step < 1:
    raise ValueError(f"steps count from 1, got {step}")
  batch = np.asarray(step_dataset(num_records, seed, per_step)[step - 1])
  return batch[shard_slice(per_step, shard)]


def step_records(problems: Sequence[Problem], seed: int, step: int, per_step: int,
                 shard: tuple[int, int] | None = None) -> list[Problem]:
  return [problems[int(i)] for i in step_indices(len(problems), seed, step, per_step, shard)]
