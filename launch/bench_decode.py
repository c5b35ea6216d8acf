"""Decode throughput: the compiled thinking loop vs a Python loop over the same jitted,
cache-donating step, and the cost of confidence probes.

  python launch/bench_decode.py --out=runs/bench_decode.json

For each model (the embedded tiny reasoner, and a random-weight ~100M-parameter config) and
batch size, every variant generates the same number of tokens per sequence:
  * python_loop: prefill, then `decode_step` (jit, cache donated) + argmax in a Python loop;
  * think: one `think()` call, budget = min_thinking = N so exactly N thinking tokens are
    forced, then the close and a 1-token answer;
  * think+probe: the same with the confidence rule probing every P tokens (threshold 1, so the
    probes run but never stop thinking: their cost is pure overhead).
Times are medians over --reps runs after a warm-up (compilation excluded).
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


def _median_time(fn, reps):
  fn()  # warm-up: compile
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def bench_model(name, params, model_config, batches, n_tokens, reps, probe_every):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from o1jax.model.cache import KVCache
  from o1jax.model.decode import decode_step, prefill
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.thinking import make_think_config, prepare_inputs, think

  tok = CharTokenizer()
  prompt = "12345+67890="
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
      inputs = jax.device_put(prepare_inputs(tok, [prompt] * batch, config, n_tokens, n_tokens))
      rng = jax.random.key(0)
      return lambda: jax.block_until_ready(think(params, inputs, config, rng))

    generated = batch * (n_tokens + 2)
    row = {"model": name, "batch": batch, "tokens_per_seq": n_tokens + 2}
    for variant, fn in (("python_loop", python_loop),
                        ("think", compiled(("natural", "budget"))),
                        ("think+probe", compiled(("natural", "budget", "confidence")))):
      seconds = _median_time(fn, reps)
      row[f"{variant}_tok_s"] = generated / seconds
    row["speedup_think_vs_python"] = row["think_tok_s"] / row["python_loop_tok_s"]
    row["probe_cost_pct"] = 100 * (1 - row["think+probe_tok_s"] / row["think_tok_s"])
    print(json.dumps(row), flush=True)
    results.append(row)
  return results


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import jax

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
