"""Decode throughput: the compiled thinking loop vs a Python loop over the same jitted,
cache-donating step, and the cost of confidence probes.

  python launch/bench_decode.py --out=runs/bench_decode.json

For each model (the embedded tiny reasoner, and a random-weight ~100M-parameter config) and
batch size, every variant generates the same number of tokens per sequence:
  * python_loop: prefill, then `decode_step` (jit, cache donated) + argmax in a Python loop;
  * think: one `think()` call with budget N and no minimum, on a prompt the models think
    through to the budget (checked: every row thinks exactly N tokens and stops for BUDGET),
    then the forced close and a 1-token answer;
  * think+probe: the same with the confidence rule probing every P thinking tokens
    (threshold 1, no agreement rule: the probes run, N // P of them per row (checked), but
    never stop thinking, so their cost is pure overhead). A minimum of N would suppress
    every probe but the last: probes start once the minimum is reached.
Times are medians over --reps rounds after a warm-up (compilation excluded); each round
times every variant once, so load changes on a shared machine hit all of them alike. The
probe cost is also given in CPU time (`probe_cost_cpu_pct`, best round of each), which
other jobs on the machine perturb less than wall time.

  python launch/bench_decode.py --roofline --out=runs/roofline.json

`--roofline` instead measures how close one decode step comes to this machine's memory
bandwidth, on a ~25M Qwen3-layout config (h512, 8 layers, vocab 4096) and the ~100M one, at
batch 1 and 8. A step must read every weight once plus the live (filled) part of the KV
cache; the limit is the bandwidth a jitted matrix-vector product of that many bytes reaches
here ([batch, K] @ [K, 4096], f32), timed interleaved with the decode runs (the machine is
shared and its speed drifts). Reported per cell: achieved/limit for `think()` (budget
controller on, N forced thinking tokens), and, to show where the rest goes, the same for
the bare model loop (forward + argmax in a `while_loop`, no controller) and for a chain of
matrix-vector products over the model's own weight matrices (what the weight shapes alone
allow).
"""

from __future__ import annotations

import json
import platform
import statistics
import time

from absl import app, flags, logging

_BATCHES = flags.DEFINE_list("batches", ["1", "8", "64"], "Batch sizes.")
_TOKENS = flags.DEFINE_integer("tokens", 128, "Thinking tokens generated per sequence.")
_PROBE_EVERY = flags.DEFINE_integer("probe_every", 16, "P of the probed variant.")
_REPS = flags.DEFINE_integer("reps", 3, "Timed repetitions (median reported).")
_MODELS = flags.DEFINE_list("models", ["tiny", "100m"], "Which models: tiny (embedded), 100m.")
_BIG_TOKENS = flags.DEFINE_integer("big_tokens", 32, "Tokens per sequence for the 100M model.")
_BIG_BATCHES = flags.DEFINE_list("big_batches", ["1", "8"], "Batches for the 100M model.")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")
_ROOFLINE = flags.DEFINE_bool("roofline", False, "Measure achieved/limit memory bandwidth "
                              "(see the module docstring) instead of the variants above.")
_ROOF_MODELS = flags.DEFINE_list("roofline_models", ["25m", "100m"], "Roofline configs.")
_ROOF_TOKENS = flags.DEFINE_integer("roofline_tokens", 256, "Thinking tokens per sequence "
                                    "in the roofline runs.")


