"""Predicting a request's thinking from its prompt alone, for `spf` and `pools`.

A budget head (o1jax/model/heads.py, kind "budget") reads the final hidden state at `<think>`,
which the engine's prefill computes anyway, and predicts log(1 + thinking tokens). It is fit
here on the policy's own greedy thinking lengths over *training-split* problems (never the
held-out prompts a benchmark serves, and never a difficulty label), and shipped beside the
embedded checkpoint (`o1jax/checkpoints/tiny/heads/`).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os

import jax
import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.model.heads import HeadConfig, RewardModel, load_head, save_head
from o1jax.thinking import UNLIMITED, make_think_config, prepare_inputs, think_texts
from o1jax.thinking.controller import prefill
from o1jax.training import heads as heads_lib

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints", "tiny",
                           "heads")


@functools.partial(jax.jit, static_argnames=("config",))
def _prompt_hidden(params, inputs, config):
  return prefill(params, inputs, config)[1]


def prompt_features(params, tokenizer, config, prompts, batch_size: int = 64) -> np.ndarray:
  """[N, embed] final hidden state at each prompt's `<think>` (what the engine's prefill
  gives the head)."""
  out = []
  for start in range(0, len(prompts), batch_size):
    chunk = list(prompts[start:start + batch_size])
    chunk += [chunk[0]] * (batch_size - len(chunk))
    inputs = prepare_inputs(tokenizer, chunk, config)
    out.append(np.asarray(_prompt_hidden(params, inputs, config.compile_key())))
  return np.concatenate(out)[:len(prompts)]


def fit_thinking_head(params, model_config, tokenizer, *, per_level: int = 32, seed: int = 0,
                      train: heads_lib.HeadTrainConfig = heads_lib.HeadTrainConfig(steps=600),
                      log=print):
  """Fits the budget head on greedy thinking lengths of training-split problems.

  Returns (head params, info with the fit's problem count and its error on a held-back 20%).
  """
  config = make_think_config(model_config, tokenizer)
  problems = [p for name in tasks_lib.TASKS for d in tasks_lib.get_task(name).difficulties
              for p in tasks_lib.get_task(name).generate_problems(seed, d, per_level,
                                                                  split="train")]
  prompts = [p.prompt for p in problems]
  log(f"fitting the thinking predictor on {len(prompts)} training-split prompts")
  thoughts = think_texts(params, tokenizer, prompts, config, budgets=UNLIMITED, batch_size=64)
  y = np.log1p([t.thinking_tokens for t in thoughts]).astype(np.float32)
  x = prompt_features(params, tokenizer, config, prompts)
  order = np.random.default_rng(seed).permutation(len(y))
  cut = int(0.8 * len(y))
  fit, held = order[:cut], order[cut:]
  head, _ = heads_lib.train_head(x[fit], y[fit], "budget", train)
  pred = np.expm1(np.maximum(heads_lib.predict(head, x[held], "budget"), 0))
  truth = np.expm1(y[held])
  info = {"problems": len(y), "held_back": len(held),
          "mean_abs_error_tokens": float(np.mean(np.abs(pred - truth))),
          "spearman": float(_spearman(pred, truth))}
  log(f"thinking predictor: mean abs error {info['mean_abs_error_tokens']:.1f} tokens, "
      f"rank correlation {info['spearman']:.2f} on {len(held)} held-back prompts")
  head, _ = heads_lib.train_head(x, y, "budget", train)  # final fit on everything
  return head, info


def _spearman(a, b) -> float:
  from scipy.stats import spearmanr
  return spearmanr(a, b).statistic


def save_thinking_head(directory: str, head, embed_dim: int, info: dict) -> None:
  hidden = int(np.shape(head["w1"])[1])
  save_head(directory, RewardModel(HeadConfig(embed_dim, hidden, "budget"), head), info)


def load_thinking_head(directory: str = SHIPPED_DIR):
  """The budget head saved by `save_thinking_head` (the shipped one by default)."""
  model, info = load_head(directory, "budget")
  return model.head, info


def otsu_split(values) -> tuple[float, float, float] | None:
  """The split of 1-D `values` that maximises the between-class variance (Otsu; 2-means in
  one dimension): (boundary, mean below, mean above), or None for fewer than 2 distinct
  values. The boundary is the midpoint between the two values either side of the cut."""
  x = np.sort(np.asarray(values, np.float64))
  if len(x) < 2 or x[0] == x[-1]:
    return None
  n = len(x)
  below = np.cumsum(x)[:-1]                     # sums of x[:i], i = 1..n-1
  i = np.arange(1, n)
  m0, m1 = below / i, (x.sum() - below) / (n - i)
  score = i * (n - i) * (m1 - m0) ** 2          # n^2 times the between-class variance
  score[x[:-1] == x[1:]] = -1                   # never cut between equal values
  k = int(np.argmax(score))
  return float((x[k] + x[k + 1]) / 2), float(m0[k]), float(m1[k])


@dataclasses.dataclass
class ClassModel:
  """Easy and hard, from the thinking predictor's own predictions and what requests then cost.

  No constant threshold: the boundary is the 2-means (Otsu) split of log(1 + predicted
  thinking) over the last `window` requests, so it follows the traffic and the head.
  The classes *act* (a policy treats hard requests differently) only while they are worth
  separating: once both sides have finished `min_done` requests, when the measured work
  (generated tokens) of the requests predicted hard is at least `min_ratio` times that of
  the ones predicted easy (the head's calibration on this traffic); before that, when the
  two predicted centres are `min_ratio` apart. A policy that isolates hard work can only win
  when hard requests cost many easy ones; at 2.5x (the embedded reasoner's own levels) the
  misjudged easy requests cost more than the separation gains, and every class policy falls
  back to first come, first served.

  `threshold` (predicted tokens) fixes the boundary and makes the classes always act: an
  operator's override, and the constant-threshold policy the tests keep as a wrong variant.
  """
  min_ratio: float = 4.0
  window: int = 512
  min_samples: int = 32
  min_done: int = 8
  threshold: float | None = None

  def __post_init__(self):
    self._log_predicted = collections.deque(maxlen=self.window)
    self._done = collections.deque(maxlen=self.window)   # (side, generated tokens, slot s)
    self._split = None
    self._stale = 0
    self._cached_sides = None

  def observe(self, predicted: float) -> None:
    """A new request's prediction (nan: no prediction, ignored)."""
    if math.isfinite(predicted):
      self._log_predicted.append(math.log1p(max(predicted, 0.0)))
      self._stale += 1

  def _current(self):
    # Re-split every 16 new predictions (a sort of `window` values), not every request.
    if self._split is None or self._stale >= 16:
      self._stale = 0
      if len(self._log_predicted) >= self.min_samples:
        self._split = otsu_split(self._log_predicted)
    return self._split

  def boundary(self) -> float | None:
    """Predicted thinking tokens from which a request is on the hard side (None: not yet)."""
    if self.threshold is not None:
      return self.threshold
    split = self._current()
    return None if split is None else math.expm1(split[0])

  def side(self, predicted: float) -> str | None:
    b = self.boundary()
    if b is None or not math.isfinite(predicted):
      return None
    return "hard" if predicted >= b else "easy"

  def record(self, side: str | None, generated_tokens: int, slot_seconds: float) -> None:
    """A finished request's measured cost, under the side it was predicted on."""
    if side is not None:
      self._done.append((side, generated_tokens, slot_seconds))
      self._cached_sides = None

  def _sides(self):
    if self._cached_sides is None:
      self._cached_sides = self._split_sides()
    return self._cached_sides

  def _split_sides(self):
    """(work ratio, hard slot-time share) of the finished requests, or (None, None)."""
    work = {"easy": [0, 0.0, 0.0], "hard": [0, 0.0, 0.0]}   # count, tokens, slot seconds
    for side, w, s in self._done:
      acc = work[side]
      acc[0] += 1
      acc[1] += w
      acc[2] += s
    (ne, we, se), (nh, wh, sh) = work["easy"], work["hard"]
    if min(ne, nh) < self.min_done:
      return None, None
    return (wh / nh) / max(we / ne, 1.0), sh / max(se + sh, 1e-12)

  def work_ratio(self) -> float | None:
    """Measured hard-side work over easy-side work (None until both sides have `min_done`)."""
    return self._sides()[0]

  def separable(self) -> bool:
    if self.threshold is not None:
      return True
    split = self._current()
    if split is None:
      return False
    ratio = self.work_ratio()
    if ratio is None:
      ratio = math.expm1(split[2]) / max(math.expm1(split[1]), 1.0)
    return ratio >= self.min_ratio

  def hard_share(self) -> float | None:
    """The hard side's share of slot time among the last finished requests."""
    return self._sides()[1]
