r"""Test-time search strategies at equal compute: accuracy against generated tokens.

  python launch/search.py --out=docs/search                      # the table in docs/SEARCH.md

On held-out problems (distinct prompts, drawn without replacement) of each task and
difficulty, thinking sampled at --temperature (or the best of --temperature_sweep, chosen on
other problems) and answers at --answer_temperature (default 0: greedy after the sampled
thinking), every strategy runs at each N and each sampling seed (--seeds):
  sample (pass@1, N=1), majority, best_of_n_prm_{min,last,prod}, best_of_n_orm,
  weighted_vote (PRM min, summed per answer), beam, beam_backtrack, dvts, dvts_backtrack
and greedy decoding (N=1, temperature 0) as the reference. The best-of-N family choose
among the same N samples (sample j of a problem is the same for every N); beam and dvts run
per N that --beam_width divides and answer by the PRM-weighted vote over their solutions.
The PRM and ORM are heads on the policy's own hidden states (shipped beside the embedded
checkpoint), read while the policy decodes.

Writes OUT/search.csv (strategy,n,task,difficulty,problems,accuracy,generated_tokens,flops:
means over every (problem, seed) outcome, `problems` counts those outcomes; task/difficulty
"all" rows pool every cell), OUT/search.md (pooled accuracy with Wilson 95% intervals,
per-seed accuracies, the goals' checks), OUT/search.png (accuracy vs generated tokens, log
x), OUT/compute_optimal.csv, OUT/temperature_sweep.csv (with a sweep) and OUT/search.json
(every problem's outcome, for recomputing any figure: `--reanalyze=OUT/search.json`
rewrites every other file from it).
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
PRM_GUIDED = ("weighted_vote", "best_of_n_prm_min", "best_of_n_prm_last", "best_of_n_prm_prod",
              "beam", "beam_backtrack", "dvts", "dvts_backtrack")

_STRATEGIES = flags.DEFINE_list("strategies", list(SAMPLE_FAMILY) + list(TREE),
                                "Strategies to run (greedy always runs as the reference).")
_N = flags.DEFINE_list("n", ["1", "4", "16", "64"], "N: samples, or beam rows per problem.")
_TASKS = flags.DEFINE_list("tasks", ["addition", "equation"], "Tasks.")
_DIFFICULTY = flags.DEFINE_list("difficulty", ["5"], "Difficulty levels.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 48, "Distinct held-out problems per "
                                     "task and difficulty.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the problem draw.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "Sampling seeds: every strategy runs on "
                           "every problem once per seed.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Thinking temperature (without a sweep).")
_SWEEP = flags.DEFINE_list("temperature_sweep", [], "Thinking temperatures to choose from: "
                           "the one with the best weighted_vote accuracy at --sweep_n on "
                           "--sweep_problems other problems per cell (ties: fewer tokens).")
_SWEEP_N = flags.DEFINE_integer("sweep_n", 8, "N of the temperature sweep.")
_SWEEP_PROBLEMS = flags.DEFINE_integer("sweep_problems", 8, "Problems per cell of the sweep "
                                       "(disjoint from the measured ones).")
_ANSWER_T = flags.DEFINE_float("answer_temperature", 0.0, "Temperature of the answer after "
                               "`</think>` (negative: the thinking temperature).")
_GREEDY = flags.DEFINE_bool("greedy", True, "Run greedy decoding as the reference (off: for "
                            "a run whose outcomes join another's by --reanalyze).")
_BEAM_WIDTH = flags.DEFINE_integer("beam_width", 4, "M: candidates per kept beam.")
_BINS = flags.DEFINE_integer("bins", 2, "Predicted-difficulty bins for compute-optimal.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Policy checkpoint (default: embedded).")
_HEADS = flags.DEFINE_string("heads", None, "Directory with prm_head/orm_head (default: the "
                             "shipped ones; with --checkpoint, pass that policy's heads).")
_ROWS = flags.DEFINE_integer("rows_per_batch", 256, "Rows per compiled batch.")
_CACHE_LEN = flags.DEFINE_integer("cache_len", None, "KV cache per row (default: the model's "
                                  "max_seq_len); thinking that reaches it is closed.")
_REANALYZE = flags.DEFINE_list("reanalyze", [], "search.json files of one problem draw (e.g. "
                               "one per seed, run in parallel): rewrite the tables, plot and "
                               "compute-optimal from their outcomes together (no decoding).")
_OUT = flags.DEFINE_string("out", "runs/search", "Output directory.")


def log(msg, t0=[time.time()]):   # noqa: B006 (the start time, set once)
  print(f"[{time.time() - t0[0]:6.0f}s] {msg}", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _REANALYZE.value:
    report = merge(_REANALYZE.value)
    target = os.path.join(_OUT.value, "search.json")
    if len(_REANALYZE.value) > 1 and not any(os.path.samefile(target, p) for p in
                                               _REANALYZE.value if os.path.exists(target)):
      os.makedirs(_OUT.value, exist_ok=True)
      with open(target, "w") as f:     # the merged outcomes, for the next reanalysis
        json.dump(report, f, indent=1)
    analyze(report, _OUT.value)
    return
  unknown = set(_STRATEGIES.value) - set(SAMPLE_FAMILY) - set(TREE)
  if unknown:
    raise app.UsageError(f"unknown --strategies {sorted(unknown)}; known: "
                         f"{', '.join(list(SAMPLE_FAMILY) + list(TREE))}")
  ns = sorted(int(x) for x in _N.value)
  if not ns or ns[0] < 1:
    raise app.UsageError("--n must be positive integers")
  seeds = [int(s) for s in _SEEDS.value]
  if not seeds or len(set(seeds)) != len(seeds):
    raise app.UsageError("--seeds must be distinct integers")
  import numpy as np

  from o1jax import tasks as tasks_lib
  from o1jax.model.heads import load_head
  from o1jax.serving.predictor import SHIPPED_DIR, load_thinking_head, prompt_features
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config
  from o1jax.training import heads as heads_lib
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  os.makedirs(_OUT.value, exist_ok=True)
  params, model_config, _ = load_params(_CHECKPOINT.value or embedded_checkpoint_dir())
  tok = CharTokenizer()
  config = make_think_config(model_config, tok, _CACHE_LEN.value or model_config.max_seq_len,
                             max_answer_tokens=16)
  heads_dir = _HEADS.value or SHIPPED_DIR
  heads = {k: load_head(heads_dir, k)[0].head for k in ("prm", "orm")}
  levels = [int(d) for d in _DIFFICULTY.value]
  # One draw holds the sweep's problems after the measured ones: disjoint by construction.
  per_cell = _NUM_PROBLEMS.value + (_SWEEP_PROBLEMS.value if _SWEEP.value else 0)
  drawn = tasks_lib.distinct_problems(_TASKS.value, levels, per_cell, _SEED.value)
  cells = [drawn[i:i + per_cell] for i in range(0, len(drawn), per_cell)]
  problems = [p for c in cells for p in c[:_NUM_PROBLEMS.value]]
  sweep_problems = [p for c in cells for p in c[_NUM_PROBLEMS.value:]]
  answer_t = None if _ANSWER_T.value < 0 else _ANSWER_T.value
  run = Runner(params, tok, config, heads, _ROWS.value, _BEAM_WIDTH.value, answer_t)
  t0 = time.time()

  sweep_rows, temperature = [], _TEMPERATURE.value
  if _SWEEP.value:
    for t in [float(x) for x in _SWEEP.value]:
      out = []
      run.sample_family(sweep_problems, t, _SWEEP_N.value, [_SWEEP_N.value], seeds[0],
                        ["sample", "majority", "weighted_vote"], out)
      for strategy in ("sample", "majority", "weighted_vote"):
        mine = [o for o in out if o["strategy"] == strategy]
        sweep_rows.append(dict(temperature=t, strategy=strategy, n=mine[0]["n"],
                               problems=len(mine),
                               accuracy=round(float(np.mean([o["correct"] for o in mine])), 4),
                               generated_tokens=round(float(np.mean(
                                   [o["tokens"] for o in mine])), 1)))
      log(f"sweep T={t}: " + ", ".join(f"{r['strategy']} {r['accuracy']:.3f}"
                                       for r in sweep_rows[-3:]))
    votes = [r for r in sweep_rows if r["strategy"] == "weighted_vote"]
    temperature = max(votes, key=lambda r: (r["accuracy"], -r["generated_tokens"],
                                            -r["temperature"]))["temperature"]
    log(f"chosen thinking temperature {temperature}")

  outcomes = []
  log(f"{len(problems)} problems ({_NUM_PROBLEMS.value} per cell), thinking temperature "
      f"{temperature}, answer temperature {answer_t}, N in {ns}, seeds {seeds}")
  budget_head, _ = load_thinking_head()
  feats = prompt_features(params, tok, config, [p.prompt for p in problems])
  predicted = np.expm1(np.maximum(heads_lib.predict(budget_head, feats, "budget"), 0))
  report = {"flags": {k: flags.FLAGS[k].value for k in (
      "strategies", "n", "tasks", "difficulty", "num_problems", "seed", "seeds",
      "temperature", "temperature_sweep", "sweep_n", "sweep_problems", "answer_temperature",
      "beam_width", "bins", "checkpoint", "heads", "cache_len")},
      "thinking_temperature": temperature, "temperature_sweep": sweep_rows,
      "problems": [dict(task=p.task, difficulty=p.difficulty, prompt=p.prompt,
                        predicted_thinking=float(predicted[i]))
                   for i, p in enumerate(problems)],
      "outcomes": outcomes, "complete": False}

  def save(complete=False):
    # After every stage: a run cut short still leaves every finished stage's outcomes.
    report.update(complete=complete, elapsed_s=round(time.time() - t0, 1))
    with open(os.path.join(_OUT.value, "search.json"), "w") as f:
      json.dump(report, f, indent=1)

  # Stages in the order that keeps a cut-short run balanced: every seed's samples first,
  # then each tree strategy from small N to large, seed by seed.
  family = [s for s in _STRATEGIES.value if s in SAMPLE_FAMILY]
  greedy = []
  if _GREEDY.value:
    run.greedy(problems, seeds[0], greedy)
  for seed in seeds:
    outcomes += [{**o, "seed": seed} for o in greedy]   # greedy: the same for every seed
    if family:
      run.sample_family(problems, temperature, ns[-1], ns, seed, family, outcomes)
    save()
  for n in [n for n in ns if n % _BEAM_WIDTH.value == 0]:
    for strategy in [s for s in _STRATEGIES.value if s in TREE]:
      for seed in seeds:
        run.tree(problems, temperature, strategy, n, seed, outcomes)
        save()
  save(complete=True)
  analyze(report, _OUT.value)


def merge(paths):
  """One report from several runs on the same problems (their outcomes together); the
  runs must not overlap in (strategy, N, seed)."""
  reports = []
  for path in paths:
    with open(path) as f:
      reports.append(json.load(f))
  first = reports[0]
  for r in reports[1:]:
    if [p["prompt"] for p in r["problems"]] != [p["prompt"] for p in first["problems"]]:
      raise ValueError(f"{paths}: the runs are not on the same problems")
    if r["thinking_temperature"] != first["thinking_temperature"]:
      raise ValueError(f"{paths}: the runs sampled at different temperatures")
  keys = [(o["problem"], o["strategy"], o["n"], o["seed"]) for r in reports
          for o in r["outcomes"]]
  if len(set(keys)) != len(keys):
    raise ValueError(f"{paths}: the runs overlap (the same problem, strategy, N and seed)")
  if len(reports) == 1:
    return first
  return {**first, "outcomes": [o for r in reports for o in r["outcomes"]],
          "merged_from": [dict(flags=r["flags"], complete=r.get("complete"),
                               elapsed_s=r.get("elapsed_s")) for r in reports],
          "temperature_sweep": [x for r in reports for x in r.get("temperature_sweep", [])]}


class Runner:
  """Runs strategies on problems and records one outcome per (problem, strategy, N, seed)."""

  def __init__(self, params, tok, config, heads, rows, beam_width, answer_temperature):
    self.params, self.tok, self.config, self.heads = params, tok, config, heads
    self.rows, self.beam_width, self.answer_t = rows, beam_width, answer_temperature

  def _verify(self, problem, answer):
    from o1jax import tasks as tasks_lib
    return bool(tasks_lib.get_task(problem.task).verify(problem, answer))

  def greedy(self, problems, seed, outcomes):
    import numpy as np
    from o1jax.search import compute
    from o1jax.thinking import think_texts
    prompts = [p.prompt for p in problems]
    greedy = think_texts(self.params, self.tok, prompts, self.config, batch_size=64)
    for i, g in enumerate(greedy):
      toks = g.thinking_tokens + g.answer_tokens + 1
      plen = len(self.tok.encode_prompt(prompts[i]))
      flops = compute.count(self.config.model, generated=toks, prompt=plen,
                            mean_context=toks / 2 + plen).flops
      outcomes.append(dict(problem=i, strategy="greedy", n=1, seed=seed,
                           correct=self._verify(problems[i], g.answer), tokens=float(toks),
                           flops=float(flops)))
    log(f"greedy: accuracy {np.mean([self._verify(p, g.answer) for p, g in zip(problems, greedy)]):.3f}")

  def sample_family(self, problems, temperature, n_max, ns, seed, family, outcomes):
    from o1jax.search import SearchConfig, choose, compute, search
    prompts = [p.prompt for p in problems]
    start = time.time()
    res = search(self.params, self.tok, prompts, self.config,
                 SearchConfig(strategy="sample", n=n_max, temperature=temperature,
                              answer_temperature=self.answer_t,
                              rows_per_batch=max(self.rows, n_max), seed=seed),
                 heads=self.heads)
    total = sum(c.generated_tokens for c in res.compute)
    log(f"sampled {n_max} per problem at T={temperature}, seed {seed}: {total:,} tokens in "
        f"{time.time() - start:.0f}s ({total / (time.time() - start):,.0f} tokens/s)")
    mc = self.config.model
    for i, cands in enumerate(res.candidates):
      plen = len(self.tok.encode_prompt(prompts[i]))
      for strategy in family:
        for n in ([1] if strategy == "sample" else ns):
          first = cands[:n]
          toks = sum(c.tokens for c in first)
          reads = 0 if strategy in ("sample", "majority") else (
              n if strategy == "best_of_n_orm" else sum(len(c.step_scores) for c in first))
          flops = compute.count(mc, generated=toks, prompt=plen, evaluations=reads,
                                mean_context=plen + toks / (2 * n)).flops
          pick = first[0] if strategy == "sample" else choose(first, SAMPLE_FAMILY[strategy])
          outcomes.append(dict(problem=i, strategy=strategy, n=n, seed=seed,
                               correct=self._verify(problems[i], pick.answer),
                               tokens=float(toks), flops=float(flops)))

  def tree(self, problems, temperature, strategy, n, seed, outcomes):
    import numpy as np
    from o1jax.search import SearchConfig, choose, search
    kind, threshold = TREE[strategy]
    start = time.time()
    res = search(self.params, self.tok, [p.prompt for p in problems], self.config,
                 SearchConfig(strategy=kind, n=n, beam_width=self.beam_width,
                              backtrack_threshold=threshold, temperature=temperature,
                              answer_temperature=self.answer_t,
                              rows_per_batch=max(self.rows, n), seed=seed),
                 heads=self.heads)
    mine = []
    for i, cands in enumerate(res.candidates):
      ok = bool(cands) and self._verify(problems[i], choose(cands, TREE_SELECTOR).answer)
      mine.append(dict(problem=i, strategy=strategy, n=n, seed=seed, correct=ok,
                       tokens=float(res.compute[i].generated_tokens),
                       flops=float(res.compute[i].flops)))
    outcomes += mine
    log(f"{strategy} N={n} seed {seed}: accuracy {np.mean([o['correct'] for o in mine]):.3f}, "
        f"{np.mean([o['tokens'] for o in mine]):.0f} tokens/problem, "
        f"{sum(res.backtracks)} backtracks, {time.time() - start:.0f}s")


def analyze(report, out_dir):
  """Every table, the plot and compute-optimal, from a report's outcomes alone."""
  os.makedirs(out_dir, exist_ok=True)
  problems, outcomes = report["problems"], report["outcomes"]
  rows = summarize(problems, outcomes)
  write_csv(os.path.join(out_dir, "search.csv"), rows)
  plot(os.path.join(out_dir, "search.png"), rows, report["thinking_temperature"])
  print_table(rows)
  if report.get("temperature_sweep"):
    write_csv(os.path.join(out_dir, "temperature_sweep.csv"), report["temperature_sweep"])
  optimal = compute_optimal(report, int(report["flags"]["bins"]))
  if optimal:
    write_csv(os.path.join(out_dir, "compute_optimal.csv"), optimal)
  with open(os.path.join(out_dir, "search.md"), "w") as f:
    f.write(markdown(report, optimal))
  log(f"wrote {out_dir}/search.csv, search.md, search.png"
      + (", compute_optimal.csv" if optimal else ""))


