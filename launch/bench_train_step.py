r"""Train-step time of a training config on this machine, and the two layouts behind it.

  python launch/bench_train_step.py                          # configs/tiny.py, ~1 min on CPU
  python launch/bench_train_step.py --config=configs/tiny.py --out=runs/bench_train_step.json

Three timings, each an A/B run in one process with the two sides alternating round by round
(the dev VM's speed drifts by ~25% over minutes; alternating puts the drift on both sides):
  1. attention forward+backward at the config's packed-row shape: o1jax's `xla_attention`
     as training calls it (head-major, causal query blocks of 64 against their key prefix),
     the same without the blocks, and the token-major einsum the model used before
     (`_token_major_attention` below; same mask, same math);
  2. the SwiGLU MLP forward+backward: activations flattened to one 2-D matmul (the model's
     `_dense`) vs the same matmuls with [batch, length] kept as two free dimensions;
  3. the whole train step (trainer._train_step, AdamW included) on real packed batches of
     the config's data pipeline, ms/step and tokens/s: the model as it is vs the einsum
     layout it had before (3-D matmuls, token-major attention without query blocks), which
     this script rebuilds by swapping those two functions in while the baseline traces.
Timing: compile and one warm-up call, then --rounds rounds of --calls back-to-back calls per
side, blocking on the last; the median round is reported. Writes a JSON report (--out).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import statistics
import sys
import time

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from o1jax.model import attention as attention_lib  # noqa: E402
from o1jax.model import transformer as transformer_lib  # noqa: E402
from o1jax.model.attention import _CAUSAL_QUERY_BLOCK, visibility, xla_attention  # noqa: E402
from o1jax.training import trainer  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/tiny.py", "Training config.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds per side (median reported).")
_CALLS = flags.DEFINE_integer("calls", 5, "Back-to-back calls per round.")
_OUT = flags.DEFINE_string("out", "runs/bench_train_step.json", "Where to write the JSON.")


def _ab(sides: dict, args, rounds: int, calls: int) -> dict[str, float]:
  """Median ms per call of each side, the sides alternating round by round."""
  for fn in sides.values():
    jax.block_until_ready(fn(*args))
  times = {name: [] for name in sides}
  for _ in range(rounds):
    for name, fn in sides.items():
      start = time.perf_counter()
      for _ in range(calls):
        out = fn(*args)
      jax.block_until_ready(out)
      times[name].append((time.perf_counter() - start) / calls * 1e3)
  return {name: statistics.median(t) for name, t in times.items()}


def _fwd_bwd(fn):
  """jit of the gradient of sum(fn(*args)**2) w.r.t. every argument."""
  loss = lambda *args: jnp.sum(fn(*args).astype(jnp.float32) ** 2)
  return jax.jit(jax.grad(loss, argnums=tuple(range(3))))


def attention_ab(model_config, rows: int, length: int, rounds: int, calls: int) -> dict:
  c = model_config
  keys = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(keys[0], (rows, length, c.num_heads, c.head_dim))
  k = jax.random.normal(keys[1], (rows, length, c.num_kv_heads, c.head_dim))
  v = jax.random.normal(keys[2], (rows, length, c.num_kv_heads, c.head_dim))
  positions = jnp.broadcast_to(jnp.arange(length), (rows, length))
  sides = {
      "blocked_head_major": lambda q, k, v: xla_attention(
          q, k, v, positions, causal_query_block=_CAUSAL_QUERY_BLOCK),
      "head_major": lambda q, k, v: xla_attention(q, k, v, positions),
      "token_major": lambda q, k, v: _token_major_attention(q, k, v, positions),
  }
  want = sides["token_major"](q, k, v)
  err = {name: float(jnp.abs(fn(q, k, v) - want).max()) for name, fn in sides.items()}
  ms = _ab({name: _fwd_bwd(fn) for name, fn in sides.items()}, (q, k, v), rounds, calls)
  return {"shape": [rows, length, c.num_heads, c.num_kv_heads, c.head_dim],
          "query_block": _CAUSAL_QUERY_BLOCK, "max_abs_diff_vs_token_major": err,
          "ms_per_layer_fwd_bwd": ms,
          "speedup_vs_token_major": ms["token_major"] / ms["blocked_head_major"]}


def mlp_ab(model_config, rows: int, length: int, rounds: int, calls: int) -> dict:
  e, m = model_config.embed_dim, model_config.mlp_dim
  keys = jax.random.split(jax.random.key(1), 4)
  x = jax.random.normal(keys[0], (rows, length, e))
  gate, up = (jax.random.normal(kk, (e, m)) * e ** -0.5 for kk in keys[1:3])
  down = jax.random.normal(keys[3], (m, e)) * m ** -0.5

  def batched(x, gate, up):  # [B, T] as two free dims of each matmul
    return (jax.nn.silu(x @ gate) * (x @ up)) @ down

  def flat(x, gate, up):  # the model's form: one [B*T, E] matmul each
    rows2d = x.reshape(-1, e)
    return ((jax.nn.silu(rows2d @ gate) * (rows2d @ up)) @ down).reshape(x.shape)

  err = float(jnp.abs(flat(x, gate, up) - batched(x, gate, up)).max())
  ms = _ab({"flat_2d": _fwd_bwd(flat), "batched_3d": _fwd_bwd(batched)}, (x, gate, up),
           rounds, calls)
  return {"shape": [rows, length, e, m], "max_abs_diff": err, "ms_fwd_bwd": ms,
          "speedup": ms["batched_3d"] / ms["flat_2d"]}


def _einsum_dense(x, w, contract: int = 1):
  """The baseline's dense layer: leading [B, T] dims kept as free dims of the matmul."""
  return jnp.tensordot(x, w, axes=contract)


