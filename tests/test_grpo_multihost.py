"""GRPO over two real processes (jax.distributed on localhost, gloo collectives, 2 simulated
CPU devices each) against one process with 4 devices: same rollouts, same parameters.

Each run takes 2 GRPO steps of the embedded reasoner (4 prompts x 4 samples, 2 updates per
batch, a reference policy for the KL metric) on mesh (-1, 1, 2): data over the processes,
tensor within each. It stops after step 1 and resumes from that step's orbax checkpoint, so
multi-process checkpoints are written and read.

Tolerances. The rollouts must be identical: every row keeps its key and prompt layout from
its place in the whole batch and is sampled with the same per-device shapes, so the
per-step accuracy, thinking-token and truncation means and the count of generated tokens
are compared exactly. The update then differs from one process only in the order of the
gradient all-reduce's sums (gloo across processes vs in-process), ~1e-7 relative per op;
AdamW's per-element normalisation turns that into up to ~2e-3 of the learning rate on
elements whose gradient is near zero (1.7e-6 measured at lr 1e-3, hence lr 1e-4 here).
So after 4 updates parameters must agree to rtol=1e-5, atol=1e-6 (as in test_parallel.py),
while the updates move parameters by ~4e-4 (asserted > 1e-4, so agreement is not met
by an unchanged policy), and a rollout that differs changes them at that scale.

Wrong variants (test-only, to see this test reject them): set GRPO_MULTIHOST_WRONG to
  all_prompts  every process samples all the step's prompts (twice the work: the batch
               itself is unchanged, so only the count of generated tokens shows it)
  local_keys   keys from a row's index within its process, not within the batch
and the two-process workers run that variant; the test must then fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from o1jax import parallel
from o1jax.training import grpo, grpo_train
from o1jax.training.checkpoint import embedded_checkpoint_dir, load_pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-5, 1e-6
WRONG_ENV = "GRPO_MULTIHOST_WRONG"
EXACT = ("accuracy", "thinking_tokens", "truncation_rate", "zero_advantage_fraction",
         "rollout_tokens")


def _cfg() -> grpo.GRPOConfig:
  # Level-1 additions with room to close (a reflective trace is ~76 tokens), hot enough
  # that groups mix right, wrong and cut rollouts: the updates have advantages to act on.
  # A KL term, so the reference copy (only kept when kl_coef > 0) is sharded and compared.
  return grpo.GRPOConfig(tasks=("addition",), difficulties=(1,), steps=2, prompts_per_step=4,
                         group_size=4, temperature=1.5, max_thinking=100, cache_len=128,
                         max_answer_tokens=8, truncation="penalize", updates_per_batch=2,
                         learning_rate=1e-4, kl_coef=0.01, log_kl=True, checkpoint_every=1,
                         mesh_shape=(-1, 1, 2), seed=3)


def _wrong_variant(name: str) -> None:
  """Patches in a plausible multi-process bug (module docstring)."""
  if name == "all_prompts":
    grpo_train._prompt_share = lambda cfg, mesh: (0, cfg.prompts_per_step)
  elif name == "local_keys":
    sample = grpo.sample_groups
    grpo.sample_groups = lambda *a, first_row=0, **k: sample(*a, first_row=0, **k)
  elif name:
    raise ValueError(f"unknown {WRONG_ENV}={name!r}")


def _worker(process_id: int, num_processes: int, port: int, workdir: str) -> None:
  jax.config.update("jax_num_cpu_devices", 4 // num_processes)
  if num_processes > 1:
    parallel.initialize(f"127.0.0.1:{port}", num_processes, process_id)
    _wrong_variant(os.environ.get(WRONG_ENV, ""))
  grpo_train.train(_cfg(), workdir, stop_after=1)
  grpo_train.train(_cfg(), workdir)  # resumes from step 1's checkpoint


def _run_all(tmp_path):
  import portpicker
  port = portpicker.pick_unused_port()
  # Fast compiles, as in test_parallel.py: compilation, not running, is the cost here.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0 "
                       "--xla_llvm_disable_expensive_passes=true")
  procs = []
  for name, pid, n in (("multi", 0, 2), ("multi", 1, 2), ("single", 0, 1)):
    (tmp_path / name).mkdir(exist_ok=True)
    with open(tmp_path / f"{name}{pid}.log", "w") as log:
      procs.append((name, pid, subprocess.Popen(
          [sys.executable, __file__, str(pid), str(n), str(port), str(tmp_path / name)],
          cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)))
  t0 = time.time()
  try:
    for name, pid, proc in procs:
      proc.wait(timeout=max(1.0, t0 + 300 - time.time()))
  finally:
    for _, _, proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for name, pid, proc in procs:
    out = (tmp_path / f"{name}{pid}.log").read_text()
    assert proc.returncode == 0, f"{name} process {pid} failed:\n{out[-3000:]}"
  print(f"2+1 processes finished in {time.time() - t0:.1f}s")


def _metrics(path):
  with open(path / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def test_two_processes_sample_and_learn_as_one(tmp_path):
  _run_all(tmp_path)
  multi, single = _metrics(tmp_path / "multi"), _metrics(tmp_path / "single")
  assert [m["step"] for m in multi] == [1, 2]  # one writer, the resumed step not repeated
  for m, s in zip(multi, single):
    for key in EXACT:
      assert m[key] == s[key], (m["step"], key, m[key], s[key])
    np.testing.assert_allclose([m["reward"], m["loss"], m["kl"]],
                               [s["reward"], s["loss"], s["kl"]], rtol=RTOL, atol=ATOL)
  multi_log = (tmp_path / "multi0.log").read_text()
  assert "resumed from step 1" in multi_log
  assert "over 2 processes; each samples 2 of 4 prompts" in multi_log
  assert "step 1/2" not in (tmp_path / "multi1.log").read_text()  # only process 0 prints

  start, _, _ = load_pretrained(embedded_checkpoint_dir())
  got, _, _ = load_pretrained(str(tmp_path / "multi" / "final"))
  want, _, _ = load_pretrained(str(tmp_path / "single" / "final"))
  moved = max(float(np.max(np.abs(np.asarray(w) - np.asarray(s))))
              for w, s in zip(jax.tree.leaves(want), jax.tree.leaves(start)))
  assert moved > 1e-4, moved  # the policy did learn: agreement below is not vacuous
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL, atol=ATOL,
                               err_msg=jax.tree_util.keystr(path))


if __name__ == "__main__":  # a worker of the test above
  _worker(*map(int, sys.argv[1:4]), sys.argv[4])
