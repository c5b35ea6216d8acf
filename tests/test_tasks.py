"""Tests for o1jax.tasks against independent references written here.

The references deliberately use different code paths from the library (string column
arithmetic, Python eval on trusted generated text, itertools brute force), so a shared
bug cannot make both sides agree.
"""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from o1jax.tasks import (STEP_SEP, TASKS, CharTokenizer, Problem, find_task_for_prompt,
                         get_task, is_heldout, render, split_steps, split_thinking,
                         thinking_text)

TASK_DIFFICULTIES = [(name, d) for name in sorted(TASKS) for d in (1, 2, 3, 4, 5)]
TOKENIZER = CharTokenizer()
HYPOTHESIS = settings(max_examples=120, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])

# A pool of generated problems shared by the property tests, so hypothesis spends its
# examples on corruptions rather than on regenerating problems.
POOL = {key: get_task(key[0]).generate_problems(7, key[1], 40, split="any")
        for key in TASK_DIFFICULTIES}
ALL_PROBLEMS = [p for problems in POOL.values() for p in problems]


# ---- independent references ----

def reference_addition_steps(a: str, b: str) -> list[str]:
  width = max(len(a), len(b))
  steps, carry = [], 0
  for da, db in zip(reversed(a.zfill(width)), reversed(b.zfill(width))):
    total = int(da) + int(db) + carry
    steps.append(f"{da}+{db}+{carry}={total}")
    carry = total // 10
  return steps


def eval_side(expression: str, x: Fraction) -> Fraction:
  """Evaluates generated (trusted) equation text with Python, exactly."""
  expression = re.sub(r"([0-9])(x|\()", r"\1*\2", expression)
  expression = re.sub(r"[0-9]+", lambda m: f"Fraction({int(m.group())})", expression)
  return eval(expression, {"Fraction": Fraction, "x": x})  # noqa: S307 (test-only text)


def equation_holds(equation: str, x: Fraction) -> bool:
  lhs, rhs = equation.split("=")
  return eval_side(lhs, x) == eval_side(rhs, x)


def reference_first_success(numbers: list[int], target: int) -> int | None:
  a, b, c = numbers
  for leaf, (op1, op2) in enumerate(itertools.product("+-*", repeat=2)):
    if eval(f"({a}{op1}{b}){op2}{c}") == target:  # noqa: S307 (digits and ops only)
      return leaf
  return None


def replace_char(text: str, index: int, new: str) -> str:
  return text[:index] + new + text[index + 1:]


# ---- generation ----

@pytest.mark.parametrize("name,difficulty", TASK_DIFFICULTIES)
def test_generation_is_deterministic_per_seed(name, difficulty):
  task = get_task(name)
  first = task.generate_problems(3, difficulty, 30)
  assert first == task.generate_problems(3, difficulty, 30)
  assert first[:10] == task.generate_problems(3, difficulty, 10)
  assert first != task.generate_problems(4, difficulty, 30)
  rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
  assert task.generate(rng_a, difficulty) == task.generate(rng_b, difficulty)


@pytest.mark.parametrize("name,difficulty", TASK_DIFFICULTIES)
def test_generated_problems_are_self_consistent(name, difficulty):
  task = get_task(name)
  for problem in task.generate_problems(11, difficulty, 150, split="any"):
    assert (problem.task, problem.difficulty) == (name, difficulty)
    text = render(problem)
    assert text == (f"{problem.prompt}<think>{STEP_SEP.join(problem.steps)}</think>"
                    f"{problem.answer}")
    ids = TOKENIZER.encode(text, add_eos=True)
    assert TOKENIZER.decode(ids) == text
    assert len(ids) == len(text) - len("<think></think>") + 2 + 1
    no_thinking = render(problem, with_thinking=False)
    assert no_thinking == f"{problem.prompt}<think></think>{problem.answer}"
    assert TOKENIZER.decode(TOKENIZER.encode(no_thinking)) == no_thinking

    assert split_thinking(text) == (thinking_text(problem), problem.answer)
    assert split_steps(thinking_text(problem)) == list(problem.steps)
    assert task.verify(problem, text)
    assert task.verify(problem, problem.answer)
    assert task.verify(problem, no_thinking)
    for k, step in enumerate(problem.steps):
      assert task.check_step(problem, problem.steps[:k], step), (problem, k)
    assert task.from_prompt(problem.prompt) == problem
    assert find_task_for_prompt(problem.prompt) == problem
    hash((problem.data, problem.steps))  # frozen and hashable


