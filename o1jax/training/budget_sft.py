"""The supervised stage of budget-conditioned thinking (L1-style): teach a reasoner what a
`[budget N]` prompt asks for before GRPO rewards it for keeping to it.

Each example is `[budget N] <prompt><think><plan></think><answer>`, where the plan is the
most informative thinking of at most N characters (o1jax/tasks/compact.py: the reflective
trace, the solve without the check, a compact solve, or no thinking) and the answer is the
true one. So the model learns to *choose a route that fits* the target, rather than to be
cut mid-step as under budget forcing. Targets are drawn mostly from the budgets evaluated
(small ones weighted up: they hold the new behaviour) and the rest log-uniformly between
them, so nearby targets are understood too; a share of plain, unbudgeted reflective
examples keeps the base's behaviour on ordinary prompts.

`forced_fraction` of examples (0 in v2's recipe; reasoner v3's stage) are plain prompts whose
reflective trace the budget cut after N thinking tokens, N drawn from `forced_budgets`: the
`</think>` is context (the loop forces it), the answer is the latest unrefuted candidate of
the whole steps shown, else the true one (tasks/reflection.best_answer, the base recipe's
rule for cut traces). The base saw such cuts at uniform positions, rarely at 8-32 tokens, and
after learning to answer with no thinking at all it answered worse after 8 forced tokens
than after none (v2: 12.8% vs 20.3%); the forced ladder is where those cuts land.

The fine-tune buckets examples by length (a row padded to 320 costs about three rows of
96), one compiled step per bucket; the loss is the trainer's (thinking, close, answer and
EOS are targets; the budgeted prompt and `<think>` are context).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from o1jax import tasks as tasks_lib
from o1jax.tasks import compact
from o1jax.tasks import reflection
from o1jax.tasks.base import SPLIT_KEYS, STEP_SEP, render_text
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.training import budget_prompt
from o1jax.training import data as data_lib
from o1jax.training import trainer
from o1jax.training.trainer import TrainState


@dataclasses.dataclass(frozen=True)
class BudgetExample:
  task: str
  difficulty: int
  prompt: str          # what the model is given: "[budget N] <prompt>", or the plain prompt
  text: str            # prompt<think>plan</think>answer
  budget: int | None   # None: a plain (unbudgeted) example
  plan: str            # the plan's name (compact.PLAN_NAMES), or "forced"
  forced: bool = False  # the thinking was cut by a budget: `</think>` is context


@dataclasses.dataclass(frozen=True)
class SFTConfig:
  tasks: tuple[str, ...] = ("addition", "equation", "countdown")
  difficulties: tuple[int, ...] = (1, 2, 3, 4)
  targets: tuple[int, ...] = (8, 16, 32, 64, 128, 256)   # the budgets drawn most often
  target_weights: tuple[float, ...] = (3, 4, 4, 2, 1, 1)
  between_fraction: float = 0.2    # targets drawn log-uniformly in [min/2, max]
  plain_fraction: float = 0.1      # unbudgeted reflective examples
  search_reserve: float = 0.125    # countdown's search stops with this share of N left
  num_examples: int = 48_000
  steps: int = 3600
  batch_size: int = 32
  learning_rate: float = 7e-4
  warmup_steps: int = 30
  final_lr_fraction: float = 0.1
  buckets: tuple[int, ...] = (96, 128, 320)              # seq_len of each compiled step
  seed: int = 0
  split_key: str = "prompt"   # the training side of which split (o1jax/tasks/base.py)
  forced_fraction: float = 0.0          # plain prompts cut by a forced budget (docstring)
  forced_budgets: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
  forced_weights: tuple[float, ...] = (4, 4, 3, 2, 1, 1)

  def __post_init__(self):
    for t in self.tasks:
      for d in self.difficulties:
        tasks_lib.get_task(t).check_difficulty(d)
    if not self.targets or len(self.targets) != len(self.target_weights):
      raise ValueError(f"targets {self.targets} and target_weights {self.target_weights} "
                       "must be non-empty and of one length")
    for t in self.targets:
      budget_prompt.check_target_budget(t)
    if any(w < 0 for w in self.target_weights) or sum(self.target_weights) <= 0:
      raise ValueError(f"target_weights must be non-negative, not all 0: {self.target_weights}")
    if not 0 <= self.search_reserve < 1:
      raise ValueError(f"search_reserve must be in [0, 1), got {self.search_reserve}")
    if len(self.forced_budgets) != len(self.forced_weights) or not self.forced_budgets or (
        min(self.forced_weights) < 0 or sum(self.forced_weights) <= 0 or
        min(self.forced_budgets) < 1):
      raise ValueError(f"forced_budgets {self.forced_budgets} must be positive, with one "
                       f"non-negative weight each (not all 0): {self.forced_weights}")
    if self.plain_fraction + self.forced_fraction > 1:
      raise ValueError(f"plain_fraction + forced_fraction must be <= 1, got "
                       f"{self.plain_fraction} + {self.forced_fraction}")
    for name in ("between_fraction", "plain_fraction", "forced_fraction"):
      if not 0 <= getattr(self, name) <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    for name in ("num_examples", "steps", "batch_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
    if self.split_key not in SPLIT_KEYS:
      raise ValueError(f"split_key must be one of {SPLIT_KEYS}, got {self.split_key!r}")
    if list(self.buckets) != sorted(self.buckets) or not self.buckets:
      raise ValueError(f"buckets must be increasing sequence lengths, got {self.buckets}")

  @classmethod
  def from_config_dict(cls, c: ml_collections.ConfigDict) -> "SFTConfig":
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.to_dict().items()})


def budget_example(problem, budget: int | None, search_reserve: float = 0.125
                   ) -> BudgetExample:
  """The training example of `problem` at target `budget` (None: plain prompt, the full
  reflective trace); `search_reserve` as in compact.plan_for_budget."""
  if budget is None:
    name, plan = "full", compact.plans(problem)["full"]
    prompt = problem.prompt
  else:
    budget = budget_prompt.check_target_budget(budget)
    name, plan = compact.plan_for_budget(problem, budget, search_reserve)
    prompt = budget_prompt.with_budget(problem.prompt, budget)
  return BudgetExample(problem.task, problem.difficulty, prompt,
                       render_text(prompt, plan, problem.answer), budget, name)


def forced_example(problem, budget: int) -> BudgetExample:
  """`problem`'s plain prompt with its full reflective trace cut after `budget` thinking
  tokens (one character each) and closed by the budget; a trace that fits closes itself."""
  full = compact.plans(problem)["full"]
  if budget >= len(full):
    return budget_example(problem, None)
  cut = full[:budget]
  # The same whole-step rule as the base recipe's cut traces (training/data.py).
  answer = reflection.best_answer(problem, tasks_lib.whole_steps(full.split(STEP_SEP), budget))
  return BudgetExample(problem.task, problem.difficulty, problem.prompt,
                       render_text(problem.prompt, cut, answer), None, "forced", True)


def draw_target(cfg: SFTConfig, rng: np.random.Generator) -> int:
  if rng.random() < cfg.between_fraction:
    low, high = max(min(cfg.targets) / 2, 1), max(cfg.targets)
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
  w = np.asarray(cfg.target_weights, np.float64)
  return int(cfg.targets[int(rng.choice(len(w), p=w / w.sum()))])


def make_examples(cfg: SFTConfig) -> list[BudgetExample]:
  """cfg.num_examples examples from the training split, uniform over tasks x levels."""
  rng = np.random.default_rng(cfg.seed)
  pairs = [(t, d) for t in cfg.tasks for d in cfg.difficulties]
  out = []
  for _ in range(cfg.num_examples):
    t, d = pairs[int(rng.integers(len(pairs)))]
    problem = tasks_lib.get_task(t).generate(rng, d, split="train", split_key=cfg.split_key)
    u = rng.random()
    if u < cfg.forced_fraction:
      w = np.asarray(cfg.forced_weights, np.float64)
      budget = int(cfg.forced_budgets[int(rng.choice(len(w), p=w / w.sum()))])
      out.append(forced_example(problem, budget))
      continue
    target = None if u < cfg.forced_fraction + cfg.plain_fraction else draw_target(cfg, rng)
    out.append(budget_example(problem, target, cfg.search_reserve))
  return out


def _optimizer() -> optax.GradientTransformation:
  # The learning rate is a leaf of the state (set per step from the host's schedule), so
  # one compiled step per bucket serves the whole schedule.
  return optax.inject_hyperparams(trainer.adamw, static_args=("grad_clip", "weight_decay"))(
      learning_rate=0.0, grad_clip=1.0, weight_decay=0.0)


def bucket_arrays(examples: Sequence[BudgetExample], buckets: Sequence[int], tokenizer
                  ) -> list[dict[str, np.ndarray]]:
  """Encoded examples grouped by the smallest bucket (seq_len) that holds each; an example
  longer than the largest bucket raises ValueError."""
  groups: list[list[dict]] = [[] for _ in buckets]
  for e in examples:
    n = len(tokenizer.encode(e.text, add_eos=True)) - 1
    i = next((i for i, b in enumerate(buckets) if n <= b), None)
    if i is None:
      raise ValueError(f"example of {n} tokens exceeds the largest bucket {buckets[-1]}: "
                       f"{e.text[:60]!r}...")
    groups[i].append(data_lib.encode_example(e.text, e.prompt, buckets[i], tokenizer,
                                             close_is_target=not e.forced))
  return [{k: np.stack([x[k] for x in g]) for k in g[0]} if g else {} for g in groups]


def finetune(params, model_config, examples: Sequence[BudgetExample], cfg: SFTConfig, *,
             tokenizer=None, log: Callable[[str], None] | None = None, log_every: int = 50):
  """(params, losses): cfg.steps AdamW steps, each batch from one length bucket (drawn in
  proportion to the bucket's examples), warmup then cosine decay."""
  tokenizer = tokenizer or CharTokenizer()
  arrays = bucket_arrays(examples, cfg.buckets, tokenizer)
  sizes = np.array([len(a["inputs"]) if a else 0 for a in arrays], np.float64)
  lrs = np.asarray(trainer.lr_schedule(ml_collections.ConfigDict(dict(
      learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps, steps=cfg.steps,
      final_lr_fraction=cfg.final_lr_fraction)))(np.arange(cfg.steps)), np.float32)
  optimizer = _optimizer()
  params = jax.tree.map(jnp.array, params)  # a copy: the step donates its state
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=optimizer.init(params))
  rng = np.random.default_rng(cfg.seed + 1)
  losses, t0, tokens = [], time.time(), 0
  for i in range(cfg.steps):
    b = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
    idx = rng.integers(int(sizes[b]), size=cfg.batch_size)
    batch = {k: jnp.asarray(v[idx]) for k, v in arrays[b].items()}
    hyper = {**state.opt_state.hyperparams, "learning_rate": jnp.asarray(lrs[i])}
    state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
    state, metrics = trainer.train_step(state, batch, model_config, optimizer)
    losses.append(metrics["loss"])
    tokens += cfg.batch_size * cfg.buckets[b]
    if log and ((i + 1) % log_every == 0 or i + 1 == cfg.steps):
      recent = float(np.mean([float(x) for x in losses[-log_every:]]))
      dt = time.time() - t0
      eta = dt / (i + 1) * (cfg.steps - i - 1)
      log(f"sft step {i + 1}/{cfg.steps} loss {recent:.4f} tokens/s {tokens / dt:,.0f} "
          f"eta {int(eta // 60)}m{int(eta % 60):02d}s")
  return state.params, [float(x) for x in losses]
