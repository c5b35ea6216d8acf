"""Sharding and multi-host: sharded runs must equal single-device runs.

Runs on the 8 simulated CPU devices of conftest.py, plus one test of 2 real processes.

Tolerances. Everything is float32. Sharding changes only the order of floating-point sums
(a matmul split over fsdp or tensor is summed across shards, gradients are all-reduced over
the batch shards), so values differ from one device by rounding: ~1e-7 relative per op.
After two AdamW steps we allow rtol=1e-5, atol=1e-6 on parameters and rtol=1e-5 on losses
(orders of magnitude above rounding, orders below any real bug, e.g. a dropped shard or a
gradient summed twice, which shows up at 1e-2 or more). Greedy thinking takes argmaxes of
logits that agree to ~1e-6, so its tokens, segments and counters must be exactly equal.

Programs compile with XLA's backend optimisation off (as in test_kernels.py): on a 2-core
machine compilation, not running, is the cost, and the partitioning under test is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from o1jax import parallel
from o1jax.model.config import ModelConfig
from o1jax.parallel import rules as rules_lib
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import make_think_config, prepare_inputs, think
from o1jax.training import trainer
from o1jax.training.checkpoint import TrainCheckpointer

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
MODEL = ModelConfig(vocab_size=128, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, max_seq_len=48)
MESHES = [(8, 1, 1), (2, 1, 4), (1, 8, 1)]
BATCH, WIDTH, STEPS = 8, 32, 2
PROMPTS = ["12+34=", "5+6=", "99+1=", "7+70=", "1+1=", "40+2=", "3+33=", "8+9="]
BUDGETS = [0, 3, 8, 12, 5, 1, 16, 7]
RTOL, ATOL = 1e-5, 1e-6
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _optimizer():
  return trainer.make_optimizer(ml_collections.ConfigDict(dict(
      learning_rate=1e-2, warmup_steps=1, steps=10, final_lr_fraction=0.1, grad_clip=1.0,
      weight_decay=0.01)))


def _batches():
  rng = np.random.default_rng(0)
  out = []
  for _ in range(STEPS):
    mask = (rng.random((BATCH, WIDTH)) < 0.7).astype(np.float32)
    out.append({"inputs": rng.integers(0, 128, (BATCH, WIDTH), dtype=np.int32),
                "targets": rng.integers(0, 128, (BATCH, WIDTH), dtype=np.int32),
                "loss_mask": mask})
  return out


def _think_setup():
  tok = CharTokenizer()
  config = make_think_config(MODEL, tok, cache_len=MODEL.max_seq_len, max_answer_tokens=4)
  return config, prepare_inputs(tok, PROMPTS, config, budgets=BUDGETS), jax.random.key(7)


@pytest.fixture(scope="module")
def reference(process_runs):  # process_runs: starts the subprocess workers early
  """One device, default placement: the initial state, losses, final params and thoughts."""
  opt = _optimizer()
  state = jax.jit(lambda: trainer.init_state(MODEL, opt, 0)).lower().compile(FAST)()
  initial = jax.tree.map(np.asarray, state)
  config, inputs, rng = _think_setup()
  thought = think.lower(state.params, inputs, config, rng).compile(FAST)(state.params, inputs,
                                                                        rng)
  batches = _batches()
  step = trainer.train_step.lower(state, batches[0], model_config=MODEL,
                                  optimizer=opt).compile(FAST)
  losses = []
  for b in batches:
    state, metrics = step(state, b)
    losses.append(float(metrics["loss"]))
  return dict(initial=initial, thought=jax.tree.map(np.asarray, thought), losses=losses,
              params=jax.tree.map(np.asarray, state.params))


# Shard shapes on each mesh (full shapes: embedding (128, 32), q (32, 4, 8), k (32, 2, 8),
# mlp down (64, 32)). (2, 1, 4): 2 KV heads do not divide tensor=4, so k is replicated there.
SHARD_SHAPES = {
    (8, 1, 1): {"embedding": (128, 32), "q": (32, 4, 8), "k": (32, 2, 8), "down": (64, 32)},
    (2, 1, 4): {"embedding": (32, 32), "q": (32, 1, 8), "k": (32, 2, 8), "down": (16, 32)},
    (1, 8, 1): {"embedding": (128, 4), "q": (4, 4, 8), "k": (4, 2, 8), "down": (64, 4)},
}
BATCH_SHARD_ROWS = {(8, 1, 1): 1, (2, 1, 4): 4, (1, 8, 1): 1}


def _leaves(params):
  layer = params["layers_0"]
  return {"embedding": params["embedding"], "q": layer["attn"]["q"], "k": layer["attn"]["k"],
          "down": layer["mlp"]["down"]}


def _assert_close(got, want, what):
  """Leaf by leaf; `want` is the same pytree (of numpy arrays)."""
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(np.asarray(g), w, rtol=RTOL, atol=ATOL,
                               err_msg=f"{what}{jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_train_and_think_match_one_device(shape, reference, caplog):
  rules_lib._warned.clear()
  mesh = parallel.make_mesh(shape)
  opt = _optimizer()
  with caplog.at_level(logging.WARNING, logger="o1jax.parallel"):
    abstract, shardings = trainer.state_shardings(MODEL, opt, mesh)
  if shape == (2, 1, 4):  # the fallback is announced, not silent
    assert "kv_heads=2 is not divisible by the tensor axis (4)" in caplog.text
  if shape == (1, 8, 1):  # born sharded (one mesh: each init costs seconds to compile)
    with parallel.activate(mesh, MODEL):
      state = parallel.init_sharded(lambda: trainer.init_state(MODEL, opt, 0), shardings, FAST)
  else:
    state = parallel.put(reference["initial"], shardings)

  # Parameters are sharded with the table's layout and equal the one-device init.
  for name, leaf in _leaves(state.params).items():
    assert leaf.addressable_shards[0].data.shape == SHARD_SHAPES[shape][name], name
  attn = state.params["layers_0"]["attn"]
  assert attn["q"].sharding.spec == P("fsdp", "tensor", None)
  assert attn["k"].sharding.spec == (P("fsdp", None, None) if shape == (2, 1, 4)
                                     else P("fsdp", "tensor", None))
  adam_mu = state.opt_state[1][0].mu["layers_0"]["attn"]["q"]
  assert adam_mu.sharding == attn["q"].sharding  # moments shard like their parameters
  _assert_close(state, reference["initial"], "init")

  # think(): cache and batch sharded, tokens identical.
  config, inputs, rng = _think_setup()
  with parallel.activate(mesh, MODEL):
    inputs = parallel.put_batch(inputs, mesh)
    thought = think.lower(state.params, inputs, config, rng).compile(FAST)
    thought = parallel.to_host(thought(state.params, inputs, rng))
  want = reference["thought"]
  for field in ("tokens", "segments", "num_generated", "thinking_tokens", "answer_tokens",
                "stop_reason", "finished"):
    np.testing.assert_array_equal(getattr(thought, field), getattr(want, field), err_msg=field)
  for field in ("confidence", "similarity"):
    np.testing.assert_allclose(getattr(thought, field), getattr(want, field), rtol=RTOL,
                               equal_nan=True, err_msg=field)

  # Train steps: batch sharded over (data, fsdp), losses and parameters as on one device.
  step_fn = trainer.sharded_train_step(MODEL, opt, mesh, shardings)
  losses = []
  with parallel.activate(mesh, MODEL):
    batches = [parallel.global_batch(b, mesh, BATCH, fill={}) for b in _batches()]
    assert batches[0]["inputs"].addressable_shards[0].data.shape == (BATCH_SHARD_ROWS[shape],
                                                                    WIDTH)
    step = step_fn.lower(state, batches[0]).compile(FAST)
    for batch in batches:
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
  np.testing.assert_allclose(losses, reference["losses"], rtol=RTOL)
  assert jax.tree.map(lambda x: x.sharding, state) == shardings  # layout kept across steps
  _assert_close(state.params, reference["params"], "params")


def test_checkpoint_restores_onto_another_mesh(tmp_path, reference):
  opt = _optimizer()
  _, on_a = trainer.state_shardings(MODEL, opt, parallel.make_mesh((8, 1, 1)))
  state = parallel.put(reference["initial"], on_a)
  ckpt = TrainCheckpointer(str(tmp_path / "ckpt"))
  ckpt.save(3, state, {"next_index": 3}, MODEL)
  ckpt.wait()
  abstract, on_b = trainer.state_shardings(MODEL, opt, parallel.make_mesh((1, 2, 4)))
  restored, data_state = ckpt.restore_latest(parallel.abstract_with(abstract, on_b), MODEL)
  ckpt.close()
  assert data_state == {"next_index": 3}
  assert jax.tree.map(lambda x: x.sharding, restored) == on_b
  assert restored.params["embedding"].addressable_shards[0].data.shape == (32, 16)
  _assert_close(restored, reference["initial"], "restored")


def test_bad_meshes_name_the_sizes_that_fit():
  with pytest.raises(ValueError, match=r"one of 1, 2, 4, 8"):
    parallel.make_mesh((3, 1, 1))
  with pytest.raises(ValueError, match=r"multiply to 3.*one of 1, 2, 4, 8"):
    parallel.make_mesh((-1, 3, 1))
  with pytest.raises(ValueError, match=r"at most one -1"):
    parallel.resolve_shape((-1, -1, 1), 8)
  with pytest.raises(ValueError, match=r"3 entries"):
    parallel.resolve_shape((8, 1), 8)
  assert parallel.make_mesh((-1, 1, 2)).devices.shape == (4, 1, 2)
  assert parallel.make_mesh((1, 1, 1)).devices.size == 1  # a smaller mesh takes device 0
  assert parallel.parse_shape("(-1, 1, 4)") == (-1, 1, 4)

  six_heads = MODEL.replace(num_heads=6, mlp_dim=66)
  with pytest.raises(ValueError, match=r"tensor axis \(4\) must divide num_heads=6.*"
                                       r"\[1, 2, 3, 6\]"):
    parallel.rules_for(six_heads, parallel.make_mesh((2, 1, 4)))
  with pytest.raises(ValueError, match=r"fsdp axis \(8\) must divide embed_dim=36.*"
                                       r"\[1, 2, 3, 4, 6, 9, 12, 18, 36\]"):
    parallel.rules_for(MODEL.replace(embed_dim=36), parallel.make_mesh((1, 8, 1)))
  with pytest.raises(ValueError, match=r"batch_size=6 must be a multiple of .*= 8 .*e\.g\. 8"):
    parallel.check_batch(6, parallel.make_mesh((2, 4, 1)))


def test_one_table_names_the_mesh_axes():
  """Only o1jax/parallel/rules.py spells the mesh axes; everything else asks it."""
  offenders = []
  for root, _, files in os.walk(os.path.join(REPO, "o1jax")):
    for name in files:
      path = os.path.join(root, name)
      if not name.endswith(".py") or path.endswith(os.path.join("parallel", "rules.py")):
        continue
      with open(path) as f:
        text = f.read()
      offenders += [f"{path}: {axis}" for axis in ('"fsdp"', "'fsdp'", '"tensor"', "'tensor'")
                    if axis in text]
  assert not offenders


def test_distributed_flags_are_checked(monkeypatch):
  with pytest.raises(ValueError, match="need --coordinator_address"):
    parallel.initialize(num_processes=2, process_id=1)
  with pytest.raises(ValueError, match=r"must be in \[0, 2\)"):
    parallel.initialize("127.0.0.1:1", num_processes=2, process_id=2)
  for var in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS"):
    monkeypatch.delenv(var, raising=False)
  assert parallel.detected_cluster() in (None, "tpu")
  monkeypatch.setenv("SLURM_JOB_ID", "1")
  monkeypatch.setenv("SLURM_PROCID", "0")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert parallel.detected_cluster() == "slurm"


def _fake_pci(root, devices):
  """A fake /sys/bus/pci/devices: {slot: (vendor, device)}."""
  for slot, (vendor, device) in devices.items():
    (root / slot).mkdir(parents=True)
    (root / slot / "vendor").write_text(vendor + "\n")
    (root / slot / "device").write_text(device + "\n")
  return str(root)


def test_gpu_vm_with_google_nic_is_not_a_tpu_vm(tmp_path, monkeypatch):
  """A3 GPU VMs carry a Google gVNIC (vendor 0x1ae0, device 0x0042): not a TPU VM."""
  from o1jax.parallel import distributed
  for var in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS"):
    monkeypatch.delenv(var, raising=False)
  gpu_vm = _fake_pci(tmp_path / "a3", {"0000:00:04.0": ("0x1ae0", "0x0042"),
                                       "0000:04:00.0": ("0x10de", "0x2335")})
  monkeypatch.setattr(distributed, "_PCI_DEVICES", gpu_vm)
  assert parallel.detected_cluster() is None
  assert parallel.initialize() is False  # no jax.distributed.initialize() attempted
  tpu_vm = _fake_pci(tmp_path / "v5e", {"0000:00:04.0": ("0x1ae0", "0x0042"),
                                        "0000:00:05.0": ("0x1ae0", "0x0063")})
  monkeypatch.setattr(distributed, "_PCI_DEVICES", tpu_vm)
  assert parallel.detected_cluster() == "tpu"


@dataclasses.dataclass(frozen=True)
class _MockTpu:
  """What jax.make_mesh reads of a TPU device: kind, torus coordinates, core, process."""
  id: int
  process_index: int
  coords: tuple[int, int, int]
  device_kind: str
  platform: str = "tpu"
  core_on_chip: int = 0
  slice_index: int = 0


def _mock_pod(kind, dims, host_block):
  """The chips of a `dims` torus; each host (process) owns a `host_block` of them."""
  hosts = {}
  for z, y, x in np.ndindex(dims[2], dims[1], dims[0]):
    hosts.setdefault((z // host_block[2], y // host_block[1], x // host_block[0]),
                     []).append((x, y, z))
  chips = [(p, c) for p, h in enumerate(sorted(hosts)) for c in hosts[h]]
  return [_MockTpu(i, p, c, kind) for i, (p, c) in enumerate(chips)]


@pytest.mark.parametrize("pod", ["v4-32", "v5e-16"])
def test_pod_mesh_gives_each_process_contiguous_batch_rows(pod):
  """v4-32: 16 chips in a 2x2x4 torus, 4 hosts of 2x2x1; v5e-16: a 4x4 grid, 4 hosts of
  2x2. jax.make_mesh orders chips by torus position, which interleaves the hosts."""
  devices = (_mock_pod("TPU v4", (2, 2, 4), (2, 2, 1)) if pod == "v4-32"
             else _mock_pod("TPU v5 lite", (4, 4, 1), (2, 2, 1)))
  for shape, want in (((16, 1, 1), 4), ((1, 16, 1), 4), ((-1, 1, 4), 4)):
    mesh = parallel.make_mesh(shape, devices=devices)
    shards = [parallel.process_data_shard(mesh, 32, process_index=p) for p in range(4)]
    assert shards == [(p, want) for p in range(4)], (shape, shards)
  tensor_hosts = {d.process_index for d in parallel.make_mesh((-1, 1, 4), devices).devices[0, 0]}
  assert len(tensor_hosts) == 1  # the tensor axis stays within a host


# ---------------------------------------------------------------------------------------------
# Two processes on localhost (gloo collectives, 2 CPU devices each) against one process with 4.

def _job_config(steps: int, eval_problems: int) -> ml_collections.ConfigDict:
  sys.path.insert(0, REPO)
  from configs import tiny
  c = tiny.get_config()
  c.model.update(MODEL.to_dict())
  c.data.tasks, c.data.difficulties = ("addition",), (1,)
  c.train.update(dict(steps=steps, batch_size=8, seq_len=40, log_every=1, eval_every=1000,
                      eval_problems=eval_problems, checkpoint_every=2))
  c.mesh.shape = (-1, 1, 2)  # data over the processes, tensor within each
  return c


def _worker(process_id: int, num_processes: int, port: int, workdir: str) -> None:
  """Trains 2 steps, restarts and resumes to 4 from the checkpoint, then thinks."""
  jax.config.update("jax_num_cpu_devices", 4 // num_processes)
  if num_processes > 1:
    parallel.initialize(f"127.0.0.1:{port}", num_processes, process_id)
  # Evaluation (gathered to every host when multi-process) is exercised by the 2-process run
  # only: the reference need not pay for compiling it.
  evals = 1 if num_processes > 1 else 0
  trainer.train(_job_config(2, evals), workdir)
  params, _, _ = trainer.train(_job_config(4, evals), workdir)  # restores step 2: 3 and 4
  mesh = parallel.make_mesh((-1, 1, 2))
  config, inputs, rng = _think_setup()
  with parallel.activate(mesh, MODEL):
    thought = think(params, parallel.put_batch(inputs, mesh), config,
                    parallel.put(rng, parallel.replicated(mesh)))
  thought, params = parallel.to_host((thought, params))  # collectives: every process
  if parallel.is_primary():
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(params)}
    np.savez(os.path.join(workdir, "result.npz"), tokens=thought.tokens,
             num_generated=thought.num_generated, **flat)


@pytest.fixture(scope="module")
def process_runs(tmp_path_factory):
  """Starts the 2-process job and its 1-process reference (subprocesses running `_worker`).

  They need more than a minute of CPU, so `reference` requests this fixture too: the workers
  then run alongside the in-process tests instead of after them.
  """
  import portpicker
  tmp = tmp_path_factory.mktemp("processes")
  port = portpicker.pick_unused_port()
  # Fast compiles (see the module docstring), and a compilation cache per process so the
  # restarted train() reuses the step compiled before the restart instead of compiling again.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_backend_optimization_level=0 "
                       "--xla_llvm_disable_expensive_passes=true",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  procs = []
  for name, pid, n in (("multi", 0, 2), ("multi", 1, 2), ("single", 0, 1)):
    (tmp / name).mkdir(exist_ok=True)
    with open(tmp / f"{name}{pid}.log", "w") as log:
      procs.append((name, pid, subprocess.Popen(
          [sys.executable, __file__, str(pid), str(n), str(port), str(tmp / name)],
          cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
          env=dict(env, JAX_COMPILATION_CACHE_DIR=str(tmp / f"cache_{name}{pid}")))))
  yield tmp, procs, time.time()
  for _, _, proc in procs:
    if proc.poll() is None:
      proc.kill()


def test_two_processes_equal_one(process_runs):
  tmp_path, procs, t0 = process_runs
  for name, pid, proc in procs:
    try:
      proc.wait(timeout=max(1.0, t0 + 400 - time.time()))
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    out = (tmp_path / f"{name}{pid}.log").read_text()
    assert proc.returncode == 0, f"{name} process {pid} failed:\n{out[-3000:]}"
  print(f"2+1 processes finished {time.time() - t0:.1f}s after starting")

  multi_log = (tmp_path / "multi0.log").read_text()
  assert "resumed from step 2" in multi_log and "over 2 process(es)" in multi_log
  assert "eval step 4" in multi_log
  assert "step 1/2" not in (tmp_path / "multi1.log").read_text()  # only process 0 prints
  metrics = {}
  for name in ("multi", "single"):
    with open(tmp_path / name / "metrics.jsonl") as f:
      metrics[name] = [json.loads(line) for line in f]
  assert [m["step"] for m in metrics["multi"]] == [1, 2, 3, 4]  # one writer, no duplicates
  np.testing.assert_allclose([m["loss"] for m in metrics["multi"]],
                             [m["loss"] for m in metrics["single"]], rtol=RTOL)
  multi, single = (np.load(tmp_path / name / "result.npz") for name in ("multi", "single"))
  np.testing.assert_array_equal(multi["tokens"], single["tokens"])
  np.testing.assert_array_equal(multi["num_generated"], single["num_generated"])
  for key in single.files:
    np.testing.assert_allclose(multi[key], single[key], rtol=RTOL, atol=ATOL, err_msg=key)


if __name__ == "__main__":  # a worker of test_two_processes_equal_one
  _worker(*map(int, sys.argv[1:4]), sys.argv[4])
