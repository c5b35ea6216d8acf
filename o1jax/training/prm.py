"""Process reward model: a step-scoring head, its training, and best-of-N selection.

Step labels (the tasks' exact checkers, Monte Carlo rollouts, the target mixing them) live
in `prm_labels` and are re-exported here. The PRM is a head on the policy trunk's final hidden
state at each step's delimiter (the `;` after it, `</think>` for the last), so a
search can score a step from the same forward pass and KV cache that produced it; a separate
small decoder under the head is the alternative (`trunk="separate"`). The ORM is the same
head read once, at the EOS after the answer, trained on final-answer correctness.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.model.config import ModelConfig
from o1jax.model.heads import HeadConfig, RewardModel
from o1jax.search import select
from o1jax.tasks.base import Problem
from o1jax.training import heads as heads_lib
from o1jax.training import rollouts as rl


@dataclasses.dataclass(frozen=True)
class PrmConfig:
  policy: str = ""                       # checkpoint dir or workdir ("": the embedded model)
  tasks: tuple[str, ...] = ("addition", "equation", "countdown")
  difficulties: tuple[int, ...] = (1, 2, 3, 4)
  train_problems_per_level: int = 16
  train_samples: int = 4                 # sampled solutions per training problem
  temperature: float = 1.0               # policy sampling (training data and best-of-N)
  mc_samples: int = 4                    # K completions per step prefix
  mc_rollouts: int = 128                 # training rollouts that get Monte Carlo labels
  trunk: str = "policy"                  # "policy": frozen policy trunk | "separate"
  separate_model: tuple = (("embed_dim", 64), ("num_layers", 2), ("num_heads", 2),
                           ("num_kv_heads", 1), ("head_dim", 32), ("mlp_dim", 128))
  head: heads_lib.HeadTrainConfig = heads_lib.HeadTrainConfig()
  eval_problems_per_level: int = 3
  best_of: tuple[int, ...] = (4, 16, 64)
  subsets: int = 32                      # random size-N subsets of the pool per problem
  aggregate: str = "min"                 # step scores -> solution score: "min" | "last" | "prod"
  # The search-regime PRM (prm_experiment): set `cells` to train and judge on those
  # (task, level) cells only, with the settings below.
  cells: tuple[tuple[str, int], ...] = ()
  mc_steps: int = 4                      # Monte Carlo-labelled steps per chosen solution
  hard_negative_weight: float = 3.0      # 1: one round, no up-weighting
  calibration_fraction: float = 0.25     # training problems kept for the Platt fit
  calibration_edges: tuple[int, ...] = (4, 12, 24)   # step-position bins (prm_calibration)
  baseline: str = ""                     # heads dir of the PRM to compare ("": shipped)
  pool_cache: str = ""                   # where sampled pools are kept ("": workdir/pools)
  eval_samples: tuple[int, ...] = ()     # held-out pool size per cell (): best_of[-1] each
  train_cell_problems: tuple[int, ...] = ()  # training problems per cell (): the per-level n
  stages: tuple[str, ...] = ("train", "eval")  # eval alone re-judges the head in the workdir
  cache_len: int = 192
  max_answer_tokens: int = 16
  batch_size: int = 128
  seed: int = 0

  def __post_init__(self):
    if self.trunk not in ("policy", "separate"):
      raise ValueError(f"trunk must be 'policy' or 'separate', got {self.trunk!r}")
    if self.aggregate not in ("min", "last", "prod"):
      raise ValueError(f"aggregate must be 'min', 'last' or 'prod', got {self.aggregate!r}")
    if not self.best_of or list(self.best_of) != sorted(self.best_of) or self.best_of[0] < 1:
      raise ValueError(f"best_of must be non-empty, positive and ascending, got {self.best_of}")
    if not 0 < self.calibration_fraction < 1:
      raise ValueError(f"calibration_fraction must be in (0, 1), got {self.calibration_fraction}")
    for task, level in self.cells:
      tasks_lib.get_task(task).check_difficulty(level)
    if not self.stages or not set(self.stages) <= {"train", "eval"}:
      raise ValueError(f"stages must be a non-empty subset of ('train', 'eval'), got "
                       f"{self.stages}")
    if self.train_cell_problems and len(self.train_cell_problems) != len(self.cells):
      raise ValueError(f"train_cell_problems needs one count per cell ({len(self.cells)}), got "
                       f"{self.train_cell_problems}")
    if self.eval_samples and (len(self.eval_samples) != len(self.cells) or
                              max(self.eval_samples) < self.best_of[-1]):
      raise ValueError(f"eval_samples needs one pool size per cell ({len(self.cells)}) and one "
                       f"of at least best_of[-1]={self.best_of[-1]}, got {self.eval_samples}")


from o1jax.training.prm_labels import (  # noqa: F401  (prm.X is the public name)
    Scored, checker_labels, lay_out, step_prefixes, Completer, think_completer,
    mc_labels, mc_step_choice, step_targets, hard_negative_weights, label_agreement)


def separate_config(cfg: PrmConfig, policy_config: ModelConfig) -> ModelConfig:
  return policy_config.replace(**dict(cfg.separate_model))


def train_reward_heads(items: Sequence[Scored], policy_params, policy_config: ModelConfig,
                       cfg: PrmConfig) -> dict[str, RewardModel]:
  """PRMs on checker labels ("prm_checker"), on Monte Carlo labels where present
  ("prm_mc"), and an ORM on answer correctness ("orm")."""
  targets = {"prm_checker": [(s, s.checker.astype(np.float32)) for s in items]}
  with_mc = [s for s in items if s.mc is not None and not np.isnan(s.mc).all()]
  if with_mc:
    targets["prm_mc"] = [(s, s.mc) for s in with_mc]
  out = {}
  if cfg.trunk == "separate":
    trunk = separate_config(cfg, policy_config)
    for name, pairs in targets.items():
      has = [~np.isnan(lab) for _, lab in pairs]    # steps without an MC label are skipped
      out[name], _ = heads_lib.train_sequence_head(
          [s.layout.ids for s, _ in pairs],
          [np.asarray(s.layout.step_ends)[h] for (s, _), h in zip(pairs, has)],
          [lab[h] for (_, lab), h in zip(pairs, has)], "prm", trunk, cfg.head)
    out["orm"], _ = heads_lib.train_sequence_head(
        [s.layout.ids for s in items], [[s.layout.eos_at] for s in items],
        [[float(s.rollout.correct)] for s in items], "orm", trunk, cfg.head)
    return out
  feats = features(items, policy_params, policy_config, batch_size=cfg.batch_size)
  index = {id(s): i for i, s in enumerate(items)}
  for name, pairs in targets.items():
    x = np.concatenate([feats[index[id(s)]][:-1] for s, _ in pairs])
    y = np.concatenate([lab for _, lab in pairs])
    has = ~np.isnan(y)
    head, _ = heads_lib.train_head(x[has], y[has], "prm", cfg.head)
    out[name] = RewardModel(HeadConfig(x.shape[-1], cfg.head.hidden_dim, "prm"), head)
  x = np.stack([f[-1] for f in feats])
  y = np.array([float(s.rollout.correct) for s in items])
  head, _ = heads_lib.train_head(x, y, "orm", cfg.head)
  out["orm"] = RewardModel(HeadConfig(x.shape[-1], cfg.head.hidden_dim, "orm"), head)
  return out


def features(items: Sequence[Scored], params, model_config, batch_size: int = 128
             ) -> list[np.ndarray]:
  """Per item, hidden states [steps + 1, E]: at each step delimiter, then at EOS."""
  return rl.hidden_at(params, model_config, [s.layout.ids for s in items],
                      [list(s.layout.step_ends) + [s.layout.eos_at] for s in items], batch_size)


def score(items: Sequence[Scored], model: RewardModel, policy_params, policy_config,
          batch_size: int = 128) -> list[np.ndarray]:
  """P(good) per step for a PRM ([steps]); per solution for an ORM ([1])."""
  params, config = ((model.trunk, model.trunk_config) if model.separate
                    else (policy_params, policy_config))
  feats = features(items, params, config, batch_size)
  out = []
  for f in feats:
    x = f[-1:] if model.head_config.kind == "orm" else f[:-1]
    out.append(heads_lib.predict(model.head, x) if len(x) else np.zeros(0))
  return out


def aggregate(step_scores: np.ndarray, how: str = "min") -> float:
  """A solution's PRM score from its step scores (Math-Shepherd takes the minimum); the one
  definition is search's (`o1jax.search.select.aggregate`)."""
  return select.aggregate(step_scores, how)


