r"""Decode tokens/s: o1jax `think()` vs transformers `generate`, same weights, on CPU.

Both sides generate exactly --new_tokens per sequence from the same prompt ids, greedily:
o1jax thinks with budget forcing (min_thinking = budget, so neither EOS nor `</think>` can end
it early; the forced one-token close and a one-token answer complete the count), and
transformers runs `generate(do_sample=False, min_new_tokens=max_new_tokens=N)`. Prefill is
included on both sides. Models are random-weight Qwen2-style checkpoints built locally in a
temp dir (or --hf_dir), loaded by o1jax through `o1jax.hf.load_hf`.

  python launch/bench_hf_decode.py --sizes=tiny --out=/tmp/bench_hf_tiny.json   # ~1 min
  python launch/bench_hf_decode.py --out=runs/bench_hf_decode.json              # + ~100M

Timing: one warm-up call per (size, batch, side) (compilation, allocator warm-up) is
excluded; the median of --reps timed calls is reported. CPU numbers depend on the load from
other processes: the JSON records the load average before and after.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["tiny", "100m"], "model sizes to build (see SIZES)")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "batch sizes")
_NEW = flags.DEFINE_integer("new_tokens", 128, "tokens generated per sequence")
_PROMPT = flags.DEFINE_integer("prompt_tokens", 32, "approximate prompt length in tokens")
_REPS = flags.DEFINE_integer("reps", 3, "timed runs per cell (median reported)")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: default)")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "benchmark this checkpoint instead of --sizes")
_OUT = flags.DEFINE_string("out", "runs/bench_hf_decode.json", "where to write the JSON")

# Qwen2 layout (QKV bias, tied embeddings). "100m": 97.6M parameters, 24.6M of them embedding.
SIZES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=512),
    "100m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=2, vocab_size=32000),
}


def _build(size: str, out_dir: str) -> None:
  from o1jax.hf import synthetic
  synthetic.write_qwen2(out_dir, **SIZES[size], max_position_embeddings=4096)


def _median_time(fn, reps: int) -> float:
  fn()  # warm-up: compilation and first-touch allocation are not decode speed
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _bench_dir(model_dir: str, label: str) -> list[dict]:
  import torch
  import transformers

  from o1jax.hf import load_hf
  from o1jax.model import count_params
  from o1jax.thinking import make_think_config, prepare_inputs, think

  params, config, tok = load_hf(model_dir, dtype="float32")
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
  n = _NEW.value
  words = " ".join(f"{i} plus {i + 1}" for i in range(_PROMPT.value))
  prompt = tok.decode(tok.encode(words)[: _PROMPT.value])
  # One close token and a one-token answer follow the thinking: budget n - 2 makes n in all.
  cfg = make_think_config(config, tok, len(tok.encode_prompt(prompt)) + n + 1,
                          close_ids=(tok.end_think_id,), max_answer_tokens=1)
  rows = []
  for batch in map(int, _BATCHES.value):
    inputs = prepare_inputs(tok, [prompt] * batch, cfg, budgets=n - 2, min_thinking=n - 2)
    key = jax.random.key(0)
    generated = []

    def ours():
      r = think(params, inputs, cfg, key)
      generated.append(int(np.asarray(r.num_generated).sum()))

    ids = torch.tensor(np.asarray(inputs.tokens))  # same prompt in every row: no padding
    mask = torch.ones_like(ids)

    def theirs():
      with torch.no_grad():
        out = hf_model.generate(ids, attention_mask=mask, do_sample=False, min_new_tokens=n,
                                max_new_tokens=n, pad_token_id=tok.pad_id)
      generated.append(int(out.shape[0] * (out.shape[1] - ids.shape[1])))

    for impl, fn in (("o1jax_think", ours), ("transformers_generate", theirs)):
      generated.clear()
      seconds = _median_time(fn, _REPS.value)
      if set(generated) != {batch * n}:
        raise RuntimeError(f"{impl} generated {sorted(set(generated))} tokens, "
                           f"expected {batch * n}")
      rows.append(dict(model=label, params=int(count_params(params)), batch=batch, impl=impl,
                       new_tokens=n, prompt_tokens=int(inputs.lengths[0]), seconds=seconds,
                       tokens_per_s=batch * n / seconds))
      print(f"{label:>6} b={batch:<2} {impl:<22} {seconds:8.3f} s {rows[-1]['tokens_per_s']:10.1f} "
            "tok/s", flush=True)
  return rows


def main(argv):
  del argv
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import torch
  import transformers
  if _TORCH_THREADS.value:
    torch.set_num_threads(_TORCH_THREADS.value)
  transformers.utils.logging.disable_progress_bar()
  load_before = os.getloadavg()
  rows = []
  if _HF_DIR.value:
    rows += _bench_dir(_HF_DIR.value, os.path.basename(_HF_DIR.value.rstrip("/")))
  else:
    for size in _SIZES.value:
      with tempfile.TemporaryDirectory() as d:
        _build(size, d)
        rows += _bench_dir(d, size)
  print(f"\n{'model':>6} {'params':>11} {'batch':>5} {'o1jax tok/s':>12} {'HF tok/s':>10} "
        f"{'speed-up':>8}")
  for r in rows:
    if r["impl"] != "o1jax_think":
      continue
    hf_row = next(x for x in rows if x["impl"] == "transformers_generate" and
                  x["model"] == r["model"] and x["batch"] == r["batch"])
    print(f"{r['model']:>6} {r['params']:>11,} {r['batch']:>5} {r['tokens_per_s']:>12.1f} "
          f"{hf_row['tokens_per_s']:>10.1f} {r['tokens_per_s'] / hf_row['tokens_per_s']:>7.2f}x")
  meta = dict(device=str(jax.devices()[0]), jax=jax.__version__, torch=torch.__version__,
              transformers=transformers.__version__, torch_threads=torch.get_num_threads(),
              cpu_count=os.cpu_count(), loadavg_before=load_before,
              loadavg_after=os.getloadavg(), reps=_REPS.value)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