def summarize(problems, outcomes):
  import numpy as np
  groups = {}
  for o in outcomes:
    p = problems[o["problem"]]
    for cell in ((p["task"], p["difficulty"]), ("all", "all")):
      groups.setdefault((o["strategy"], o["n"]) + cell, []).append(o)
  rows = []
  for (strategy, n, task, difficulty), items in groups.items():
    rows.append(dict(strategy=strategy, n=n, task=task, difficulty=difficulty,
                     problems=len(items), accuracy=round(float(np.mean(
                         [o["correct"] for o in items])), 4),
                     generated_tokens=round(float(np.mean([o["tokens"] for o in items])), 1),
                     flops=float(f"{np.mean([o['flops'] for o in items]):.4g}")))
  return rows


def wilson(successes, n, z=1.96):
  """The Wilson score 95% interval of a proportion."""
  import math
  if n == 0:
    return (float("nan"), float("nan"))
  p = successes / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return (centre - half, centre + half)


def per_problem(outcomes):
  """(strategy, n) -> {problem: (mean correct over seeds, mean tokens over seeds)}."""
  import numpy as np
  acc = {}
  for o in outcomes:
    acc.setdefault((o["strategy"], o["n"]), {}).setdefault(o["problem"], []).append(
        (o["correct"], o["tokens"]))
  return {k: {p: (float(np.mean([c for c, _ in v])), float(np.mean([t for _, t in v])))
              for p, v in d.items()} for k, d in acc.items()}


