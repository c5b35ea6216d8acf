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


def pool_size(task_name: str, difficulty: int, split: str = "eval") -> int | None:
  """How many distinct prompts of a level lie in `split`, where that is cheap to count
  (countdown's tables, equation levels 1-4: exhaustive); None where the pool is too large to
  enumerate (addition: about (9 * 10**(digits - 1))**2 / 10 held out; equation level 5)."""
  from o1jax.tasks import countdown, equation  # local: their tables are built on use
  from o1jax.tasks.base import in_split
  task = get_task(task_name)
  difficulty = task.check_difficulty(difficulty)
  if task_name == "countdown":
    prompts = {task.from_prompt(f"{' '.join(map(str, n))} to {t}").prompt
               for n, t in countdown._prompts_by_difficulty(difficulty)}
  elif task_name == "equation" and difficulty <= 4:
    import itertools
    prompts = set()
    for draw in itertools.product(*equation._SAMPLE_SPACE[difficulty]):
      problem = equation._from_draw(difficulty, draw)
      if problem is not None:
        prompts.add(problem.prompt)
  else:
    return None
  return sum(in_split(p, split) for p in prompts)
