"""A sampled decode step vs a greedy one at a real vocabulary (V = 151,936).

  python launch/bench_sampling.py --out=docs/bench_sampling.json

One decode step of the thinking loop (`run_steps`: the controller, the forward, the draw) on
a random-weight Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, 14 heads / 2 KV heads,
head_dim 64, MLP 4,864, tied embeddings, V = 151,936), at each batch size, for rows that are
  * greedy (temperature 0: one argmax, the sampler's cond skips everything else),
  * sampled at T = 1 with top-k and top-p off,
  * sampled with top-p 0.95, and with top-k 50 and top-p 0.95,
each with today's sampler (o1jax/thinking/sampling.py: no sort; radix-select thresholds) and
with the sort-based sampler it replaced (kept here, as the baseline: a full-vocabulary sort
whenever any row samples). Settings are per-request data, so one compiled program serves all
rows of a kind; the sort baseline is compiled by patching the controller's `sample`.

Times are medians of --reps rounds of --steps steps after a warm-up; every round times every
variant once (interleaved), so load drift on a shared machine hits all alike. Both wall time
and the process's CPU time (all XLA threads) are recorded: on a machine other jobs share, CPU
time is the steadier measure of the work a step does; the ratios are quoted in CPU time.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Batch sizes.")
_STEPS = flags.DEFINE_integer("steps", 8, "Decode steps per timed round.")
_REPS = flags.DEFINE_integer("reps", 5, "Timed rounds (median reported).")
_LAYERS = flags.DEFINE_integer("layers", 24, "Decoder layers (24: Qwen2.5-0.5B).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")

SETTINGS = {  # name: (temperature, top_k, top_p)
    "greedy": (0.0, 0, 1.0),
    "T=1": (1.0, 0, 1.0),
    "T=1 top-p 0.95": (1.0, 0, 0.95),
    "T=1 top-k 50 top-p 0.95": (1.0, 50, 0.95),
}


def sort_based_sample(logits, keys, temperature, top_k=0, top_p=1.0):
  """The sampler before issue 29: sorts the whole vocabulary whenever any row samples."""
  import jax
  import jax.numpy as jnp
  batch, vocab = logits.shape
  per_row = lambda v, dt: jnp.broadcast_to(jnp.asarray(v, dt), (batch,))
  temperature = per_row(temperature, jnp.float32)
  top_k, top_p = per_row(top_k, jnp.int32), per_row(top_p, jnp.float32)
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  zeros = jnp.zeros((batch,), jnp.float32)

  def draw(_):
    x = logits.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1.0)[:, None]
    k = jnp.where((top_k <= 0) | (top_k >= vocab), vocab, top_k)
    sorted_x = jnp.sort(x, axis=-1)[:, ::-1]
    kth = jnp.take_along_axis(sorted_x, (k - 1)[:, None], axis=-1)
    x = jnp.where(x < kth, -jnp.inf, x)
    sorted_x = jnp.where(jnp.arange(vocab)[None, :] < k[:, None], sorted_x, -jnp.inf)
    probs = jax.nn.softmax(sorted_x, axis=-1)
    keep = ((jnp.cumsum(probs, axis=-1) - probs) < top_p[:, None]) | (top_p[:, None] >= 1.0)
    cutoff = jnp.min(jnp.where(keep, sorted_x, jnp.inf), axis=-1, keepdims=True)
    x = jnp.where(x < cutoff, -jnp.inf, x)
    drawn = jax.vmap(jax.random.categorical)(keys, x).astype(jnp.int32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(x, -1), drawn[:, None], -1)[:, 0]
    return jnp.where(temperature > 0, drawn, greedy), jnp.where(temperature > 0, logp, zeros)

  return jax.lax.cond((temperature > 0).any(), draw, lambda _: (greedy, zeros), None)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  from o1jax.model import ModelConfig
  from o1jax.model.transformer import count_params, init_params
  from o1jax.thinking import ThinkConfig, ThinkInputs, controller
  from o1jax.thinking.controller import prefill
  from o1jax.thinking.loop import run_steps
  from o1jax.thinking.state import fill_settings, init_state

  mc = ModelConfig(vocab_size=151_936, embed_dim=896, num_layers=_LAYERS.value, num_heads=14,
                   num_kv_heads=2, head_dim=64, mlp_dim=4864, max_seq_len=256,
                   rope_theta=1e6, qkv_bias=True, tie_embeddings=True)
  params = jax.jit(init_params, static_argnums=0)(mc, jax.random.key(0))
  print(f"model: Qwen2.5-0.5B-shaped, {count_params(params) / 1e6:.0f}M parameters, "
        f"V = {mc.vocab_size}, f32 on {jax.devices()[0].platform}", flush=True)
  cache_len = 128
  config = ThinkConfig(model=mc, cache_len=cache_len, think_id=1, end_think_id=2, eos_id=3,
                       pad_id=0, eos_ids=(3,), close_ids=(2,), max_answer_tokens=8)

  def start_state(batch, setting):
    temperature, top_k, top_p = SETTINGS[setting]
    inputs = ThinkInputs(tokens=jnp.full((batch, 8), 5, jnp.int32),
                         lengths=jnp.full((batch,), 8, jnp.int32),
                         budget=jnp.full((batch,), 10_000, jnp.int32),
                         min_thinking=jnp.full((batch,), 10_000, jnp.int32),  # never closes
                         temperature=jnp.full((batch,), temperature),
                         top_k=jnp.full((batch,), top_k, jnp.int32),
                         top_p=jnp.full((batch,), top_p))
    inputs = fill_settings(inputs, config, jax.random.key(1))
    logits, _, cache = jax.jit(prefill, static_argnums=2)(params, inputs, config)
    return init_state(inputs, logits, cache, config)

  def steps_fn():  # a new jit: traced with whatever `controller.sample` is now
    return jax.jit(lambda s, p: run_steps(s, p, config, _STEPS.value)[0])

  states = {(b, setting): start_state(b, setting)
            for b in map(int, _BATCHES.value) for setting in SETTINGS}
  # A jit traces at its first call: compile each sampler's program while it is in place.
  fns = {"radix (today)": steps_fn()}
  for state in states.values():
    jax.block_until_ready(fns["radix (today)"](state, params))
  original = controller.sample
  controller.sample = sort_based_sample
  try:
    fns["sort (before)"] = steps_fn()
    for state in states.values():
      jax.block_until_ready(fns["sort (before)"](state, params))
  finally:
    controller.sample = original

  keys = [(b, s, f) for (b, s) in states for f in fns]
  wall, cpu = {key: [] for key in keys}, {key: [] for key in keys}
  for rep in range(_REPS.value):
    for (b, setting), state in states.items():
      for name, fn in fns.items():
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(state, params))
        wall[b, setting, name].append((time.perf_counter() - t) / _STEPS.value)
        cpu[b, setting, name].append((time.process_time() - c) / _STEPS.value)
    print(f"round {rep + 1}/{_REPS.value} done", flush=True)

  rows = []
  median_ms = lambda xs: statistics.median(xs) * 1e3
  for b in map(int, _BATCHES.value):
    greedy = median_ms(cpu[b, "greedy", "radix (today)"])
    for setting in SETTINGS:
      for name in fns:
        ms, cpu_ms = median_ms(wall[b, setting, name]), median_ms(cpu[b, setting, name])
        rows.append(dict(batch=b, setting=setting, sampler=name, step_ms=round(ms, 2),
                         step_cpu_ms=round(cpu_ms, 2), vs_greedy_cpu=round(cpu_ms / greedy, 3)))
        print(f"batch {b:2d}  {setting:26s} {name:14s} {ms:8.2f} ms/step wall "
              f"{cpu_ms:8.2f} ms CPU  {cpu_ms / greedy:5.2f}x greedy (CPU)", flush=True)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(dict(date=datetime.date.today().isoformat(), machine=platform.machine(),
                     load_average=os.getloadavg(),
                     cpus=jax.device_count(), jax=jax.__version__,
                     command="python " + " ".join(sys.argv),
                     model="Qwen2.5-0.5B-shaped, random weights, f32", vocab=mc.vocab_size,
                     layers=mc.num_layers, steps=_STEPS.value, reps=_REPS.value,
                     rows=rows), f, indent=1)


if __name__ == "__main__":
  app.run(main)
