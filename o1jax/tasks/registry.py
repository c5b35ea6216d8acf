"""The task families by name, and recognising which task a typed prompt belongs to."""

from __future__ import annotations

from o1jax.tasks.addition import AdditionTask
from o1jax.tasks.base import Problem, Task
from o1jax.tasks.countdown import CountdownTask
from o1jax.tasks.equation import EquationTask

TASKS: dict[str, Task] = {task.name: task for task in (AdditionTask(), EquationTask(),
                                                       CountdownTask())}


def get_task(name: str) -> Task:
  try:
    return TASKS[name]
  except (KeyError, TypeError):
    raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}") from None


def find_task_for_prompt(prompt: str) -> Problem | None:
  """The problem a prompt asks in any task's format (the formats do not overlap)."""
  for task in TASKS.values():
    problem = task.from_prompt(prompt)
    if problem is not None:
      return problem
  return None


def distinct_problems(task_names, difficulties, n: int, seed: int, split: str = "eval"
                      ) -> list[Problem]:
  """`n` problems with distinct prompts per task and difficulty, drawn without replacement
  (a task's generator can repeat a prompt: small levels have small pools). Raises if a
  level's pool holds fewer than `n` distinct prompts."""
  out = []
  for name in task_names:
    task = get_task(name)
    for d in difficulties:
      pool, seen = [], set()
      for p in task.generate_problems(seed, d, 20 * n, split=split):
        if p.prompt not in seen:
          seen.add(p.prompt)
          pool.append(p)
      if len(pool) < n:
        raise ValueError(f"{name} level {d} has only {len(pool)} distinct {split} prompts in "
                         f"{20 * n} draws; ask for fewer than {n}")
      out += pool[:n]
  return out
