"""The PRM experiment behind launch/train_prm.py.

With `cells` set (the search regime: level 5 and countdown level 4) it trains the PRM the
search reads: the policy's own samples at the search temperature on training-split
problems; step targets from the checker, Monte Carlo values on a sample of steps, and the
answer's correctness at the last step (`prm.step_targets`); a second round with confident
negatives up-weighted (`prm.hard_negative_weights`); Platt calibration per step-position bin
fitted on training problems the head never saw. It then measures it beside a baseline head
on held-out problems: step AUC (bootstrap CI over problems), ECE before and after
calibration, and best-of-N by the PRM at each N (Wilson intervals; paired bootstrap of the
difference to the baseline) -- the reward-hacking check: best-of-N by a PRM that is being
exploited falls as N grows.

Without `cells` it is the original experiment (`prm.run_prm`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
from typing import Callable, Sequence

import numpy as np
import scipy.stats

from o1jax import tasks as tasks_lib
from o1jax.training import heads as heads_lib
from o1jax.training import prm
from o1jax.training import prm_calibration as cal_lib
from o1jax.training import rollouts as rl


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
  """Wilson score interval of a proportion p observed over n trials."""
  if n <= 0:
    raise ValueError(f"wilson needs n > 0, got {n}")
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return float(centre - half), float(centre + half)


def cluster_auc_ci(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   boots: int = 300, seed: int = 0) -> tuple[float, float, float]:
  """(AUC, 2.5%, 97.5%): AUC over every step, interval by resampling problems (steps of
  one problem are not independent)."""
  rng = np.random.default_rng(seed)
  n = len(scores)
  point = heads_lib.auc(np.concatenate(scores), np.concatenate(labels))
  stats = []
  for _ in range(boots):
    idx = rng.integers(0, n, n)
    stats.append(heads_lib.auc(np.concatenate([scores[i] for i in idx]),
                               np.concatenate([labels[i] for i in idx])))
  lo, hi = np.nanpercentile(stats, [2.5, 97.5])
  return float(point), float(lo), float(hi)


def paired_diff_ci(a: np.ndarray, b: np.ndarray, boots: int = 2000, seed: int = 0
                   ) -> tuple[float, float, float]:
  """mean(a - b) and its bootstrap 95% interval over problems."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  rng = np.random.default_rng(seed)
  means = d[rng.integers(0, len(d), (boots, len(d)))].mean(1)
  return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def cached_pools(path: str, sample: Callable[[], list], problems) -> list[list[rl.Rollout]]:
  """Pools from `path` if it holds pools of these problems (or of a list they begin: the
  problem draws are a prefix-stable sequence), else sampled and saved there. Sampling is
  most of the run's time, and the held-out pools serve every head."""
  if os.path.exists(path):
    with open(path, "rb") as f:
      pools = pickle.load(f)
    if [pool[0].problem.prompt for pool in pools[:len(problems)]] == [p.prompt for p in problems]:
      return pools[:len(problems)]
  pools = sample()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "wb") as f:
    pickle.dump(pools, f)
  return pools


def _cell_pools(params, sample_cfg, cfg, cache: str, split: str, per_cell: Sequence[int],
                samples: Sequence[int], seed_problems: int, seed_samples: int, log):
  problems, pools = [], []
  for (task, d), per_cell, samples in zip(cfg.cells, per_cell, samples):
    ps = tasks_lib.distinct_problems([task], [d], per_cell, seed_problems, split=split)
    name = f"{split}_{task}{d}_T{cfg.temperature:g}_s{seed_samples}_n{samples}.pkl"
    t = time.time()
    pools += cached_pools(os.path.join(cache, name), lambda: rl.sample_rollouts(
        params, sample_cfg, ps, samples, seed=seed_samples, batch_size=cfg.batch_size), ps)
    problems += ps
    log(f"  {split} {task} {d}: {len(ps)} problems x {samples} ({time.time() - t:.0f}s)")
  return problems, pools


def step_eval_labels(item: prm.Scored) -> np.ndarray:
  """The binary fact a calibrated step score is judged against: the checker's label, and
  at the last step whether the answer verifies."""
  y = item.checker.astype(np.float64)
  if len(y):
    y[-1] = float(item.rollout.correct)
  return y


