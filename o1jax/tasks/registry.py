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
