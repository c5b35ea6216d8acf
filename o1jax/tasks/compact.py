"""Thinking plans of decreasing length for budget-conditioned thinking (L1-style).

A budget-conditioned model must *plan for* its target instead of starting the full trace and
being cut mid-step (what s1-style budget forcing does). For each problem this module lists
thinking texts from the most informative to the shortest, each a complete route to the
answer that a model can learn to write:

  full       the reflective trace: solve steps, `so X`, the check and its verdict
  solve_so   the solve steps and `so X`, without the check
  solve      the solve steps only (the model was trained to answer from cut traces)
  compact    task-specific short forms (below)
  direct     no thinking at all

Compact forms (one thinking token = one character):
  addition   `pairs`: each column's two digits and sum (carry in included, two digits),
             right to left, `41=05,49=13,68=15,07=08,86=14` (the column step without
             its `+` signs); `sums`: the column sums alone, `0513150814` (the tens
             digit is the carry); `digits`: the answer's digits reversed, `535841`
             (least significant first, the order the columns are added in). Fixed width:
             the length follows from the digit count, not from carries.
  equation   `results`: the solve steps whose right side is a number, `9(x+1)=90;
             x+1=10; x=9` (the subtraction and division lines dropped); `key2`: the
             line that fixes x and the answer, `5x=45; x=9`; `key`: that line alone
             (`x=4+9` at level 1, `5x=45`, `4x=16`, `x+1=10` at level 4).
  countdown  `route`: the two steps of the winning expression, `6+7=13; 13*5=65` (no
             partial products, no failed branches); `first`: its first step, `7-4=3`
             (the last operator is left to the answer); `search` (budget-dependent):
             the search while it fits, then the route: the model learns to give up
             searching in time rather than be cut mid-search.

`plan_for_budget(problem, n)` is the most informative plan that surely fits under a hard
budget of n (see its docstring: fewer than n characters for every problem of the level).
"""

from __future__ import annotations

import functools
import re

from o1jax import tasks as tasks_lib
from o1jax.tasks.base import STEP_SEP, Problem

PLAN_NAMES = ("full", "solve_so", "solve", "search", "results", "pairs", "sums", "key2",
              "route", "digits", "key", "first", "direct")
_PARTIAL_PRODUCT = re.compile(r"=[0-9]+\+[0-9]+=")
_BOUND_SAMPLES = 2000  # problems per level behind a plan's length bound
_BOUND_SEED = 20_261_130


def _solve_and_candidate(problem: Problem) -> tuple[list[str], list[str]]:
  """(solve steps, the full reflective steps) of the error-free reflective trace."""
  trace = tasks_lib.get_task(problem.task).reflective_trace(problem)
  steps = list(trace.steps)
  so = next(i for i, s in enumerate(steps) if s.startswith("so "))
  return steps[:so], steps


def _addition_compact(problem: Problem) -> dict[str, str]:
  # Fixed width (sums as two digits, `05`): a plan's length follows from the digit count,
  # which the model sees in the prompt, never from carries it has not worked out yet.
  a, b = problem.data
  sums, pairs, carry = [], [], 0
  for column in range(max(len(str(a)), len(str(b)))):
    da, db = a // 10**column % 10, b // 10**column % 10
    total = da + db + carry
    sums.append(f"{total:02d}")
    pairs.append(f"{da}{db}={total:02d}")
    carry = int(total >= 10)
  return {"pairs": ",".join(pairs), "sums": "".join(sums), "digits": str(a + b)[::-1]}


def _equation_compact(problem: Problem) -> dict[str, str]:
  steps = list(problem.steps)
  first_x = next(i for i, s in enumerate(steps) if s.startswith("x="))
  key = steps[first_x - 1] if first_x > 0 else steps[0]
  results = [t for t in steps if re.fullmatch(r"[^=]+=-?[0-9]+", t)]
  return {"results": STEP_SEP.join(results), "key2": f"{key}{STEP_SEP}x={problem.answer}",
          "key": key}


def _countdown_compact(problem: Problem) -> dict[str, str]:
  task = tasks_lib.get_task("countdown")
  check = task.check_steps(problem, problem.answer)  # header, route steps, verdict
  route = [_PARTIAL_PRODUCT.sub("=", s) for s in check[1:-1]]
  return {"route": STEP_SEP.join(route), "first": route[0]}