def _solution_score(c: select.Candidate) -> float:
  return c.final_score


def best_of_n(pools: Sequence[Sequence[rl.Rollout]], scores: dict[str, Sequence[np.ndarray]],
              ns: Sequence[int], subsets: int = 32, seed: int = 0, per_problem: bool = False
              ) -> dict[str, dict[int, float]]:
  """Accuracy of picking one of N sampled solutions per problem, averaged over `subsets`
  random size-N subsets of each problem's pool: by each scorer's highest score
  (`name`), by the answer with the largest total score (`name+vote`, weighted
  self-consistency), by majority vote over answer strings, plus `first` (one sample) and
  `oracle` (any of the N is right). `scores[name][i]` holds pool i's solution scores.
  The choices are search's own (`o1jax.search.select`); ties break to the subset's first.
  `per_problem`: each problem's accuracy (a list per method and N) instead of the mean."""
  rng = np.random.default_rng(seed)
  methods = [m for name in scores for m in (name, name + "+vote")]
  methods += ["majority", "first", "oracle"]
  per_problem_acc = {m: {n: [] for n in ns} for m in methods}
  for i, pool in enumerate(pools):
    correct = np.array([r.correct for r in pool])
    for n in ns:
      if n > len(pool):
        raise ValueError(f"best-of-{n} needs {n} samples per problem, the pool has {len(pool)}")
      hits = {m: [] for m in methods}
      for _ in range(1 if n == len(pool) else subsets):
        idx = rng.permutation(len(pool))[:n]
        # Candidate k is the subset's k-th sample, carrying its solution score.
        cands = {name: [select.Candidate(k, "", pool[j].answer, (), float(s[i][j]))
                        for k, j in enumerate(idx)] for name, s in scores.items()}
        for name, cs in cands.items():
          hits[name].append(correct[idx[select.best(cs, _solution_score).index]])
          hits[name + "+vote"].append(
              correct[idx[select.weighted_vote(cs, _solution_score).index]])
        plain = [select.Candidate(k, "", pool[j].answer, (), np.nan) for k, j in enumerate(idx)]
        hits["majority"].append(correct[idx[select.majority(plain).index]])
        hits["first"].append(correct[idx[0]])
        hits["oracle"].append(correct[idx].any())
      for m in methods:
        per_problem_acc[m][n].append(float(np.mean(hits[m])))
  if per_problem:
    return per_problem_acc
  # The mean over problems of each problem's mean: every problem weighs the same.
  return {m: {n: float(np.mean(v)) for n, v in per_n.items()}
          for m, per_n in per_problem_acc.items()}