def test_addition_matches_column_arithmetic():
  task = get_task("addition")
  for difficulty in (1, 2, 3, 4):
    for problem in task.generate_problems(1, difficulty, 200):
      a, b = re.fullmatch(r"([0-9]+)\+([0-9]+)=", problem.prompt).groups()
      assert len(a) == len(b) == difficulty + 1
      assert problem.answer == str(int(a) + int(b))
      assert list(problem.steps) == reference_addition_steps(a, b)


def reference_scratchpad(a: str, b: str) -> list[str]:
  """Nye et al.'s scratchpad by string slicing: what is left of each operand, the digits
  added so far (string concatenation, never integer division) and the carry."""
  steps, result, carry = [f"{a}+{b} r c0"], "", 0
  while a or b:
    total = int(a[-1:] or "0") + int(b[-1:] or "0") + carry
    result, carry = str(total)[-1] + result, int(total >= 10)
    a, b = a[:-1], b[:-1]
    steps.append(f"{int(a or '0')}+{int(b or '0')} r{result} c{carry}")
  return steps


def test_addition_scratchpad_against_string_slicing():
  from o1jax.tasks import addition
  task = get_task("addition")
  assert addition.scratchpad_steps(347, 285) == ["347+285 r c0", "34+28 r2 c1", "3+2 r32 c1",
                                                 "0+0 r632 c0"]
  for difficulty in (1, 2, 3, 4, 5):
    for problem in task.generate_problems(2, difficulty, 100):
      a, b = re.fullmatch(r"([0-9]+)\+([0-9]+)=", problem.prompt).groups()
      steps = task.scratchpad_steps(problem)
      assert steps == reference_scratchpad(a, b)
      assert addition.scratchpad_answer(steps) == str(int(a) + int(b))
      # Every step passes the checker, each judged after the steps before it as written.
      assert all(task.check_step(problem, steps[:i], s) for i, s in enumerate(steps))
      assert not task.check_step(problem, steps, "0+0 r0 c0")  # nothing is left to add
  problem = task.from_prompt("347+285=")
  first = ["347+285 r c0"]
  assert not task.check_step(problem, [], "347+258 r c0")         # the restatement miscopied
  assert not task.check_step(problem, first, "34+28 r2 c0")       # carry dropped
  assert not task.check_step(problem, first, "34+27 r2 c1")       # an operand miscopied
  assert task.check_step(problem, first + ["34+28 r3 c1"], "3+2 r33 c1")  # judged as written
  assert not task.check_step(problem, first + ["34+28 r2 c1"], "3+2 r52 c0")
  assert not task.check_step(problem, first + ["34+28 r2 c1"], "3+2+1=6")  # styles do not mix
  with pytest.raises(ValueError, match="no scratchpad"):
    get_task("equation").scratchpad_steps(get_task("equation").generate_problems(0, 1, 1)[0])


EQUATION_FORMS = {
    1: r"x[+-][0-9]+=[0-9]+",
    2: r"[2-9]x[+-][0-9]+=[0-9]+",
    3: r"[2-9]x\+[0-9]+=[2-9]x\+[0-9]+",
    4: r"[2-9]\(x[+-][0-9]+\)\+[0-9]+=[0-9]+",
}


def test_equation_solutions_by_substitution():
  task = get_task("equation")
  solutions = set()
  for difficulty, form in EQUATION_FORMS.items():
    for problem in task.generate_problems(2, difficulty, 200):
      assert re.fullmatch(form, problem.prompt), problem.prompt
      x = int(problem.answer)
      solutions.add(x)
      assert equation_holds(problem.prompt, Fraction(x))
      assert not equation_holds(problem.prompt, Fraction(x + 1))
      assert problem.steps[-1] == f"x={x}"
      for step in problem.steps:  # every reference step is an equivalent equation
        assert equation_holds(step, Fraction(x)) and not equation_holds(step, Fraction(x + 1))
  assert min(solutions) < 0 < max(solutions)