def train_prm_head(items, feats, cfg, log) -> tuple[dict, dict]:
  """Two rounds on frozen features: plain, then with confident negatives up-weighted."""
  x = np.concatenate([f[:-1] for f in feats])
  y = np.concatenate([prm.step_targets(s) for s in items])
  head, _ = heads_lib.train_head(x, y, "prm", cfg.head)
  info = {"train_steps": int(len(y)), "target_mean": float(y.mean())}
  if cfg.hard_negative_weight > 1:
    w = prm.hard_negative_weights(y, heads_lib.predict(head, x), cfg.hard_negative_weight)
    # Wrong answers after steps that all pass: the trace a checker-label PRM is hacked by.
    last = np.cumsum([len(s.checker) for s in items]) - 1
    sneaky = np.array([len(s.checker) > 0 and s.checker.all() and not s.rollout.correct
                       for s in items])
    w[last[sneaky]] = cfg.hard_negative_weight
    head, _ = heads_lib.train_head(x, y, "prm", cfg.head, weights=w)
    info.update(hard_negatives=int((w > 1).sum()), sneaky_traces=int(sneaky.sum()))
  log(f"  PRM trained on {len(y)} steps: " + json.dumps(info))
  return head, info


def _scores(head, feats, items, calibration=None):
  out = []
  for f, s in zip(feats, items):
    z = cal_lib.logits(head, f[:-1])
    out.append(1 / (1 + np.exp(-z)) if calibration is None else
               cal_lib.apply(calibration, z, cal_lib.position_bins(len(z), calibration.edges)))
  return out


def run(cfg: prm.PrmConfig, workdir: str, log: Callable[[str], None] = print) -> dict:
  from o1jax.model.heads import load_head
  from o1jax.thinking import make_think_config
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  clock = lambda: f"[{time.time() - t0:6.0f}s]"
  cache = cfg.pool_cache or os.path.join(workdir, "pools")
  params, policy_config, _ = load_params(cfg.policy or embedded_checkpoint_dir())
  sample_cfg = make_think_config(policy_config, rl.TOK, cfg.cache_len,
                                 temperature=cfg.temperature,
                                 max_answer_tokens=cfg.max_answer_tokens)
  if "train" in cfg.stages:
    train(cfg, workdir, params, policy_config, sample_cfg, cache, clock, log)
  if "eval" not in cfg.stages:
    return {}
  # The head as saved: the global Platt fit folded in, the per-bin fit in its json.
  model, info = load_head(workdir, "prm")
  shipped = model.head
  a, b = info["global_platt"]
  head = cal_lib.fold(shipped, 1 / a, -b / a)   # back to the uncalibrated logits
  per_bin_folded = cal_lib.Calibration.from_dict(info["calibration"])
  log(f"{clock()} held-out pools")
  eval_problems, eval_pools = _cell_pools(params, sample_cfg, cfg, cache, "eval",
                                          [cfg.eval_problems_per_level] * len(cfg.cells),
                                          cfg.eval_samples or [cfg.best_of[-1]] * len(cfg.cells),
                                          cfg.seed + 7, cfg.seed + 3, log)
  items = prm.lay_out([r for p in eval_pools for r in p])
  eval_feats = prm.features(items, params, policy_config, cfg.batch_size)
  baseline, _ = load_head(cfg.baseline or os.path.join(embedded_checkpoint_dir(), "heads"),
                          "prm")
  heads = {"old": _scores(baseline.head, eval_feats, items),
           "new_raw": _scores(head, eval_feats, items),
           "new": _scores(shipped, eval_feats, items),
           "new_binned": _scores(shipped, eval_feats, items, per_bin_folded)}
  return report(cfg, workdir, heads, items, eval_problems, eval_pools, info["agreement"],
                info["train"], info["mc_completions"], t0, log)


