"""Training the scalar heads of o1jax/model/heads.py, and the data for the two thinking heads.

* `train_head`: a head on frozen features (the policy trunk's hidden states, computed once),
  BCE for the reward and confidence heads (soft labels welcome), squared error for budget.
* `train_sequence_head`: the separate-small-model option, a decoder and a head trained
  together on token sequences with labels at chosen positions.
* `confidence_data`: forced-stop rollouts. For each problem think once, then at every
  `every`-th thinking prefix force `</think>` and decode a greedy answer (what stopping there
  would give); label = the answer verifies; feature = the hidden state of the prefix's last
  token (what the loop holds when its `confidence` rule is due). The probe's own estimate
  (mean greedy-token probability of that answer) comes along, for calibration side by side.
* budget targets: the thinking a problem needed, read off the same rollouts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats

from o1jax.model.config import ModelConfig
from o1jax.model.heads import HeadConfig, RewardModel, apply_head, init_head
from o1jax.model.transformer import forward, init_params
from o1jax.tasks.base import Problem
from o1jax.training import rollouts as rl


@dataclasses.dataclass(frozen=True)
class HeadTrainConfig:
  hidden_dim: int = 64
  steps: int = 400
  batch_size: int = 256
  learning_rate: float = 3e-3
  weight_decay: float = 1e-4
  seed: int = 0


def _is_regression(kind: str) -> bool:
  return kind == "budget"


def head_loss(head, x, y, w, kind: str):
  """Weighted mean loss; y in [0, 1] for the logit heads (soft labels allowed)."""
  out = apply_head(head, x)
  per = (out - y) ** 2 if _is_regression(kind) else optax.sigmoid_binary_cross_entropy(out, y)
  return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1e-9)


@functools.lru_cache(maxsize=16)
def _adamw(lr: float, wd: float, steps: int):
  # Cached so that repeated trainings with the same settings reuse one compiled step.
  return optax.adamw(optax.cosine_decay_schedule(lr, steps, 0.1), weight_decay=wd)


@functools.partial(jax.jit, static_argnames=("kind", "opt"))
def _head_step(head, opt_state, x, y, w, kind, opt):
  loss, grads = jax.value_and_grad(head_loss)(head, x, y, w, kind)
  updates, opt_state = opt.update(grads, opt_state, head)
  return optax.apply_updates(head, updates), opt_state, loss


def train_head(features: np.ndarray, labels: np.ndarray, kind: str,
               cfg: HeadTrainConfig = HeadTrainConfig(), weights: np.ndarray | None = None):
  """(head params, per-step losses). Minibatches of a fixed size (sampled with
  replacement), so one program serves any dataset size."""
  features = np.asarray(features, np.float32)
  labels = np.asarray(labels, np.float32)
  if len(features) == 0 or len(features) != len(labels):
    raise ValueError(f"need matching, non-empty features and labels; got {len(features)} "
                     f"and {len(labels)}")
  weights = np.ones(len(labels), np.float32) if weights is None else np.asarray(weights,
                                                                                np.float32)
  hc = HeadConfig(features.shape[-1], cfg.hidden_dim, kind)
  if _is_regression(kind):
    bias = float(np.average(labels, weights=weights))
  else:  # start at the base rate: the head then only has to learn what moves it
    rate = float(np.clip(np.average(labels, weights=weights), 1e-3, 1 - 1e-3))
    bias = math.log(rate / (1 - rate))
  head = init_head(hc, jax.random.key(cfg.seed), bias)
  opt = _adamw(cfg.learning_rate, cfg.weight_decay, cfg.steps)
  opt_state = opt.init(head)
  rng = np.random.default_rng(cfg.seed)
  losses = []
  for _ in range(cfg.steps):
    idx = rng.integers(0, len(labels), cfg.batch_size)
    head, opt_state, loss = _head_step(head, opt_state, features[idx], labels[idx],
                                       weights[idx], kind, opt)
    losses.append(loss)
  return head, [float(l) for l in losses]


def predict(head, features: np.ndarray, kind: str = "prm") -> np.ndarray:
  """Probabilities for the logit heads, raw outputs for the budget head."""
  out = apply_head(head, jnp.asarray(features, jnp.float32))
  return np.asarray(out if _is_regression(kind) else jax.nn.sigmoid(out))


# ---- the separate small reward model ----

@functools.partial(jax.jit, static_argnames=("config", "kind", "opt"))
def _seq_step(params, opt_state, tokens, positions, y, w, config, kind, opt):
  def loss_fn(p):
    _, hidden, _ = forward(p["trunk"], tokens, positions, None, config)
    return head_loss(p["head"], hidden, y, w, kind)
  loss, grads = jax.value_and_grad(loss_fn)(params)
  updates, opt_state = opt.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, loss


def train_sequence_head(seqs: Sequence[Sequence[int]], label_positions: Sequence[Sequence[int]],
                        labels: Sequence[Sequence[float]], kind: str, trunk_config: ModelConfig,
                        cfg: HeadTrainConfig = HeadTrainConfig()) -> tuple[RewardModel, list]:
  """A fresh small decoder and a head trained together; the loss is read at
  `label_positions[i]` of sequence i. Returns the RewardModel and the losses."""
  if not seqs:
    raise ValueError("no sequences to train the reward model on")
  width = rl._bucket(max(len(s) for s in seqs))
  tokens = rl.TOK.pad_batch([list(s) for s in seqs], width)
  lengths = np.array([len(s) for s in seqs])
  positions = np.where(np.arange(width)[None] < lengths[:, None], np.arange(width)[None], -1)
  y = np.zeros(tokens.shape, np.float32)
  w = np.zeros(tokens.shape, np.float32)
  for i, (pos, lab) in enumerate(zip(label_positions, labels)):
    y[i, list(pos)] = lab
    w[i, list(pos)] = 1.0
  mean = float(np.sum(y * w) / max(np.sum(w), 1))
  hc = HeadConfig(trunk_config.embed_dim, cfg.hidden_dim, kind)
  rate = float(np.clip(mean, 1e-3, 1 - 1e-3))
  params = {"trunk": init_params(trunk_config, jax.random.key(cfg.seed)),
            "head": init_head(hc, jax.random.key(cfg.seed + 1), math.log(rate / (1 - rate)))}
  opt = _adamw(cfg.learning_rate, cfg.weight_decay, cfg.steps)
  opt_state = opt.init(params)
  rng = np.random.default_rng(cfg.seed)
  losses = []
  batch = min(cfg.batch_size, len(seqs))
  for _ in range(cfg.steps):
    idx = rng.integers(0, len(seqs), batch)
    params, opt_state, loss = _seq_step(params, opt_state, jnp.asarray(tokens[idx]),
                                        jnp.asarray(positions[idx], jnp.int32), y[idx], w[idx],
                                        trunk_config, kind, opt)
    losses.append(loss)
  return RewardModel(hc, params["head"], trunk_config, params["trunk"]), [float(l) for l in losses]


# ---- confidence and budget data ----

@dataclasses.dataclass
class ConfidenceData:
  features: np.ndarray     # [N, E] hidden state at the prefix's last token
  labels: np.ndarray       # [N] the forced answer at that prefix verifies
  probe: np.ndarray        # [N] the probe's estimate there (mean greedy-token probability)
  prefix: np.ndarray       # [N] thinking tokens in the prefix
  rollout: np.ndarray      # [N] which rollout
  prompt_features: np.ndarray  # [R, E] hidden state at <think>: the budget head's input
  natural: np.ndarray      # [R] thinking tokens of the full rollout
  correct: np.ndarray      # [R] the full rollout's answer verifies
  needed: np.ndarray       # [R] the budget target (see `needed_thinking`)
  problems: list


def needed_thinking(prefix: np.ndarray, labels: np.ndarray, natural: int, correct: bool) -> int:
  """The thinking a problem needed: the shortest probed prefix from which every forced
  answer (and the full run) is right; a run that ends wrong needed all it used."""
  if not correct:
    return natural
  need = natural
  for k, ok in sorted(zip(prefix.tolist(), labels.tolist()), reverse=True):
    if not ok:
      break
    need = k
  return int(need)


def confidence_data(params, model_config, think_config, problems: Sequence[Problem], *,
                    every: int = 4, seed: int = 0, batch_size: int = 64,
                    tokenizer=None, step_end_ids: Sequence[int] | None = None
                    ) -> ConfidenceData:
  """Forced-stop rollouts at every `every`-th thinking prefix (0 included) of one think()
  run per problem (at think_config's temperature). With `step_end_ids`, at the prefixes
  that end in one of those tokens instead (where a step-end head is read: the
  `confidence_reads="step_ends"` rule); the full run's thinking is the last prefix either way."""
  tok = rl.tokenizer_or_default(tokenizer)
  runs = [r[0] for r in rl.sample_rollouts(params, think_config, problems, 1, seed=seed,
                                           batch_size=batch_size, tokenizer=tok)]
  layouts = [rl.layout(r.prompt, r.thinking, r.answer, tok) for r in runs]
  contexts, positions, meta = [], [], []
  for i, lay in enumerate(layouts):
    n_think = lay.end_think_at - lay.think_at - 1
    if step_end_ids is None:
      ks = list(range(0, n_think, every)) + [n_think]
    else:  # prefix k ends with thinking token k, at index think_at + k
      ends = frozenset(step_end_ids)
      ks = [k for k in range(1, n_think) if lay.ids[lay.think_at + k] in ends] + [n_think]
    positions.append([lay.think_at + k for k in ks])
    for k in ks:
      contexts.append(list(lay.ids[:lay.think_at + 1 + k]) + [tok.end_think_id])
      meta.append((i, k))
  answers, probe = rl.forced_answers(params, model_config, contexts,
                                     think_config.max_answer_tokens, batch_size, tok)
  labels = np.array([rl.verify(problems[i], a) for (i, _), a in zip(meta, answers)])
  hidden = rl.hidden_at(params, model_config, [lay.ids for lay in layouts], positions,
                        batch_size, tok)
  rollout = np.array([i for i, _ in meta])
  prefix = np.array([k for _, k in meta])
  natural = np.array([lay.end_think_at - lay.think_at - 1 for lay in layouts])
  correct = np.array([r.correct for r in runs])
  needed = np.array([needed_thinking(prefix[rollout == i], labels[rollout == i], natural[i],
                                     correct[i]) for i in range(len(runs))])
  if step_end_ids is None:
    prompt_features = np.stack([h[0] for h in hidden])   # prefix 0 is the <think> token
  else:
    prompt_features = np.concatenate(rl.hidden_at(
        params, model_config, [lay.ids for lay in layouts], [[lay.think_at] for lay in layouts],
        batch_size, tok))
  return ConfidenceData(features=np.concatenate(hidden), labels=labels.astype(np.float32),
                        probe=probe, prefix=prefix, rollout=rollout,
                        prompt_features=prompt_features, natural=natural,
                        correct=correct, needed=needed, problems=list(problems))


def oracle_savings(data: ConfidenceData) -> tuple[float, float]:
  """The ceiling of any stop rule at equal accuracy, as fractions of the thinking: stop right
  runs at the first prefix from which the forced answer stays right and wrong runs at once
  (they lose nothing); and the same with wrong runs thinking to the end (a rule that only
  stops when it is sure)."""
  natural = max(data.natural.sum(), 1)
  right = data.needed[data.correct].sum()
  return (float(1 - right / natural),
          float(1 - (right + data.natural[~data.correct].sum()) / natural))


def head_budgets(params, model_config, budget_head, prompts: Sequence[str], *,
                 margin: float = 1.25, slack: int = 4, minimum: int = 0,
                 batch_size: int = 64, tokenizer=None) -> list[int]:
  """`budget="auto"` from the budget head: the predicted thinking need (the head predicts
  log(1 + tokens) from the hidden state at `<think>`) times `margin`, plus `slack`."""
  tok = rl.tokenizer_or_default(tokenizer)
  ids = [tok.encode_prompt(p) for p in prompts]
  hidden = rl.hidden_at(params, model_config, ids, [[len(i) - 1] for i in ids], batch_size, tok)
  pred = predict(budget_head, np.concatenate(hidden), "budget")
  return [max(minimum, int(math.ceil(math.expm1(max(float(v), 0.0)) * margin)) + slack)
          for v in pred]


def budget_policy(params, model_config, budget_head, **kw):
  """prompts -> budgets: the head-driven counterpart of thinking.budget.scaled_policy."""
  return lambda prompts: head_budgets(params, model_config, budget_head, prompts, **kw)


# ---- metrics ----

def auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve: the chance a positive outscores a negative, ties counted
  half, i.e. the Mann-Whitney U of the positives over n_pos * n_neg. nan with one class."""
  scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
  pos, neg = scores[labels], scores[~labels]
  if len(pos) == 0 or len(neg) == 0:
    return float("nan")
  # The statistic does not depend on the p-value method; "asymptotic" skips the exact one.
  u = scipy.stats.mannwhitneyu(pos, neg, method="asymptotic").statistic
  return float(u / (len(pos) * len(neg)))


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
  """Expected calibration error over `bins` equal-width bins of [0, 1]: the mean over
  examples of |mean probability - accuracy| in the example's bin."""
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.float64)
  if len(probs) == 0:
    return float("nan")
  if not ((probs >= 0) & (probs <= 1)).all():
    raise ValueError(f"ece needs probabilities in [0, 1], got values in "
                     f"[{probs.min()}, {probs.max()}]")
  binned = lambda values, stat: scipy.stats.binned_statistic(
      probs, values, stat, bins=bins, range=(0.0, 1.0)).statistic
  count = binned(probs, "count")
  (mean_p, mean_y), filled = binned([probs, labels], "mean"), count > 0
  return float((count[filled] * np.abs(mean_p[filled] - mean_y[filled])).sum() / len(probs))