def _token_major_attention(q, k, v, q_positions, scale=None, segment_ids=None,
                           causal_query_block=None):
  """The baseline's attention (the model's before the head-major rewrite): token-major
  einsums, -inf masking, every query against every key."""
  del causal_query_block
  b, t, h, d = q.shape
  kvh = k.shape[2]
  scale = d ** -0.5 if scale is None else scale
  qg = q.reshape(b, t, kvh, h // kvh, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale
  visible = visibility(q_positions, k.shape[1], segment_ids)
  scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
  any_visible = visible.any(-1)[:, None, None, :, None]
  probs = jax.nn.softmax(jnp.where(any_visible, scores, 0.0), axis=-1)
  probs = jnp.where(any_visible, probs, 0.0)
  out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


@contextlib.contextmanager
def _einsum_layout():
  saved = transformer_lib._dense, attention_lib.xla_attention
  transformer_lib._dense, attention_lib.xla_attention = _einsum_dense, _token_major_attention
  try:
    yield
  finally:
    transformer_lib._dense, attention_lib.xla_attention = saved


def train_step_ab(config, rounds: int, calls: int) -> dict:
  """The unsharded train step on the config's own packed batches (data excluded), the model
  as it is vs the einsum layout."""
  from o1jax.training import data as data_lib
  t = config.train
  model_config = trainer.model_config_from(config)
  optimizer = trainer.make_optimizer(t)
  iterator = iter(data_lib.make_dataset(trainer.mixture_from(config), t.batch_size, t.seq_len,
                                        pack=bool(config.data.get("pack", False))))
  batches = [{k: jnp.asarray(v) for k, v in b.items()}
             for b in itertools.islice(iterator, calls)]
  iterator.close()
  state = trainer.init_state(model_config, optimizer, 0)
  steps = {}
  for name, layout in (("model", contextlib.nullcontext), ("einsum_layout", _einsum_layout)):
    step = jax.jit(functools.partial(trainer._train_step, model_config=model_config,
                                     optimizer=optimizer))
    with layout():  # traces (and compiles) now, so the swap is what this side runs
      first = step(state, batches[0])
    steps[name] = step
  loss_diff = abs(float(steps["model"](state, batches[0])[1]["loss"])
                  - float(first[1]["loss"]))

  def run(step):
    def go(state):
      for batch in batches:
        state, metrics = step(state, batch)
      return metrics["loss"]
    return go

  ms = _ab({name: run(step) for name, step in steps.items()}, (state,), rounds, 1)
  ms = {name: v / len(batches) for name, v in ms.items()}
  tokens = batches[0]["inputs"].size
  return {"batch": list(batches[0]["inputs"].shape), "ms_per_step": ms,
          "tokens_per_s": {name: tokens / v * 1e3 for name, v in ms.items()},
          "first_step_loss_diff": loss_diff,
          "speedup": ms["einsum_layout"] / ms["model"]}


def main(argv):
  del argv
  config = _CONFIG.value
  model_config = trainer.model_config_from(config)
  rows, length = int(config.train.batch_size), int(config.train.seq_len)
  rounds, calls = _ROUNDS.value, _CALLS.value
  report = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
            "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
  report["attention"] = attention_ab(model_config, rows, length, rounds, calls)
  print("attention", json.dumps(report["attention"]), flush=True)
  report["mlp"] = mlp_ab(model_config, rows, length, rounds, calls)
  print("mlp", json.dumps(report["mlp"]), flush=True)
  report["train_step"] = train_step_ab(config, rounds, calls)
  print("train_step", json.dumps(report["train_step"]), flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump(report, f, indent=1)


if __name__ == "__main__":
  app.run(main)