def train(cfg, workdir, params, policy_config, sample_cfg, cache, clock, log) -> None:
  """Samples (or reads) the training pools, labels them, trains and calibrates the head,
  and saves it as `prm_head.*` in `workdir`."""
  from o1jax.model.heads import HeadConfig, RewardModel, save_head
  log(f"{clock()} training pools")
  train_problems, pools = _cell_pools(params, sample_cfg, cfg, cache, "train",
                                      cfg.train_cell_problems or
                                      [cfg.train_problems_per_level] * len(cfg.cells),
                                      [cfg.train_samples] * len(cfg.cells),
                                      cfg.seed + 1, cfg.seed, log)
  # Problems, not samples, are split: calibration is fitted on problems the head never saw.
  rng = np.random.default_rng(cfg.seed)
  held = set(rng.permutation(len(pools))[:int(round(cfg.calibration_fraction * len(pools)))])
  fit_items = prm.lay_out([r for i, p in enumerate(pools) if i not in held for r in p])
  cal_items = prm.lay_out([r for i, p in enumerate(pools) if i in held for r in p])
  accuracy = np.mean([s.rollout.correct for s in fit_items])
  log(f"{clock()} {len(fit_items)} training solutions ({accuracy:.2f} correct), "
      f"{len(cal_items)} for calibration")

  chosen = sorted(rng.permutation(len(fit_items))[:cfg.mc_rollouts].tolist())
  mc_items = [fit_items[i] for i in chosen]
  steps = prm.mc_step_choice(mc_items, cfg.mc_steps, rng)
  t = time.time()
  prm.mc_labels(mc_items, prm.think_completer(params, sample_cfg, seed=cfg.seed + 2,
                                              batch_size=cfg.batch_size), cfg.mc_samples,
                steps=steps)
  completions = sum(map(len, steps)) * cfg.mc_samples
  agreement = prm.label_agreement(mc_items)
  log(f"{clock()} Monte Carlo: {completions} completions in {time.time() - t:.0f}s; " +
      json.dumps({k: round(v, 3) for k, v in agreement.items()}))

  feats = prm.features(fit_items, params, policy_config, cfg.batch_size)
  head, train_info = train_prm_head(fit_items, feats, cfg, log)
  cal_feats = prm.features(cal_items, params, policy_config, cfg.batch_size)
  z = np.concatenate([cal_lib.logits(head, f[:-1]) for f in cal_feats])
  y = np.concatenate([step_eval_labels(s) for s in cal_items])
  bins = np.concatenate([cal_lib.position_bins(len(s.checker), cfg.calibration_edges)
                         for s in cal_items])
  a, b = cal_lib.fit_platt(z, y)
  per_bin = cal_lib.fit(z, y, bins, cfg.calibration_edges)
  # The loop reads the head as is: the global fit goes into it, the per-bin fit beside it.
  shipped = cal_lib.fold(head, a, b)
  # The per-bin fit was on the raw head's logits z; the folded head's are a z + b.
  per_bin_folded = cal_lib.Calibration(per_bin.edges, tuple(x / a for x in per_bin.a),
                                       tuple(bb - x * b / a for x, bb in zip(per_bin.a, per_bin.b)))
  model = RewardModel(HeadConfig(policy_config.embed_dim, cfg.head.hidden_dim, "prm"), shipped)
  save_head(workdir, model, {"trunk": "policy", "policy": cfg.policy or "embedded",
                             "global_platt": [a, b], "calibration": per_bin_folded.to_dict(),
                             "train": train_info, "agreement": agreement,
                             "mc_completions": completions}, "prm")
  log(f"{clock()} calibration: global a={a:.3f} b={b:.3f}; per bin " +
      json.dumps(per_bin.to_dict()))



def report(cfg, workdir, heads, items, eval_problems, eval_pools, agreement, train_info,
           completions, t0, log) -> dict:
  sizes = [len(p) for p in eval_pools]
  problem_of = np.repeat(np.arange(len(eval_problems)), sizes)
  starts = np.r_[0, np.cumsum(sizes)]
  group = lambda arrays: [np.concatenate([arrays[j] for j in np.flatnonzero(problem_of == i)])
                          for i in range(len(eval_problems))]
  checker = group([s.checker for s in items])
  target = group([step_eval_labels(s) for s in items])
  outcome = np.array([s.rollout.correct for s in items])
  res = {"config": dataclasses.asdict(cfg), "agreement": agreement, "train": train_info,
         "mc_completions": completions, "eval_problems": len(eval_problems),
         "eval_sample_accuracy": float(outcome.mean()), "auc": {}, "ece": {}}
  solution = {}
  for name, per in heads.items():
    g = group(per)
    res["auc"][f"{name}/step_vs_checker"] = cluster_auc_ci(g, checker, seed=cfg.seed)
    last = np.array([p[-1] if len(p) else 0.0 for p in per])
    res["auc"][f"{name}/last_step_vs_outcome"] = heads_lib.auc(last, outcome)
    res["ece"][name] = heads_lib.ece(np.concatenate(per), np.concatenate(target))
    for how in ("min", "last", "prod"):
      sol = np.array([prm.aggregate(p, how) for p in per])
      res["auc"][f"{name}/solution_{how}_vs_outcome"] = heads_lib.auc(sol, outcome)
      solution[f"{name}_{how}"] = [sol[starts[i]:starts[i + 1]]
                                   for i in range(len(eval_problems))]
  # Each N over the problems whose pool holds N samples (all of them unless eval_samples
  # gave some cells smaller pools).
  per_problem, has = {}, {}
  for N in cfg.best_of:
    has[N] = [i for i, p in enumerate(eval_pools) if len(p) >= N]
    got = prm.best_of_n([eval_pools[i] for i in has[N]],
                        {m: [v[i] for i in has[N]] for m, v in solution.items()}, (N,),
                        cfg.subsets, cfg.seed, per_problem=True)
    for m, per in got.items():
      per_problem.setdefault(m, {})[N] = per[N]
  res["problems_per_n"] = {str(N): len(v) for N, v in has.items()}
  res["best_of_n"] = {m: {str(N): [float(np.mean(v)), *wilson(float(np.mean(v)), len(v))]
                          for N, v in per.items()} for m, per in per_problem.items()}
  res["new_minus_old"] = {
      how: {str(N): paired_diff_ci(per_problem[f"new_{how}"][N], per_problem[f"old_{how}"][N],
                                   seed=cfg.seed) for N in cfg.best_of}
      for how in ("min", "last", "prod")}
  cell_of = [f"{p.task}{p.difficulty}" for p in eval_problems]
  res["best_of_n_by_cell"] = {
      m: {c: {str(N): float(np.mean([x for i, x in zip(has[N], v) if cell_of[i] == c]))
              for N, v in per_problem[m].items() if any(cell_of[i] == c for i in has[N])}
          for c in dict.fromkeys(cell_of)}
      for m in per_problem if not m.endswith("+vote")}
  res["elapsed_s"] = round(time.time() - t0, 1)
  with open(os.path.join(workdir, "prm_results.json"), "w") as f:
    json.dump(res, f, indent=2, default=str)
  with open(os.path.join(workdir, "prm_results.md"), "w") as f:
    f.write(markdown(res) + "\n")
  log(format_results(res))
  return res


