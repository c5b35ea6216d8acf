r"""Decode tokens/s: o1jax `think()` vs Tunix's `Sampler`, same HF safetensors weights, CPU.

  python launch/bench_peer_decode.py --out=runs/bench_peer_decode.json

Builds a random-weight Qwen3-layout checkpoint with transformers (h512, 8 layers, 8 query /
2 KV heads of 64, MLP 1536, vocab 4096, tied embeddings: 26.2M parameters) and loads the one
safetensors file on both sides. Tunix 0.1.7 (`google-tunix`) runs in its own venv
(--tunix_venv, created with pip on first use: it pins other versions than ours), as a
subprocess that stays up and answers one timed run per request, so the two sides are timed
interleaved: each round times o1jax then Tunix at every batch size, and the best round of
each is reported (the machine is shared; the JSON records the load average).

Both generate --new_tokens per row, greedily, from the same 32-token prompts (a power of two:
Tunix left-pads prompts to one, so no row is padded and positions agree):
  * o1jax: `think()` with the budget controller on (stop rules natural + budget), budget =
    min_thinking = N - 2 (neither EOS nor `</think>` can end thinking early), then the forced
    one-token close and a one-token answer: N tokens.
  * Tunix: `Sampler(..., max_generation_steps=N)` with EOS and `</think>` forbidden (what
    o1jax's controller bans while thinking) and an EOS id outside the vocabulary.
Tunix gotchas handled here (see the issue): its Qwen3 attention ignores `rope_theta` (always
1e6), so the weights are built with theta 1e6; every generated token equal to its pad id is
masked out of later attention, so its pad id lies outside the vocabulary; its cache must be
exactly prompt + new tokens (every step attends over the whole cache).

Token agreement: the N - 2 thinking tokens of o1jax against Tunix's first N - 2 tokens, row by
row (same weights, same positions: they should match up to float summation order).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_ROLE = flags.DEFINE_enum("role", "bench", ["bench", "tunix"], "tunix: the worker (internal).")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "batch sizes")
_NEW = flags.DEFINE_integer("new_tokens", 256, "tokens generated per sequence")
_REPS = flags.DEFINE_integer("reps", 5, "interleaved rounds (best reported)")
_VENV = flags.DEFINE_string("tunix_venv", "runs/tunix_venv", "venv for google-tunix")
_TUNIX = flags.DEFINE_string("tunix_version", "0.1.7", "google-tunix version to install")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "worker: the HF checkpoint directory")
_OUT = flags.DEFINE_string("out", "runs/bench_peer_decode.json", "where to write the JSON")

PROMPT_LEN = 32
THINK_ID, END_THINK_ID, EOS_ID, PAD_ID = 1, 2, 3, 0   # o1jax's special ids (in the vocab)
HF_CONFIG = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                 num_attention_heads=8, num_key_value_heads=2, head_dim=64, vocab_size=4096,
                 rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                 max_position_embeddings=4096)


def prompts(batch: int) -> list[list[int]]:
  """Row b's prompt: 31 fixed pseudo-random ids (no special id) and `<think>`."""
  import numpy as np
  rng = np.random.default_rng(1234)
  rows = rng.integers(16, HF_CONFIG["vocab_size"], (8 * ((batch + 7) // 8), PROMPT_LEN - 1))
  return [list(map(int, r)) + [THINK_ID] for r in rows[:batch]]


# ---------------------------------------------------------------- Tunix worker (its venv)

class _IdTokenizer:
  """Tunix's Sampler takes strings: "12 7 99" <-> ids, no BOS, pad and EOS outside vocab."""
  def __init__(self, vocab):
    self.vocab = vocab

  def encode(self, text, **_):
    return [int(t) for t in text.split()]

  def decode(self, ids, **_):
    return " ".join(str(int(i)) for i in ids)

  def bos_id(self):
    return None

  def eos_id(self):
    return self.vocab + 2

  def pad_id(self):
    return self.vocab + 1


def tunix_worker() -> None:
  """Reads {"batch": b, "n": n} lines; answers {"seconds", "tokens"} for one timed run."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from tunix.generate import sampler as sampler_lib
  from tunix.models.qwen3 import model as qwen3_model
  from tunix.models.qwen3 import params as qwen3_params

  c = HF_CONFIG
  config = qwen3_model.ModelConfig(
      num_layers=c["num_hidden_layers"], vocab_size=c["vocab_size"], embed_dim=c["hidden_size"],
      hidden_dim=c["intermediate_size"], num_heads=c["num_attention_heads"],
      head_dim=c["head_dim"], num_kv_heads=c["num_key_value_heads"],
      rope_theta=int(c["rope_theta"]), norm_eps=c["rms_norm_eps"], use_tied_embedding=True)
  model = qwen3_params.create_model_from_safe_tensors(_MODEL_DIR.value, config, mesh=None,
                                                      dtype=jnp.float32)
  tok = _IdTokenizer(c["vocab_size"])
  samplers = {}
  print(json.dumps({"ready": jax.__version__}), flush=True)
  for line in sys.stdin:
    req = json.loads(line)
    batch, n = req["batch"], req["n"]
    if (batch, n) not in samplers:  # cache exactly prompt + new tokens
      samplers[(batch, n)] = sampler_lib.Sampler(model, tok, sampler_lib.CacheConfig(
          cache_size=PROMPT_LEN + n, num_layers=config.num_layers,
          num_kv_heads=config.num_kv_heads, head_dim=config.head_dim))
    texts = [tok.decode(p) for p in prompts(batch)]
    run = lambda: samplers[(batch, n)](
        texts, max_generation_steps=n, max_prompt_length=PROMPT_LEN, temperature=0.0,
        eos_tokens=[tok.eos_id()], forbidden_tokens=[EOS_ID, END_THINK_ID])
    if req.get("warm_up"):
      run()
    start = time.perf_counter()
    out = run()
    jax.block_until_ready(out.tokens)
    seconds = time.perf_counter() - start
    tokens = [np.asarray(t).tolist() for t in out.tokens]
    print(json.dumps({"seconds": seconds, "tokens": tokens}), flush=True)


# ------------------------------------------------------------------------ bench (our venv)

def _ensure_tunix_venv() -> str:
  python = os.path.join(_VENV.value, "bin", "python")
  if not os.path.exists(python):
    subprocess.run([sys.executable, "-m", "venv", _VENV.value], check=True)
  check = subprocess.run([python, "-c", "import tunix"], capture_output=True)
  if check.returncode:
    subprocess.run([python, "-m", "pip", "install", "-q", f"google-tunix=={_TUNIX.value}"],
                   check=True)
  return python


def _build_checkpoint(out_dir: str) -> None:
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**HF_CONFIG)).float()
  model.save_pretrained(out_dir)


class _Worker:
  def __init__(self, python: str, model_dir: str):
    env = dict(os.environ, PYTHONPATH="", JAX_PLATFORMS="cpu")
    self.proc = subprocess.Popen(
        [python, os.path.abspath(__file__), "--role=tunix", f"--model_dir={model_dir}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    self._read()

  def _read(self):
    while True:
      line = self.proc.stdout.readline()
      if not line:
        raise RuntimeError("the Tunix worker exited; see its stderr above")
      if line.startswith("{"):
        return json.loads(line)

  def run(self, batch: int, n: int, warm_up: bool = False):
    self.proc.stdin.write(json.dumps({"batch": batch, "n": n, "warm_up": warm_up}) + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=60)


def _o1jax_runner(model_dir: str, batch: int, n: int):
  import jax
  import numpy as np

  from o1jax.hf import weights
  from o1jax.hf.config import model_config_from_hf, read_json
  from o1jax.thinking import ThinkConfig, ThinkInputs, think

  model = model_config_from_hf(read_json(os.path.join(model_dir, "config.json")),
                               dtype="float32")
  params = weights.load_params(model_dir, model)
  config = ThinkConfig(model=model, cache_len=PROMPT_LEN + n, think_id=THINK_ID,
                       end_think_id=END_THINK_ID, eos_id=EOS_ID, pad_id=PAD_ID,
                       max_answer_tokens=1)
  inputs = jax.device_put(ThinkInputs(
      tokens=np.asarray(prompts(batch), np.int32),
      lengths=np.full(batch, PROMPT_LEN, np.int32),
      budget=np.full(batch, n - 2, np.int32), min_thinking=np.full(batch, n - 2, np.int32)))
  rng = jax.random.key(0)

  def run():
    start = time.perf_counter()
    r = jax.block_until_ready(think(params, inputs, config, rng))
    seconds = time.perf_counter() - start
    generated = np.asarray(r.num_generated)
    if not (generated == n).all():
      raise RuntimeError(f"o1jax generated {generated.tolist()} tokens, expected {n}")
    return seconds, np.asarray(r.tokens)[:, : n - 2]
  return run


def main(argv):
  del argv
  if _ROLE.value == "tunix":
    return tunix_worker()
  import jax
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  python = _ensure_tunix_venv()
  n, batches = _NEW.value, [int(b) for b in _BATCHES.value]
  load_before = os.getloadavg()
  with tempfile.TemporaryDirectory() as model_dir:
    _build_checkpoint(model_dir)
    worker = _Worker(python, model_dir)
    ours = {b: _o1jax_runner(model_dir, b, n) for b in batches}
    best = {(b, side): float("inf") for b in batches for side in ("o1jax", "tunix")}
    tokens = {}
    for b in batches:  # warm up (compile) both sides
      ours[b]()
      worker.run(b, n, warm_up=True)
    for _ in range(_REPS.value):
      for b in batches:
        seconds, tokens[(b, "o1jax")] = ours[b]()
        best[(b, "o1jax")] = min(best[(b, "o1jax")], seconds)
        reply = worker.run(b, n)
        best[(b, "tunix")] = min(best[(b, "tunix")], reply["seconds"])
        tokens[(b, "tunix")] = reply["tokens"]
    worker.close()
  import numpy as np
  rows = []
  print(f"\n{'batch':>5} {'o1jax tok/s':>12} {'Tunix tok/s':>12} {'speed-up':>8} "
        f"{'rows identical':>14} {'agreeing prefix (min)':>21}")
  for b in batches:
    theirs = [np.asarray(t[: n - 2]) for t in tokens[(b, "tunix")]]
    mine = tokens[(b, "o1jax")]
    prefix = []
    for m, t in zip(mine, theirs):
      differ = np.nonzero(m[: len(t)] != t)[0]
      prefix.append(int(differ[0]) if len(differ) else int(len(t)))
    row = dict(batch=b, new_tokens=n, o1jax_tok_s=b * n / best[(b, "o1jax")],
               tunix_tok_s=b * n / best[(b, "tunix")],
               rows_identical=sum(p == n - 2 for p in prefix), agreeing_prefix=prefix)
    row["speedup"] = row["o1jax_tok_s"] / row["tunix_tok_s"]
    rows.append(row)
    print(f"{b:>5} {row['o1jax_tok_s']:>12.1f} {row['tunix_tok_s']:>12.1f} "
          f"{row['speedup']:>7.2f}x {row['rows_identical']:>10}/{b:<3} {min(prefix):>21}")
  meta = dict(jax=jax.__version__, tunix=_TUNIX.value, cpu_count=os.cpu_count(),
              loadavg_before=load_before, loadavg_after=os.getloadavg(), reps=_REPS.value,
              date=time.strftime("%Y-%m-%d %H:%M"), model=HF_CONFIG, prompt_tokens=PROMPT_LEN)
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  with open(_OUT.value, "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