def bench_model(name, params, model_config, batches, n_tokens, reps, probe_every):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from o1jax.model.cache import KVCache
  from o1jax.model.decode import decode_step, prefill
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import StopReason, make_think_config, prepare_inputs, think

  tok = CharTokenizer()
  # Both models think through to the budget on this prompt (the embedded reasoner closes
  # its thinking after ~40 tokens on arithmetic): checked below.
  prompt = "Count to 100"
  ids = tok.encode_prompt(prompt)
  cache_len = len(ids) + n_tokens + 8
  results = []
  for batch in batches:
    prompts = np.asarray([ids] * batch, np.int32)
    lengths = np.full(batch, len(ids), np.int32)

    def python_loop():
      cache = KVCache.init(model_config, batch, cache_len)
      logits, _, cache = prefill(params, jnp.asarray(prompts), jnp.asarray(lengths), cache,
                                 config=model_config)
      pos = jnp.asarray(lengths)
      for _ in range(n_tokens + 2):  # N thinking tokens, the close and a 1-token answer
        token = jnp.argmax(logits, -1).astype(jnp.int32)
        logits, _, cache = decode_step(params, token, pos, cache, config=model_config)
        pos = pos + 1
      return jax.block_until_ready(logits)

    def compiled(rules):
      config = make_think_config(model_config, tok, cache_len, stop_rules=rules,
                                 max_answer_tokens=1, probe_every=probe_every,
                                 probe_answer_tokens=4, confidence_threshold=1.0,
                                 probe_agreement=0)
      inputs = jax.device_put(prepare_inputs(tok, [prompt] * batch, config, n_tokens, 0))
      rng = jax.random.key(0)
      r = think(params, inputs, config, rng)  # also the warm-up
      probes = n_tokens // probe_every if config.rule("confidence") else 0
      if not ((np.asarray(r.thinking_tokens) == n_tokens).all()
              and (np.asarray(r.stop_reason) == StopReason.BUDGET).all()
              and (np.asarray(r.num_probes) == probes).all()):
        raise RuntimeError(f"{name}: expected {n_tokens} thinking tokens and {probes} probes "
                           f"a row, got {np.asarray(r.thinking_tokens)} and "
                           f"{np.asarray(r.num_probes)} (stop {np.asarray(r.stop_reason)})")
      return lambda: jax.block_until_ready(think(params, inputs, config, rng))

    generated = batch * (n_tokens + 2)
    row = {"model": name, "batch": batch, "tokens_per_seq": n_tokens + 2,
           "probes_per_seq": n_tokens // probe_every}
    fns = {"python_loop": python_loop, "think": compiled(("natural", "budget")),
           "think+probe": compiled(("natural", "budget", "confidence"))}
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    python_loop()  # warm-up
    for _ in range(reps):
      for variant, fn in fns.items():
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times[variant].append(time.perf_counter() - t0)
        cpu[variant].append(time.process_time() - c0)
    for variant in fns:
      row[f"{variant}_tok_s"] = generated / statistics.median(times[variant])
    # The same cost in CPU seconds this process used (all threads): steadier than wall time
    # when other jobs share the cores.
    row["probe_cost_cpu_pct"] = 100 * (1 - min(cpu["think"]) / min(cpu["think+probe"]))
    row["speedup_think_vs_python"] = row["think_tok_s"] / row["python_loop_tok_s"]
    row["probe_cost_pct"] = 100 * (1 - row["think+probe_tok_s"] / row["think_tok_s"])
    row["loadavg"] = __import__("os").getloadavg()[0]
    print(json.dumps(row), flush=True)
    results.append(row)
  return results


ROOFLINE_CONFIGS = {
    # Qwen3 layout (q/k norm, tied embeddings): 26.2M parameters.
    "25m": dict(vocab_size=4096, embed_dim=512, num_layers=8, num_heads=8, num_kv_heads=2,
                head_dim=64, mlp_dim=1536, max_seq_len=2048, qk_norm=True, rope_theta=1e6),
    # The ~100M config of the variants above (103.8M parameters).
    "100m": dict(vocab_size=128, embed_dim=768, num_layers=12, num_heads=12, num_kv_heads=4,
                 head_dim=64, mlp_dim=3072, max_seq_len=2048),
}


def _best_time(fn, calls):
  best = float("inf")
  for _ in range(calls):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def roofline(name, batches, n_tokens, reps):
  """Achieved/limit bandwidth of one decode step (module docstring), per batch size."""
  import os

  import jax
  import jax.numpy as jnp
  import numpy as np

  from o1jax.model import ModelConfig, count_params, init_params
  from o1jax.model.cache import KVCache
  from o1jax.model.decode import prompt_positions
  from o1jax.model.transformer import forward
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config, prepare_inputs, think

  model = ModelConfig(**ROOFLINE_CONFIGS[name])
  params = init_params(model, jax.random.key(0))
  weight_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  tok = CharTokenizer()
  prompt = "12345+67890="
  prompt_len = len(tok.encode_prompt(prompt))
  steps = n_tokens + 2  # N thinking tokens, the forced close and a 1-token answer
  cache_len = prompt_len + steps + 8
  config = make_think_config(model, tok, cache_len, max_answer_tokens=1)
  kv_per_position = 2 * model.num_layers * model.num_kv_heads * model.head_dim * 4
  # The step at position p attends to keys 0..p: the live cache grows by one slot a step.
  mean_live = prompt_len + (steps + 1) / 2
  # The weight matrices as the step multiplies them: [in, out] (the output projection
  # [heads, head_dim, embed] contracts its first two axes; the tied table is [vocab, embed]).
  weights = [x.reshape(-1, x.shape[-1]) if path[-1].key == "o" else x.reshape(x.shape[0], -1)
             for path, x in jax.tree_util.tree_flatten_with_path(params)[0] if x.ndim >= 2]
  rows = []
  for batch in batches:
    step_bytes = weight_bytes + batch * kv_per_position * mean_live
    inputs = jax.device_put(prepare_inputs(tok, [prompt] * batch, config, n_tokens, n_tokens))
    rng = jax.random.key(0)

    @jax.jit
    def model_loop(params, tokens, lengths):
      """Forward + argmax only: the model's share of a think() step."""
      cache = KVCache.init(model, batch, cache_len)
      logits, _, cache = forward(params, tokens, prompt_positions(lengths, tokens.shape[1]),
                                 cache, model)
      logits = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], 1)[:, 0]

      def body(c):
        logits, cache, pos, i = c
        token = jnp.argmax(logits, -1).astype(jnp.int32)
        logits, _, cache = forward(params, token[:, None], pos[:, None], cache, model)
        return logits[:, 0], cache, pos + 1, i + 1
      return jax.lax.while_loop(lambda c: c[3] < steps, body, (logits, cache, lengths, 0))[0]

    # Two layouts of the same bytes ([K, 4096] and [4096, K]): XLA:CPU reaches different
    # bandwidths on them, and the limit is the better one.
    k_rows = int(step_bytes) // 4 // 4096
    matrices = [jnp.ones((k_rows, 4096), jnp.float32), jnp.ones((4096, k_rows), jnp.float32)]
    vectors_mv = [jnp.ones((batch, m.shape[0]), jnp.float32) for m in matrices]
    matvec = jax.jit(lambda v, w: v @ w)
    vectors = [jnp.ones((batch, w.shape[0]), w.dtype) for w in weights]
    chain = jax.jit(lambda vs, ws: sum((v @ w).sum() for v, w in zip(vs, ws)))
    fns = {
        "limit": lambda: jax.block_until_ready(matvec(vectors_mv[0], matrices[0])),
        "limit_t": lambda: jax.block_until_ready(matvec(vectors_mv[1], matrices[1])),
        "weight_chain": lambda: jax.block_until_ready(chain(vectors, weights)),
        "model_loop": lambda: jax.block_until_ready(
            model_loop(params, inputs.tokens, inputs.lengths)),
        "think": lambda: jax.block_until_ready(think(params, inputs, config, rng)),
    }
    for fn in fns.values():
      fn()  # compile
    best = {k: float("inf") for k in fns}
    for _ in range(reps):  # interleaved: each round times every variant
      for k, fn in fns.items():
        best[k] = min(best[k], _best_time(fn, 1 if k in ("think", "model_loop") else 5))
    limit = k_rows * 4096 * 4 / min(best["limit"], best["limit_t"])
    chain_bw = sum(w.nbytes for w in weights) / best["weight_chain"]
    row = dict(model=f"{name} ({count_params(params) / 1e6:.1f}M)", batch=batch,
               steps=steps, weight_mb=weight_bytes / 1e6,
               live_kv_mb=batch * kv_per_position * mean_live / 1e6,
               allocated_kv_mb=batch * kv_per_position * cache_len / 1e6,
               limit_gb_s=limit / 1e9,
               think_tok_s=batch * steps / best["think"],
               think_gb_s=step_bytes * steps / best["think"] / 1e9,
               model_loop_gb_s=step_bytes * steps / best["model_loop"] / 1e9,
               weight_chain_gb_s=chain_bw / 1e9, loadavg=os.getloadavg()[0])
    for k in ("think", "model_loop", "weight_chain"):
      row[f"{k}_of_limit"] = row[f"{k}_gb_s"] / row["limit_gb_s"]
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax

  if _ROOFLINE.value:
    import os
    out = {"machine": f"{platform.machine()}, {jax.default_backend()}, "
                      f"{os.cpu_count()} cores", "jax": jax.__version__,
           "date": time.strftime("%Y-%m-%d"), "loadavg_before": os.getloadavg(),
           "tokens": _ROOF_TOKENS.value, "results": []}
    for name in _ROOF_MODELS.value:
      out["results"] += roofline(name, [int(b) for b in _BIG_BATCHES.value],
                                 _ROOF_TOKENS.value, _REPS.value)
    out["loadavg_after"] = os.getloadavg()
    print(f"\n{'model':<12} {'batch':>5} {'limit GB/s':>10} {'think GB/s':>10} "
          f"{'think/limit':>11} {'model loop':>10} {'weights only':>12} {'tok/s':>8}")
    for r in out["results"]:
      print(f"{r['model']:<12} {r['batch']:>5} {r['limit_gb_s']:>10.1f} {r['think_gb_s']:>10.1f} "
            f"{r['think_of_limit']:>11.0%} {r['model_loop_of_limit']:>10.0%} "
            f"{r['weight_chain_of_limit']:>12.0%} {r['think_tok_s']:>8.0f}")
    if _OUT.value:
      with open(_OUT.value, "w") as f:
        json.dump(out, f, indent=2)
    return

  from o1jax.model import ModelConfig, count_params, init_params
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params

  out = {"machine": f"{platform.machine()}, {jax.device_count()} {jax.default_backend()} "
                    f"device(s), {__import__('os').cpu_count()} cores",
         "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"), "results": []}
  if "tiny" in _MODELS.value:
    params, config, _ = load_params(embedded_checkpoint_dir())
    out["results"] += bench_model(f"tiny ({count_params(params) / 1e6:.1f}M)", params, config,
                                  [int(b) for b in _BATCHES.value], _TOKENS.value, _REPS.value,
                                  _PROBE_EVERY.value)
  if "100m" in _MODELS.value:
    # Qwen2.5-0.1B-like shape with our char vocabulary: ~100M parameters.
    config = ModelConfig(vocab_size=128, embed_dim=768, num_layers=12, num_heads=12,
                         num_kv_heads=4, head_dim=64, mlp_dim=3072, max_seq_len=512)
    params = init_params(config, jax.random.key(0))
    out["results"] += bench_model(f"random ({count_params(params) / 1e6:.0f}M)", params, config,
                                  [int(b) for b in _BIG_BATCHES.value], _BIG_TOKENS.value,
                                  _REPS.value, _PROBE_EVERY.value)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(out, f, indent=2)


if __name__ == "__main__":
  app.run(main)