def _log_interp(points, tokens):
  """Accuracy of a curve [(tokens, accuracy)] at `tokens`, linear in log tokens; None
  outside the measured range."""
  import numpy as np
  points = sorted(points)
  if tokens < points[0][0] - 1e-9 or tokens > points[-1][0] + 1e-9:
    return None
  xs = np.log([t for t, _ in points])
  return float(np.interp(np.log(tokens), xs, [a for _, a in points]))


def versus_majority(outcomes, reps=1000, seed=0):
  """Each PRM-guided (strategy, N) against majority vote at its own generated tokens
  (majority's curve, linear in log tokens): the difference in points with a bootstrap 95%
  interval over problems (both seeds of a problem resampled together)."""
  import numpy as np
  table = per_problem(outcomes)
  probs = sorted({o["problem"] for o in outcomes})
  maj = sorted(n for (s, n) in table if s == "majority")
  if not maj:
    return []
  rng = np.random.default_rng(seed)
  draws = [rng.choice(probs, len(probs)) for _ in range(reps)]

  def diff(key, sample):
    acc = np.mean([table[key][p][0] for p in sample])
    tok = np.mean([table[key][p][1] for p in sample])
    curve = [(np.mean([table[("majority", n)][p][1] for p in sample]),
              np.mean([table[("majority", n)][p][0] for p in sample])) for n in maj]
    base = _log_interp(curve, tok)
    return None if base is None else 100 * (acc - base), tok
  rows = []
  for key in sorted(k for k in table if k[0] in PRM_GUIDED):
    point, tok = diff(key, probs)
    if point is None:
      continue
    boot = [d for d, _ in (diff(key, s) for s in draws) if d is not None]
    lo, hi = np.percentile(boot, [2.5, 97.5]) if boot else (float("nan"),) * 2
    rows.append(dict(strategy=key[0], n=key[1], tokens=tok, points=point, lo=lo, hi=hi))
  return rows


