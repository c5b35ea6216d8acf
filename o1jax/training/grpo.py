"""GRPO (Shao et al. 2024, DeepSeekMath): policy-gradient training on verifier rewards with
group-normalised advantages and no value model.

One step: draw `prompts_per_step` problems (a pure function of (seed, step)), sample
`group_size` completions of each with think()'s own step (o1jax/rl/rollouts.py: one prefill
per prompt forked to its G rows, continuous batching over `rollout_slots` engine slots;
per-row budgets and PRNG keys are arrays; the thinking budget caps every rollout), score
each with its task's verifier, normalise the rewards within each group,
A = (r - mean) / (std + eps), and take `updates_per_batch` optimizer steps on the clipped
policy-gradient loss

    L = sum_t mask_t [-min(rho_t A, clip(rho_t, 1-eps, 1+eps) A) + beta k3_t] / sum_t mask_t
    rho_t = pi(y_t) / pi_old(y_t),  k3_t = pi_ref(y_t)/pi(y_t) - log(pi_ref(y_t)/pi(y_t)) - 1

averaged over every policy-sampled token of the batch (token-level, as DAPO and Dr. GRPO
normalise, not per sequence first). Masked out: the prompt, forced tokens the policy did not
sample (the close a budget stop forces, padding), and rows excluded below. Log-probs are of
the distribution the loop sampled from: logits / temperature with EOS banned while thinking.
`pi_old` is the trainer's policy before the batch's first update (recomputed only when
`updates_per_batch > 1`; with one update it is pi's own value, stop-gradient); `pi_ref` is
the frozen starting policy, kept only when kl_coef > 0. The losses (`loss_type` "grpo" or
"dr_grpo", DAPO clip-higher, truncated importance sampling against the sampler's recorded
log-probs) are o1jax/rl/losses.py; the log-probs are computed chunked over positions with
the layers rematerialised (o1jax/rl/logprobs.py), never as [B, L, V] logits.

Truncation. A rollout the budget cut (stop reason "budget", or "context" when the cache cut
it) is flagged and handled by `truncation`: "mask" drops it from the loss and from its
group's mean and std; "penalize" keeps it with reward `truncation_penalty` whatever its
forced answer, lowered where budget rewards go below it: a cut rollout scores below the
lowest reward any closed rollout of its prompt can get (`truncated_reward`), so running into
the cap never beats closing late. It is never scored as an ordinary answer.

Budget-conditioned rewards (L1-style, `budget_targets` non-empty): every prompt carries a
target n* drawn from `budget_targets` (o1jax/training/budget_prompt.py) and the reward of a
rollout with n thinking tokens is
    "max":   correct - alpha * max(0, n - n*) / max(n*, 1)   (over-target only; L1-Max-like)
    "exact": correct - alpha * |n - n*| / max(n*, 1)         (L1-Exact-like)
a per-target relative form of L1's length penalty, not its exact formula.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import ml_collections
import numpy as np
import optax

from o1jax import parallel
from o1jax import tasks as tasks_lib
from o1jax.rl import data as rl_data
from o1jax.rl import losses
from o1jax.rl import verifiers
from o1jax.rl.rollouts import (TRUNCATED_REASONS, Rollouts,  # noqa: F401
                               sample_groups)
from o1jax.tasks.base import Problem
from o1jax.thinking import ThinkConfig, make_think_config
from o1jax.rl.update import (GRPOState, LossSettings, _old_logprobs,  # noqa: F401
                             batch_shardings, grpo_loss, make_update_fn, state_shardings,
                             token_logprobs)
from o1jax.training import budget_prompt
from o1jax.training import trainer

TRUNCATION_MODES = ("mask", "penalize")
BUDGET_REWARDS = ("max", "exact")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  base: str = ""                              # checkpoint, training workdir or HF dir; "": embedded
  tasks: tuple[str, ...] = ("addition",)
  difficulties: tuple[int, ...] = (1, 2, 3, 4)
  # Which train/held-out split training prompts come from (o1jax/tasks/base.py): "prompt"
  # is the shipped v2's; "canonical" keeps every permuted twin of a held-out problem out.
  split_key: str = "prompt"
  # JSONL problem sets (o1jax/rl/data.py); (): the built-in task generators (tasks x levels).
  data_files: tuple[str, ...] = ()
  verifier: str = "exact"                     # scores records without a task: exact/numeric/math
  eval_files: tuple[str, ...] = ()            # held-out JSONL, with data_files
  steps: int = 100
  prompts_per_step: int = 16
  group_size: int = 8                         # G completions per prompt
  temperature: float = 1.0
  max_thinking: int = 64                      # think()'s hard budget for every rollout
  cache_len: int = 128
  max_answer_tokens: int = 12
  clip_eps: float = 0.2                       # symmetric clip range (both sides by default)
  clip_eps_low: float | None = None           # DAPO clip-higher: 1 - eps_low ... (None: clip_eps)
  clip_eps_high: float | None = None          # ... 1 + eps_high (DAPO: 0.28; None: clip_eps)
  loss_type: str = "grpo"                     # "grpo" or "dr_grpo" (o1jax/rl/losses.py)
  kl_coef: float = 0.0                        # beta; 0: no KL term and no reference copy
  log_kl: bool = True                         # log the KL when a reference exists (kl_coef > 0)
  updates_per_batch: int = 1                  # optimizer steps per sampled batch (mu)
  tis_cap: float = 2.0                        # C of the TIS weight min(pi_old/pi_sampler, C); 0: off
  dynamic_sampling: bool = False              # DAPO: drop zero-advantage groups, refill
  dynamic_sampling_tries: int = 4             # extra sampling rounds per step at most
  logprob_chunk: int = 512                    # positions per logits block; 0: full [B, L, V]
  remat: bool = True                          # recompute each layer in the backward
  length_bucket: int = 64                     # batch width = longest row rounded up to this
  learning_rate: float = 1e-4
  warmup_steps: int = 0
  final_lr_fraction: float = 1.0              # cosine decay to this fraction (1: constant)
  grad_clip: float = 1.0
  weight_decay: float = 0.0
  adv_eps: float = 1e-4
  truncation: str = "mask"                    # "mask" or "penalize"
  truncation_penalty: float = -0.5            # the reward of a truncated rollout ("penalize")
  budget_targets: tuple[int, ...] = ()        # L1-style targets in the prompt; (): plain prompts
  budget_reward: str = "max"                  # "max" or "exact" (module docstring)
  budget_alpha: float = 0.5
  eval_problems: int = 0                      # held-out problems per (task, level), or the
                                              # first ones of eval_files; 0: none
  eval_every: int = 25
  eval_seed: int = 1234
  log_every: int = 1
  checkpoint_every: int = 10
  max_to_keep: int = 2
  mesh_shape: tuple[int, ...] = parallel.DEFAULT_MESH_SHAPE
  seed: int = 0
  rollout_slots: int = 0                      # engine slots rollouts decode in; 0: half the rows

  def __post_init__(self):
    for t in self.tasks:
      for d in self.difficulties:
        tasks_lib.get_task(t).check_difficulty(d)
    if not self.tasks or not self.difficulties:
      raise ValueError("tasks and difficulties must be non-empty")
    tasks_lib.check_split_key(self.split_key)
    verifiers.check_name(self.verifier)
    for name in ("data_files", "eval_files"):
      files = getattr(self, name)
      if isinstance(files, str) or not all(isinstance(f, str) and f for f in files):
        raise ValueError(f"{name} must be a tuple of JSONL paths, got {files!r}")
    if self.eval_files and not self.data_files:
      raise ValueError("eval_files needs data_files (without them, evaluation draws "
                       "eval_problems from the built-in tasks)")
    if self.eval_files and not self.eval_problems:
      raise ValueError("eval_files with eval_problems=0 evaluates nothing; set eval_problems "
                       "(how many of their records to evaluate)")
    if self.data_files and self.eval_problems and not self.eval_files:
      raise ValueError(f"eval_problems={self.eval_problems} with data_files needs eval_files "
                       "(held-out JSONL records), or set eval_problems=0")
    for name in ("steps", "prompts_per_step", "group_size", "cache_len", "max_answer_tokens",
                 "updates_per_batch", "log_every", "checkpoint_every", "eval_every",
                 "max_to_keep", "length_bucket", "dynamic_sampling_tries"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
    if self.group_size < 2:
      raise ValueError(f"group_size must be >= 2 (advantages are relative to the group), "
                       f"got {self.group_size}")
    if self.truncation not in TRUNCATION_MODES:
      raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {self.truncation!r}")
    if self.loss_type not in losses.LOSS_TYPES:
      raise ValueError(f"loss_type must be one of {losses.LOSS_TYPES}, got {self.loss_type!r}")
    if self.budget_reward not in BUDGET_REWARDS:
      raise ValueError(f"budget_reward must be one of {BUDGET_REWARDS}, got "
                       f"{self.budget_reward!r}")
    for t in self.budget_targets:
      budget_prompt.check_target_budget(t)
    if not isinstance(self.rollout_slots, int) or self.rollout_slots < 0:
      raise ValueError(f"rollout_slots must be a non-negative integer (0: half the rows), got "
                       f"{self.rollout_slots!r}")
    checks = [("temperature", self.temperature > 0), ("max_thinking", self.max_thinking >= 0),
              ("clip_eps", 0 < self.clip_eps < 1), ("kl_coef", self.kl_coef >= 0),
              ("learning_rate", self.learning_rate > 0), ("warmup_steps", self.warmup_steps >= 0),
              ("clip_eps_low", self.clip_eps_low is None or 0 < self.clip_eps_low < 1),
              ("clip_eps_high", self.clip_eps_high is None or self.clip_eps_high > 0),
              ("tis_cap", self.tis_cap >= 0), ("logprob_chunk", self.logprob_chunk >= 0),
              # <= 0 so a cut rollout never outscores a wrong closed one (truncated_reward)
              ("truncation_penalty", self.truncation_penalty <= 0),
              ("adv_eps", self.adv_eps > 0), ("budget_alpha", self.budget_alpha >= 0),
              ("eval_problems", self.eval_problems >= 0),
              ("final_lr_fraction", 0 <= self.final_lr_fraction <= 1)]
    bad = [n for n, ok in checks if not ok]
    if bad:
      raise ValueError("invalid GRPOConfig values: "
                       + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
    if self.max_thinking + self.max_answer_tokens + 2 > self.cache_len:
      raise ValueError(f"cache_len={self.cache_len} cannot hold max_thinking="
                       f"{self.max_thinking} + max_answer_tokens={self.max_answer_tokens} "
                       "and a prompt")

  @property
  def rows(self) -> int:
    return self.prompts_per_step * self.group_size

  @property
  def uses_reference(self) -> bool:
    """The frozen reference (a full parameter copy and a forward per update) exists only
    for the KL term; log_kl reports the KL when it does."""
    return self.kl_coef > 0

  @classmethod
  def from_config_dict(cls, c: ml_collections.ConfigDict) -> "GRPOConfig":
    d = c.to_dict()
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---- rewards and advantages -------------------------------------------------------------

def step_seed(seed: int, step: int) -> int:
  """A 32-bit seed that is a pure function of (seed, step): data and sampling of step `step`."""
  return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])


def step_problems(cfg: GRPOConfig, step: int, shard: tuple[int, int] | None = None
                  ) -> tuple[list[Problem], list[int | None]]:
  """The problems of step `step` and their target budgets (None without budget
  conditioning): from cfg.data_files' records (o1jax/rl/data.py: shuffled epochs, a pure
  function of (seed, step)), else uniform over tasks x difficulties, training split.

  With `shard` = (index, count), the index-th of `count` contiguous equal slices of the
  step's prompts (a process's part: its rows are global rows index * rows / count on)."""
  rng = np.random.default_rng(step_seed(cfg.seed, step))
  if cfg.data_files:
    problems = rl_data.step_records(rl_data.load_problems(cfg.data_files, cfg.verifier),
                                    cfg.seed, step, cfg.prompts_per_step)
    targets = [int(rng.choice(cfg.budget_targets)) if cfg.budget_targets else None
               for _ in problems]
  else:
    pairs = [(t, d) for t in cfg.tasks for d in cfg.difficulties]
    problems, targets = [], []
    for _ in range(cfg.prompts_per_step):
      t, d = pairs[int(rng.integers(len(pairs)))]
      problems.append(tasks_lib.get_task(t).generate(rng, d, split="train",
                                                     split_key=cfg.split_key))
      targets.append(int(rng.choice(cfg.budget_targets)) if cfg.budget_targets else None)
  part = rl_data.shard_slice(cfg.prompts_per_step, shard)
  return problems[part], targets[part]


def _budget_reward(cfg: GRPOConfig, correct, n, target):
  """correct - alpha * gap(n, n*) / max(n*, 1) (module docstring); arrays broadcast."""
  gap = n - target if cfg.budget_reward == "max" else np.abs(n - target)
  return correct - cfg.budget_alpha * np.maximum(gap, 0.0) / np.maximum(target, 1.0)


def truncated_reward(cfg: GRPOConfig, targets, max_thinking: int | None = None):
  """The reward of a cut rollout ("penalize") [N]: `truncation_penalty` (<= 0), lowered to
  the lowest reward a closed rollout with the same target can get plus the penalty, so a
  cut rollout never outscores one that closed, however late. Without that bound a rollout
  cut at the cap (-0.5) beat a correct answer closed at 200 tokens against a target of 8
  (1 - 0.5 * 192 / 8 = -11): running into the cap was rewarded. A closed rollout thinks
  at most `max_thinking` (default cfg.max_thinking) tokens."""
  n_rows = len(targets)
  penalty = np.full(n_rows, cfg.truncation_penalty, np.float64)
  if not cfg.budget_targets:
    return penalty   # closed rollouts score correct in {0, 1} >= 0 >= penalty
  cap = float(cfg.max_thinking if max_thinking is None else max_thinking)
  target = np.asarray(targets, np.float64)
  # The worst closed rollout is wrong and, for either form, thinks 0 or `cap` tokens.
  lowest = np.minimum(_budget_reward(cfg, 0.0, 0.0, target), _budget_reward(cfg, 0.0, cap, target))
  return np.minimum(penalty, lowest + cfg.truncation_penalty)


def rollout_rewards(cfg: GRPOConfig, correct, thinking_tokens, truncated, targets):
  """Rewards [N] and whether each row enters the loss [N] (module docstring)."""
  correct = np.asarray(correct, np.float64)
  reward = correct.copy()
  n = np.asarray(thinking_tokens, np.float64)
  if cfg.budget_targets:
    reward = _budget_reward(cfg, correct, n, np.asarray(targets, np.float64))
  truncated = np.asarray(truncated, bool)
  if cfg.truncation == "penalize":
    cap = max(cfg.max_thinking, int(n.max(initial=0)))
    return (np.where(truncated, truncated_reward(cfg, targets, cap), reward),
            np.ones_like(truncated))
  return reward, ~truncated


def group_advantages(rewards, valid, eps: float, scale: bool = True):
  """(r - mean) / (std + eps) within each group [P, G] over its valid members (population
  std; `scale=False`: r - mean, Dr. GRPO); invalid members and groups with under two valid
  members get 0."""
  return losses.group_advantages(rewards, valid, eps, scale)


# ---- the loss and the update (o1jax/rl/update.py) ---------------------------------------

def loss_settings_for(cfg: GRPOConfig, eos_ids) -> LossSettings:
  """The run's LossSettings. Dr. GRPO's constant row length is the most a rollout can
  generate: max_thinking + max_answer_tokens (plus the close and EOS, a constant)."""
  return LossSettings(cfg.temperature, cfg.clip_eps, cfg.kl_coef, tuple(eos_ids),
                      loss_type=cfg.loss_type, clip_eps_low=cfg.clip_eps_low,
                      clip_eps_high=cfg.clip_eps_high, tis_cap=cfg.tis_cap,
                      max_len=cfg.max_thinking + cfg.max_answer_tokens + 2,
                      chunk=cfg.logprob_chunk, remat=cfg.remat,
                      old_from_batch=cfg.updates_per_batch > 1)


# ---- rollouts (o1jax/rl/rollouts.py) -----------------------------------------------------

def think_config_for(cfg: GRPOConfig, model_config, tokenizer) -> ThinkConfig:
  return make_think_config(model_config, tokenizer, cfg.cache_len, temperature=cfg.temperature,
                           max_answer_tokens=cfg.max_answer_tokens)


def evaluate_policy(params, tokenizer, think_config: ThinkConfig, cfg: GRPOConfig,
                    problems: Sequence[Problem], seed: int, samples: int = 1,
                    temperature: float | None = None) -> dict[str, float]:
  """Mean reward (as training scores it), accuracy, thinking tokens and truncation rate of
  `samples` completions per problem at `temperature` (default cfg.temperature; 0: greedy);
  targets cycle through cfg.budget_targets."""
  targets = [cfg.budget_targets[i % len(cfg.budget_targets)] if cfg.budget_targets else None
             for i in range(len(problems))]
  r = sample_groups(params, tokenizer, think_config, problems, targets, samples,
                    cfg.max_thinking, seed,
                    cfg.temperature if temperature is None else temperature,
                    slots=cfg.rollout_slots or None)
  rows_targets = [t for t in targets for _ in range(samples)]
  reward, valid = rollout_rewards(cfg, r.correct, r.thinking_tokens, r.truncated, rows_targets)
  return {"reward": float(reward[valid].mean()) if valid.any() else float("nan"),
          "accuracy": float(r.correct.mean()),
          "thinking_tokens": float(r.thinking_tokens.mean()),
          "truncation_rate": float(r.truncated.mean())}


def optimizer_for(cfg: GRPOConfig) -> optax.GradientTransformation:
  """The trainer's AdamW with warmup and cosine decay, counted in optimizer steps."""
  steps = cfg.steps * cfg.updates_per_batch
  if cfg.final_lr_fraction == 1.0:  # constant after warmup: the length changes nothing, and
    steps = cfg.warmup_steps + 1    # one key lets runs of any length share the compiled step
  return _optimizer(cfg.learning_rate, cfg.warmup_steps, steps, cfg.final_lr_fraction,
                    cfg.grad_clip, cfg.weight_decay)


@functools.lru_cache(maxsize=16)
def _optimizer(learning_rate, warmup_steps, steps, final_lr_fraction, grad_clip, weight_decay):
  # One object per setting: the jitted update takes it as a static argument.
  return trainer.make_optimizer(ml_collections.ConfigDict(dict(
      learning_rate=learning_rate, warmup_steps=warmup_steps, steps=steps,
      final_lr_fraction=final_lr_fraction, grad_clip=grad_clip, weight_decay=weight_decay)))
