r"""Thinking vs training on the shipped task family, canonical split (issue 34, docs/SCALING.md).

The six models of configs/scaling.py (sizes S, M, L spanning ~12.6x training FLOPs, each
trained with thinking traces and with answers only) are trained first, one command each:
  python launch/train.py --config=configs/scaling.py:L,think --workdir=runs/scaling/L_think
  ...                                 (S|M|L) x (think|answers)
then this script evaluates them all and writes the table and the plot:
  python launch/scaling_study.py --runs=runs/scaling --out=docs/scaling/thinking_vs_training

Every model answers the same held-out problems: `--num_problems` distinct prompts per task
and level, drawn without replacement from the canonical split's held-out side (no permuted
twin of any of them was trained on). Thinking models answer greedily at each of `--budgets`
(and, with --vote_n, by majority over sampled solutions); answers-only models greedily with
no thinking. Training FLOPs are 6 x matmul parameters x trained tokens (the checkpoint's
step x rows x row length); inference FLOPs per query count the prompt and every generated
token (o1jax/search/compute.py); total compute = training + Q x inference per query for each
Q of `--queries`. A model's evaluation is cached beside its checkpoint (eval_*.json), so a
model can be evaluated as soon as it is trained.

Writes OUT.csv (per model, decoding, level and task; task "all" pools the tasks) and OUT.png
(pooled accuracy against total compute per level, Wilson 95% intervals), and prints the
comparison of every thinking model against the answers-only model with >= 10x its training
FLOPs, per level and Q.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import sys
import time

from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_RUNS = flags.DEFINE_string("runs", "runs/scaling", "Folder of the trained workdirs "
                            "(SIZE_MODE, e.g. L_think), as configs/scaling.py names them.")
_SIZES = flags.DEFINE_list("sizes", ["S", "M", "L"], "Sizes to evaluate.")
_TASKS = flags.DEFINE_list("tasks", ["addition", "equation", "countdown"], "Task families.")
_DIFFICULTY = flags.DEFINE_list("difficulty", ["1", "2", "3", "4", "5"], "Levels.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 24, "Distinct problems per task and level.")
_BUDGETS = flags.DEFINE_list("budgets", ["0", "16", "64", "inf"], "Thinking-model budgets.")
_VOTE = flags.DEFINE_list("vote_n", [], "Majority-vote sizes for the thinking models.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature of the votes.")
_QUERIES = flags.DEFINE_list("queries", ["1e3", "1e6"], "Deployment sizes Q (queries).")
_SEED = flags.DEFINE_integer("seed", 0, "Problem draw and sampling seed.")
_BATCH = flags.DEFINE_integer("batch_size", 72, "Prompts per thinking batch.")
_OUT = flags.DEFINE_string("out", "runs/scaling/thinking_vs_training", "Output path prefix.")

MODES = ("think", "answers")
MAX_ANSWER_TOKENS = 24   # the longest level-5 countdown expression is under 20 characters


def scaling_config():
  spec = importlib.util.spec_from_file_location("o1jax_config_scaling",
                                                os.path.join(ROOT, "configs", "scaling.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def evaluate_model(workdir, mode, problems, settings) -> dict:
  """Per decoding: per problem (correct, generated tokens, inference FLOPs); cached in the
  workdir under a hash of the settings and the checkpoint step."""
  import numpy as np

  from o1jax import tasks as tasks_lib
  from o1jax.analysis import provenance
  from o1jax.search import SearchConfig, choose, compute, search
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config, parse_budget, think_texts
  from o1jax.training.checkpoint import load_params

  params, mc, info = load_params(workdir)
  # The checkpoint's content is in the key: a retrained workdir is evaluated again.
  weights = provenance.checkpoint_sha256(os.path.join(workdir, "checkpoints", str(info["step"])))
  key = hashlib.sha256(json.dumps([settings, info["step"], mode, weights]).encode()
                       ).hexdigest()[:12]
  cache = os.path.join(workdir, f"eval_{key}.json")
  if os.path.exists(cache):
    with open(cache) as f:
      return json.load(f)
  t0 = time.time()
  tok = CharTokenizer()
  prompts = [p.prompt for p in problems]
  verify = lambda i, text: tasks_lib.get_task(problems[i].task).verify(problems[i], text)

  def flops(i, generated):
    p = prompts[i]
    return compute.count(mc, generated=generated, prompt=len(tok.encode_prompt(p)),
                         mean_context=len(p) + generated / 2).flops

  config = make_think_config(mc, tok, mc.max_seq_len, max_answer_tokens=MAX_ANSWER_TOKENS)
  out = {"step": int(info["step"]), "matmul_params": compute.matmul_params(mc),
         "decodings": {}}
  budgets = settings["budgets"] if mode == "think" else ["0"]
  for b in budgets:
    res = think_texts(params, tok, prompts, config, budgets=parse_budget(b),
                      batch_size=settings["batch_size"])
    gen = [t.thinking_tokens + t.answer_tokens + 1 for t in res]
    name = "no thinking" if mode == "answers" else f"greedy, budget {b}"
    out["decodings"][name] = [[bool(verify(i, t.answer)), g, flops(i, g)]
                              for i, (t, g) in enumerate(zip(res, gen))]
    print(f"  {os.path.basename(workdir)} {name}: accuracy "
          f"{np.mean([r[0] for r in out['decodings'][name]]):.3f} "
          f"({time.time() - t0:.0f}s)", flush=True)
  for n in (settings["vote_n"] if mode == "think" else []):
    res = search(params, tok, prompts, config,
                 SearchConfig(strategy="sample", n=int(n), temperature=settings["temperature"],
                              seed=settings["seed"], rows_per_batch=256))
    name = f"majority of {n} (T={settings['temperature']})"
    out["decodings"][name] = [
        [bool(verify(i, choose(c, "majority").answer)), r.generated_tokens,
         flops(i, r.generated_tokens / int(n)) * int(n)]
        for i, (c, r) in enumerate(zip(res.candidates, res.compute))]
  out["eval_wall_s"] = round(time.time() - t0, 1)
  with open(cache, "w") as f:
    json.dump(out, f)
  return out


def table(models, problems, queries) -> list[dict]:
  """One row per (model, decoding, level, task), task "all" pooling the tasks."""
  import numpy as np

  from o1jax.analysis.intervals import wilson

  rows = []
  levels = sorted({p.difficulty for p in problems})
  tasks = list(dict.fromkeys(p.task for p in problems))
  for m in models:
    for decoding, results in m["eval"]["decodings"].items():
      for level in levels:
        for task in tasks + ["all"]:
          idx = [i for i, p in enumerate(problems) if p.difficulty == level
                 and (task == "all" or p.task == task)]
          k = sum(results[i][0] for i in idx)
          lo, hi = wilson(k, len(idx))
          inference = float(np.mean([results[i][2] for i in idx]))
          row = dict(model=m["name"], size=m["size"], trained_with=m["mode"],
                     training_flops=f"{m['training_flops']:.4g}", decoding=decoding,
                     level=level, task=task, n=len(idx), correct=k,
                     accuracy=round(k / len(idx), 4), wilson_lo=round(lo, 4),
                     wilson_hi=round(hi, 4),
                     generated_tokens=round(float(np.mean([results[i][1] for i in idx])), 1),
                     inference_flops_per_query=f"{inference:.4g}")
          for q in queries:
            row[f"total_flops_q{q:.0e}"] = f"{m['training_flops'] + q * inference:.4g}"
          rows.append(row)
  return rows


def _verdict(s, b) -> str:
  if s["wilson_lo"] > b["wilson_hi"]:
    return "THINKING wins (intervals apart)"
  if s["wilson_hi"] < b["wilson_lo"]:
    return "TRAINING wins (intervals apart)"
  return "tie within intervals"


def crossover(rows, queries, models) -> list[str]:
  """Each thinking model against each answers-only model with >= 10x its training FLOPs,
  per task (and pooled) and level: the thinking model's budget-inf answer and its best
  decoding on these very problems (chosen on the test set: an upper bound, said so); then
  per level and Q, the compute frontier (no other point both cheaper and more accurate)."""
  lines = []
  tasks = list(dict.fromkeys(r["task"] for r in rows))
  for small in (m for m in models if m["mode"] == "think"):
    for big in (m for m in models if m["mode"] == "answers"
                and m["training_flops"] >= 10 * small["training_flops"]):
      ratio = big["training_flops"] / small["training_flops"]
      lines.append(f"## {small['name']} vs {big['name']} ({ratio:.1f}x the training FLOPs)")
      for task in tasks:
        for level in sorted({r["level"] for r in rows}):
          cell = [r for r in rows if r["task"] == task and r["level"] == level]
          b = next(r for r in cell if r["model"] == big["name"])
          thinks = [r for r in cell if r["model"] == small["name"]]
          inf = next((r for r in thinks if r["decoding"] == "greedy, budget inf"), thinks[-1])
          best = max(thinks, key=lambda r: r["accuracy"])
          totals = ", ".join(
              f"Q={q:.0e} total {float(inf[f'total_flops_q{q:.0e}']):.3g} vs "
              f"{float(b[f'total_flops_q{q:.0e}']):.3g}" for q in queries)
          lines.append(
              f"{task:9s} level {level}: {inf['decoding']} {inf['accuracy']:.2f} "
              f"[{inf['wilson_lo']:.2f},{inf['wilson_hi']:.2f}] vs {b['accuracy']:.2f} "
              f"[{b['wilson_lo']:.2f},{b['wilson_hi']:.2f}]: {_verdict(inf, b)}; best "
              f"decoding ({best['decoding']}) {best['accuracy']:.2f}: {_verdict(best, b)}; "
              f"{totals}")
  pooled = [r for r in rows if r["task"] == "all"]
  for q in queries:
    col = f"total_flops_q{q:.0e}"
    lines.append(f"## compute frontier at Q={q:.0e} (pooled tasks)")
    for level in sorted({r["level"] for r in pooled}):
      cell = sorted((r for r in pooled if r["level"] == level),
                    key=lambda r: (float(r[col]), -r["accuracy"]))
      frontier, best = [], -1.0
      for r in cell:
        if r["accuracy"] > best:
          frontier.append(f"{r['model']} ({r['decoding']}) {r['accuracy']:.2f} at "
                          f"{float(r[col]):.3g}")
          best = r["accuracy"]
      lines.append(f"level {level}: " + " -> ".join(frontier))
  return lines


def markdown(rows) -> list[str]:
  """The pooled table as docs/SCALING.md shows it: per model and decoding, accuracy with its
  Wilson interval at each level, and the inference cost per query (mean over levels)."""
  pooled = [r for r in rows if r["task"] == "all"]
  levels = sorted({r["level"] for r in pooled})
  lines = ["| model | training FLOPs | decoding | " + " | ".join(f"level {l}" for l in levels)
           + " | tokens / query | inference FLOPs / query |",
           "| --- | --- | --- | " + " | ".join("---" for _ in levels) + " | --- | --- |"]
  for key in dict.fromkeys((r["model"], r["decoding"]) for r in pooled):
    cells = [r for r in pooled if (r["model"], r["decoding"]) == key]
    accs = " | ".join(f"{r['accuracy']:.2f} [{r['wilson_lo']:.2f}, {r['wilson_hi']:.2f}]"
                      for r in cells)
    tokens = sum(r["generated_tokens"] for r in cells) / len(cells)
    inference = sum(float(r["inference_flops_per_query"]) for r in cells) / len(cells)
    lines.append(f"| {key[0]} | {cells[0]['training_flops']} | {key[1]} | {accs} | "
                 f"{tokens:.1f} | {inference:.3g} |")
  return lines


def plot(rows, queries, path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  pooled = [r for r in rows if r["task"] == "all"]
  levels = sorted({r["level"] for r in pooled})
  fig, axes = plt.subplots(len(queries), len(levels), figsize=(3.2 * len(levels),
                                                               3.2 * len(queries)),
                           sharey=True, squeeze=False)
  colours = {"S": "tab:blue", "M": "tab:orange", "L": "tab:green"}
  for ax_row, q in zip(axes, queries):
    for ax, level in zip(ax_row, levels):
      for r in (r for r in pooled if r["level"] == level):
        x = float(r[f"total_flops_q{q:.0e}"])
        think = r["trained_with"] == "think"
        ax.errorbar([x], [r["accuracy"]], yerr=[[r["accuracy"] - r["wilson_lo"]],
                                                [r["wilson_hi"] - r["accuracy"]]],
                    fmt="o" if think else "s", color=colours.get(r["size"], "k"),
                    mfc=colours.get(r["size"]) if think else "none", ms=5, capsize=2, lw=0.8)
        if think:
          ax.annotate(r["decoding"].replace("greedy, budget ", "b"), (x, r["accuracy"]),
                      fontsize=6, xytext=(3, 2), textcoords="offset points")
      ax.set_xscale("log")
      ax.set_title(f"level {level} (n={pooled[0]['n']}), Q={q:.0e}", fontsize=8)
      ax.set_xlabel(f"training + {q:.0e} x inference FLOPs", fontsize=7)
      ax.grid(alpha=0.3)
      ax.tick_params(labelsize=6, which="both")
    ax_row[0].set_ylabel("accuracy (Wilson 95%)")
  handles = [plt.Line2D([], [], marker="o" if mode == "think" else "s", ls="",
                        color=colours[s], mfc=colours[s] if mode == "think" else "none",
                        label=f"{s}, {'thinking' if mode == 'think' else 'answers only'}")
             for s in colours for mode in MODES]
  fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7)
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  from o1jax import tasks as tasks_lib

  t0 = time.time()
  cfg = scaling_config()
  queries = [float(q) for q in _QUERIES.value]
  problems = tasks_lib.distinct_problems(_TASKS.value, [int(d) for d in _DIFFICULTY.value],
                                         _NUM_PROBLEMS.value, _SEED.value, split="eval",
                                         split_key="canonical")
  settings = dict(tasks=_TASKS.value, difficulty=_DIFFICULTY.value, n=_NUM_PROBLEMS.value,
                  seed=_SEED.value, budgets=_BUDGETS.value, vote_n=_VOTE.value,
                  temperature=_TEMPERATURE.value, batch_size=_BATCH.value)
  models = []
  for size in _SIZES.value:
    for mode in MODES:
      workdir = os.path.join(_RUNS.value, f"{size}_{mode}")
      if not os.path.isdir(workdir):
        print(f"skipped {size}_{mode}: no workdir {workdir}")
        continue
      ev = evaluate_model(workdir, mode, problems, settings)
      tokens = ev["step"] * cfg.ROWS * cfg.SEQ_LEN
      models.append(dict(name=f"{size}_{mode}", size=size, mode=mode, eval=ev,
                         training_flops=6.0 * ev["matmul_params"] * tokens))
      print(f"[{time.time() - t0:5.0f}s] {size}_{mode}: step {ev['step']}, "
            f"{ev['matmul_params']:,} matmul params, training FLOPs "
            f"{models[-1]['training_flops']:.3g}, eval {ev['eval_wall_s']}s", flush=True)
  rows = table(models, problems, queries)
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value + ".csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  plot(rows, queries, _OUT.value + ".png")
  for line in markdown(rows) + crossover(rows, queries, models):
    print(line)
  print(f"wrote {_OUT.value}.csv and .png ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
  app.run(main)