def test_equation_examples_from_the_spec():
  task = get_task("equation")
  cases = {
      "x+5=13": ("x=13-5; x=8", "8"),
      "x-4=9": ("x=9+4; x=13", "13"),
      "2x+5=13": ("2x=13-5; 2x=8; x=8/2; x=4", "4"),
      "2x+9=3": ("2x=3-9; 2x=-6; x=-6/2; x=-3", "-3"),
      "5x+3=2x+15": ("5x-2x=15-3; 3x=12; x=12/3; x=4", "4"),
      "3(x+4)+5=29": ("3(x+4)=29-5; 3(x+4)=24; x+4=24/3; x+4=8; x=8-4; x=4", "4"),
      "3(x-4)+5=29": ("3(x-4)=29-5; 3(x-4)=24; x-4=24/3; x-4=8; x=8+4; x=12", "12"),
  }
  for prompt, (thinking, answer) in cases.items():
    problem = task.from_prompt(prompt)
    assert (thinking_text(problem), problem.answer) == (thinking, answer)
  assert task.from_prompt("2x+5=14") is None  # no integer solution
  assert task.from_prompt(" 2x + 5 = 13 ").prompt == "2x+5=13"


def test_countdown_difficulty_matches_brute_force():
  task = get_task("countdown")
  buckets = {1: {0, 1}, 2: {2, 3}, 3: {4, 5}, 4: {6, 7, 8}}
  for difficulty in (1, 2, 3, 4):
    seen_leaves = set()
    for problem in task.generate_problems(5, difficulty, 300):
      match = re.fullmatch(r"([1-9]) ([1-9]) ([1-9]) to ([0-9]+)", problem.prompt)
      numbers, target = [int(g) for g in match.groups()[:3]], int(match.group(4))
      assert target > 0
      leaf = reference_first_success(numbers, target)
      assert leaf in buckets[difficulty]
      seen_leaves.add(leaf)
      # leaf+1 leaves plus one internal node per operator tried at depth one
      assert len(problem.steps) == leaf + 1 + leaf // 3 + 1
      assert eval(problem.answer) == target  # noqa: S307 (generated digits and ops)
      assert [s.endswith(" no") for s in problem.steps].count(False) == leaf // 3 + 2
    assert seen_leaves == buckets[difficulty]


def test_countdown_example_from_the_spec():
  task = get_task("countdown")
  problem = task.from_prompt("3 5 2 to 16")
  assert thinking_text(problem) == "3+5=8; 8+2=10 vs 16 no; 8-2=6 vs 16 no; 8*2=16 vs 16"
  assert (problem.answer, problem.difficulty) == ("(3+5)*2", 2)
  negative = task.from_prompt("3 5 9 to 7")
  assert negative.steps[4:6] == ("3-5=-2", "-2+9=7 vs 7")
  # A two-digit number times a digit goes through its partial products.
  wide = task.from_prompt("7 9 8 to 55")
  assert wide.steps[3] == "16*8=80+48=128 vs 55 no" and wide.steps[-1] == "63-8=55 vs 55"
  assert task.from_prompt("1 1 1 to 500") is None  # unreachable
  assert task.from_prompt("3 5 2 to 0") is None
  assert task.from_prompt("3 5 to 8") is None


# ---- sizing and splits ----

@pytest.mark.parametrize("name,difficulty", TASK_DIFFICULTIES)
def test_max_text_len_bounds_samples(name, difficulty):
  task = get_task(name)
  bound = task.max_text_len(difficulty)
  lengths = [len(render(p)) for p in task.generate_problems(0, difficulty, 2000, split="any")]
  assert max(lengths) <= bound
  assert max(lengths) >= 0.8 * bound  # a loose bound would waste sequence length


def test_max_text_len_is_attained_for_addition():
  task = get_task("addition")
  for difficulty in (1, 2, 3, 4):
    nines = "9" * (difficulty + 1)
    worst = task.from_prompt(f"{nines}+{nines}=")
    assert len(render(worst)) == task.max_text_len(difficulty)


@pytest.mark.parametrize("name,difficulty", TASK_DIFFICULTIES)
def test_train_and_heldout_never_overlap(name, difficulty):
  task = get_task(name)
  for split_key, key in (("canonical", task.canonical_key), ("prompt", lambda p: p.prompt)):
    train = task.generate_problems(1, difficulty, 300, split="train", split_key=split_key)
    held = task.generate_problems(1, difficulty, 60, split="eval", split_key=split_key)
    assert not any(is_heldout(key(p)) for p in train)
    assert all(is_heldout(key(p)) for p in held)
    assert not {p.prompt for p in train} & {p.prompt for p in held}