def _pool_problems(cfg: PrmConfig, n: int, seed: int, split: str) -> list[Problem]:
  return [p for t in cfg.tasks for d in cfg.difficulties
          for p in tasks_lib.get_task(t).generate_problems(seed, d, n, split=split)]


def run_prm(cfg: PrmConfig, workdir: str, log: Callable[[str], None] = print) -> dict:
  """The PRM experiment: label, train, then step AUC and best-of-N on held-out problems.
  Saves the heads (`*_head.*`) and `prm_results.json` in `workdir`; returns the results."""
  import json
  import os
  import time

  from o1jax.model.heads import save_head
  from o1jax.thinking import make_think_config
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  clock = lambda: f"[{time.time() - t0:6.0f}s]"
  params, policy_config, _ = load_params(cfg.policy or embedded_checkpoint_dir())
  sample_cfg = make_think_config(policy_config, rl.TOK, cfg.cache_len,
                                 temperature=cfg.temperature,
                                 max_answer_tokens=cfg.max_answer_tokens)
  train_problems = _pool_problems(cfg, cfg.train_problems_per_level, cfg.seed + 1, "train")
  pools = rl.sample_rollouts(params, sample_cfg, train_problems, cfg.train_samples,
                             seed=cfg.seed, batch_size=cfg.batch_size)
  items = lay_out([r for pool in pools for r in pool])
  log(f"{clock()} {len(items)} training solutions, {sum(len(s.checker) for s in items)} steps, "
      f"{np.mean([s.rollout.correct for s in items]):.2f} correct")
  rng = np.random.default_rng(cfg.seed)
  # Completions from a step prefix need room in the cache for the rest of a trace: solutions
  # longer than half the context (level-5 reflective traces) are left out of the MC sample.
  fits = [i for i, s in enumerate(items) if 2 * len(s.layout.ids) <= sample_cfg.cache_len]
  chosen = rng.permutation(fits)[:cfg.mc_rollouts]
  mc_items = [items[i] for i in sorted(chosen)]
  mc_labels(mc_items, think_completer(params, sample_cfg, seed=cfg.seed + 2,
                                      batch_size=cfg.batch_size), cfg.mc_samples)
  agreement = label_agreement(mc_items)
  log(f"{clock()} Monte Carlo labels on {len(mc_items)} solutions: " +
      " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
               for k, v in agreement.items()))
  models = train_reward_heads(items, params, policy_config, cfg)
  for name, model in models.items():
    save_head(workdir, model, {"trunk": cfg.trunk, "policy": cfg.policy or "embedded"}, name)
  log(f"{clock()} trained {', '.join(models)} ({cfg.trunk} trunk)")

  eval_problems = _pool_problems(cfg, cfg.eval_problems_per_level, cfg.seed + 7, "eval")
  eval_pools = rl.sample_rollouts(params, sample_cfg, eval_problems, cfg.best_of[-1],
                                  seed=cfg.seed + 3, batch_size=cfg.batch_size)
  eval_items = lay_out([r for pool in eval_pools for r in pool])
  log(f"{clock()} best-of-{cfg.best_of[-1]} pools for {len(eval_problems)} held-out problems: "
      f"{np.mean([s.rollout.correct for s in eval_items]):.2f} of samples correct")
  step_labels = np.concatenate([s.checker for s in eval_items])
  outcome = np.array([s.rollout.correct for s in eval_items])
  results = {"config": dataclasses.asdict(cfg), "agreement": agreement, "auc": {},
             "train_solutions": len(items), "eval_problems": len(eval_problems),
             "eval_sample_accuracy": float(outcome.mean())}
  solution_scores = {}
  for name, model in models.items():
    per = score(eval_items, model, params, policy_config, cfg.batch_size)
    if model.head_config.kind == "prm":
      results["auc"][f"{name}/step_vs_checker"] = heads_lib.auc(np.concatenate(per),
                                                               step_labels)
      sol = np.array([aggregate(p, cfg.aggregate) for p in per])
    else:
      sol = np.array([p[0] for p in per])
    results["auc"][f"{name}/solution_vs_outcome"] = heads_lib.auc(sol, outcome)
    k = cfg.best_of[-1]
    solution_scores[name] = [sol[i * k:(i + 1) * k] for i in range(len(eval_problems))]
  results["best_of_n"] = best_of_n(eval_pools, solution_scores, cfg.best_of, cfg.subsets,
                                   cfg.seed)
  results["elapsed_s"] = round(time.time() - t0, 1)
  with open(os.path.join(workdir, "prm_results.json"), "w") as f:
    json.dump(results, f, indent=2, default=str)
  log(format_results(results))
  return results


def format_results(results: dict) -> str:
  lines = ["step/solution AUC:"]
  lines += [f"  {k:<36} {v:.3f}" for k, v in results["auc"].items()]
  bon = results["best_of_n"]
  ns = list(next(iter(bon.values())))
  lines.append("best-of-N accuracy: " + " ".join(f"{'N=' + str(n):>8}" for n in ns))
  lines += [f"  {m:<17}" + " ".join(f"{v:8.3f}" for v in per.values()) for m, per in bon.items()]
  return "\n".join(lines)
