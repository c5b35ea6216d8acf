"""Reflective traces: solve, state a candidate, check it by another route, correct on a miss.

A reflective thinking trace is a sequence of attempts. Each attempt is the task's own solve
steps, then `so X` (the candidate answer), then the check: a header (`check ...`), the steps
of a second computation that does not reuse the solve (addition subtracts back, an equation
substitutes the candidate into both sides, countdown recomputes the expression), and a
verdict `V vs W ok` or `V vs W wait`. A `wait` starts the next attempt: addition and
equation solve again from the start, countdown resumes its search after the leaf that was
wrongly taken for a hit. The last attempt ends in `ok`, and the answer after `</think>` is
its candidate:

  347+285=<think>7+5+0=12; 4+8+1=14; 3+2+1=6; so 642; check 642-285; 12-5-0=7;
  14-8-1=5; 6-2-1=3; 357 vs 347 wait; 7+5+0=12; 4+8+1=13; 3+2+1=6; so 632; check 632-285;
  12-5-0=7; 13-8-1=4; 6-2-1=3; 347 vs 347 ok</think>632

Training traces carry an injected error (`4+8+1=14` above) in a share of examples; the
wrong step is masked out of the loss (`Trace.wrong_step`), so the model learns to catch and
correct an error without learning to make one. The verdict is a comparison of two adjacent
numbers, the form the countdown task showed a tiny model can learn (docs/RESULTS.md).

A task supplies four hooks: `candidate` (what `so` must say after the solve steps as
written), `check_steps` (header, steps and verdict for a candidate), `erroneous_solve` (a
solve with one wrong step and the steps that follow a `wait`) and `resume` (the solve
history a checker replays after a `wait`). Everything else, building, step checking and the
best answer of a cut trace, is here and shared.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

SO = "so "
CHECK = "check "
OK = " ok"
WAIT = " wait"
TRACE_STYLES = ("plain", "reflective", "scratchpad")


@dataclasses.dataclass(frozen=True)
class Trace:
  """A reflective thinking trace: its steps, and which one (if any) was made wrong."""
  steps: tuple[str, ...]
  wrong_step: int | None = None


def verdict(value, expected) -> str:
  return f"{value} vs {expected}{OK if value == expected else WAIT}"


def build_trace(task, problem, rng: np.random.Generator | None = None,
                error: bool = False) -> Trace:
  """The reflective trace of `problem`; with `error` (and a task that can make one for
  this problem), the first attempt has one wrong step and is caught and corrected."""
  steps: list[str] = []
  wrong = None
  if error:
    bad = task.erroneous_solve(problem, rng)
    if bad is not None:
      bad_steps, wrong_index, rest = bad
      candidate = task.candidate(problem, bad_steps)
      checks = task.check_steps(problem, candidate)
      assert checks[-1].endswith(WAIT), (problem, bad_steps, checks)
      steps = list(bad_steps) + [SO + candidate] + checks
      wrong = wrong_index
      solve = list(rest)
    else:
      solve = list(problem.steps)
  else:
    solve = list(problem.steps)
  steps += solve + [SO + problem.answer] + task.check_steps(problem, problem.answer)
  return Trace(tuple(steps), wrong)


@dataclasses.dataclass
class _Replay:
  phase: str                 # "solve", "check" or "done"
  solve: list[str]           # the solve history the next solve step follows
  expected: list[str]        # the check steps of the current candidate
  checked: int               # check steps already written


def _replay(task, problem, prev_steps: Sequence[str]) -> _Replay | None:
  """Where a trace written as `prev_steps` stands, or None if its structure is broken."""
  state = _Replay("solve", [], [], 0)
  for text in prev_steps:
    if state.phase == "solve":
      if text.startswith(SO):
        expected = task.check_steps(problem, text[len(SO):].strip())
        if not expected:
          return None
        state = _Replay("check", state.solve, expected, 0)
      else:
        state.solve.append(text)
    elif state.phase == "check":
      state.checked += 1
      if state.checked == len(state.expected):
        if state.expected[-1].endswith(WAIT):
          state = _Replay("solve", task.resume(problem, state.solve), [], 0)
        else:
          state.phase = "done"
    else:
      return None  # nothing follows an accepted check
  return state


def check_step(task, problem, prev_steps: list[str], step: str) -> bool:
  """Whether `step` is correct after `prev_steps` as written, for plain and reflective
  traces alike: solve steps by the task's own checker, `so X` when X is what the solve as
  written gives, check steps when they are the check of the candidate as written."""
  state = _replay(task, problem, prev_steps)
  if state is None or state.phase == "done":
    return False
  if state.phase == "check":
    return step == state.expected[state.checked]
  if step.startswith(SO):
    return step[len(SO):].strip() == task.candidate(problem, state.solve)
  return task._check_step(problem, state.solve, step)


def best_answer(problem, steps: Sequence[str]) -> str:
  """The answer a trace cut after `steps` (whole steps) should close with: the latest
  candidate that no check has refuted, else the problem's answer (the model's best guess
  from the partial work, as in answering without thinking)."""
  answer = problem.answer
  candidate = None
  for text in steps:
    if text.startswith(SO):
      candidate = text[len(SO):].strip()
    elif text.endswith(WAIT):
      candidate = None
  return candidate if candidate is not None else answer


def candidates(thinking_steps: Sequence[str]) -> list[str]:
  """Every candidate a trace states (`so X`), in order."""
  return [s[len(SO):].strip() for s in thinking_steps if s.startswith(SO)]


def check_style(style: str) -> str:
  if style not in TRACE_STYLES:
    raise ValueError(f"trace style must be one of {TRACE_STYLES}; got {style!r}")
  return style