def test_heldout_fraction_is_about_ten_percent():
  prompts = {p.prompt for p in get_task("addition").generate_problems(0, 4, 3000, split="any")}
  fraction = sum(map(is_heldout, prompts)) / len(prompts)
  assert 0.07 < fraction < 0.13


# ---- corruption is rejected ----

@HYPOTHESIS
@given(st.data())
def test_changing_one_digit_of_a_step_is_judged_correctly(data):
  problem = data.draw(st.sampled_from(ALL_PROBLEMS))
  task = get_task(problem.task)
  k = data.draw(st.integers(0, len(problem.steps) - 1))
  step = problem.steps[k]
  positions = [i for i, ch in enumerate(step) if ch.isdigit()]
  i = data.draw(st.sampled_from(positions))
  new = data.draw(st.sampled_from([d for d in "0123456789" if d != step[i]]))
  corrupted = replace_char(step, i, new)
  accepted = task.check_step(problem, problem.steps[:k], corrupted)
  if problem.task == "equation":
    # A changed digit can keep a step true (e.g. "3x=0" -> "5x=0" when x=0), so compare
    # with substitution: true at the solution and not an identity.
    x = Fraction(int(problem.answer))
    try:
      expected = equation_holds(corrupted, x) and not equation_holds(corrupted, x + 1)
    except ZeroDivisionError:
      expected = False
    assert accepted == expected, (problem.prompt, corrupted)
  else:
    assert not accepted, (problem, k, corrupted)


@HYPOTHESIS
@given(st.data())
def test_changing_one_digit_of_the_answer_is_rejected(data):
  problem = data.draw(st.sampled_from(ALL_PROBLEMS))
  task = get_task(problem.task)
  positions = [i for i, ch in enumerate(problem.answer) if ch.isdigit()]
  i = data.draw(st.sampled_from(positions))
  new = data.draw(st.sampled_from([d for d in "0123456789" if d != problem.answer[i]]))
  corrupted = replace_char(problem.answer, i, new)
  assert not task.verify(problem, f"{problem.prompt}<think>{thinking_text(problem)}"
                                  f"</think>{corrupted}")


@HYPOTHESIS
@given(st.data())
def test_steps_out_of_place_are_rejected(data):
  problem = data.draw(st.sampled_from(
      [p for p in ALL_PROBLEMS if p.task in ("addition", "countdown")]))
  task = get_task(problem.task)
  k = data.draw(st.integers(0, len(problem.steps) - 1))
  j = data.draw(st.integers(0, len(problem.steps) - 1))
  j += j >= k  # any position but k's own
  if problem.task == "addition":
    # Column j needs column j's digits and carry, so only an identical step fits there.
    expected = j < len(problem.steps) and problem.steps[k] == problem.steps[j]
    assert task.check_step(problem, problem.steps[:j], problem.steps[k]) == expected
  else:
    # After the successful (last) step the search is over: nothing more is legal.
    assert not task.check_step(problem, problem.steps, problem.steps[k])


def test_addition_check_step_uses_the_carry_as_written():
  task = get_task("addition")
  problem = task.from_prompt("347+285=")
  assert thinking_text(problem) == "7+5+0=12; 4+8+1=13; 3+2+1=6"
  assert task.check_step(problem, ["7+5+0=11"], "4+8+1=13")  # wrong sum, carry still 1
  assert task.check_step(problem, ["7+5+0=9"], "4+8+0=12")
  assert not task.check_step(problem, ["7+5+0=9"], "4+8+1=13")
  assert not task.check_step(problem, [], "7+5+1=13")
  assert not task.check_step(problem, [], "7+5+0=012")
  assert not task.check_step(problem, ["garbage"], "4+8+1=13")
  assert not task.check_step(problem, list(problem.steps), "0+0+0=0")  # past the last column
  assert task.check_step(problem, [" 7+5+0=12 "], " 4+8+1=13 ")


