"""KV cache measurements: int8 vs float cache memory, decode speed at long caches, and the
accuracy of two sweeps side by side (float vs int8 KV, or KV eviction at several budgets).

  python launch/bench_kv.py --mode=memory --out=docs/kv/memory.json
  python launch/bench_kv.py --mode=decode --out=docs/kv/decode.json
  python launch/bench_kv.py --mode=attention --reps=15 --out=docs/kv/attention.json
  python launch/bench_kv.py --mode=evict_speed --out=docs/kv/evict_speed.json
  python launch/bench_kv.py --mode=evict_step --reps=15 --out=docs/kv/evict_step.json
  python launch/bench_kv.py --mode=compare --sweeps=float:runs/sw_f,int8:runs/sw_i8 \
      --out=docs/kv/sweep_int8.json

memory: bytes of `KVCache.init` (jax.eval_shape, nothing allocated) per config and kv_dtype.
decode: a ~25M-parameter Qwen3-layout config, caches of --cache_lens filled with random
  keys/values up to --tokens before the end, then --tokens greedy decode steps in one jitted
  `lax.fori_loop`, float and int8 interleaved in one process (medians of --reps).
attention: one layer's decode attention against a full cache (the 25m config's heads), the
  model's matmul form vs a multiply-reduce form, float vs int8, interleaved: ms and GB/s.
evict_speed: think() on 8 countdown-4 prompts with each --kv_budgets (interleaved): tokens/s
  and the KV cache bytes each allocates (the embedded model), with --kv_evict_policy. A
  budget above the longest trace (e.g. --kv_budgets=none,240) evicts nothing and generates
  the same tokens, so its tokens/s against "none" is the per-step cost of the eviction
  machinery alone.
evict_step: the model step alone (no sampling or controller), the embedded model, batch 8:
  --tokens thinking tokens fed after a 16-token prompt in one jitted `lax.fori_loop`, without
  eviction (a cache of the config's cache_len, and one of each eviction cache's size) and
  with it at --evict_step_budgets (each with rkv and oldest; a budget above --tokens evicts
  nothing, below it the last --tokens - K steps evict), interleaved: ms per step,
  minimum and median of --reps (the minimum is the least disturbed by other load), and the
  bytes per row of each cache (slot table and rkv's query window included).
compare: each sweep's rows.csv (launch/sweep.py --out): accuracy per budget, the change in
  points against the first sweep, how many problems kept the same outcome and thinking
  length, and the longest-trace cells (--cells, e.g. countdown 3 and 4) on their own; for
  eviction sweeps the thinking KV kept (slots / the first sweep's thinking length, capped
  at 1, averaged over problems), and with --plot a PNG of accuracy against it.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import statistics
import time

from absl import app, flags, logging

_MODE = flags.DEFINE_enum("mode", "memory", ["memory", "decode", "compare", "evict_speed",
                                             "evict_step", "attention"],
                          "What to measure.")
_KV_BUDGETS = flags.DEFINE_list("kv_budgets", ["none", "80", "40"], "evict_speed: thinking KV "
                                "budgets ('none': no eviction).")
_KV_POLICY = flags.DEFINE_enum("kv_evict_policy", "rkv", ["rkv", "oldest"],
                               "evict_speed: the eviction policy.")
_STEP_BUDGETS = flags.DEFINE_list("evict_step_budgets", ["300", "16"],
                                  "evict_step: thinking KV budgets K.")
_STEP_MODEL = flags.DEFINE_enum("evict_step_model", "embedded", ["embedded", "25m"],
                                "evict_step: the embedded checkpoint, or the ~25M config with "
                                "random weights.")
_STEP_CACHE_LEN = flags.DEFINE_integer("evict_step_cache_len", None, "evict_step: the "
                                       "context (cache_len) without eviction; default the "
                                       "model's max_seq_len.")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")
_CACHE_LENS = flags.DEFINE_list("cache_lens", ["2048", "4096"], "decode: cache lengths.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "decode: batch sizes.")
_TOKENS = flags.DEFINE_integer("tokens", 32, "decode, evict_step: steps timed per call.")
_REPS = flags.DEFINE_integer("reps", 5, "decode: timed repetitions per variant (median).")
_SWEEPS = flags.DEFINE_list("sweeps", [], "compare: NAME:DIR pairs of launch/sweep.py outputs; "
                            "the first is the reference.")
_CELLS = flags.DEFINE_list("cells", ["countdown:3", "countdown:4"],
                           "compare: TASK:DIFFICULTY cells reported on their own.")
_PLOT = flags.DEFINE_string("plot", None, "compare: also plot accuracy (the --cells together, "
                            "unlimited budget) against the thinking KV kept, per eviction "
                            "policy, into this PNG.")


def _model_configs():
  from o1jax.model import ModelConfig
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  _, tiny, _ = load_params(embedded_checkpoint_dir())
  # The issue's ~26M Qwen3-layout model (h512, 8 layers, vocab 4096), head_dim 64.
  m25 = ModelConfig(vocab_size=4096, embed_dim=512, num_layers=8, num_heads=8, num_kv_heads=4,
                    head_dim=64, mlp_dim=1536, max_seq_len=4096, qk_norm=True,
                    rope_theta=1e6)
  return {"embedded": tiny, "25m": m25}


def memory(cache_len: int = 4096, batch: int = 1) -> list[dict]:
  import jax
  from o1jax.model.cache import KVCache
  rows = []
  for name, config in _model_configs().items():
    for dtype in ("float32", "bfloat16"):
      c = config.replace(dtype=dtype)
      size = lambda kv: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(
          lambda: KVCache.init(c.replace(kv_dtype=kv), batch, cache_len))))
      f, q = size(None), size("int8")
      rows.append({"model": name, "compute_dtype": dtype, "head_dim": c.head_dim,
                   "cache_len": cache_len, "float_bytes": f, "int8_bytes": q,
                   "ratio": f / q, "bytes_per_token_float": f // cache_len,
                   "bytes_per_token_int8": q // cache_len})
      print(json.dumps(rows[-1]), flush=True)
  return rows


def _filled_cache(config, batch, cache_len, seed=0):
  """A cache whose every slot holds random keys/values (quantised for int8 caches)."""
  import jax
  import jax.numpy as jnp
  from o1jax.model.cache import KVCache, quantize_int8
  cache = KVCache.init(config, batch, cache_len)
  shape = cache.k[0].shape
  keys = jax.random.split(jax.random.key(seed), 2 * config.num_layers)
  vals = [jax.random.normal(k, shape, jnp.float32) for k in keys]
  if not cache.quantized:
    return cache.replace(k=tuple(v.astype(config.jnp_dtype) for v in vals[::2]),
                         v=tuple(v.astype(config.jnp_dtype) for v in vals[1::2]))
  q = [quantize_int8(v) for v in vals]
  return cache.replace(k=tuple(x[0] for x in q[::2]), v=tuple(x[0] for x in q[1::2]),
                       k_scale=tuple(x[1] for x in q[::2]), v_scale=tuple(x[1] for x in q[1::2]))


def decode(reps: int, n_tokens: int) -> list[dict]:
  import functools

  import jax
  import jax.numpy as jnp
  from o1jax.model import init_params
  from o1jax.model.transformer import forward

  config = _model_configs()["25m"]
  params = jax.jit(init_params, static_argnums=0)(config, jax.random.key(0))

  @functools.partial(jax.jit, static_argnames=("config",), donate_argnames=("cache",))
  def run(params, cache, start, config):
    def body(i, carry):
      token, cache = carry
      pos = jnp.full((token.shape[0], 1), start + i, jnp.int32)
      logits, _, cache = forward(params, token[:, None], pos, cache, config)
      return jnp.argmax(logits[:, 0], -1).astype(jnp.int32), cache
    token = jnp.zeros((cache.batch_size,), jnp.int32)
    return jax.lax.fori_loop(0, n_tokens, body, (token, cache))

  rows = []
  for cache_len in (int(c) for c in _CACHE_LENS.value):
    for batch in (int(b) for b in _BATCHES.value):
      start = cache_len - n_tokens - 1
      variants = {kv: config.replace(kv_dtype=kv) for kv in (None, "int8")}
      times = {kv: [] for kv in variants}
      nbytes = {}
      for kv, c in variants.items():  # compile and warm up
        cache = _filled_cache(c, batch, cache_len)
        nbytes[kv] = cache.nbytes
        jax.block_until_ready(run(params, cache, start, config=c))
      for _ in range(reps):  # interleaved, so drift and neighbours hit both alike
        for kv, c in variants.items():
          cache = jax.block_until_ready(_filled_cache(c, batch, cache_len))
          t0 = time.perf_counter()
          jax.block_until_ready(run(params, cache, start, config=c))
          times[kv].append(time.perf_counter() - t0)
      tok_s = {kv: batch * n_tokens / statistics.median(t) for kv, t in times.items()}
      row = {"model": "25m", "cache_len": cache_len, "batch": batch, "tokens": n_tokens,
             "float_tok_s": tok_s[None], "int8_tok_s": tok_s["int8"],
             "int8_speedup": tok_s["int8"] / tok_s[None],
             "float_cache_mb": nbytes[None] / 2**20, "int8_cache_mb": nbytes["int8"] / 2**20,
             "loadavg": os.getloadavg()}
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def _reduce_form_attention(q, k, v, pos, k_scale=None, v_scale=None):
  """One-token decode attention as broadcast-multiply-reduce (no matmul, no transposed copy
  of the cache): the formulation this mode compares with the model's matmul form."""
  import jax
  import jax.numpy as jnp
  b, _, h, d = q.shape
  s_len, kvh = k.shape[1], k.shape[2]
  qf = (q[:, 0] * d ** -0.5).reshape(b, kvh, h // kvh, d).astype(jnp.float32)
  scores = (k.astype(jnp.float32)[:, :, :, None, :] * qf[:, None]).sum(-1)   # [B, S, KVH, G]
  if k_scale is not None:
    scores = scores * k_scale.astype(jnp.float32)[..., None]
  visible = (jnp.arange(s_len)[None, :] <= pos[:, :1])[:, :, None, None]
  probs = jax.nn.softmax(jnp.where(visible, scores, -1e30), axis=1)
  if v_scale is not None:
    probs = probs * v_scale.astype(jnp.float32)[..., None]
  out = (probs[..., None] * v.astype(jnp.float32)[:, :, :, None, :]).sum(1)  # [B, KVH, G, D]
  return out.reshape(b, 1, h, d).astype(q.dtype)


def attention(reps: int) -> list[dict]:
  """One layer's decode attention (1 query token) against a full cache, the ~25M config's
  heads (8 query, 4 KV, head_dim 64): the model's XLA path (matmul form) and a
  multiply-reduce form, float vs int8 cache, all interleaved; ms per call and the cache
  bytes read per ms (GB/s)."""
  import jax
  import jax.numpy as jnp
  from o1jax.model.attention import xla_attention
  from o1jax.model.cache import quantize_int8
  c = _model_configs()["25m"]
  rows = []
  for cache_len in (int(x) for x in _CACHE_LENS.value):
    for batch in (int(x) for x in _BATCHES.value):
      keys = jax.random.split(jax.random.key(0), 3)
      q = jax.random.normal(keys[0], (batch, 1, c.num_heads, c.head_dim))
      k, v = (jax.random.normal(kk, (batch, cache_len, c.num_kv_heads, c.head_dim))
              for kk in keys[1:])
      (qk, sk), (qv, sv) = quantize_int8(k), quantize_int8(v)
      pos = jnp.full((batch, 1), cache_len - 1, jnp.int32)
      variants = {
          "matmul_float": (lambda q, k, v, p: xla_attention(q, k, v, p), (q, k, v, pos)),
          "matmul_int8": (lambda q, k, v, p, a, b: xla_attention(q, k, v, p, k_scale=a,
                                                                 v_scale=b),
                          (q, qk, qv, pos, sk, sv)),
          "reduce_float": (_reduce_form_attention, (q, k, v, pos)),
          "reduce_int8": (_reduce_form_attention, (q, qk, qv, pos, sk, sv))}
      fns = {n: (jax.jit(f), a) for n, (f, a) in variants.items()}
      for f, a in fns.values():
        jax.block_until_ready(f(*a))
      times = {n: [] for n in fns}
      for _ in range(reps):
        for n, (f, a) in fns.items():
          t0 = time.perf_counter()
          jax.block_until_ready(f(*a))
          times[n].append(time.perf_counter() - t0)
      row = {"cache_len": cache_len, "batch": batch, "loadavg": os.getloadavg()}
      for n, t in times.items():
        ms = 1e3 * statistics.median(t)
        nbytes = sum(x.size * x.dtype.itemsize for x in fns[n][1][1:3] + fns[n][1][4:])
        row[f"{n}_ms"] = ms
        row[f"{n}_gb_s"] = nbytes / ms / 1e6
      print(json.dumps(row), flush=True)
      rows.append(row)
  return rows


def evict_speed(reps: int) -> list[dict]:
  """think() on countdown-4 prompts (batch 8, greedy, unlimited budget) with and without
  eviction, interleaved: tokens/s (the traces differ, so tokens are counted per run) and
  the KV cache each run allocates."""
  import jax
  import numpy as np
  from o1jax import tasks
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config, prepare_inputs, think
  from o1jax.thinking import kv_eviction
  from o1jax.model.cache import KVCache
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  params, mc, _ = load_params(embedded_checkpoint_dir())
  tok = CharTokenizer()
  prompts = [p.prompt for p in tasks.get_task("countdown").generate_problems(1004, 4, 8,
                                                                             split="eval")]
  runs = {}
  for b in _KV_BUDGETS.value:
    k = None if b == "none" else int(b)
    config = make_think_config(mc, tok, max_answer_tokens=12, thinking_kv_budget=k,
                               kv_evict_policy=_KV_POLICY.value)
    inputs = jax.device_put(prepare_inputs(tok, prompts, config, None, 0))
    width = int(inputs.tokens.shape[1])
    slots = config.cache_len if k is None else kv_eviction.num_slots(config, width)
    cache = (lambda: KVCache.init(mc, len(prompts), slots)) if k is None else (
        lambda: kv_eviction.init_cache(config, len(prompts), inputs.lengths, width))
    cache_bytes = sum(x.size * x.dtype.itemsize  # the slot table included
                      for x in jax.tree.leaves(jax.eval_shape(cache)))
    fn = lambda config=config, inputs=inputs: jax.block_until_ready(
        think(params, inputs, config, jax.random.key(0)))
    fn()  # compile
    runs[b] = dict(fn=fn, slots=slots, cache_bytes=cache_bytes, times=[], tokens=0)
  for _ in range(reps):
    for b, r in runs.items():
      t0 = time.perf_counter()
      res = r["fn"]()
      r["times"].append(time.perf_counter() - t0)
      r["tokens"] = int(np.asarray(res.num_generated).sum())
      r["max_thinking"] = int(np.asarray(res.thinking_tokens).max())
  rows = []
  for b, r in runs.items():
    rows.append({"thinking_kv_budget": b, "kv_evict_policy": None if b == "none" else
                 _KV_POLICY.value, "batch": len(prompts), "kv_slots": r["slots"],
                 "kv_cache_bytes": r["cache_bytes"], "tokens": r["tokens"],
                 "max_thinking_tokens": r["max_thinking"],
                 "tok_s": r["tokens"] / statistics.median(r["times"]),
                 "times_s": r["times"], "loadavg": os.getloadavg()})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def evict_step(reps: int, n_tokens: int) -> list[dict]:
  """ms per model step with and without thinking-KV eviction (see the module docstring)."""
  import functools

  import jax
  import jax.numpy as jnp
  from o1jax.model.cache import KVCache
  from o1jax.model.transformer import forward
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import kv_eviction, make_think_config
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  if _STEP_MODEL.value == "embedded":
    params, mc, _ = load_params(embedded_checkpoint_dir())
  else:
    from o1jax.model import init_params
    mc = _model_configs()["25m"]
    params = jax.jit(init_params, static_argnums=0)(mc, jax.random.key(0))
  batch, width = 8, 16
  lengths = jnp.full((batch,), width, jnp.int32)

  @functools.partial(jax.jit, static_argnames=("config",))
  def run(params, cache, config):
    def body(i, carry):
      token, cache = carry
      pos = jnp.full((batch,), width + i, jnp.int32)
      if config is None:
        logits, _, cache = forward(params, token[:, None], pos[:, None], cache, mc)
      else:
        logits, _, cache = kv_eviction.forward_evicting(
            params, token, pos, jnp.ones((batch,), bool), cache, config)
      return jnp.argmax(logits[:, 0], -1).astype(jnp.int32), cache
    token = jnp.arange(batch, dtype=jnp.int32) + 5
    return jax.lax.fori_loop(0, n_tokens, body, (token, cache))

  cache_len = _STEP_CACHE_LEN.value
  base = make_think_config(mc, CharTokenizer(), cache_len, max_answer_tokens=12)
  variants = {"off": (None, lambda: KVCache.init(mc, batch, base.cache_len))}
  for k in (int(b) for b in _STEP_BUDGETS.value):
    # Without eviction at the eviction cache's size: what the slot machinery alone costs.
    config = make_think_config(mc, CharTokenizer(), cache_len, max_answer_tokens=12,
                               thinking_kv_budget=k)
    n = kv_eviction.num_slots(config, width)
    variants[f"off, {n} slots"] = (None, lambda n=n: KVCache.init(mc, batch, n))
    for policy in ("rkv", "oldest"):
      config = make_think_config(mc, CharTokenizer(), cache_len, max_answer_tokens=12,
                                 thinking_kv_budget=k, kv_evict_policy=policy)
      variants[f"K={k} {policy}"] = (config, lambda config=config: kv_eviction.init_cache(
          config, batch, lengths, width))
  times = {name: [] for name in variants}
  for name, (config, init) in variants.items():  # compile and warm up
    jax.block_until_ready(run(params, jax.jit(init)(), config=config))
  for _ in range(reps):
    for name, (config, init) in variants.items():
      cache = jax.block_until_ready(jax.jit(init)())
      t0 = time.perf_counter()
      jax.block_until_ready(run(params, cache, config=config))
      times[name].append(time.perf_counter() - t0)
  rows = []
  for name, (config, init) in variants.items():
    shapes = jax.eval_shape(init)
    slots = shapes.k[0].shape[1]
    nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
    window = None if shapes.slots is None else (shapes.slots.queries,
                                                shapes.slots.query_positions)
    label = f"off, {slots} slots (cache_len)" if name == "off" else name
    k = None if config is None else config.thinking_kv_budget
    rows.append({"variant": label, "model": _STEP_MODEL.value, "thinking_kv_budget": k, "kv_slots": slots,
                 "evicting_steps": 0 if k is None else max(0, n_tokens - k), "batch": batch,
                 "steps": n_tokens, "cache_bytes_per_row": nbytes(shapes) // batch,
                 "query_window_bytes_per_row": nbytes(window) // batch,
                 "ms_per_step_min": 1e3 * min(times[name]) / n_tokens,
                 "ms_per_step_median": 1e3 * statistics.median(times[name]) / n_tokens,
                 "loadavg": os.getloadavg()})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def _read_rows(path):
  with open(os.path.join(path, "rows.csv")) as f:
    return [r for r in csv.DictReader(f) if r["setting"].startswith("budget=")]


def _read_summary(path):
  with open(os.path.join(path, "summary.json")) as f:
    return json.load(f)


def compare(sweeps: list[str], cells: list[str]) -> dict:
  named = [s.split(":", 1) for s in sweeps]
  if len(named) < 2 or any(len(s) != 2 for s in named):
    raise ValueError(f"--sweeps needs at least two NAME:DIR pairs, got {sweeps}")
  data = {name: _read_rows(path) for name, path in named}
  summaries = {name: _read_summary(path) for name, path in named}
  ref_name = named[0][0]
  key = lambda r: (r["budget"], r["task"], r["difficulty"], r["prompt"])
  ref = {key(r): r for r in data[ref_name]}
  wanted = [tuple(c.split(":")) for c in cells]
  out = {"reference": ref_name, "by_budget": [], "cells": []}
  budgets = sorted({int(r["budget"]) for r in data[ref_name]})
  for name, rows in data.items():
    for scope, pick in [("all", lambda r: True)] + [
        (f"{t}{d}", lambda r, t=t, d=d: r["task"] == t and r["difficulty"] == d)
        for t, d in wanted]:
      for b in budgets:
        rs = [r for r in rows if int(r["budget"]) == b and pick(r)]
        if not rs:
          continue
        acc = sum(r["correct"] == "True" for r in rs) / len(rs)
        refs = [ref[key(r)] for r in rs]
        ref_acc = sum(r["correct"] == "True" for r in refs) / len(refs)
        kv_budget = summaries[name].get("thinking_kv_budget")
        # Thinking KV kept: the slots over the thinking the reference run did (capped at 1).
        kept = statistics.mean(
            1.0 if kv_budget is None else min(1.0, kv_budget / max(int(r["thinking_tokens"]), 1))
            for r in refs)
        policy = summaries[name].get("kv_evict_policy") if kv_budget else None
        if policy == "rkv":
          policy += f" lambda={summaries[name].get('kv_importance_weight')}"
        line = {"sweep": name, "scope": scope, "budget": "inf" if b >= 2**30 else b,
                "thinking_kv_budget": kv_budget, "kv_evict_policy": policy,
                "kv_kept_fraction": kept,
                "n": len(rs), "accuracy": acc, "delta_points": 100 * (acc - ref_acc),
                "same_outcome": sum(a["correct"] == r["correct"] for a, r in zip(rs, refs)),
                "same_thinking_len": sum(a["thinking_tokens"] == r["thinking_tokens"]
                                         for a, r in zip(rs, refs)),
                "thinking_tokens": statistics.mean(int(r["thinking_tokens"]) for r in rs)}
        out["by_budget" if scope == "all" else "cells"].append(line)
  for line in out["by_budget"] + out["cells"]:
    print(json.dumps(line))
  return out


def plot_kept(result: dict, cells: list[str], path: str) -> None:
  """Accuracy on the --cells together at unlimited budget vs the thinking KV kept."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  wanted = {t + d for t, d in (c.split(":") for c in cells)}
  points = {}
  for line in result["cells"]:
    if line["budget"] != "inf" or line["scope"] not in wanted:
      continue
    p = points.setdefault(line["sweep"], [0, 0.0, 0.0, line["kv_evict_policy"]])
    p[0] += line["n"]
    p[1] += line["accuracy"] * line["n"]
    p[2] += line["kv_kept_fraction"] * line["n"]
  full = [(k / n, a / n) for n, a, k, pol in points.values() if pol is None]
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for policy in sorted({p[3] for p in points.values() if p[3]}):
    xy = sorted([(k / n, a / n) for n, a, k, pol in points.values() if pol == policy] + full)
    ax.plot([100 * x for x, _ in xy], [100 * y for _, y in xy], "o-", label=policy)
  ax.set_xlabel("thinking KV kept (% of the full trace's)")
  ax.set_ylabel("accuracy (%), unlimited thinking budget")
  ax.set_title("Thinking-KV eviction: " + ", ".join(sorted(wanted)))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  import jax
  out = {"machine": f"{platform.machine()}, {jax.device_count()} {jax.default_backend()} "
                    f"device(s), {os.cpu_count()} cores",
         "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "mode": _MODE.value,
         "loadavg_start": os.getloadavg()}
  if _MODE.value == "memory":
    out["results"] = memory()
  elif _MODE.value == "decode":
    out["results"] = decode(_REPS.value, _TOKENS.value)
  elif _MODE.value == "attention":
    out["results"] = attention(_REPS.value)
  elif _MODE.value == "evict_speed":
    out["results"] = evict_speed(_REPS.value)
  elif _MODE.value == "evict_step":
    out["results"] = evict_step(_REPS.value, _TOKENS.value)
  else:
    out["results"] = compare(_SWEEPS.value, _CELLS.value)
    if _PLOT.value:
      plot_kept(out["results"], _CELLS.value, _PLOT.value)
  out["loadavg_end"] = os.getloadavg()
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
