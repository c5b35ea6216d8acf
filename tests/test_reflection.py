"""Reflective traces (issue 19): solve, candidate, check by another route, correction."""

import itertools
import re

import numpy as np
import pytest

from o1jax.tasks import reflection
from o1jax.tasks.registry import TASKS, get_task
from o1jax.training import data as data_lib

LEVELS = [(name, d) for name in sorted(TASKS) for d in (1, 2, 3, 4, 5)]


def _eval_side(text: str, x: int) -> int:
  """An equation side evaluated by Python (an independent reference): `3(x+4)` -> `3*(x+4)`."""
  text = re.sub(r"([0-9])\(", r"\1*(", text)
  text = re.sub(r"([0-9])x", r"\1*x", text)
  return eval(text.replace("x", f"({x})"))


@pytest.mark.parametrize("name,difficulty", LEVELS)
def test_checker_accepts_the_corrected_path_and_flags_only_the_wrong_step(name, difficulty):
  task = get_task(name)
  rng = np.random.default_rng(difficulty)
  corrected = 0
  for problem in task.generate_problems(7, difficulty, 40):
    for error in (False, True):
      trace = task.reflective_trace(problem, rng, error)
      steps = list(trace.steps)
      verdicts = [task.check_step(problem, steps[:i], s) for i, s in enumerate(steps)]
      assert verdicts == [i != trace.wrong_step for i in range(len(steps))], steps
      assert steps[-1].endswith(" ok")
      candidates = reflection.candidates(steps)
      assert candidates[-1] == problem.answer
      assert task.verify(problem, f"<think>{'; '.join(steps)}</think>{candidates[-1]}")
      if trace.wrong_step is not None:
        corrected += 1
        assert len(candidates) == 2 and not task.verify(problem, candidates[0])
        assert sum(s.endswith(" wait") for s in steps) == 1
        # Nothing may follow the accepted check; a forged verdict is wrong.
        assert not task.check_step(problem, steps, steps[-1])
        forged = steps[-1].replace(" ok", " wait")
        assert not task.check_step(problem, steps[:-1], forged)
  # Every level except the first countdown leaf leaves room for a slip in most problems.
  assert corrected >= (10 if (name, difficulty) == ("countdown", 1) else 30)


def test_checks_compute_what_an_independent_reference_computes():
  rng = np.random.default_rng(0)
  addition, equation, countdown = (get_task(n) for n in ("addition", "equation", "countdown"))
  for d in (1, 3, 5):
    for problem in addition.generate_problems(3, d, 30):
      a, b = problem.data
      for candidate in (a + b, a + b + 10 ** int(rng.integers(d + 1))):
        checks = addition.check_steps(problem, str(candidate))
        assert checks[0] == f"check {candidate}-{b}"
        digits = [int(s.split("=")[1]) for s in checks[1:-1]]
        assert all(0 <= v <= 9 for v in digits)
        assert int("".join(map(str, reversed(digits)))) == (candidate - b)
        assert checks[-1] == f"{candidate - b} vs {a} " + ("ok" if candidate == a + b else "wait")
  for d in (1, 2, 3, 4, 5):
    for problem in equation.generate_problems(3, d, 30):
      x = int(problem.answer)
      left, right = problem.prompt.split("=")
      for candidate in (x, x + 1):
        verdict = equation.check_steps(problem, str(candidate))[-1]
        assert verdict == (f"{_eval_side(left, candidate)} vs {_eval_side(right, candidate)} "
                           + ("ok" if candidate == x else "wait"))
  for d in (2, 5):
    for problem in countdown.generate_problems(3, d, 30):
      target = problem.data[-1]
      verdict = countdown.check_steps(problem, problem.answer)[-1]
      assert verdict == f"{eval(problem.answer)} vs {target} ok"