def test_equation_check_step_accepts_any_valid_route():
  task = get_task("equation")
  problem = task.from_prompt("2x+5=13")
  for step in ["2x=8", "x=4", "4x+10=26", "2(x+1)=10", "x=8/2", "-2x=-8", "2*x=8",
               "x+x=8", "(x-4)*3=0", "13=2x+5", "x/2=2", "- ( -x ) = 4"]:
    assert task.check_step(problem, [], step), step
  for step in ["2x=9", "x*x=16", "0=0", "13=13", "x=8/0", "2x=8=8", "x=4/(x-3)", "0x=0",
               "x==4", "2x+", "", "x=4 because", "y=4", "(" * 300 + "x" + ")" * 300 + "=4"]:
    assert not task.check_step(problem, [], step), step


def test_countdown_check_step_rules():
  task = get_task("countdown")
  problem = task.from_prompt("3 5 2 to 16")
  ok = lambda prev, step: task.check_step(problem, prev, step)
  assert ok([], "3+5=8") and ok([], "3*5=15") and ok([], "3-5=-2")
  assert not ok([], "3+5=9")  # arithmetic
  assert not ok([], "5+3=8")  # operands out of order
  assert not ok([], "8+2=10 vs 16 no")  # a leaf needs an internal node first
  assert not ok([], "3+5=8 vs 16 no")
  assert ok(["3+5=8"], "8+2=10 vs 16 no") and ok(["3+5=8"], "8*2=16 vs 16")
  assert not ok(["3+5=8"], "8+2=10 vs 16")  # failed leaf must be marked
  assert not ok(["3+5=8"], "8*2=16 vs 16 no")  # successful leaf must not be
  assert not ok(["3+5=8"], "8+2=10 vs 10")  # the comparison is with the target
  assert not ok(["3+5=8"], "8+2=10 no")  # a leaf compares; a mark alone is not a step
  assert not ok(["3+5=8"], "8*2=16")  # a leaf written as an internal node
  assert not ok(["3+5=8"], "3-5=-2")  # internal node right after an internal node
  assert not ok(["3+5=8"], "15+2=17 vs 16 no")  # not the latest internal result
  assert ok(["3+5=8", "8+2=10 vs 16 no"], "3*5=15")  # backtrack to a new internal node
  assert ok(["3*5=15", "15+2=17 vs 16 no"], "15-2=13 vs 16 no")
  assert not ok(["3+5=8", "8*2=16 vs 16"], "3-5=-2")  # the search already ended
  assert not ok(["nonsense"], "8+2=10 vs 16 no")
  wide = task.from_prompt("7 9 8 to 55")
  ok_wide = lambda prev, step: task.check_step(wide, prev, step)
  node = ["7+9=16", "16+8=24 vs 55 no"]
  assert ok_wide(node, "16*8=80+48=128 vs 55 no") and ok_wide(node, "16*8=128 vs 55 no")
  assert not ok_wide(node, "16*8=80+40=128 vs 55 no")  # wrong partial product
  assert not ok_wide(node, "16-8=80+48=8 vs 55 no")  # partial products only for a product
  assert ok_wide(["7-9=-2", "-2+8=6 vs 55 no"], "-2*8=-16 vs 55 no")


# ---- verification of free text ----

def test_verify_tolerates_formatting_and_rejects_near_misses():
  addition = get_task("addition")
  problem = addition.from_prompt("347+285=")
  for text in ["632", " 632 ", "632.", "632 because", "<think></think>632", "x</think> 632\n",
               "347+285=<think>7+5+0=12</think>632", "+632", "632</think>632"]:
    assert addition.verify(problem, text), text
  for text in ["63", "6320", "632.5", "632/1", "632abc", "", "347+285=", "</think>",
               "632</think>631", "347+285=<think>632", "9" * 5000]:
    assert not addition.verify(problem, text), text

  equation = get_task("equation")
  problem = equation.from_prompt("2x+9=3")
  for text in ["-3", "x=-3", " x = -3 ", "<think>x=-3</think>-3"]:
    assert equation.verify(problem, text), text
  for text in ["3", "-3x", "x=-3/1", "-30", "2x+9=3", "x=", "-"]:
    assert not equation.verify(problem, text), text
  assert not equation.verify(equation.from_prompt("2x+5=13"), "2x+5=13")

  countdown = get_task("countdown")
  problem = countdown.from_prompt("3 5 2 to 16")
  for text in ["(3+5)*2", "2*(5+3)", " ( 3 + 5 ) * 2 ", "(3+5)*2 = 16", "<think></think>(3+5)*2"]:
    assert countdown.verify(problem, text), text
  for text in ["16", "(3+5)*2*1", "(3*5)+2", "8*2", "(3+5)*2+0", "3 5 2 to 16", "(3+5)*2)",
               "((3+5)*2", "-(3+5)*-2", "", "(3+5)*22",
               "(3+5)*2</think>"]:
    assert not countdown.verify(problem, text), text
  division = countdown.from_prompt("6 3 9 to 18")
  assert countdown.verify(division, "(6/3)*9")
  assert not countdown.verify(countdown.from_prompt("9 3 3 to 36"), "9/(3-3)")


