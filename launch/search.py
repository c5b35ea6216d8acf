r"""Test-time search strategies at equal compute: accuracy against generated tokens.

  python launch/search.py --out=docs/search                      # the table in docs/SEARCH.md

On held-out problems (distinct prompts, drawn without replacement) of each task and
difficulty, sampled at --temperature, every strategy runs at each N:
  sample (pass@1, N=1), majority, best_of_n_prm_{min,last,prod}, best_of_n_orm,
  weighted_vote (PRM min, summed per answer), beam, beam_backtrack, dvts, dvts_backtrack
and greedy decoding (N=1, temperature 0) as the reference. The best-of-N family choose
among the same N samples (sample j of a problem is the same for every N); beam and dvts run
per N (beam width --beam_width) and answer by the PRM-weighted vote over their finished paths.
The PRM and ORM are heads on the policy's own hidden states (shipped beside the embedded
checkpoint), read while the policy decodes.

Writes OUT/search.csv (strategy,n,task,difficulty,problems,accuracy,generated_tokens,flops:
tokens and FLOPs are means per problem; task/difficulty "all" rows pool every cell),
OUT/search.png (accuracy vs generated tokens, log x), OUT/compute_optimal.csv and
OUT/search.json (every problem's outcome, for recomputing any figure).
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SAMPLE_FAMILY = {"sample": None, "majority": "majority", "best_of_n_prm_min": "best:prm_min",
                 "best_of_n_prm_last": "best:prm_last", "best_of_n_prm_prod": "best:prm_prod",
                 "best_of_n_orm": "best:orm", "weighted_vote": "vote:prm_min"}
TREE = {"beam": ("beam", 0.0), "beam_backtrack": ("beam", 0.5), "dvts": ("dvts", 0.0),
        "dvts_backtrack": ("dvts", 0.5)}
TREE_SELECTOR = "vote:prm_min"

_STRATEGIES = flags.DEFINE_list("strategies", list(SAMPLE_FAMILY) + list(TREE),
                                "Strategies to run (greedy always runs as the reference).")
_N = flags.DEFINE_list("n", ["4", "16", "64"], "N: samples, or beam rows per problem.")
_TASKS = flags.DEFINE_list("tasks", ["addition", "equation", "countdown"], "Tasks.")
_DIFFICULTY = flags.DEFINE_list("difficulty", ["3", "4"], "Difficulty levels.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 16, "Distinct held-out problems per "
                                     "task and difficulty.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the problem draw and of sampling.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.5, "Sampling temperature of the policy.")
_BEAM_WIDTH = flags.DEFINE_integer("beam_width", 4, "M: candidates per kept beam.")
_BINS = flags.DEFINE_integer("bins", 3, "Predicted-difficulty bins for compute-optimal.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Policy checkpoint (default: embedded).")
_HEADS = flags.DEFINE_string("heads", None, "Directory with prm_head/orm_head (default: the "
                             "shipped ones; with --checkpoint, pass that policy's heads).")
_ROWS = flags.DEFINE_integer("rows_per_batch", 256, "Rows per compiled batch.")
_OUT = flags.DEFINE_string("out", "runs/search", "Output directory.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import numpy as np

  from o1jax import tasks as tasks_lib
  from o1jax.model.heads import load_head
  from o1jax.search import SearchConfig, choose, compute, search
  from o1jax.search import allocation
  from o1jax.serving.predictor import SHIPPED_DIR, load_thinking_head, prompt_features
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config, think_texts
  from o1jax.training import heads as heads_lib
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  unknown = set(_STRATEGIES.value) - set(SAMPLE_FAMILY) - set(TREE)
  if unknown:
    raise app.UsageError(f"unknown --strategies {sorted(unknown)}; known: "
                         f"{', '.join(list(SAMPLE_FAMILY) + list(TREE))}")
  ns = sorted(int(x) for x in _N.value)
  if not ns or ns[0] < 1:
    raise app.UsageError("--n must be positive integers")
  uneven = [n for n in ns if n % _BEAM_WIDTH.value]
  if uneven and set(_STRATEGIES.value) & set(TREE):
    raise app.UsageError(f"--n {uneven} not a multiple of --beam_width={_BEAM_WIDTH.value}: "
                         "beam and dvts keep N / beam_width beams")
  t0 = time.time()
  os.makedirs(_OUT.value, exist_ok=True)
  params, model_config, _ = load_params(_CHECKPOINT.value or embedded_checkpoint_dir())
  tok = CharTokenizer()
  config = make_think_config(model_config, tok, model_config.max_seq_len, max_answer_tokens=16)
  heads_dir = _HEADS.value or SHIPPED_DIR
  heads = {k: load_head(heads_dir, k)[0].head for k in ("prm", "orm")}
  problems = tasks_lib.distinct_problems(_TASKS.value, [int(d) for d in _DIFFICULTY.value],
                               _NUM_PROBLEMS.value, _SEED.value)
  prompts = [p.prompt for p in problems]
  verify = lambda i, answer: tasks_lib.get_task(problems[i].task).verify(problems[i], answer)
  mc = config.model
  outcomes = []   # (problem, strategy, n, correct, tokens, flops)

  def record(strategy, n, i, correct, tokens, flops):
    outcomes.append(dict(problem=i, strategy=strategy, n=n, correct=bool(correct),
                         tokens=float(tokens), flops=float(flops)))

  def log(msg):
    print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)

  log(f"{len(problems)} problems ({_NUM_PROBLEMS.value} per cell), temperature "
      f"{_TEMPERATURE.value}, N in {ns}")
  greedy = think_texts(params, tok, prompts, config, batch_size=64)
  for i, g in enumerate(greedy):
    toks = g.thinking_tokens + g.answer_tokens + 1
    flops = compute.count(mc, generated=toks, prompt=len(tok.encode_prompt(prompts[i])),
                          mean_context=toks / 2 + len(prompts[i])).flops
    record("greedy", 1, i, verify(i, g.answer), toks, flops)
  log(f"greedy: accuracy {np.mean([o['correct'] for o in outcomes]):.3f}")

  family = [s for s in _STRATEGIES.value if s in SAMPLE_FAMILY]
  if family:
    start = time.time()
    res = search(params, tok, prompts, config,
                 SearchConfig(strategy="sample", n=ns[-1], temperature=_TEMPERATURE.value,
                              rows_per_batch=max(_ROWS.value, ns[-1]), seed=_SEED.value),
                 heads=heads)
    total = sum(c.generated_tokens for c in res.compute)
    log(f"sampled {ns[-1]} per problem: {total:,} tokens in {time.time() - start:.0f}s "
        f"({total / (time.time() - start):,.0f} tokens/s)")
    for i, cands in enumerate(res.candidates):
      plen = len(tok.encode_prompt(prompts[i]))
      for strategy in family:
        for n in ([1] if strategy == "sample" else ns):
          first = cands[:n]
          toks = sum(c.tokens for c in first)
          reads = 0 if strategy in ("sample", "majority") else (
              n if strategy == "best_of_n_orm" else sum(len(c.step_scores) for c in first))
          flops = compute.count(mc, generated=toks, prompt=plen, evaluations=reads,
                                mean_context=plen + toks / (2 * n)).flops
          pick = first[0] if strategy == "sample" else choose(first, SAMPLE_FAMILY[strategy])
          record(strategy, n, i, verify(i, pick.answer), toks, flops)
  for strategy in [s for s in _STRATEGIES.value if s in TREE]:
    kind, threshold = TREE[strategy]
    for n in ns:
      start = time.time()
      res = search(params, tok, prompts, config,
                   SearchConfig(strategy=kind, n=n, beam_width=_BEAM_WIDTH.value,
                                backtrack_threshold=threshold, temperature=_TEMPERATURE.value,
                                rows_per_batch=max(_ROWS.value, n), seed=_SEED.value),
                   heads=heads)
      for i, cands in enumerate(res.candidates):
        ok = bool(cands) and verify(i, choose(cands, TREE_SELECTOR).answer)
        record(strategy, n, i, ok, res.compute[i].generated_tokens, res.compute[i].flops)
      mine = [o for o in outcomes if o["strategy"] == strategy and o["n"] == n]
      log(f"{strategy} N={n}: accuracy {np.mean([o['correct'] for o in mine]):.3f}, "
          f"{np.mean([o['tokens'] for o in mine]):.0f} tokens/problem, "
          f"{sum(res.backtracks)} backtracks, {time.time() - start:.0f}s")

  rows = summarize(problems, outcomes)
  write_csv(os.path.join(_OUT.value, "search.csv"), rows)
  plot(os.path.join(_OUT.value, "search.png"), rows, _TEMPERATURE.value)
  print_table(rows)

  # Compute-optimal: bins from the budget head's predicted thinking (never the true level).
  budget_head, _ = load_thinking_head()
  feats = prompt_features(params, tok, config, prompts)
  predicted = np.expm1(np.maximum(heads_lib.predict(budget_head, feats, "budget"), 0))
  bins = allocation.difficulty_bins(predicted, _BINS.value)
  optimal = compute_optimal(allocation, outcomes, bins, len(problems), _SEED.value)
  if optimal:
    write_csv(os.path.join(_OUT.value, "compute_optimal.csv"), optimal)
    for row in optimal:
      print(row)
  else:
    log("compute-optimal skipped: it compares against weighted_vote, which did not run")
  with open(os.path.join(_OUT.value, "search.json"), "w") as f:
    json.dump({"flags": {k: flags.FLAGS[k].value for k in (
        "strategies", "n", "tasks", "difficulty", "num_problems", "seed", "temperature",
        "beam_width", "bins", "checkpoint")},
               "problems": [dict(task=p.task, difficulty=p.difficulty, prompt=p.prompt,
                                 predicted_thinking=float(predicted[i]), bin=int(bins[i]))
                            for i, p in enumerate(problems)],
               "outcomes": outcomes, "compute_optimal": optimal,
               "elapsed_s": round(time.time() - t0, 1)}, f, indent=1)
  log(f"wrote {_OUT.value}/search.csv, search.png, search.json"
      + (", compute_optimal.csv" if optimal else ""))


def summarize(problems, outcomes):
  import numpy as np
  groups = {}
  for o in outcomes:
    p = problems[o["problem"]]
    for cell in ((p.task, p.difficulty), ("all", "all")):
      groups.setdefault((o["strategy"], o["n"]) + cell, []).append(o)
  rows = []
  for (strategy, n, task, difficulty), items in groups.items():
    rows.append(dict(strategy=strategy, n=n, task=task, difficulty=difficulty,
                     problems=len(items), accuracy=round(float(np.mean(
                         [o["correct"] for o in items])), 4),
                     generated_tokens=round(float(np.mean([o["tokens"] for o in items])), 1),
                     flops=float(f"{np.mean([o['flops'] for o in items]):.4g}")))
  return rows


def compute_optimal(allocation, outcomes, bins, num_problems, seed):
  """Selection on one half of the problems, evaluation on the other; targets are the
  best-of-N (PRM-weighted vote) accuracies at each N on the evaluation half."""
  import numpy as np
  order = np.random.default_rng(seed).permutation(num_problems)
  select, evaluate = sorted(order[::2]), sorted(order[1::2])
  pool = [allocation.Outcome(o["problem"], o["strategy"], o["n"], o["correct"], o["tokens"])
          for o in outcomes if o["strategy"] != "greedy"]
  baseline = "weighted_vote"
  curve = []
  for n in sorted({o.n for o in pool if o.strategy == baseline}):
    mine = [o for o in pool if o.strategy == baseline and o.n == n and o.problem in evaluate]
    curve.append((float(np.mean([o.tokens for o in mine])),
                  float(np.mean([o.correct for o in mine]))))
  rows = []
  for tokens_bon, target in curve:
    policy = allocation.choose_per_bin(pool, bins, select, target)
    acc, toks = allocation.evaluate_policy(pool, bins, evaluate, policy)
    need = allocation.tokens_to_reach(curve, acc) if acc <= max(a for _, a in curve) else None
    rows.append(dict(target=round(target, 4), best_of_n_tokens=round(tokens_bon, 1),
                     optimal_accuracy=round(acc, 4), optimal_tokens=round(toks, 1),
                     best_of_n_tokens_at_that_accuracy=None if need is None else round(need, 1),
                     ratio=None if need is None or toks == 0 else round(need / toks, 2),
                     policy=";".join(f"bin{b}={s}@{n}" for b, (s, n) in sorted(policy.items())),
                     select_problems=len(select), eval_problems=len(evaluate)))
  return rows


def write_csv(path, rows):
  import csv
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def print_table(rows):
  print(f"{'strategy':<20} {'n':>3} {'task':<10} {'diff':>4} {'probs':>5} {'acc':>6} "
        f"{'tokens':>8} {'flops':>10}")
  for r in sorted(rows, key=lambda r: (r["task"] != "all", r["task"], str(r["difficulty"]),
                                       r["strategy"], r["n"])):
    print(f"{r['strategy']:<20} {r['n']:>3} {r['task']:<10} {str(r['difficulty']):>4} "
          f"{r['problems']:>5} {r['accuracy']:>6.3f} {r['generated_tokens']:>8.1f} "
          f"{r['flops']:>10.3g}")


def plot(path, rows, temperature):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  overall = [r for r in rows if r["task"] == "all"]
  for strategy in dict.fromkeys(r["strategy"] for r in overall):
    pts = sorted((r["generated_tokens"], r["accuracy"]) for r in overall
                 if r["strategy"] == strategy)
    ax.plot(*zip(*pts), marker="o" if len(pts) > 1 else "*", label=strategy,
            markersize=5 if len(pts) > 1 else 12)
  ax.set_xscale("log")
  ax.set_xlabel("generated tokens per problem (log)")
  ax.set_ylabel("accuracy")
  ax.set_title(f"Search strategies at temperature {temperature} "
               f"({overall[0]['problems']} held-out problems)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


if __name__ == "__main__":
  app.run(main)
