"""The confidence/budget head experiment: train both heads, measure calibration, and sweep
the stop rules (probe vs head confidence, article vs head budgets) for thinking tokens saved
at equal accuracy."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.model.heads import HeadConfig, RewardModel, save_head
from o1jax.thinking import article_budget, make_think_config
from o1jax.training import heads as heads_lib
from o1jax.training import rollouts as rl
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params


@dataclasses.dataclass(frozen=True)
class HeadsConfig:
  policy: str = ""                                   # "": the embedded tiny reasoner
  tasks: tuple[str, ...] = ("addition", "equation", "countdown")
  difficulties: tuple[int, ...] = (1, 2, 3, 4)
  train_problems_per_level: int = 32
  eval_problems_per_level: int = 16
  every: int = 4                    # forced-stop prefixes every this many thinking tokens
  temperature: float = 0.0          # of the thinking rollouts (and of the sweep)
  probe_every: int = 4              # thinking tokens between probes in the sweep
  head_every: tuple[int, ...] = (4, 1)  # ... and between head checks
  probe_thresholds: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)
  head_thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
  give_up_with: tuple[float, ...] = (0.5,)            # confidence thresholds to pair with
  give_up_thresholds: tuple[float, ...] = (0.1, 0.2, 0.3)  # value-head give-up thresholds
  budget_margin: float = 1.25
  budget_slack: int = 4
  article_scale: float = 0.1
  tolerance: float = 0.01           # "equal accuracy": at most this much below the baseline
  head: heads_lib.HeadTrainConfig = heads_lib.HeadTrainConfig()
  cache_len: int = 192
  max_answer_tokens: int = 16
  batch_size: int = 128
  seed: int = 0


def _problems(cfg: HeadsConfig, n: int, seed: int, split: str):
  return [p for t in cfg.tasks for d in cfg.difficulties
          for p in tasks_lib.get_task(t).generate_problems(seed, d, n, split=split)]


def _summary(name, problems, thoughts, budgets=None) -> dict:
  ok = [rl.verify(p, t.answer) for p, t in zip(problems, thoughts)]
  return {"rule": name, "accuracy": float(np.mean(ok)),
          "thinking_tokens": float(np.mean([t.thinking_tokens for t in thoughts])),
          "checks": float(np.mean([t.num_probes for t in thoughts])),
          "early_stops": float(np.mean([t.stop_reason in ("confidence", "give_up", "budget")
                                        for t in thoughts])),
          **({"mean_budget": float(np.mean(budgets))} if budgets is not None else {})}


def run_heads(cfg: HeadsConfig, workdir: str, log: Callable[[str], None] = print) -> dict:
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  clock = lambda: f"[{time.time() - t0:6.0f}s]"
  params, mc, _ = load_params(cfg.policy or embedded_checkpoint_dir())
  base = make_think_config(mc, rl.TOK, cfg.cache_len, temperature=cfg.temperature,
                           max_answer_tokens=cfg.max_answer_tokens)
  train = heads_lib.confidence_data(params, mc, base,
                                    _problems(cfg, cfg.train_problems_per_level, cfg.seed, "train"),
                                    every=cfg.every, seed=cfg.seed, batch_size=cfg.batch_size)
  log(f"{clock()} confidence data: {len(train.labels)} forced stops over "
      f"{len(train.natural)} rollouts, {train.labels.mean():.2f} right")
  conf_head, conf_losses = heads_lib.train_head(train.features, train.labels, "confidence",
                                                cfg.head)
  # The value head: same prefixes, label = the full run ends right (P(right if it goes on)).
  value_head, _ = heads_lib.train_head(train.features, train.correct[train.rollout], "value",
                                       cfg.head)
  budget_head, budget_losses = heads_lib.train_head(
      train.prompt_features, np.log1p(train.needed).astype(np.float32), "budget", cfg.head)
  e = mc.embed_dim
  for kind, head in (("confidence", conf_head), ("value", value_head), ("budget", budget_head)):
    save_head(workdir, RewardModel(HeadConfig(e, cfg.head.hidden_dim, kind), head),
              {"policy": cfg.policy or "embedded"})
  log(f"{clock()} heads trained: confidence loss {np.mean(conf_losses[:10]):.3f} -> "
      f"{np.mean(conf_losses[-10:]):.3f}, budget loss {np.mean(budget_losses[:10]):.3f} -> "
      f"{np.mean(budget_losses[-10:]):.3f}")

  eval_problems = _problems(cfg, cfg.eval_problems_per_level, cfg.seed + 1, "eval")
  held = heads_lib.confidence_data(params, mc, base, eval_problems, every=cfg.every,
                                   seed=cfg.seed + 1, batch_size=cfg.batch_size)
  head_p = heads_lib.predict(conf_head, held.features)
  value_p = heads_lib.predict(value_head, held.features)
  pred_need = np.expm1(heads_lib.predict(budget_head, held.prompt_features, "budget"))
  calibration = {
      "prefixes": int(len(held.labels)), "right": float(held.labels.mean()),
      "ece_head": heads_lib.ece(head_p, held.labels), "ece_probe": heads_lib.ece(held.probe,
                                                                                 held.labels),
      "auc_head": heads_lib.auc(head_p, held.labels),
      "auc_probe": heads_lib.auc(held.probe, held.labels),
      "auc_value": heads_lib.auc(value_p, held.correct[held.rollout]),
      "ece_value": heads_lib.ece(value_p, held.correct[held.rollout]),
      "budget_mae_tokens": float(np.mean(np.abs(pred_need - held.needed))),
      "budget_corr": float(np.corrcoef(pred_need, held.needed)[0, 1]),
      "needed_mean": float(held.needed.mean()), "natural_mean": float(held.natural.mean()),
      # The ceilings of any stop rule at equal accuracy (heads.oracle_savings).
      **dict(zip(("oracle_saved", "oracle_saved_right_only"), heads_lib.oracle_savings(held)))}
  log(f"{clock()} calibration on {len(held.labels)} held-out prefixes: " +
      " ".join(f"{k}={v:.3f}" for k, v in calibration.items() if isinstance(v, float)))

  prompts = [p.prompt for p in eval_problems]
  go = lambda config, heads=None, budgets=None: rl.continue_thinking(
      params, config, prompts, seed=cfg.seed, batch_size=cfg.batch_size, heads=heads,
      budgets=budgets)
  rows = [_summary("natural (no early stop)", eval_problems, go(base))]
  stop = ("natural", "budget", "confidence")
  for agreement in (base.probe_agreement, 0):  # with and without Dynasor's agreement rule
    for th in cfg.probe_thresholds:
      c = dataclasses.replace(base, stop_rules=stop, confidence_estimate="probe",
                              probe_every=cfg.probe_every, confidence_threshold=th,
                              probe_agreement=agreement)
      rows.append(_summary(f"probe >= {th}, agree {agreement}", eval_problems, go(c)))
  for every in cfg.head_every:  # a head check costs nothing: it can run every token
    for th in cfg.head_thresholds:
      c = dataclasses.replace(base, stop_rules=stop, confidence_estimate="head",
                              probe_every=every, confidence_threshold=th)
      rows.append(_summary(f"head >= {th}, every {every}", eval_problems,
                           go(c, {"confidence": conf_head})))
  both = {"confidence": conf_head, "value": value_head}
  for th in cfg.give_up_with:
    for g in cfg.give_up_thresholds:
      c = dataclasses.replace(base, stop_rules=stop, confidence_estimate="head",
                              probe_every=cfg.probe_every, confidence_threshold=th,
                              give_up_threshold=g)
      rows.append(_summary(f"head >= {th} or value < {g}", eval_problems, go(c, both)))
  article = [article_budget(p.difficulty, cfg.article_scale) for p in eval_problems]
  rows.append(_summary(f"budget=auto article x{cfg.article_scale}", eval_problems,
                       go(base, budgets=article), article))
  head_budgets = heads_lib.head_budgets(params, mc, budget_head, prompts,
                                        margin=cfg.budget_margin, slack=cfg.budget_slack,
                                        batch_size=cfg.batch_size)
  rows.append(_summary("budget=auto head", eval_problems, go(base, budgets=head_budgets),
                       head_budgets))
  baseline = rows[0]
  for r in rows:
    r["saved"] = 1 - r["thinking_tokens"] / max(baseline["thinking_tokens"], 1e-9)
    r["acc_delta"] = r["accuracy"] - baseline["accuracy"]
  best = {}
  for family in ("probe", "head", "head or value", "budget=auto article", "budget=auto head"):
    ok = [r for r in rows if _family(r["rule"]) == family
          and r["accuracy"] >= baseline["accuracy"] - cfg.tolerance - 1e-9]
    best[family] = max(ok, key=lambda r: r["saved"])["rule"] if ok else None
  results = {"config": dataclasses.asdict(cfg), "calibration": calibration, "sweep": rows,
             "best_at_equal_accuracy": best, "eval_problems": len(eval_problems),
             "train_prefixes": int(len(train.labels)), "elapsed_s": round(time.time() - t0, 1)}
  with open(os.path.join(workdir, "heads_results.json"), "w") as f:
    json.dump(results, f, indent=2)
  log(format_sweep(rows, best))
  return results


def _family(rule: str) -> str:
  if rule.startswith("head"):
    return "head or value" if "value" in rule else "head"
  return rule.split(" >=")[0] if rule.startswith("probe") else rule.split(" x")[0]


def format_sweep(rows, best=None) -> str:
  lines = [f"{'rule':<32}{'accuracy':>9}{'think tok':>10}{'saved':>8}{'checks':>8}"]
  for r in rows:
    mark = " *" if best and r["rule"] in best.values() else ""
    lines.append(f"{r['rule']:<32}{r['accuracy']:9.3f}{r['thinking_tokens']:10.1f}"
                 f"{r['saved']:8.1%}{r['checks']:8.1f}{mark}")
  return "\n".join(lines)
