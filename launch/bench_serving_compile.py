r"""Compile stalls and queued KV of the serving engine, as an operator meets them.

  python launch/bench_serving_compile.py --out=docs/serving/compile_after.json
  # the same measurement on another checkout (e.g. the engine before chunked prefill):
  python launch/bench_serving_compile.py --repo=../base --out=docs/serving/compile_before.json

For the embedded tiny model and a tiny random Qwen2 HF checkpoint (built here in a temp dir,
BPE tokenizer with a chat template; needs torch and transformers), after the server's own
warm-up (`Engine.warm_up` with the prompts o1jax/serving/http.py warms up with):

  * a tiny request arriving with a prompt of a width never seen (~100 tokens): the tiny
    request's latency (arrival to last token), then the same pair again (nothing left to
    compile), and the tiny request alone;
  * a stream of 20 distinct prompt lengths up to the context, one request at a time:
    backend compilations (jax.monitoring) and each request's latency;
  * 58 requests queued behind busy slots, after 3 rounds: device bytes of every live array
    above the engine's idle state (the KV the queue holds), against one slot row's KV.

Only the API both engines share is used (Engine, Scheduler, warm_up), so `--repo` can point
at an older checkout. Timings are wall time on this machine, one run each.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_REPO = flags.DEFINE_string("repo", None, "Import o1jax from this checkout (default: this "
                            "script's).")
_SLOTS = flags.DEFINE_integer("slots", 4, "Engine slots.")
_MODELS = flags.DEFINE_list("models", ["tiny", "hf"], "tiny: the embedded checkpoint; hf: a "
                            "random tiny Qwen2 built here.")
_OUT = flags.DEFINE_string("out", None, "Write the JSON here.")
_TABLE = flags.DEFINE_list("table", None, "BEFORE.json,AFTER.json: print the markdown table "
                           "of docs/SERVING.md from two runs instead of measuring.")

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class _Compiles:
  def __init__(self):
    import jax
    self.n = 0
    jax.monitoring.register_event_duration_secs_listener(self._on)

  def _on(self, event, duration, **kw):
    if event == _COMPILE_EVENT:
      self.n += 1


def _hf_model(out_dir: str):
  from o1jax.hf import load_hf, synthetic
  synthetic.write_qwen2(out_dir, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                        max_position_embeddings=512)
  return load_hf(out_dir)


def _setup(name: str, tmp: str):
  from o1jax.thinking import make_think_config
  if name == "tiny":
    from o1jax.tasks.tokenizer import CharTokenizer
    from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
    params, model_config, _ = load_params(embedded_checkpoint_dir())
    tok = CharTokenizer()
    warm = ["1+1=", "1+1=" + "1" * 10, "1+1=" + "1" * 20]   # http.py's warm-up prompts
    text = lambda n: ("12+34=" + "1" * n)[:n]
  else:
    params, model_config, tok = _hf_model(tmp)
    warm = [[{"role": "user", "content": "Hi"}]]
    words = "so the answer is 12 + 7".split()
    text = lambda n: " ".join(words[i % len(words)] for i in range(n))
  config = make_think_config(model_config, tok, max_answer_tokens=8)
  return params, tok, config, warm, text


def _prompts_by_length(tok, text, limit: int) -> dict[int, str]:
  """Prompt length in tokens (with the template and <think>) -> a prompt of that length."""
  out = {}
  for n in range(1, 4 * limit):
    p = text(n)
    k = len(tok.encode_prompt(p))
    if k > limit:
      break
    out.setdefault(k, p)
  return out


def _run(sched, requests):
  """Submits the requests at once, runs until idle; {id: latency s}."""
  from o1jax.serving import Request
  for r in requests:
    sched.submit(Request(r[1], budget=2, seed=0, settings=dict(max_answer_tokens=2), id=r[0]))
  return {c.id: c.latency for c in sched.run_until_idle()}


def _device_bytes() -> int:
  import jax
  gc.collect()
  return sum(a.nbytes for a in jax.live_arrays())


def _bench(name: str, compiles: _Compiles, slots: int) -> dict:
  import numpy as np
  from o1jax.serving import Engine, Request, Scheduler, SchedulerConfig
  tmp = tempfile.mkdtemp()
  params, tok, config, warm, text = _setup(name, tmp)
  engine = Engine(params, tok, config, slots)
  sched = Scheduler(engine, SchedulerConfig())
  c0, t0 = compiles.n, time.perf_counter()
  engine.warm_up(warm)
  out = dict(model=name, cache_len=config.cache_len, slots=slots,
             warm_up_s=time.perf_counter() - t0, warm_up_compiles=compiles.n - c0)
  longest = config.cache_len - config.reserve - 2
  by_length = _prompts_by_length(tok, text, longest)
  tiny = by_length[min(by_length)]

  # A tiny request beside a prompt of a new width (~100 tokens: the 128 bucket).
  new_width = by_length[min(by_length, key=lambda k: abs(k - 100))]
  c0 = compiles.n
  first = _run(sched, [("new", new_width), ("tiny", tiny)])
  out["tiny_beside_new_width"] = dict(
      new_prompt_tokens=len(tok.encode_prompt(new_width)), compiles=compiles.n - c0,
      tiny_latency_s=first["tiny"], new_latency_s=first["new"],
      tiny_latency_again_s=_run(sched, [("new", new_width), ("tiny", tiny)])["tiny"],
      tiny_alone_s=_run(sched, [("tiny", tiny)])["tiny"])

  # 20 distinct prompt lengths up to the context, one at a time.
  fits = sorted(by_length)
  picks = sorted({fits[int(i)] for i in np.linspace(0, len(fits) - 1, 20)})
  c0, latencies = compiles.n, []
  for k in picks:
    latencies.append(_run(sched, [(str(k), by_length[k])])[str(k)])
  out["stream"] = dict(lengths=picks, compiles=compiles.n - c0, latency_s=latencies,
                       max_latency_s=max(latencies),
                       median_latency_s=statistics.median(latencies))

  # 58 requests behind busy slots: the device bytes the queue holds after a few rounds.
  # (Prompts from the shortest quarter, so every one has room to think its 200 tokens.)
  short = fits[:max(1, len(fits) // 4)]
  base = _device_bytes()
  for i in range(58):
    sched.submit(Request(by_length[short[(7 * i) % len(short)]], budget=200,
                         min_thinking=200, seed=i, id=f"q{i}"))
  for _ in range(3):   # at most 3 x 64 steps: every slot still busy
    sched.step()
  row = engine.kv_bytes_per_token() * config.cache_len
  grown = _device_bytes() - base
  out["queue"] = dict(queued=58, waiting=sched.queue_depth, live=len(sched.live),
                      device_bytes_above_idle=grown, slot_row_kv_bytes=row,
                      rows=grown / row)
  sched.run_until_idle()
  return out


_ROWS = (  # (label, path in a model's result, format)
    ("compilations during warm-up", ("warm_up_compiles",), "{:d}"),
    ("warm-up time", ("warm_up_s",), "{:.1f} s"),
    ("compilations: a ~100-token prompt (new width) + a tiny request",
     ("tiny_beside_new_width", "compiles"), "{:d}"),
    ("tiny request's latency beside it, first time", ("tiny_beside_new_width",
                                                      "tiny_latency_s"), "{:.3f} s"),
    ("the same pair again", ("tiny_beside_new_width", "tiny_latency_again_s"), "{:.3f} s"),
    ("tiny request alone", ("tiny_beside_new_width", "tiny_alone_s"), "{:.3f} s"),
    ("compilations over 20 prompt lengths up to the context", ("stream", "compiles"), "{:d}"),
    ("slowest / median request of those 20", ("stream",), None),
    ("device bytes the queue holds (58 queued, 4 slots busy)", ("queue",), None),
)


def _cell(model: dict, path, fmt) -> str:
  value = model
  for key in path:
    value = value[key]
  if path == ("stream",):
    return f"{value['max_latency_s']:.2f} / {value['median_latency_s']:.2f} s"
  if path == ("queue",):
    return (f"{value['device_bytes_above_idle'] / 2**20:.1f} MiB = {value['rows']:.1f} "
            "slot rows")
  return fmt.format(value)


def _table(before_path: str, after_path: str) -> str:
  before, after = (json.load(open(p)) for p in (before_path, after_path))
  lines = []
  for b, a in zip(before["models"], after["models"]):
    lines += [f"\n{a['model']} (context {a['cache_len']}, {a['slots']} slots) | before | "
              "after", "--- | --- | ---"]
    lines += [f"{label} | {_cell(b, path, fmt)} | {_cell(a, path, fmt)}"
              for label, path, fmt in _ROWS]
  return "\n".join(lines)


def main(argv):
  del argv
  if _TABLE.value:
    print(_table(*_TABLE.value))
    return
  if _REPO.value:
    sys.path.insert(0, os.path.abspath(_REPO.value))
  else:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax
  import o1jax
  compiles = _Compiles()
  root = os.path.dirname(os.path.dirname(os.path.abspath(o1jax.__file__)))
  commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
  dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "o1jax"],
                         capture_output=True, text=True).stdout.strip()
  results = dict(commit=(commit + ("+changes" if dirty else "")) or "not a git checkout",
                 machine=f"{platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}",
                 date=time.strftime("%Y-%m-%d"), models=[])
  for name in _MODELS.value:
    r = _bench(name, compiles, _SLOTS.value)
    results["models"].append(r)
    print(json.dumps(r, indent=1))
  if _OUT.value:
    os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
    with open(_OUT.value, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
