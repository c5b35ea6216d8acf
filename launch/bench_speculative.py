"""Speculative decoding inside the thinking loop: acceptance rate and speed-up vs plain think().

  python launch/train.py --config=configs/policy25m.py --workdir=runs/policy25m \
      --config.train.export_dir=runs/policy25m/export     # the ~25M policy, ~45 min here
  python launch/bench_speculative.py --policy_25m=runs/policy25m/export \
      --out=docs/speculative/bench.json

Greedy thinking on held-out task prompts with long traces (budget --budget, then the
answer). For each model, batch size and draft, plain `think()` and speculative `think()` run
the same inputs, alternating rep by rep in one process (ratios survive the shared machine's
drift better than absolute times); the outputs are checked token for token equal. Reported:
tokens/s of each, the speed-up, the acceptance rate (proposals emitted as proposed /
proposals made) and the tokens a sequence emits per policy forward (per iteration it is live).

Models:
  * tiny: the embedded 0.8M reasoner; drafts: its own first 1..3 of 4 layers.
  * 25m: a ~25M-parameter policy (d=512, 8 layers, the char vocabulary), from
    --policy_25m, a directory written by launch/train.py's export (see docs/BENCHMARKS.md for
    the training command); drafts: the embedded tiny model (trained on the same tasks) and
    the policy's own first 2 layers. Without --policy_25m the weights are random, and the
    acceptance rate says nothing about a real model (recorded as such).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time

from absl import app, flags

_MODELS = flags.DEFINE_list("models", ["tiny", "25m"], "Which policies: tiny, 25m.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
_GAMMA = flags.DEFINE_integer("gamma", 4, "Proposals per iteration.")
_BUDGET = flags.DEFINE_integer("budget", 256, "Thinking budget per request.")
_ANSWER = flags.DEFINE_integer("max_answer_tokens", 16, "Answer cap.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed repetitions per variant (median reported).")
_POLICY_25M = flags.DEFINE_string("policy_25m", None,
                                  "Exported ~25M policy (launch/train.py export_dir).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")

_CACHE_LEN = 320
_PROMPT_WIDTH = 64


def _prompts(n: int) -> list[str]:
  """Held-out problems with long traces (thinking is long generation): countdown 3-4 (a
  search), addition and equation at level 4."""
  from o1jax import tasks
  kinds = [("countdown", 4), ("addition", 4), ("countdown", 3), ("equation", 4)]
  out = []
  for seed in range(100):
    for name, d in kinds:
      out += [p.prompt for p in tasks.get_task(name).generate_problems(seed, d, 1,
                                                                       split="eval")]
      if len(out) == n:
        return out
  return out


def _load_policies():
  import jax

  from o1jax.model import ModelConfig
  from o1jax.model.transformer import count_params, init_params
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  tiny_params, tiny_config, _ = load_params(embedded_checkpoint_dir())
  policies = {}
  if "tiny" in _MODELS.value:
    drafts = [(f"self, first {k} of 4 layers", k, None, None) for k in (1, 2, 3)]
    policies["tiny"] = dict(params=tiny_params, config=tiny_config, trained=True,
                            drafts=drafts)
  if "25m" in _MODELS.value:
    if _POLICY_25M.value:
      params, config, _ = load_params(_POLICY_25M.value)
      trained = True
    else:
      config = ModelConfig(vocab_size=128, embed_dim=512, num_layers=8, num_heads=8,
                           num_kv_heads=4, head_dim=64, mlp_dim=1536, max_seq_len=_CACHE_LEN)
      params, trained = init_params(config, jax.random.key(0)), False
    drafts = [("embedded tiny model (0.8M)", None, tiny_config, tiny_params),
              ("self, first 2 of 8 layers", 2, None, None)]
    policies["25m"] = dict(params=params, config=config, trained=trained, drafts=drafts,
                           num_params=count_params(params))
  return policies


def _bench(name, policy, batch, log):
  import jax
  import numpy as np

  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import SpeculativeConfig, make_think_config, prepare_inputs, think
  from o1jax.thinking.speculative import think_with_stats

  tok = CharTokenizer()
  params = policy["params"]
  config = make_think_config(policy["config"], tok, _CACHE_LEN,
                             max_answer_tokens=_ANSWER.value)
  # Batch 1 runs four prompts one after another (one program), batch 8 eight together.
  prompts = _prompts(max(batch, 4))
  groups = [prompts[i:i + batch] for i in range(0, len(prompts), batch)]
  groups = [g for g in groups if len(g) == batch]
  inputs = [jax.device_put(prepare_inputs(tok, g, config, _BUDGET.value,
                                          width=_PROMPT_WIDTH)) for g in groups]
  rng = jax.random.key(0)

  def run_plain():
    return [jax.block_until_ready(think(params, x, config, rng)) for x in inputs]

  rows = []
  for label, layers, draft_model, draft_params in policy["drafts"]:
    spec = SpeculativeConfig(_GAMMA.value, draft_layers=layers or 1, draft_model=draft_model)
    spec_config = dataclasses.replace(config, speculative=spec)

    def run_spec():
      return [jax.block_until_ready(think_with_stats(params, x, spec_config, rng,
                                                      draft_params=draft_params))
              for x in inputs]

    plain_out, spec_out = run_plain(), run_spec()  # warm-up: compile
    same = all(np.array_equal(p.tokens, s.tokens) and
               np.array_equal(p.num_generated, s.num_generated)
               for p, (s, _) in zip(plain_out, spec_out))
    tokens = sum(int(np.sum(p.num_generated)) for p in plain_out)
    drafted = sum(int(np.sum(c["drafted"])) for _, c in spec_out)
    accepted = sum(int(np.sum(c["accepted"])) for _, c in spec_out)
    iterations = sum(int(c["iterations"]) for _, c in spec_out)
    times = {"plain": [], "spec": []}
    for _ in range(_REPS.value):  # alternate, so drift hits both sides alike
      for side, fn in (("plain", run_plain), ("spec", run_spec)):
        t0 = time.perf_counter()
        fn()
        times[side].append(time.perf_counter() - t0)
    plain_s, spec_s = statistics.median(times["plain"]), statistics.median(times["spec"])
    row = dict(model=name, batch=batch, draft=label, gamma=_GAMMA.value,
               tokens=tokens, identical_to_plain=same,
               plain_tokens_per_s=tokens / plain_s, spec_tokens_per_s=tokens / spec_s,
               speedup=plain_s / spec_s, acceptance=accepted / max(drafted, 1),
               drafted=drafted, accepted=accepted, loop_iterations=iterations,
               # A sequence's policy forwards: one per iteration it was live in (drafted /
               # gamma of them), plus the prefill, not counted.
               tokens_per_policy_forward=tokens / max(drafted / _GAMMA.value, 1),
               plain_times_s=times["plain"], spec_times_s=times["spec"],
               loadavg=os.getloadavg())
    log(f"{name} b{batch} [{label}] plain {row['plain_tokens_per_s']:.0f} tok/s, spec "
        f"{row['spec_tokens_per_s']:.0f} tok/s, x{row['speedup']:.2f}, acceptance "
        f"{row['acceptance']:.2f}, identical {same}, load {os.getloadavg()[0]:.1f}")
    rows.append(row)
  return rows


def main(argv):
  del argv
  import jax

  log = lambda s: print(s, flush=True)
  policies = _load_policies()
  rows = []
  for name, policy in policies.items():
    for batch in map(int, _BATCHES.value):
      rows += _bench(name, policy, batch, log)
  result = dict(
      command="python launch/bench_speculative.py " + " ".join(
          f"--{f}={','.join(v) if isinstance(v, list) else v}"
          for f in ("models", "batches", "gamma", "budget", "max_answer_tokens", "reps")
          for v in [flags.FLAGS[f].value]) + (" --policy_25m=..." if _POLICY_25M.value else ""),
      policy_25m_training="python launch/train.py --config=configs/policy25m.py",
      date=datetime.date.today().isoformat(), machine=platform.processor() or platform.machine(),
      cpu_count=os.cpu_count(), jax=jax.__version__, backend=jax.default_backend(),
      policies={name: dict(trained=p["trained"], num_params=p.get("num_params"),
                           config=p["config"].to_dict())
                for name, p in policies.items()},
      rows=rows)
  log("| model | batch | draft | plain tok/s | speculative tok/s | speed-up | acceptance | "
      "tokens / policy forward | identical |")
  log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for r in rows:
    log(f"| {r['model']} | {r['batch']} | {r['draft']} | {r['plain_tokens_per_s']:,.0f} | "
        f"{r['spec_tokens_per_s']:,.0f} | {r['speedup']:.2f}x | {r['acceptance']:.2f} | "
        f"{r['tokens_per_policy_forward']:.2f} | {r['identical_to_plain']} |")
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  app.run(main)
