r"""The article's "thinking vs 10x training compute" at our scale.

  python launch/thinking_vs_training.py --out=docs/search/thinking_vs_training

Three policies trained by launch/train.py from configs/tiny.py on the same data recipe:
  * small: 2 layers, 680 steps of 9 rows (about 1/10 of the embedded model's training FLOPs),
    with thinking;
  * large_no_thinking: the embedded recipe (4 layers, 1700 steps of 18 rows: 10x small's
    FLOPs) with every example's thinking empty: a model that answers directly;
  * embedded: the shipped reasoner (the same 10x FLOPs, with thinking), for reference.
Every policy answers the same held-out problems (distinct prompts, without replacement).
The small model thinks with budgets and with majority vote over sampled solutions; the large
one answers without thinking. Training FLOPs are 6 x matmul parameters x trained tokens;
inference FLOPs per query count the prompt and every generated token (o1jax/search/compute.py).
Writes OUT.csv and OUT.png (accuracy against inference FLOPs per query, log x).
"""

from __future__ import annotations

import csv
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_SMALL = flags.DEFINE_string("small", "runs/tenth_2l", "The 1/10-FLOPs thinking policy.")
_SMALL_TOKENS = flags.DEFINE_integer("small_tokens", 680 * 9 * 240, "Its trained tokens.")
_LARGE = flags.DEFINE_string("large", "runs/tenx_nothink", "The no-thinking 10x policy.")
_LARGE_TOKENS = flags.DEFINE_integer("large_tokens", 1700 * 18 * 240, "Its trained tokens.")
_EMBEDDED_TOKENS = flags.DEFINE_integer("embedded_tokens", 1700 * 18 * 240,
                                        "The embedded policy's trained tokens.")
_BUDGETS = flags.DEFINE_list("budgets", ["0", "16", "64", "inf"], "Small-model budgets.")
_VOTE = flags.DEFINE_list("vote_n", ["4", "16"], "Majority-vote sizes for the small model.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature of the votes.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 16, "Problems per task and level.")
_DIFFICULTY = flags.DEFINE_list("difficulty", ["1", "2", "3", "4"], "Levels.")
_SEED = flags.DEFINE_integer("seed", 0, "Problem draw and sampling seed.")
_OUT = flags.DEFINE_string("out", "runs/thinking_vs_training", "Output path prefix.")


def main(argv):
  del argv
  import numpy as np

  from o1jax import tasks as tasks_lib
  from o1jax.search import SearchConfig, choose, compute, search
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config, parse_budget, think_texts
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  t0 = time.time()
  tok = CharTokenizer()
  problems = tasks_lib.distinct_problems(["addition", "equation", "countdown"],
                               [int(d) for d in _DIFFICULTY.value], _NUM_PROBLEMS.value,
                               _SEED.value)
  prompts = [p.prompt for p in problems]
  correct = lambda i, a: tasks_lib.get_task(problems[i].task).verify(problems[i], a)
  rows = []

  def add(label, path, tokens_trained, thinking, answers, generated, model_config):
    train = 6 * compute.matmul_params(model_config) * tokens_trained
    flops = [compute.count(model_config, generated=g, prompt=len(tok.encode_prompt(p)),
                           mean_context=len(p) + g / 2).flops
             for p, g in zip(prompts, generated)]
    acc = float(np.mean([correct(i, a) for i, a in enumerate(answers)]))
    rows.append(dict(model=label, checkpoint=path, training_flops=f"{train:.3g}",
                     thinking=thinking, problems=len(prompts), accuracy=round(acc, 4),
                     generated_tokens=round(float(np.mean(generated)), 1),
                     inference_flops=f"{np.mean(flops):.3g}"))
    print(f"[{time.time() - t0:5.0f}s] {label:<18} {thinking:<22} accuracy {acc:.3f} "
          f"tokens/query {np.mean(generated):7.1f} training FLOPs {train:.3g}", flush=True)

  def greedy(label, path, tokens_trained, budgets):
    params, mc, _ = load_params(path or embedded_checkpoint_dir())
    path = path or "o1jax/checkpoints/tiny"   # recorded repo-relative, never a machine path
    config = make_think_config(mc, tok, mc.max_seq_len, max_answer_tokens=16)
    for b in budgets:
      out = think_texts(params, tok, prompts, config, budgets=parse_budget(b), batch_size=64)
      add(label, path, tokens_trained, f"greedy, budget {b}", [t.answer for t in out],
          [t.thinking_tokens + t.answer_tokens + 1 for t in out], mc)
    return params, mc, config

  small = greedy("small (1x)", _SMALL.value, _SMALL_TOKENS.value, _BUDGETS.value)
  params, mc, config = small
  for n in sorted(int(x) for x in _VOTE.value):
    res = search(params, tok, prompts, config,
                 SearchConfig(strategy="sample", n=n, temperature=_TEMPERATURE.value,
                              seed=_SEED.value, rows_per_batch=256))
    add("small (1x)", _SMALL.value, _SMALL_TOKENS.value,
        f"majority of {n} (T={_TEMPERATURE.value})",
        [choose(c, "majority").answer for c in res.candidates],
        [r.generated_tokens for r in res.compute], mc)
  greedy("large, no thinking", _LARGE.value, _LARGE_TOKENS.value, ["0"])
  greedy("embedded (10x)", None, _EMBEDDED_TOKENS.value, ["0", "inf"])

  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value + ".csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for label in dict.fromkeys(r["model"] for r in rows):
    pts = [(float(r["inference_flops"]), r["accuracy"], r["thinking"]) for r in rows
           if r["model"] == label]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=f"{label}: "
               f"{next(r['training_flops'] for r in rows if r['model'] == label)} train FLOPs")
    for x, y, text in pts:
      ax.annotate(text.replace("greedy, ", ""), (x, y), fontsize=6)
  ax.set_xscale("log")
  ax.set_xlabel("inference FLOPs per query (log)")
  ax.set_ylabel(f"accuracy ({len(prompts)} held-out problems)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(_OUT.value + ".png", dpi=120)
  print(f"wrote {_OUT.value}.csv and .png")


if __name__ == "__main__":
  app.run(main)