def compute_optimal(report, num_bins, reps=1000, seed=0):
  """Selection on one half of the problems, evaluation on the other (`allocation`); both
  seeds of a problem stay in its half (a problem's outcome is its mean over seeds). The
  ratio's 95% interval: the evaluation half resampled (policy and bins fixed)."""
  import numpy as np
  from o1jax.search import allocation
  outcomes = report["outcomes"]
  table = per_problem(outcomes)
  baseline = "weighted_vote"
  if not any(s == baseline for s, _ in table):
    log("compute-optimal skipped: it compares against weighted_vote, which did not run")
    return []
  pool = [allocation.Outcome(p, s, n, c, t) for (s, n), d in table.items()
          for p, (c, t) in d.items()]
  num = len(report["problems"])
  order = np.random.default_rng(seed).permutation(num)
  select, evaluate = sorted(order[::2].tolist()), sorted(order[1::2].tolist())
  predicted = [p["predicted_thinking"] for p in report["problems"]]
  rows = allocation.compute_optimal(pool, predicted, select, evaluate, baseline, num_bins,
                                    exclude=("greedy",))
  edges = allocation.difficulty_edges(np.asarray(predicted)[select], num_bins)
  bins = allocation.assign_bins(predicted, edges)
  rng = np.random.default_rng(seed)
  base_ns = sorted(n for s, n in table if s == baseline)
  for row in rows:
    policy = {int(b[3:]): (s, int(n)) for b, sn in (x.split("=") for x in row["policy"].split(";"))
              for s, n in [sn.split("@")]}
    ratios = []
    for _ in range(reps):
      sample = rng.choice(evaluate, len(evaluate))
      pick = lambda p: table[policy[min(policy, key=lambda c: (abs(c - int(bins[p])), c))]][p]
      acc = np.mean([pick(p)[0] for p in sample])
      tok = np.mean([pick(p)[1] for p in sample])
      curve = [(np.mean([table[(baseline, n)][p][1] for p in sample]),
                np.mean([table[(baseline, n)][p][0] for p in sample])) for n in base_ns]
      need = allocation.tokens_to_reach(curve, acc)
      if need is not None and tok > 0:
        ratios.append(need / tok)
    lo, hi = np.percentile(ratios, [2.5, 97.5]) if ratios else (float("nan"),) * 2
    row.update(ratio_lo=round(float(lo), 3), ratio_hi=round(float(hi), 3),
               ratio_reps_reached=len(ratios))
  greedy = table.get(("greedy", 1))
  if greedy:
    acc = np.mean([greedy[p][0] for p in evaluate])
    tok = np.mean([greedy[p][1] for p in evaluate])
    curve = [(np.mean([table[(baseline, n)][p][1] for p in evaluate]),
              np.mean([table[(baseline, n)][p][0] for p in evaluate])) for n in base_ns]
    need = allocation.tokens_to_reach(curve, acc)
    rows.append(dict(n="greedy", select_target=None, baseline_accuracy=None,
                     baseline_tokens=None, optimal_accuracy=round(float(acc), 4),
                     optimal_tokens=round(float(tok), 1),
                     baseline_tokens_at_that_accuracy=None if need is None else round(
                         float(need), 1),
                     ratio=None if need is None else round(float(need / tok), 3),
                     policy="greedy",
                     edges=rows[0]["edges"], select_problems=len(select),
                     eval_problems=len(evaluate), ratio_lo=None, ratio_hi=None,
                     ratio_reps_reached=None))
  for row in rows:
    print(row)
  return rows