def test_level5_is_harder_than_level4_by_construction():
  addition, equation, countdown = (get_task(n) for n in ("addition", "equation", "countdown"))
  for problem in addition.generate_problems(0, 5, 50):
    assert all(len(str(v)) == 8 for v in problem.data)
  for problem in equation.generate_problems(0, 5, 50):
    assert problem.prompt.count("(") == 2 and len(problem.steps) == 10
  ops = {"+": lambda u, v: u + v, "-": lambda u, v: u - v, "*": lambda u, v: u * v}
  for problem in countdown.generate_problems(0, 5, 50):
    *numbers, target = problem.data
    assert len(numbers) == 4
    # Brute force over the 27 operator paths in search order: the first success is past
    # the whole first branch, and the trace is that depth-first search.
    leaves = []
    for path in itertools.product("+-*", repeat=3):
      value = numbers[0]
      for op, n in zip(path, numbers[1:]):
        value = ops[op](value, n)
      leaves.append(value)
    assert leaves.index(target) >= 9
    assert sum(s.endswith(" no") for s in problem.steps) == leaves.index(target)
    assert countdown.verify(problem, problem.answer)
  lengths = {d: np.mean([len("; ".join(t.reflective_trace(p).steps))
                         for t in (addition, equation, countdown)
                         for p in t.generate_problems(1, d, 40)]) for d in (4, 5)}
  assert lengths[5] > 1.5 * lengths[4]


def test_cut_traces_close_with_the_best_answer_so_far():
  mixture = data_lib.Mixture(difficulties=(1, 2, 3, 4, 5), trace_style="reflective",
                             no_thinking_fraction=0.0, truncated_thinking_fraction=1.0,
                             error_fraction=0.5)
  kinds = {"unrefuted": 0, "refuted": 0, "none": 0}
  for i in range(300):
    example = mixture.render(i)
    problem, _ = mixture.example(i)
    task = get_task(problem.task)
    assert not example.closed_by_model
    thinking, answer = example.text[len(problem.prompt) + 7:].split("</think>")
    # The cut is a prefix of one of the two traces this example can have been built from.
    rng = np.random.default_rng([mixture.seed, i, 2])
    rng.random(), rng.random()
    full = "; ".join(task.reflective_trace(problem, rng, bool(rng.random() < 0.5)).steps)
    assert full.startswith(thinking) and len(thinking) < len(full)
    pieces, full_steps = thinking.split("; "), full.split("; ")
    whole = pieces if pieces[-1] == full_steps[len(pieces) - 1] else pieces[:-1]
    # Independent reading of the rule: the latest `so X` after which no `wait` was written.
    latest = None
    for step in whole:
      if step.startswith("so "):
        latest = step[3:]
      if step.endswith(" wait"):
        latest = None
    expected = latest if latest is not None else problem.answer
    assert answer == expected
    kinds["none" if latest is None and not any(s.startswith("so ") for s in whole)
          else "refuted" if latest is None else "unrefuted"] += 1
  assert min(kinds.values()) > 0, kinds


def test_wrong_step_is_context_not_target():
  mixture = data_lib.Mixture(trace_style="reflective", no_thinking_fraction=0.0,
                             error_fraction=1.0)
  tokenizer = data_lib.CharTokenizer()
  seen = 0
  for i in range(20):
    example = mixture.render(i)
    if not example.masked:
      continue
    seen += 1
    (start, end), = example.masked
    problem, _ = mixture.example(i)
    thinking = example.text[len(problem.prompt) + 7:].split("</think>")[0]
    wrong = thinking[start:end]
    assert not get_task(problem.task).check_step(
        problem, thinking[:start].split("; ")[:-1], wrong)
    encoded = data_lib.encode_unpadded(example.text, example.prompt, 700, tokenizer,
                                       example.closed_by_model, example.masked)
    targets = tokenizer.decode(encoded["targets"][encoded["loss_mask"] == 0], stop_at_eos=False)
    assert targets.endswith(wrong)  # the prompt (context), then exactly the wrong step
    assert encoded["loss_mask"].sum() == len(encoded["targets"]) - len(problem.prompt) - len(wrong)
  assert seen >= 10


def test_bad_trace_settings_are_rejected():
  with pytest.raises(ValueError, match="trace style must be one of"):
    data_lib.Mixture(trace_style="fancy")
  with pytest.raises(ValueError, match="error_fraction=0.2 needs trace_style='reflective'"):
    data_lib.Mixture(error_fraction=0.2)
  with pytest.raises(ValueError, match="error_fraction must be in"):
    data_lib.Mixture(trace_style="reflective", error_fraction=1.5)