def test_split_thinking_and_steps():
  assert split_thinking("632") == (None, "632")
  assert split_thinking("a; b</think>x") == ("a; b", "x")
  assert split_thinking("p<think>t</think>a") == ("t", "a")
  assert split_thinking("p<think>t1</think>a<think>t2</think>b") == ("t2", "b")
  assert split_thinking("a</think>b</think>c") == ("b", "c")
  assert split_thinking("<think>unfinished") == (None, "<think>unfinished")
  assert split_steps(" a ;b;; ;c ") == ["a", "b", "c"]
  assert split_steps("") == []


ALPHABET = st.sampled_from(list("0123456789+-*/()=x ;.no") + ["<think>", "</think>", " no"])
NOISY_TEXT = st.one_of(st.text(), st.lists(ALPHABET, max_size=40).map("".join))


@HYPOTHESIS
@given(problem=st.sampled_from(ALL_PROBLEMS), text=NOISY_TEXT)
def test_verify_and_check_step_never_raise(problem, text):
  task = get_task(problem.task)
  assert isinstance(task.verify(problem, text), bool)
  assert isinstance(task.check_step(problem, [], text), bool)
  assert isinstance(task.check_step(problem, problem.steps[:1], text), bool)
  assert isinstance(task.check_step(problem, [text], problem.steps[-1]), bool)
  thinking, answer = split_thinking(text)
  assert isinstance(answer, str) and (thinking is None or isinstance(thinking, str))
  assert all(isinstance(s, str) and s for s in split_steps(text))


@HYPOTHESIS
@given(text=NOISY_TEXT)
def test_from_prompt_never_raises_and_round_trips(text):
  problem = find_task_for_prompt(text)
  if problem is not None:
    assert isinstance(problem, Problem)
    assert get_task(problem.task).from_prompt(problem.prompt) == problem
    assert get_task(problem.task).verify(problem, problem.answer)


def test_user_typed_prompts_are_recognised():
  assert find_task_for_prompt("347 + 285 =").answer == "632"
  assert find_task_for_prompt("2x + 5 = 13").answer == "4"
  assert find_task_for_prompt(" 3  5 2 to 16 ").answer == "(3+5)*2"
  assert find_task_for_prompt("12+345=").answer == "357"  # unequal lengths
  assert find_task_for_prompt("123456+1=").difficulty == 5  # six to eight digits: level 5
  for text in ["hello", "1+2=", "123456789+1=", "x=4", "", "0012+5="]:
    assert find_task_for_prompt(text) is None, text
  assert find_task_for_prompt(None) is None


# ---- bad arguments ----

def test_bad_arguments_raise_value_error():
  with pytest.raises(ValueError, match=r"^unknown task 'sudoku'; known: addition, "
                                       r"countdown, equation$"):
    get_task("sudoku")
  task = get_task("addition")
  for difficulty in (0, 6, -1, True, "1", 1.0, None):
    with pytest.raises(ValueError, match=r"must be one of 1, 2, 3, 4, 5"):
      task.generate_problems(0, difficulty, 1)
  with pytest.raises(ValueError, match=r"must be one of 1, 2, 3, 4"):
    task.max_text_len(9)
  with pytest.raises(ValueError, match=r"'train', 'eval', 'any'"):
    task.generate_problems(0, 1, 1, split="test")
  with pytest.raises(ValueError, match=r"'train', 'eval', 'any'"):
    task.generate(np.random.default_rng(0), 1, split="heldout")
  with pytest.raises(ValueError, match=r"n must be >= 0"):
    task.generate_problems(0, 1, -1)
  assert task.generate_problems(0, 1, 0) == []
