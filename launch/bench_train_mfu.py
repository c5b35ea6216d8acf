"""Training MFU and batch-1 decode memory bandwidth of a ~0.5B-parameter random-weight model.

  python launch/bench_train_mfu.py                      # Qwen2.5-0.5B shape, GPU/TPU, ~5 min
  python launch/bench_train_mfu.py --smoke              # tiny shape, runs on CPU in seconds

Training: the sharded train step of o1jax.training.trainer (AdamW, bf16 compute, f32 params)
on random tokens. Model FLOPs per token follow PaLM (Chowdhery et al. 2022, app. B):
6*N for the matmul parameters N (the embedding counted once, as the tied output layer) plus
12*L*H*Q*T for attention (fwd+bwd, no causal discount). MFU = model FLOP/s over the peak
dense bf16 FLOP/s of all devices in the mesh (from --peak_tflops, else a table by device kind).

Decoding: greedy batch-1 decoding in one jitted loop, bf16 weights. Each token must read every
weight (the tied embedding is the output layer) and the whole KV cache buffer (the XLA
attention reads every slot and masks), so bytes/token = param bytes + cache bytes; achieved
bandwidth is that over the time per token, compared with the bandwidth of a large on-device
copy measured here (read + write), the practical ceiling.

Writes a JSON report (--out) and prints it.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from o1jax import parallel
from o1jax.model.cache import KVCache
from o1jax.model.config import ModelConfig
from o1jax.model.decode import prefill
from o1jax.model.transformer import count_params, forward
from o1jax.training import trainer

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny shapes and few steps (CPU check).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Global training batch (sequences).")
_SEQ = flags.DEFINE_integer("seq_len", 1024, "Training sequence length.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps (after 2 warm-up steps).")
_PROMPT = flags.DEFINE_integer("prompt_len", 128, "Decode: prompt tokens before timing.")
_DECODE = flags.DEFINE_integer("decode_tokens", 256, "Decode: timed greedy tokens.")
_COPY_MIB = flags.DEFINE_integer("copy_mib", 1024, "Size of the bandwidth-reference copy.")
_PEAK = flags.DEFINE_float("peak_tflops", None, "Peak dense bf16 TFLOP/s of one device; "
                           "default: looked up from the device kind.")
_MESH = flags.DEFINE_string("mesh", "-1,1,1", "Training mesh over (data, fsdp, tensor).")
_ATTN = flags.DEFINE_enum("attention_impl", "xla", ["xla", "pallas", "cudnn"], "Attention.")
_OUT = flags.DEFINE_string("out", "runs/bench_train_mfu.json", "Where to write the JSON.")

# Dense (no sparsity) bf16 peaks per device, from the vendors' data sheets; first match wins.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
    ("L40S", 362.0), ("L4", 121.0), ("TPU v6", 918.0), ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0), ("TPU v5", 459.0), ("TPU v4", 275.0),
)

# Qwen2.5-0.5B's shape (494M parameters), random weights.
QWEN25_05B = dict(vocab_size=151936, embed_dim=896, num_layers=24, num_heads=14,
                  num_kv_heads=2, head_dim=64, mlp_dim=4864, max_seq_len=2048,
                  rope_theta=1_000_000.0, qkv_bias=True, tie_embeddings=True)
SMOKE = dict(vocab_size=256, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
             head_dim=16, mlp_dim=128, max_seq_len=128, qkv_bias=True, tie_embeddings=True)


def peak_flops(device_kind: str) -> float | None:
  if _PEAK.value:
    return _PEAK.value * 1e12
  for key, tflops in PEAK_BF16_TFLOPS:
    if key.lower() in device_kind.lower():
      return tflops * 1e12
  return None


def matmul_params(config: ModelConfig, n_params: int) -> int:
  """Parameters that take part in a matmul per token: all but the embedding lookup, with
  the (tied or separate) output layer counted."""
  if config.tie_embeddings:
    return n_params  # the embedding matrix is the output layer's weight
  return n_params - config.vocab_size * config.embed_dim


def train_flops_per_token(config: ModelConfig, n_params: int, seq_len: int) -> float:
  attention = 12 * config.num_layers * config.num_heads * config.head_dim * seq_len
  return 6 * matmul_params(config, n_params) + attention


def _timed(fn, repeats: int) -> float:
  """Best wall time of fn() (which must block) over `repeats` runs."""
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def bench_train(config: ModelConfig, mesh, batch: int, seq: int, steps: int) -> dict:
  opt_cfg = ml_collections.ConfigDict(dict(learning_rate=1e-4, warmup_steps=10, steps=1000,
                                           final_lr_fraction=0.1, grad_clip=1.0,
                                           weight_decay=0.01))
  optimizer = trainer.make_optimizer(opt_cfg)
  parallel.check_batch(batch, mesh, "--batch_size")
  _, shardings = trainer.state_shardings(config, optimizer, mesh)
  step_fn = trainer.sharded_train_step(config, optimizer, mesh, shardings)
  with parallel.activate(mesh, config):
    state = parallel.init_sharded(lambda: trainer.init_state(config, optimizer, 0), shardings)
  rng = np.random.default_rng(0)
  local = {"inputs": rng.integers(0, config.vocab_size, (batch, seq), dtype=np.int32),
           "targets": rng.integers(0, config.vocab_size, (batch, seq), dtype=np.int32),
           "loss_mask": np.ones((batch, seq), np.float32)}
  data = parallel.global_batch(local, mesh, batch, fill={})
  n_params = count_params(state.params)
  with parallel.activate(mesh, config):
    t0 = time.perf_counter()
    for _ in range(2):  # compile + one more: allocations settle
      state, metrics = step_fn(state, data)
    float(metrics["loss"])
    warmup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
      state, metrics = step_fn(state, data)
    loss = float(metrics["loss"])  # blocks on the last step
    step_s = (time.perf_counter() - t0) / steps
  tokens = batch * seq
  flops = train_flops_per_token(config, n_params, seq) * tokens
  kind = jax.devices()[0].device_kind
  peak = peak_flops(kind)
  return dict(params=n_params, matmul_params=matmul_params(config, n_params), batch_size=batch,
              seq_len=seq, mesh=dict(mesh.shape), steps=steps, warmup_s=warmup_s,
              step_s=step_s, tokens_per_s=tokens / step_s, model_flops_per_step=flops,
              model_flops_per_s=flops / step_s, final_loss=loss,
              peak_flops_per_s=None if peak is None else peak * mesh.devices.size,
              mfu=None if peak is None else flops / step_s / (peak * mesh.devices.size))


@functools.partial(jax.jit, static_argnames=("config", "n"), donate_argnames=("cache",))
def _greedy_loop(params, token, position, cache, config: ModelConfig, n: int):
  """n greedy tokens for a batch, all on device (no host round trip per token)."""
  def body(i, carry):
    token, cache = carry
    logits, _, cache = forward(params, token[:, None], (position + i)[:, None], cache, config)
    return jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32), cache
  return jax.lax.fori_loop(0, n, body, (token, cache))


def bench_decode(config: ModelConfig, prompt_len: int, n_tokens: int) -> dict:
  """Batch-1 greedy decoding on one device with bf16 weights."""
  config = config.replace(param_dtype="bfloat16", dtype="bfloat16")
  cache_len = prompt_len + n_tokens
  one = parallel.make_mesh((1, 1, 1))
  params = parallel.init_params_sharded(config, one, seed=1)
  prompt = jnp.asarray(np.random.default_rng(1).integers(0, config.vocab_size, (1, prompt_len)),
                       jnp.int32)
  lengths = jnp.full((1,), prompt_len, jnp.int32)

  def run():
    cache = KVCache.init(config, 1, cache_len)
    logits, _, cache = prefill(params, prompt, lengths, cache, config=config)
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    jax.block_until_ready((token, cache))
    t0 = time.perf_counter()
    token, cache = _greedy_loop(params, token, lengths, cache, config=config, n=n_tokens)
    jax.block_until_ready(token)
    return time.perf_counter() - t0

  run()  # compile
  per_token = min(run() for _ in range(2)) / n_tokens
  param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  if not config.tie_embeddings:  # the lookup reads one row, not the table
    itemsize = jnp.dtype(config.jnp_param_dtype).itemsize
    param_bytes -= (config.vocab_size - 1) * config.embed_dim * itemsize
  kv_bytes = (2 * config.num_layers * cache_len * config.num_kv_heads * config.head_dim
              * jnp.dtype(config.jnp_dtype).itemsize)
  moved = param_bytes + kv_bytes
  return dict(prompt_len=prompt_len, decode_tokens=n_tokens, cache_len=cache_len,
              s_per_token=per_token, tokens_per_s=1 / per_token, param_bytes=param_bytes,
              kv_cache_bytes=kv_bytes, bytes_per_token=moved,
              achieved_bytes_per_s=moved / per_token)


def copy_bandwidth(mib: int) -> float:
  """Bytes/s of x + 1 over a large bf16 array on one device (reads and writes every byte)."""
  x = jnp.ones((mib * 2**20 // 2,), jnp.bfloat16)
  f = jax.jit(lambda a: a + 1)
  jax.block_until_ready(f(x))
  seconds = _timed(lambda: jax.block_until_ready(f(x)), 10)
  return 2 * x.size * x.dtype.itemsize / seconds


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  smoke = _SMOKE.value
  config = ModelConfig(**(SMOKE if smoke else QWEN25_05B), dtype="bfloat16",
                       param_dtype="float32", attention_impl=_ATTN.value)
  batch, seq = (2, 64) if smoke else (_BATCH.value, _SEQ.value)
  steps = 2 if smoke else _STEPS.value
  prompt, n_dec = (16, 16) if smoke else (_PROMPT.value, _DECODE.value)
  if max(seq, prompt + n_dec) > config.max_seq_len:
    config = config.replace(max_seq_len=max(seq, prompt + n_dec))
  mesh = parallel.make_mesh(parallel.parse_shape(_MESH.value))
  device = jax.devices()[0]
  report = dict(device_kind=device.device_kind, platform=device.platform,
                num_devices=jax.device_count(), smoke=smoke, jax_version=jax.__version__,
                model=config.to_dict())
  print(f"{device.device_kind} x{jax.device_count()}; model {config.num_layers} layers, "
        f"embed {config.embed_dim}", flush=True)
  report["train"] = bench_train(config, mesh, batch, seq, steps)
  t = report["train"]
  print(f"train: {t['params'] / 1e6:.1f}M params, {t['step_s'] * 1e3:.1f} ms/step, "
        f"{t['tokens_per_s']:,.0f} tok/s, {t['model_flops_per_s'] / 1e12:.2f} TFLOP/s, MFU "
        + ("unknown (no peak for this device; pass --peak_tflops)" if t["mfu"] is None
           else f"{100 * t['mfu']:.1f}%"), flush=True)
  report["decode"] = bench_decode(config, prompt, n_dec)
  report["copy_bytes_per_s"] = copy_bandwidth(4 if smoke else _COPY_MIB.value)
  d = report["decode"]
  d["fraction_of_copy_bandwidth"] = d["achieved_bytes_per_s"] / report["copy_bytes_per_s"]
  print(f"decode (batch 1): {d['s_per_token'] * 1e3:.2f} ms/token, "
        f"{d['achieved_bytes_per_s'] / 1e9:.1f} GB/s = "
        f"{100 * d['fraction_of_copy_bandwidth']:.0f}% of the measured copy bandwidth "
        f"({report['copy_bytes_per_s'] / 1e9:.1f} GB/s)", flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
