"""The task families by name, and recognising which task a typed prompt belongs to."""

from __future__ import annotations

from o1jax.tasks.addition import AdditionTask
from o1jax.tasks.base import DEFAULT_SPLIT_KEY, Problem, Task
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


def distinct_problems(task_names, difficulties, n: int, seed: int, split: str = "eval",
                      split_key: str = DEFAULT_SPLIT_KEY) -> list[Problem]:
  """`n` problems with distinct prompts per task and difficulty, drawn without replacement
  (a task's generator can repeat a prompt: small levels have small pools). Raises if a
  level's pool holds fewer than `n` distinct prompts. `split_key`: o1jax/tasks/base.py."""
  out = []
  for name in task_names:
    task = get_task(name)
    for d in difficulties:
      pool, seen = [], set()
      for p in task.generate_problems(seed, d, 20 * n, split=split, split_key=split_key):
        if p.prompt not in seen:
          seen.add(p.prompt)
          pool.append(p)
      if len(pool) < n:
        raise ValueError(f"{name} level {d} has only {len(pool)} distinct {split} prompts in "
                         f"{20 * n} draws; ask for fewer than {n}")
      out += pool[:n]
  return out


def pool_size(task_name: str, difficulty: int, split: str = "eval",
              split_key: str = DEFAULT_SPLIT_KEY) -> int | None:
  """How many distinct prompts of a level lie in `split`, where that is cheap to count
  (countdown's tables, equation levels 1-4: exhaustive); None where the pool is too large to
  enumerate (addition: about (9 * 10**(digits - 1))**2 / 10 held out; equation level 5)."""
  from o1jax.tasks import countdown, equation  # local: their tables are built on use
  task = get_task(task_name)
  difficulty = task.check_difficulty(difficulty)
  if task_name == "countdown":
    problems = {p.prompt: p for p in (task.from_prompt(f"{' '.join(map(str, n))} to {t}")
                                      for n, t in countdown._prompts_by_difficulty(difficulty))}
  elif task_name == "equation" and difficulty <= 4:
    import itertools
    problems = {}
    for draw in itertools.product(*equation._SAMPLE_SPACE[difficulty]):
      problem = equation._from_draw(difficulty, draw)
      if problem is not None:
        problems[problem.prompt] = problem
  else:
    return None
  return sum(task.in_split(p, split, split_key) for p in problems.values())


def permuted_twins(problem: Problem) -> list[Problem]:
  """The other problems of the task with the same operands in another order, whatever their
  level (countdown: the numbers permuted, when the search still reaches the target; addition:
  b+a); equation has none (its prompts have one written form, equation.py)."""
  import itertools
  task = get_task(problem.task)
  if problem.task == "addition":
    a, b = problem.data
    texts = {f"{b}+{a}="}
  elif problem.task == "countdown":
    *numbers, target = problem.data
    texts = {f"{' '.join(map(str, p))} to {target}" for p in itertools.permutations(numbers)}
  else:
    return []
  twins = (task.from_prompt(t) for t in sorted(texts - {problem.prompt}))
  return [t for t in twins if t is not None]


def unseen_heldout_problems(task_name: str, difficulty: int, n: int, seed: int,
                            max_draws: int = 100_000) -> list[Problem]:
  """Up to `n` distinct canonical held-out problems of a level that the prompt-hash split
  (the one reasoner v2 was trained on) held out too, together with every permuted twin: a
  model trained on v2's training side saw neither them nor a reordering of them. Fewer than
  `n` where the level has fewer (countdown level 5 has 24 of 22,680 prompts) or `max_draws`
  held-out draws found fewer. A deterministic function of the arguments."""
  import zlib
  import numpy as np
  task = get_task(task_name)
  difficulty = task.check_difficulty(difficulty)
  rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(b"unseen"),
                                                      zlib.crc32(task_name.encode()),
                                                      difficulty]))
  out, seen = [], set()
  for _ in range(max_draws):
    if len(out) == n:
      break
    # The canonical side named outright: the default split key is v2's prompt hash (base.py),
    # and drawing from it let 56 of 64 countdown level-5 problems sit on the canonical
    # training side, where the level-5 RL runs draw their prompts.
    p = task.generate(rng, difficulty, split="eval", split_key="canonical")
    if p.prompt in seen:
      continue
    seen.add(p.prompt)
    if all(task.in_split(q, "eval", "prompt") for q in [p] + permuted_twins(p)):
      out.append(p)
  return out
