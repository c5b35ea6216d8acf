"""Thinking plans of decreasing length for budget-conditioned thinking (L1-style).

A budget-conditioned model must *plan for* its target instead of starting the full trace and
being cut mid-step (what s1-style budget forcing does). For each problem this module lists
thinking texts from the most informative to the shortest, each a complete route to the
answer that a model can learn to write:

  full       the reflective trace: solve steps, `so X`, the check and its verdict
  solve_so   the solve steps and `so X`, without the check
  solve      the solve steps only (the model was trained to answer from cut traces)
  compact    a task-specific short form (below), possibly in two sizes
  direct     no thinking at all

Compact forms (one thinking token = one character):
  addition   `sums`: the column sums right to left, `5,13,15,8,14` (a sum of 10 or more
             carries); `digits`: the answer's digits reversed, `535841` (least significant
             first, the order the columns are added in).
  equation   `key2`: the line that fixes x and the answer, `5x=45; x=9`; `key`: that line
             alone (`x=4+9` at level 1, `5x=45`, `4x=16`, `x+1=10` at level 4).
  countdown  `route`: the two steps of the winning expression, `6+7=13; 13*5=65` (no
             partial products, no failed branches); `first`: its first step, `7-4=3`
             (the last operator is left to the answer).

`plan_for_budget(problem, n)` is the most informative plan of fewer than n characters (the
model's own close must come before think()'s hard cap of n).
"""

from __future__ import annotations

import re

from o1jax import tasks as tasks_lib
from o1jax.tasks.base import STEP_SEP, Problem

PLAN_NAMES = ("full", "solve_so", "solve", "sums", "key2", "route", "digits", "key", "first",
              "direct")
_PARTIAL_PRODUCT = re.compile(r"=[0-9]+\+[0-9]+=")


def _solve_and_candidate(problem: Problem) -> tuple[list[str], list[str]]:
  """(solve steps, the full reflective steps) of the error-free reflective trace."""
  trace = tasks_lib.get_task(problem.task).reflective_trace(problem)
  steps = list(trace.steps)
  so = next(i for i, s in enumerate(steps) if s.startswith("so "))
  return steps[:so], steps


def _addition_compact(problem: Problem) -> dict[str, str]:
  a, b = problem.data
  sums, carry = [], 0
  for column in range(max(len(str(a)), len(str(b)))):
    total = a // 10**column % 10 + b // 10**column % 10 + carry
    sums.append(str(total))
    carry = int(total >= 10)
  return {"sums": ",".join(sums), "digits": str(a + b)[::-1]}


def _equation_compact(problem: Problem) -> dict[str, str]:
  steps = list(problem.steps)
  first_x = next(i for i, s in enumerate(steps) if s.startswith("x="))
  key = steps[first_x - 1] if first_x > 0 else steps[0]
  return {"key2": f"{key}{STEP_SEP}x={problem.answer}", "key": key}


def _countdown_compact(problem: Problem) -> dict[str, str]:
  task = tasks_lib.get_task("countdown")
  check = task.check_steps(problem, problem.answer)  # header, route steps, verdict
  route = [_PARTIAL_PRODUCT.sub("=", s) for s in check[1:-1]]
  return {"route": STEP_SEP.join(route), "first": route[0]}


_COMPACT = {"addition": _addition_compact, "equation": _equation_compact,
            "countdown": _countdown_compact}


def plans(problem: Problem) -> dict[str, str]:
  """Every plan of `problem` by name, most informative first (module docstring)."""
  if problem.task not in _COMPACT:
    raise ValueError(f"no compact plans for task {problem.task!r}; known: {sorted(_COMPACT)}")
  solve, full = _solve_and_candidate(problem)
  so = next(s for s in full if s.startswith("so "))
  out = {"full": STEP_SEP.join(full), "solve_so": STEP_SEP.join(solve + [so]),
         "solve": STEP_SEP.join(solve)}
  out.update(_COMPACT[problem.task](problem))
  out["direct"] = ""
  return out


def plan_for_budget(problem: Problem, budget: int) -> tuple[str, str]:
  """(name, thinking) of the most informative (longest) plan that think() lets a model
  close by itself under a hard budget of `budget` thinking tokens: at most budget - 1
  characters (one character is one thinking token), since once `budget` tokens are written
  the cap forces the close before the model's own `</think>` is read. Budget 0 (and 1)
  gives the direct answer."""
  if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
    raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
  options = sorted(plans(problem).items(), key=lambda kv: -len(kv[1]))
  for name, text in options:
    if len(text) < budget or not text:
      return name, text
  raise AssertionError("the direct plan is empty")  # unreachable