_COMPACT = {"addition": _addition_compact, "equation": _equation_compact,
            "countdown": _countdown_compact}


def plans(problem: Problem) -> dict[str, str]:
  """Every budget-free plan of `problem` by name (module docstring)."""
  if problem.task not in _COMPACT:
    raise ValueError(f"no compact plans for task {problem.task!r}; known: {sorted(_COMPACT)}")
  solve, full = _solve_and_candidate(problem)
  so = next(s for s in full if s.startswith("so "))
  out = {"full": STEP_SEP.join(full), "solve_so": STEP_SEP.join(solve + [so]),
         "solve": STEP_SEP.join(solve)}
  out.update(_COMPACT[problem.task](problem))
  out["direct"] = ""
  return out


@functools.lru_cache(maxsize=None)
def length_bounds(task: str, difficulty: int) -> dict[str, int]:
  """The longest each plan runs over a fixed sample of the level's problems (train split)."""
  sample = tasks_lib.get_task(task).generate_problems(_BOUND_SEED, difficulty, _BOUND_SAMPLES)
  bounds: dict[str, int] = {}
  for p in sample:
    for name, text in plans(p).items():
      bounds[name] = max(bounds.get(name, 0), len(text))
  return bounds


def prompt_bounds(problem: Problem) -> dict[str, int]:
  """The length bounds a model can know from `problem`'s prompt: its level's, except that
  countdown levels 1-4 (three numbers each; the level is where the search succeeds, which
  the prompt does not show) share one bound."""
  if problem.task == "countdown" and problem.difficulty <= 4:
    merged: dict[str, int] = {}
    for d in (1, 2, 3, 4):
      for name, n in length_bounds("countdown", d).items():
        merged[name] = max(merged.get(name, 0), n)
    return merged
  return dict(length_bounds(problem.task, problem.difficulty))


def bounded_search(problem: Problem, limit: int) -> str | None:
  """Countdown's search kept under `limit` characters: the whole search when it fits, else
  its longest whole-step prefix followed by the route (a step already on the route is not
  repeated); None when not even the first step and the route fit."""
  p = plans(problem)
  if len(p["solve"]) < limit:
    return p["solve"]
  steps, route = p["solve"].split(STEP_SEP), p["route"].split(STEP_SEP)
  for k in range(len(steps) - 1, 0, -1):
    tail = route[1:] if steps[k - 1] == route[0] else route
    text = STEP_SEP.join(steps[:k] + tail)
    if len(text) < limit and len(text) > len(p["route"]):
      return text
  return None


def plan_for_budget(problem: Problem, budget: int, search_reserve: float = 0.125
                    ) -> tuple[str, str]:
  """(name, thinking): the most informative plan whose length a model can count on keeping
  under a hard budget of `budget` thinking tokens.

  Under think()'s cap a model can close by itself only with at most budget - 1 thinking
  tokens (at `budget` the close is forced first), and one character is one token. A plan
  qualifies when its longest run over the problem's level (`length_bounds`: what the model
  can know from the prompt) is under the budget; the longest qualifying plan is taken.
  Countdown's search length is not knowable from the prompt, so when its bound does not
  fit, the `search` plan searches while at least `search_reserve` of the budget is left
  (a margin for a model that counts its tokens roughly) and then  writes the route. Budget 0 (and 1) gives the direct answer."""
  if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
    raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
  if not 0 <= search_reserve < 1:
    raise ValueError(f"search_reserve must be in [0, 1), got {search_reserve!r}")
  options = plans(problem)
  bounds = prompt_bounds(problem)
  if problem.task == "countdown" and bounds["solve"] >= budget:
    search = bounded_search(problem, budget - int(budget * search_reserve))
    if search is not None:
      options["search"] = search
      bounds["search"] = len(search)
  for name, text in sorted(options.items(), key=lambda kv: -len(kv[1])):
    if not text or (len(text) < budget and max(bounds.get(name, 0), len(text)) < budget):
      return name, text
  raise AssertionError("the direct plan is empty")  # unreachable
