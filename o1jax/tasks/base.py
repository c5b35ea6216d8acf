"""The shared parts of the verifiable reasoning tasks.

A task example is one line of text, `{prompt}<think>{step}; ...; {step}</think>{answer}`.
This module holds the `Problem` record, rendering and parsing of that text, the
deterministic train/held-out split and the `Task` interface that every task family
implements.

The split hashes a string: with `split_key="canonical"` the task's canonical key of the
problem, which is the same for near-duplicates (countdown's numbers in another order, b+a
for a+b), so a held-out problem never has a twin in training; `split_key="prompt"` hashes
the prompt itself, which put 80-90% of the small levels' held-out prompts beside a permuted
twin in training (issue 31).

The default is still "prompt": the shipped reasoner v2 was trained on that split, and on the
canonical held-out side it would be scored on its own training prompts (780 of 787 level-5
countdown prompts sat, themselves or a twin, on v2's training side). A checkpoint trained on
the canonical split (v3) flips DEFAULT_SPLIT_KEY when it ships; until then new training
chains pass split_key="canonical", and clean evaluations of v2 use
`registry.unseen_heldout_problems` (held out by both splits, twins included).

Model output is untrusted text, so every function that reads it returns a value for any
string instead of raising.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import re
import zlib
from typing import Sequence

import numpy as np

from o1jax.tasks import reflection
from o1jax.tasks.tokenizer import END_THINK_TEXT, THINK_TEXT

STEP_SEP = "; "
SPLITS = ("train", "eval", "any")
SPLIT_KEYS = ("canonical", "prompt")  # what the split hashes (module docstring)
DEFAULT_SPLIT_KEY = "prompt"  # the shipped v2's split (module docstring)
HELDOUT_MODULUS = 10  # one key in HELDOUT_MODULUS is held out for evaluation

# Generated steps and prompts are a few dozen characters; capping what the parsers look at
# keeps their work (and recursion depth) bounded on adversarial model output.
MAX_STEP_CHARS = 100
MAX_PROMPT_CHARS = 200
MAX_ANSWER_CHARS = 200

# What may follow an integer answer: the end, whitespace, or punctuation that cannot
# continue a number or an expression ("4." ends a sentence, "4.5", "4/2", "2x" do not).
INT_ANSWER_END = r"(?=$|\s|[,;:!?<)\]]|\.(?![0-9]))"

# Rejection sampling gives up after this many draws; only a broken task can hit it.
_MAX_DRAWS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Problem:
  """One task instance with its reference thinking steps and answer."""

  task: str
  difficulty: int
  prompt: str
  steps: tuple[str, ...]
  answer: str
  data: tuple  # task-specific parameters (numbers, target, ...), hashable


def thinking_text(problem: Problem) -> str:
  return STEP_SEP.join(problem.steps)


def render(problem: Problem, with_thinking: bool = True) -> str:
  """The training text of `problem`, without end of sequence (the tokenizer adds it)."""
  thinking = thinking_text(problem) if with_thinking else ""
  return render_text(problem.prompt, thinking, problem.answer)


def render_text(prompt: str, thinking: str, answer: str) -> str:
  return f"{prompt}{THINK_TEXT}{thinking}{END_THINK_TEXT}{answer}"


def split_thinking(text: str) -> tuple[str | None, str]:
  """Splits model output into (thinking or None, answer text).

  The answer is whatever follows the last `</think>`; without one the thinking is None and
  the whole text is the answer. The thinking starts after the last `<think>` (or an earlier
  `</think>`) before that, so the output may or may not include the prompt.
  """
  if not isinstance(text, str):
    return None, ""
  end = text.rfind(END_THINK_TEXT)
  if end < 0:
    return None, text
  answer = text[end + len(END_THINK_TEXT):]
  before = text[:end]
  start = 0
  think_at = before.rfind(THINK_TEXT)
  if think_at >= 0:
    start = think_at + len(THINK_TEXT)
  end_at = before.rfind(END_THINK_TEXT)
  if end_at >= 0:
    start = max(start, end_at + len(END_THINK_TEXT))
  return before[start:], answer


def split_steps(thinking: str | None) -> list[str]:
  """The non-empty, stripped steps of a thinking text (split on ";")."""
  if not isinstance(thinking, str):
    return []
  return [s.strip() for s in thinking.split(";") if s.strip()]


def whole_steps(steps: Sequence[str], cut: int) -> list[str]:
  """The steps a trace (`steps` joined by STEP_SEP) states whole when cut after `cut`
  characters, as a forced close sees it: a step cut mid-way states nothing yet."""
  shown = STEP_SEP.join(steps)[:cut].split(STEP_SEP)
  if shown[-1] != steps[len(shown) - 1]:
    shown = shown[:-1]
  return shown


def is_heldout(key: str) -> bool:
  """Deterministic ~10% held-out split by the hash of a string (a prompt or a canonical
  key), stable across runs and machines."""
  digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
  return int(digest, 16) % HELDOUT_MODULUS == 0


def check_split(split: str) -> str:
  if split not in SPLITS:
    raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {split!r}")
  return split


def check_split_key(split_key: str) -> str:
  if split_key not in SPLIT_KEYS:
    raise ValueError(f"split_key must be one of {', '.join(map(repr, SPLIT_KEYS))}; "
                     f"got {split_key!r}")
  return split_key




def parse_int(pattern: re.Pattern[str], text: str) -> int | None:
  """The integer captured by `pattern` at the start of `text`, or None.

  Patterns cap the digit count, which keeps int() clear of Python's limit on converting
  very long digit strings (which raises ValueError).
  """
  match = pattern.match(text[:MAX_ANSWER_CHARS])
  return int(match.group(1)) if match else None


class Task(abc.ABC):
  """A family of generated problems whose answers and thinking steps can be checked.

  Subclasses implement `_sample`, `_parse_prompt`, `_check_answer`, `_check_step` and
  `_max_text_len`; the public methods here validate arguments and guard against
  non-string input so the subclass code only sees what it expects.
  """

  name: str = ""
  difficulties: tuple[int, ...] = (1, 2, 3, 4)

  def __init__(self):
    self._max_len_cache: dict[int, int] = {}

  def __repr__(self) -> str:
    return f"{type(self).__name__}(name={self.name!r})"

  # ---- generation ----

  def check_difficulty(self, difficulty: int) -> int:
    valid = ", ".join(map(str, self.difficulties))
    # bool is an int subclass: True would silently mean difficulty 1.
    if isinstance(difficulty, (bool, np.bool_)) or not isinstance(difficulty, (int, np.integer)):
      raise ValueError(f"difficulty for task {self.name!r} must be one of {valid}; "
                       f"got {difficulty!r}")
    if int(difficulty) not in self.difficulties:
      raise ValueError(f"difficulty for task {self.name!r} must be one of {valid}; "
                       f"got {difficulty!r}")
    return int(difficulty)

  def generate(self, rng: np.random.Generator, difficulty: int, *, split: str = "any",
               split_key: str = DEFAULT_SPLIT_KEY) -> Problem:
    """One random problem of `difficulty` from `split` ("train", "eval" or "any") of the
    split that hashes `split_key` ("canonical" or "prompt", module docstring)."""
    difficulty = self.check_difficulty(difficulty)
    check_split(split)
    check_split_key(split_key)
    for _ in range(_MAX_DRAWS):
      problem = self._sample(rng, difficulty)
      if problem is not None and self.in_split(problem, split, split_key):
        return problem
    raise RuntimeError(f"task {self.name!r} drew no problem of difficulty {difficulty} "
                       f"in split {split!r} after {_MAX_DRAWS} tries")

  def generate_problems(self, seed: int, difficulty: int, n: int, split: str = "train",
                        split_key: str = DEFAULT_SPLIT_KEY) -> list[Problem]:
    """`n` problems, a deterministic function of (task, seed, difficulty, split).

    The task name and difficulty are mixed into the seed so that the same seed gives
    unrelated streams for different tasks and difficulties; a longer list starts with the
    shorter one.
    """
    difficulty = self.check_difficulty(difficulty)
    check_split(split)
    check_split_key(split_key)
    if n < 0:
      raise ValueError(f"n must be >= 0; got {n}")
    entropy = [int(seed), zlib.crc32(self.name.encode()), difficulty]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    return [self.generate(rng, difficulty, split=split, split_key=split_key) for _ in range(n)]

  def canonical_key(self, problem: Problem) -> str:
    """The same string for a problem and its near-duplicates (what the canonical split
    hashes). Tasks whose prompts have no other written form keep this default: the prompt."""
    return problem.prompt

  def split_key_of(self, problem: Problem, split_key: str = DEFAULT_SPLIT_KEY) -> str:
    """The string the split `split_key` hashes for `problem`: canonical key or prompt."""
    if check_split_key(split_key) == "prompt":
      return problem.prompt
    return self.canonical_key(problem)

  def in_split(self, problem: Problem, split: str, split_key: str = DEFAULT_SPLIT_KEY) -> bool:
    """Whether `problem` lies in `split` of the split that hashes `split_key`."""
    if check_split(split) == "any":
      return True
    return is_heldout(self.split_key_of(problem, split_key)) == (split == "eval")

  @abc.abstractmethod
  def _sample(self, rng: np.random.Generator, difficulty: int) -> Problem | None:
    """One draw of the generator; None rejects the draw (the caller draws again)."""

  # ---- parsing and verification ----

  def from_prompt(self, prompt: str) -> Problem | None:
    """The problem (with reference steps and answer) a prompt in this task's format asks,
    or None if it is not in this task's format."""
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
      return None
    return self._parse_prompt(prompt)

  @abc.abstractmethod
  def _parse_prompt(self, prompt: str) -> Problem | None:
    ...

  def verify(self, problem: Problem, text: str) -> bool:
    """Whether free model output `text` ends in a correct answer to `problem`."""
    if not isinstance(text, str):
      return False
    _, answer = split_thinking(text)
    return self._check_answer(problem, answer.strip()[:MAX_ANSWER_CHARS])

  @abc.abstractmethod
  def _check_answer(self, problem: Problem, answer: str) -> bool:
    ...

  def check_step(self, problem: Problem, prev_steps: Sequence[str], step: str) -> bool:
    """Whether `step` is locally correct after `prev_steps` (as written) for `problem`."""
    if not isinstance(step, str) or isinstance(prev_steps, str):
      return False
    try:
      prev = [s.strip() for s in prev_steps]
    except (TypeError, AttributeError):
      return False
    step = step.strip()
    if not step or len(step) > MAX_STEP_CHARS or any(len(s) > MAX_STEP_CHARS for s in prev):
      return False
    return reflection.check_step(self, problem, prev, step)

  @abc.abstractmethod
  def _check_step(self, problem: Problem, prev_steps: list[str], step: str) -> bool:
    """A solve step (not `so`, not a check step) after the solve history as written."""

  def scratchpad_steps(self, problem: Problem) -> list[str]:
    """The steps of the scratchpad trace style; only addition has one."""
    raise ValueError(f"task {self.name!r} has no scratchpad trace style (addition has)")

  # ---- reflective traces (o1jax/tasks/reflection.py) ----

  def reflective_trace(self, problem: Problem, rng: np.random.Generator | None = None,
                       error: bool = False) -> reflection.Trace:
    """Solve, `so X`, check; with `error`, a first attempt with one wrong step, caught by
    its check and corrected."""
    return reflection.build_trace(self, problem, rng, error)

  @abc.abstractmethod
  def candidate(self, problem: Problem, solve_steps: Sequence[str]) -> str | None:
    """The answer the solve steps as written arrive at (what `so` must say), or None."""

  @abc.abstractmethod
  def check_steps(self, problem: Problem, candidate: str) -> list[str] | None:
    """The check of `candidate`: header, steps of a second route, verdict (`ok`/`wait`);
    None if the candidate cannot be checked (not in the answer's form)."""

  @abc.abstractmethod
  def erroneous_solve(self, problem: Problem, rng: np.random.Generator
                      ) -> tuple[list[str], int, list[str]] | None:
    """(solve steps with one wrong step, its index, the solve steps after the `wait`), or
    None when this problem leaves no room for an error its check would catch."""

  def resume(self, problem: Problem, solve_steps: list[str]) -> list[str]:
    """The solve history after a `wait`: by default the solve starts again."""
    del problem, solve_steps
    return []

  # ---- sizing ----

  def max_text_len(self, difficulty: int) -> int:
    """Upper bound of len(render(p)) over generated problems p of `difficulty`.

    This counts characters; `<think>` and `</think>` are one token each, so the token
    count is 13 less (plus one for end of sequence).
    """
    difficulty = self.check_difficulty(difficulty)
    if difficulty not in self._max_len_cache:
      self._max_len_cache[difficulty] = self._max_text_len(difficulty)
    return self._max_len_cache[difficulty]

  @abc.abstractmethod
  def _max_text_len(self, difficulty: int) -> int:
    ...