def markdown(report, optimal):
  """The doc's tables: pooled accuracy with Wilson intervals, per seed; the goals."""
  import numpy as np
  outcomes = report["outcomes"]
  seeds = sorted({o["seed"] for o in outcomes})
  num = len(report["problems"])
  keys = sorted({(o["strategy"], o["n"]) for o in outcomes},
                key=lambda k: (list(SAMPLE_FAMILY).index(k[0]) + 1
                               if k[0] in SAMPLE_FAMILY else
                               0 if k[0] == "greedy" else 20 + list(TREE).index(k[0]), k[1]))
  lines = [f"{num} distinct problems x {len(seeds)} sampling seeds; thinking temperature "
           f"{report['thinking_temperature']}, answer temperature "
           f"{report['flags']['answer_temperature']}. Accuracy pools every (problem, seed) "
           "outcome; its interval is Wilson's 95% over those outcomes.", "",
           "| strategy | N | accuracy [95% CI] | " + " | ".join(f"seed {s}" for s in seeds)
           + " | generated tokens / problem |",
           "| --- | --- | --- | " + " | ".join("---" for _ in seeds) + " | --- |"]
  for key in keys:
    mine = [o for o in outcomes if (o["strategy"], o["n"]) == key]
    k = sum(o["correct"] for o in mine)
    lo, hi = wilson(k, len(mine))
    per_seed = [np.mean([o["correct"] for o in mine if o["seed"] == s]) for s in seeds]
    lines.append(f"| {key[0]} | {key[1]} | {k / len(mine):.3f} [{lo:.3f}, {hi:.3f}] | "
                 + " | ".join(f"{a:.3f}" for a in per_seed)
                 + f" | {np.mean([o['tokens'] for o in mine]):.0f} |")
  lines += ["", "PRM-guided strategies against majority vote at equal generated tokens "
            "(majority's curve interpolated in log tokens; bootstrap 95% over problems):", "",
            "| strategy | N | tokens | points vs majority [95% CI] |", "| --- | --- | --- | --- |"]
  for r in versus_majority(outcomes):
    lines.append(f"| {r['strategy']} | {r['n']} | {r['tokens']:.0f} | {r['points']:+.1f} "
                 f"[{r['lo']:+.1f}, {r['hi']:+.1f}] |")
  lines += ["", "Accuracy by N for each PRM-guided strategy (does it fall with N?):", ""]
  table = per_problem(outcomes)
  for strategy in PRM_GUIDED:
    ns = sorted(n for s, n in table if s == strategy)
    if len(ns) < 2:
      continue
    accs = [np.mean(list(c for c, _ in table[(strategy, n)].values())) for n in ns]
    falls = [(a, b) for a, b in zip(accs, accs[1:]) if b < a - 1e-9]
    lines.append(f"- {strategy}: " + ", ".join(f"N={n} {a:.3f}" for n, a in zip(ns, accs))
                 + (f": falls ({len(falls)} step(s) down, largest "
                    f"{100 * max(a - b for a, b in falls):.1f} points)" if falls
                    else ": never falls"))
  if optimal:
    lines += ["", "Compute-optimal allocation (`compute_optimal.csv`):", "",
              "| N (target) | selection target | best-of-N accuracy, tokens | compute-optimal "
              "accuracy, tokens | best-of-N tokens at that accuracy | ratio [95% CI] | policy |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in optimal:
      ratio = "never reached" if r["ratio"] is None else f"{r['ratio']:.2f}x" + (
          f" [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}]" if r.get("ratio_lo") is not None
          else "")
      base = ("" if r["baseline_accuracy"] is None
              else f"{r['baseline_accuracy']:.3f}, {r['baseline_tokens']:.0f}")
      lines.append(f"| {r['n']} | {r['select_target'] if r['select_target'] is not None else ''}"
                   f" | {base} | {r['optimal_accuracy']:.3f}, {r['optimal_tokens']:.0f} | "
                   f"{r['baseline_tokens_at_that_accuracy']} | {ratio} | {r['policy']} |")
  return "\n".join(lines) + "\n"


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
