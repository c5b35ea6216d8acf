r"""Benchmark o1jax's Pallas attention kernels against XLA and cuDNN attention.

Flash attention: TFLOP/s of forward and forward+backward (causal flop counts) at sequence
lengths 2K..64K with batch x length held constant, vs jax.nn.dot_product_attention with
implementation="xla" and "cudnn" in the same run. Decode attention: achieved GB/s (bytes of
K and V read / time) at cache lengths 8K..128K, vs XLA and vs the card's measured copy
bandwidth. Also checks the kernels' numerics against the reference at the smallest size.

  python launch/bench_attention.py --out=runs/bench_attention.json        # GPU, ~5-8 min
  python launch/bench_attention.py --smoke --out=/tmp/bench_smoke.json    # CPU, tiny sizes

Timing: compile, one warm-up call, then the median of --reps timed rounds; each round issues
enough back-to-back calls to last ~20 ms and blocks on the last (block_until_ready), so
dispatch overhead does not dominate short kernels. Failures are recorded, not fatal: "OOM"
for out-of-memory, "n/a" for anything unsupported (e.g. cuDNN on CPU), with the reason kept
in the JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from o1jax.kernels import decode_attention, flash_attention, reference_attention  # noqa: E402

_SMOKE = flags.DEFINE_bool("smoke", False, "tiny sizes so the script runs on CPU in ~1 min")
_OUT = flags.DEFINE_string("out", "runs/bench_attention.json", "where to write the JSON")
_TOKENS = flags.DEFINE_integer("tokens", 65536, "batch * seq_len for the flash benchmark")
_SEQ = flags.DEFINE_list("seq_lens", ["2048", "4096", "8192", "16384", "32768", "65536"],
                         "flash sequence lengths")
_HEADS = flags.DEFINE_integer("heads", 16, "query heads (flash)")
_KV_HEADS = flags.DEFINE_integer("kv_heads", 16, "kv heads (flash)")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 128, "head dim")
_DECODE = flags.DEFINE_list("decode_lens", ["8192", "16384", "32768", "65536", "131072"],
                            "decode cache lengths")
_DEC_B = flags.DEFINE_integer("decode_batch", 8, "decode batch")
_DEC_H = flags.DEFINE_integer("decode_heads", 32, "decode query heads")
_DEC_KVH = flags.DEFINE_integer("decode_kv_heads", 8, "decode kv heads")
_DEC_Q = flags.DEFINE_integer("decode_q", 1, "query tokens per decode step")
_REPS = flags.DEFINE_integer("reps", 7, "timed rounds (median reported)")
_COPY_GIB = flags.DEFINE_float("copy_gib", 2.0, "buffer size for the copy-bandwidth probe")


def _failure(e: Exception) -> tuple[str, str]:
  msg = f"{type(e).__name__}: {e}"
  oom = any(s in msg for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))
  return ("OOM" if oom else "n/a"), msg.splitlines()[0][:300]


def _time(fn, *args, reps: int):
  """Median seconds per call of jit(fn)(*args), or (label, reason) on failure."""
  try:
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))  # warm-up (autotuning, allocation)
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    inner = max(1, min(100, int(0.02 / max(time.perf_counter() - t0, 1e-6))))
    rounds = []
    for _ in range(reps):
      t0 = time.perf_counter()
      for _ in range(inner):
        out = compiled(*args)
      jax.block_until_ready(out)
      rounds.append((time.perf_counter() - t0) / inner)
    return statistics.median(rounds)
  except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
    return _failure(e)


def _attn(impl):
  if impl == "pallas":
    return lambda q, k, v, pos: flash_attention(q, k, v, pos)
  return lambda q, k, v, pos: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                           implementation=impl)


def _fwd_bwd(attn):
  def fn(q, k, v, pos, do):
    _, vjp = jax.vjp(lambda q, k, v: attn(q, k, v, pos), q, k, v)
    return vjp(do)
  return fn


def _rel(a, b):
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def _inputs(key, b, s, h, kvh, d, dtype):
  ks = jax.random.split(key, 4)
  q = jax.random.normal(ks[0], (b, s, h, d), dtype)
  k = jax.random.normal(ks[1], (b, s, kvh, d), dtype)
  v = jax.random.normal(ks[2], (b, s, kvh, d), dtype)
  do = jax.random.normal(ks[3], (b, s, h, d), dtype)
  return q, k, v, do


def bench_flash(cfg, results):
  h, kvh, d, dtype = cfg["heads"], cfg["kv_heads"], cfg["head_dim"], cfg["dtype"]
  for s in cfg["seq_lens"]:
    b = max(1, cfg["tokens"] // s)
    q, k, v, do = _inputs(jax.random.key(s), b, s, h, kvh, d, dtype)
    pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    fwd_flops = 4.0 * b * h * s * s * d / 2  # two matmuls, causal half
    for impl in cfg["impls"]:
      attn = _attn(impl)
      for mode, fn, args, flops in (("fwd", attn, (q, k, v, pos), fwd_flops),
                                    ("fwd+bwd", _fwd_bwd(attn), (q, k, v, pos, do),
                                     3.5 * fwd_flops)):  # bwd = 5 matmuls = 2.5x fwd
        t = _time(fn, *args, reps=cfg["reps"])
        row = dict(bench="flash", mode=mode, seq_len=s, batch=b, impl=impl)
        if isinstance(t, float):
          row.update(ms=t * 1e3, tflops=flops / t / 1e12)
        else:
          row.update(status=t[0], reason=t[1])
        results.append(row)
        print(_fmt(row), flush=True)
    del q, k, v, do


def bench_decode(cfg, results, copy_gbs):
  b, h, kvh, d, tq = cfg["dec_b"], cfg["dec_h"], cfg["dec_kvh"], cfg["head_dim"], cfg["dec_q"]
  for t in cfg["decode_lens"]:
    q, k, v, _ = _inputs(jax.random.key(t), b, t, h, kvh, d, cfg["dtype"])
    q = q[:, :tq]
    pos = jnp.broadcast_to(t - tq + jnp.arange(tq, dtype=jnp.int32), (b, tq))
    kv_len = jnp.full((b,), t, jnp.int32)
    nbytes = 2 * k.size * k.dtype.itemsize  # K and V, all of it visible
    impls = {"pallas": decode_attention, "xla": reference_attention}
    for impl, attn in impls.items():
      sec = _time(lambda q, k, v, p, n: attn(q, k, v, p, n), q, k, v, pos, kv_len,
                  reps=cfg["reps"])
      row = dict(bench="decode", mode=f"Tq={tq}", seq_len=t, batch=b, impl=impl)
      if isinstance(sec, float):
        gbs = nbytes / sec / 1e9
        row.update(ms=sec * 1e3, gbs=gbs, frac_of_copy=gbs / copy_gbs if copy_gbs else None)
      else:
        row.update(status=sec[0], reason=sec[1])
      results.append(row)
      print(_fmt(row), flush=True)
    del q, k, v


def copy_bandwidth(gib, reps):
  """GB/s of an elementwise pass over a large buffer, counting read + write (as CUDA's
  bandwidthTest does for device-to-device copies): the practical HBM roofline."""
  n = int(gib * 2**30) // 4
  x = jnp.ones((n,), jnp.float32)
  t = _time(lambda x: x + jnp.float32(1), x, reps=reps)
  del x
  return None if not isinstance(t, float) else 2 * n * 4 / t / 1e9


def check_numerics(cfg):
  """Kernel vs reference (fp32 compute) at a small size, in the benchmark's dtype."""
  s = cfg["seq_lens"][0]
  h, kvh, d = cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
  q, k, v, do = _inputs(jax.random.key(0), 1, s, h, kvh, d, cfg["dtype"])
  pos = jnp.arange(s, dtype=jnp.int32)[None]
  ours = jax.jit(_fwd_bwd(_attn("pallas")))(q, k, v, pos, do)
  ref = jax.jit(_fwd_bwd(lambda q, k, v, p: reference_attention(q, k, v, p)))(q, k, v, pos, do)
  out = dict(zip(("dq", "dk", "dv"), (_rel(a, b) for a, b in zip(ours, ref))))
  out["out"] = _rel(jax.jit(flash_attention)(q, k, v, pos), reference_attention(q, k, v, pos))
  t = cfg["decode_lens"][0]
  q, k, v, _ = _inputs(jax.random.key(1), 2, t, cfg["dec_h"], cfg["dec_kvh"], d, cfg["dtype"])
  pos = jnp.asarray([[t // 3], [t - 1]], jnp.int32)
  out["decode"] = _rel(jax.jit(decode_attention)(q[:, :1], k, v, pos),
                       reference_attention(q[:, :1], k, v, pos))
  return out


def _fmt(row):
  perf = (f"{row['tflops']:8.2f} TFLOP/s" if "tflops" in row else
          f"{row['gbs']:8.1f} GB/s" if "gbs" in row else f"{row['status']:>8}")
  ms = f"{row['ms']:9.3f} ms" if "ms" in row else " " * 12
  return (f"{row['bench']:6} {row['mode']:8} T={row['seq_len']:<7} B={row['batch']:<4} "
          f"{row['impl']:7} {ms} {perf}")


def main(argv):
  del argv
  if _SMOKE.value:
    cfg = dict(seq_lens=[128, 256], tokens=512, heads=2, kv_heads=1, head_dim=128,
               decode_lens=[256, 512], dec_b=2, dec_h=4, dec_kvh=2, dec_q=2, reps=2,
               copy_gib=1 / 64)
  else:
    cfg = dict(seq_lens=[int(s) for s in _SEQ.value], tokens=_TOKENS.value,
               heads=_HEADS.value, kv_heads=_KV_HEADS.value, head_dim=_HEAD_DIM.value,
               decode_lens=[int(s) for s in _DECODE.value], dec_b=_DEC_B.value,
               dec_h=_DEC_H.value, dec_kvh=_DEC_KVH.value, dec_q=_DEC_Q.value,
               reps=_REPS.value, copy_gib=_COPY_GIB.value)
  cfg.update(dtype=jnp.bfloat16, impls=["pallas", "xla", "cudnn"])
  dev = jax.devices()[0]
  print(f"device: {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  t_start = time.perf_counter()
  checks = check_numerics(cfg)
  print("numerics (rel err vs reference):", {k: f"{v:.2e}" for k, v in checks.items()})
  copy_gbs = copy_bandwidth(cfg["copy_gib"], cfg["reps"])
  print(f"copy bandwidth (read+write): {copy_gbs:.1f} GB/s" if copy_gbs else "copy: failed")
  results = []
  bench_flash(cfg, results)
  bench_decode(cfg, results, copy_gbs)
  report = dict(device=dev.device_kind, backend=jax.default_backend(), jax=jax.__version__,
                smoke=_SMOKE.value, config={k: (jnp.dtype(v).name if k == "dtype" else v)
                                           for k, v in cfg.items()},
                numerics=checks, copy_gbs=copy_gbs, results=results,
                seconds=time.perf_counter() - t_start)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(report, f, indent=1)
  print(f"wrote {_OUT.value} ({report['seconds']:.0f} s)")


if __name__ == "__main__":
  app.run(main)