def format_results(res: dict) -> str:
  lines = ["step AUC vs checker [95% CI over problems]:"]
  lines += [f"  {k:<34} {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]" for k, v in res["auc"].items()
            if isinstance(v, (list, tuple))]
  lines += [f"  {k:<34} {v:.3f}" for k, v in res["auc"].items() if isinstance(v, float)]
  lines.append("ECE: " + " ".join(f"{k}={v:.3f}" for k, v in res["ece"].items()))
  ns = list(next(iter(res["best_of_n"].values())))
  lines.append("best-of-N accuracy [Wilson]: " + " ".join(f"{'N=' + n:>22}" for n in ns))
  for m, per in res["best_of_n"].items():
    lines.append(f"  {m:<18}" + " ".join(f"{v[0]:.3f} [{v[1]:.3f},{v[2]:.3f}]"
                                        for v in per.values()))
  for how, per in res["new_minus_old"].items():
    lines.append(f"  new-old {how:<5}" + " ".join(f"{v[0]:+.3f} [{v[1]:+.3f},{v[2]:+.3f}]"
                                               for v in per.values()))
  return "\n".join(lines)


def markdown(res: dict) -> str:
  """The tables of docs/PRM.md, from prm_results.json."""
  names = {"old": "shipped PRM (before)", "new_raw": "new PRM, uncalibrated",
           "new": "new PRM (global Platt, in the head)", "new_binned": "new PRM, per-bin Platt"}
  lines = ["| PRM | step AUC vs checker [95% CI] | last step AUC vs answer | solution AUC "
           "(min / last / prod) | ECE |", "| --- | --- | --- | --- | --- |"]
  for key, label in names.items():
    a = res["auc"]
    step = a[f"{key}/step_vs_checker"]
    sol = " / ".join(f"{a[f'{key}/solution_{h}_vs_outcome']:.3f}" for h in ("min", "last", "prod"))
    lines.append(f"| {label} | {step[0]:.3f} [{step[1]:.3f}, {step[2]:.3f}] | "
                 f"{a[f'{key}/last_step_vs_outcome']:.3f} | {sol} | {res['ece'][key]:.3f} |")
  ns = list(res["problems_per_n"])
  lines += ["", "| selection | " + " | ".join(f"N={n} (n={res['problems_per_n'][n]})"
                                               for n in ns) + " |",
            "| --- |" + " --- |" * len(ns)]
  rows = [f"{k}_{h}" for k in ("old", "new", "new_binned") for h in ("min", "last", "prod")]
  rows += ["new_min+vote", "majority", "first", "oracle"]
  for m in rows:
    lines.append(f"| {m} | " + " | ".join(
        f"{v[0]:.3f} [{v[1]:.2f}, {v[2]:.2f}]" for v in res["best_of_n"][m].values()) + " |")
  lines += ["", "| new - old (paired bootstrap over problems) | " + " | ".join(
      f"N={n}" for n in ns) + " |", "| --- |" + " --- |" * len(ns)]
  for how, per in res["new_minus_old"].items():
    lines.append(f"| prm_{how} | " + " | ".join(
        f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" for v in per.values()) + " |")
  return "\n".join(lines)
