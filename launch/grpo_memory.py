"""Peak memory per device of one GRPO update, from AOT compilation of abstract shapes.

Nothing is allocated: the update (o1jax/training/grpo.py: make_update_fn) is lowered with
`jax.ShapeDtypeStruct`s carrying the mesh shardings and compiled for simulated CPU devices;
`compiled.memory_analysis()` gives the buffers XLA plans per device. Peak =
arguments + outputs - donated (aliased) + temporaries.

  "before": the path GRPO had before issue 30: full [B, L, V] logits, no remat, the
            reference copy and its forward (log_kl forced it), pi_old in the batch.
  "after":  log-probs chunked over `--chunk` positions with each layer rematerialised, no
            reference (kl_coef = 0), pi_old from the same forward (one update per batch),
            the sampler's log-probs in the batch (TIS).

Shapes are Qwen3-0.6B / 1.7B / 8B (vocab 151,936), float32 parameters and AdamW moments,
bfloat16 activations, FSDP over every device (mesh (1, chips, 1)); P = chips / 8 prompts
per step and G = 8 or 16 rows each, so 1 or 2 rows per device.

  python launch/grpo_memory.py --chips=8,64 --out=docs/grpo/memory.csv
  python launch/grpo_memory.py --models=0.6B --lengths=4096 --chips=8 --paths=after  # one
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import sys
import time

FAMILY = {"model_type": "qwen3", "vocab_size": 151936, "num_key_value_heads": 8,
          "head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0,
          "max_position_embeddings": 40960}
QWEN3 = {  # the HF config.json fields that set the shapes
    "0.6B": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, tie_word_embeddings=True),
    "1.7B": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                 num_attention_heads=16, tie_word_embeddings=True),
    "8B": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
               num_attention_heads=32, tie_word_embeddings=False),
}
CHIP_GB = {"v5e": 16, "v5p": 95, "H100": 80}


def _args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default="0.6B,1.7B,8B")
  p.add_argument("--lengths", default="4096,16384")
  p.add_argument("--groups", default="8,16")
  p.add_argument("--chips", default="8,64")
  p.add_argument("--paths", default="before,after")
  p.add_argument("--chunk", type=int, default=512)
  p.add_argument("--layers", default="",
                 help="compile with these layer counts instead of the model's (e.g. 2,4) and "
                      "extrapolate linearly to its depth (rows say so)")
  p.add_argument("--out", default="")
  p.add_argument("--budget_s", type=float, default=780.0,
                 help="stop compiling new configs after this many seconds (rows left: missing)")
  return p.parse_args(argv)


def main(argv):
  a = _args(argv)
  chips = [int(x) for x in a.chips.split(",")]
  # LLVM code generation is most of a CPU compile and plays no part in the buffer plan
  # memory_analysis reports: skip its expensive passes (3 min -> 2 per 2-layer 4k compile).
  os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 "
                        "--xla_llvm_disable_expensive_passes=true")
  import jax  # noqa: E402: the device count must be set before any JAX op
  jax.config.update("jax_num_cpu_devices", max(chips))
  import jax.numpy as jnp
  from o1jax import parallel
  from o1jax.hf.config import model_config_from_hf
  from o1jax.training import grpo

  rows_out, t_all = [], time.time()
  for name in a.models.split(","):
    config = model_config_from_hf({**FAMILY, **QWEN3[name]}, dtype="bfloat16",
                                  param_dtype="float32", where=f"Qwen3-{name}")
    depths = [int(x) for x in a.layers.split(",")] if a.layers else []
    for n in chips:
      mesh = parallel.make_mesh((1, n, 1))
      for length in [int(x) for x in a.lengths.split(",")]:
        for g in [int(x) for x in a.groups.split(",")]:
          for path in a.paths.split(","):
            row = {"model": f"Qwen3-{name}", "chips": n, "L": length, "G": g,
                   "prompts": max(1, n // 8), "rows": max(1, n // 8) * g, "path": path}
            row["rows_per_device"] = row["rows"] / n
            if time.time() - t_all > a.budget_s:
              row.update(peak_gb="missing", note="not compiled: time budget spent")
              rows_out.append(row)
              print(row, flush=True)
              continue
            t0 = time.time()
            if depths:
              row.update(_extrapolated(jax, jnp, parallel, grpo, config, mesh, row, path,
                                       a.chunk, depths))
            else:
              row.update(_measure(jax, jnp, parallel, grpo, config, mesh, row, path, a.chunk))
            row["compile_s"] = round(time.time() - t0, 1)
            rows_out.append(row)
            print(row, flush=True)
  if a.out:
    _write(a, rows_out, jax.__version__, argv)


def _measure(jax, jnp, parallel, grpo, config, mesh, row, path, chunk):
  before = path == "before"
  cfg = grpo.GRPOConfig(mesh_shape=(1, row["chips"], 1))
  optimizer = grpo.optimizer_for(cfg)
  s = grpo.LossSettings(1.0, 0.2, 0.0, (151645,), tis_cap=0.0 if before else 2.0,
                        chunk=0 if before else chunk, remat=not before,
                        old_from_batch=before)
  with_ref = before
  try:
    abstract, shardings = grpo.state_shardings(config, optimizer, mesh, with_ref)
    state = parallel.abstract_with(abstract, shardings)
    b, length = row["rows"], row["L"]
    shapes = {"tokens": ((b, length), jnp.int32), "thinking_ctx": ((b, length - 1), jnp.bool_),
              "loss_mask": ((b, length - 1), jnp.float32), "advantages": ((b,), jnp.float32),
              "old_logp": ((b, length - 1), jnp.float32),
              "sampler_logp": ((b, length - 1), jnp.float32)}
    batch_sh = grpo.batch_shardings(mesh, s)
    batch = {k: jax.ShapeDtypeStruct(*shapes[k], sharding=batch_sh[k]) for k in batch_sh}
    with parallel.activate(mesh, config):
      update = grpo.make_update_fn(config, optimizer, mesh, s, with_ref)
      m = update.lower(state, batch).compile().memory_analysis()
  except Exception as e:  # reported as missing, never invented
    return {"peak_gb": "missing", "note": f"{type(e).__name__}: {str(e)[:120]}"}
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
          + m.temp_size_in_bytes)
  out = {"peak_gb": round(peak / 1e9, 2), "args_gb": round(m.argument_size_in_bytes / 1e9, 2),
         "temp_gb": round(m.temp_size_in_bytes / 1e9, 2), "note": ""}
  for chip, gb in CHIP_GB.items():
    out[f"fits_{chip}"] = peak <= gb * 1e9
  return out


def _extrapolated(jax, jnp, parallel, grpo, config, mesh, row, path, chunk, depths):
  """Compiles at two depths and extends each byte count linearly to the model's depth:
  parameters, moments and (without remat) saved activations grow by the same amount per
  identical layer; the unembedding and logits do not depend on depth."""
  import dataclasses
  (d1, d2), got = depths, []
  for d in (d1, d2):
    got.append(_measure(jax, jnp, parallel, grpo, dataclasses.replace(config, num_layers=d),
                        mesh, row, path, chunk))
    if got[-1]["peak_gb"] == "missing":
      return got[-1]
  out = dict(got[1])
  for k in ("peak_gb", "args_gb", "temp_gb"):
    per_layer = (got[1][k] - got[0][k]) / (d2 - d1)
    out[k] = round(got[1][k] + per_layer * (config.num_layers - d2), 2)
  for chip, gb in CHIP_GB.items():
    out[f"fits_{chip}"] = out["peak_gb"] <= gb
  out["note"] = f"linear in depth from compiled {d1}- and {d2}-layer models"
  return out


def _write(a, rows, jax_version, argv):
  os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
  keys = ["model", "chips", "L", "G", "prompts", "rows", "rows_per_device", "path", "peak_gb",
          "args_gb", "temp_gb", "fits_v5e", "fits_v5p", "fits_H100", "compile_s", "note"]
  with open(a.out, "w", newline="") as f:
    f.write(f"# {datetime.date.today().isoformat()} jax {jax_version}: python "
            f"launch/grpo_memory.py {' '.join(argv)}\n")
    w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  main(sys.argv[1:])
