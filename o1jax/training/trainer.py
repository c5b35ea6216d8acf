"""The training loop: AdamW with warmup and cosine decay, masked next-token loss,
periodic greedy evaluation, progress lines, metrics.jsonl and exact resume.

Sharding (o1jax/parallel/): the state is born sharded on the mesh from `config.mesh.shape`
(default (-1, 1, 1): data parallel over every device), the step is jitted with that layout,
each process feeds its own rows of every global batch, and checkpoints restore onto any mesh.
On one device all of this is the identity and the run is the plain single-device loop.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from o1jax import parallel
from o1jax import tasks as tasks_lib
from o1jax.model.config import ModelConfig
from o1jax.model.transformer import count_params, forward, init_params
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.training.checkpoint import TrainCheckpointer, save_pretrained
from o1jax.training.evaluate import evaluate

# Tests set this to SIGKILL the process right after a step: a real `kill -9`, at a known point.
KILL_ENV = "O1JAX_TEST_KILL_AT_STEP"


@struct.dataclass
class TrainState:
  step: jax.Array                # [] int32
  params: Any
  opt_state: Any


def model_config_from(config: ml_collections.ConfigDict) -> ModelConfig:
  d = config.model.to_dict()
  if d.get("rope_scaling") is None:
    d["rope_scaling"] = None
  return ModelConfig.from_dict(d)


def _data_lib():
  """The grain pipeline, imported on use: the state and step functions here also serve
  benchmarks on machines without grain (launch/bench_train_mfu.py)."""
  from o1jax.training import data as data_lib
  return data_lib


def mixture_from(config: ml_collections.ConfigDict) -> data_lib.Mixture:
  data_lib = _data_lib()
  d = config.data
  # A task run of one global batch: processes read strided slices of it, so every local
  # batch of step k is the same task and all processes trim to the same shape.
  # Packed rows mix tasks anyway (and need no run: they have no padding to save).
  run = config.train.batch_size if d.get("task_batches", True) and not d.get("pack") else 1
  return data_lib.Mixture(tasks=tuple(d.tasks), difficulties=tuple(d.difficulties),
                          no_thinking_fraction=float(d.no_thinking_fraction), seed=int(d.seed),
                          truncated_thinking_fraction=float(
                              d.get("truncated_thinking_fraction", 0.0)),
                          task_run=run,
                          task_weights=tuple((k, float(v)) for k, v in
                                             dict(d.get("task_weights", {})).items()),
                          answer_only_difficulties=tuple(
                              (k, tuple(v)) for k, v in dict(d.get("answer_only", {})).items()),
                          trace_style=str(d.get("trace_style", "plain")),
                          error_fraction=float(d.get("error_fraction", 0.0)),
                          short_cut_fraction=float(d.get("short_cut_fraction", 0.0)),
                          hint_fraction=float(d.get("hint_fraction", 0.0)),
                          answer_only_worked_fraction=float(
                              d.get("answer_only_worked_fraction", 0.0)),
                          hint_template=str(d.get("hint_template", " [hint: {answer}]")),
                          max_tokens=int(config.train.seq_len) + 1,
                          split_key=str(d.get("split_key", tasks_lib.DEFAULT_SPLIT_KEY)))


def lr_schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to t.learning_rate, then cosine decay to final_lr_fraction of it."""
  return optax.warmup_cosine_decay_schedule(
      0.0, t.learning_rate, t.warmup_steps, max(t.steps, t.warmup_steps + 1),
      end_value=t.learning_rate * t.final_lr_fraction)


def adamw(learning_rate, grad_clip: float, weight_decay: float) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW: every run's update rule. `learning_rate` is a number,
  a schedule, or (under optax.inject_hyperparams) a leaf of the optimizer state."""
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.adamw(learning_rate, b1=0.9, b2=0.98, weight_decay=weight_decay))


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  return adamw(lr_schedule(t), t.grad_clip, t.weight_decay)


def loss_fn(params, batch, model_config: ModelConfig):
  """Masked mean next-token loss over a padded or a packed batch (data.make_dataset)."""
  inputs = batch["inputs"]
  positions = batch.get("inputs_positions")
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(inputs.shape[1]), inputs.shape)
  logits, _, _ = forward(params, inputs, positions, None, model_config,
                         segment_ids=batch.get("inputs_segment_ids"))
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  mask = batch["loss_mask"]
  return (nll * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def _train_step(state: TrainState, batch, model_config: ModelConfig, optimizer):
  loss, grads = jax.value_and_grad(loss_fn)(state.params, batch, model_config)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


# The unsharded step (one device, default placement); `train` uses `sharded_train_step`.
train_step = jax.jit(_train_step, static_argnames=("model_config", "optimizer"),
                     donate_argnames=("state",))


def init_state(model_config: ModelConfig, optimizer, seed: int) -> TrainState:
  params = init_params(model_config, jax.random.key(seed))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def load_initial_params(path: str, model_config: ModelConfig):
  """Weights to fine-tune from: a checkpoint whose config equals `model_config` except for
  max_seq_len (the decode cache length, not a weight shape). A relative path is read from
  the repository root, so configs can name a shipped checkpoint."""
  from o1jax.training.checkpoint import load_params
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), path)
  params, saved, _ = load_params(path)
  mismatched = [k for k, v in saved.to_dict().items()
                if k != "max_seq_len" and model_config.to_dict().get(k) != v]
  if mismatched:
    raise ValueError(f"train.init_params={path} does not match the model config in "
                     + ", ".join(f"{k} ({getattr(saved, k)!r} vs {getattr(model_config, k)!r})"
                                 for k in mismatched))
  return params


def state_shardings(model_config: ModelConfig, optimizer, mesh):
  """(abstract TrainState, TrainState of NamedShardings) for this mesh.

  Raises a ValueError when the mesh does not fit the model (see parallel.check_model_fits).
  """
  abstract = jax.eval_shape(lambda: init_state(model_config, optimizer, 0))
  params = parallel.param_shardings(model_config, mesh)
  return abstract, TrainState(
      step=parallel.replicated(mesh), params=params,
      opt_state=parallel.opt_state_shardings(optimizer, abstract.opt_state, params, mesh))


def sharded_train_step(model_config: ModelConfig, optimizer, mesh, shardings: TrainState):
  """The train step jitted for `mesh`: data parallel over the batch axes, parameters and
  moments laid out as `shardings` (FSDP over embed, tensor parallel over heads/mlp/vocab).
  Pinning the output layout to the input layout keeps donation in place step after step.
  Call it inside `parallel.activate(mesh, model_config)`, where the model's activation
  constraints bind to the mesh."""
  step = functools.partial(_train_step, model_config=model_config, optimizer=optimizer)
  return jax.jit(step, in_shardings=(shardings, parallel.batch_sharding(mesh, 2)),
                 out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)


def _evaluate(params, model_config: ModelConfig, heldout, mesh) -> dict[str, float]:
  if jax.process_count() == 1:
    with parallel.activate(mesh, model_config):  # the thinking loop sharded over the batch
      return evaluate(params, model_config, heldout,
                      batch_multiple=parallel.shards_of(mesh, "batch"))
  # think_texts feeds host prompts and reads its results back on the host, which arrays
  # spread over processes do not allow: every process evaluates a gathered copy on its own
  # devices (outside the mesh).
  return evaluate(parallel.to_host(params), model_config, heldout)


def _validate(config: ml_collections.ConfigDict, mixture: data_lib.Mixture) -> None:
  t = config.train
  if int(t.eval_problems) < 0:
    raise ValueError(f"train.eval_problems must be >= 0 (0: no evaluation), got {t.eval_problems}")
  for name in ("steps", "batch_size", "seq_len", "log_every", "eval_every", "checkpoint_every"):
    if int(t[name]) <= 0:
      raise ValueError(f"train.{name} must be a positive integer, got {t[name]}")
  if t.learning_rate <= 0:
    raise ValueError(f"train.learning_rate must be positive, got {t.learning_rate}")
  # Each of "<think>" and "</think>" is one token, and EOS is added.
  need = mixture.max_text_len() - len("<think></think>") + 2 + 1
  if t.seq_len + 1 < need:
    raise ValueError(f"train.seq_len={t.seq_len} is too short for the longest example of this "
                     f"mixture ({need} tokens with EOS); set train.seq_len >= {need - 1}")
  if config.data.get("pack") and config.model.attention_impl == "pallas":
    raise ValueError("data.pack=True needs model.attention_impl 'xla' or 'cudnn': the Pallas "
                     "flash kernel has no segment mask for packed rows")
  if t.seq_len > config.model.max_seq_len:
    raise ValueError(f"train.seq_len={t.seq_len} exceeds model.max_seq_len="
                     f"{config.model.max_seq_len}")


def _truncate_metrics(path: str, step: int) -> None:
  """Drops the records after `step` from metrics.jsonl. A run killed after its last
  checkpoint had logged steps that the resumed run replays: kept, they would appear twice.
  A line cut short by the kill goes too."""
  if not os.path.exists(path):
    return
  kept = []
  with open(path) as f:
    for line in f:
      try:
        if json.loads(line)["step"] <= step:
          kept.append(line.rstrip("\n") + "\n")  # the next append starts a line
      except (json.JSONDecodeError, KeyError, TypeError):
        continue
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.writelines(kept)
  os.replace(tmp, path)  # atomic: a kill now leaves the old file or the new one


def _say(line: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


class _Progress:
  """Step, loss, tokens/s, the share of them that are real (not padding) and ETA, measured
  over the steps since the last line."""

  def __init__(self, total: int, start: int):
    self.total, self.tokens, self.real_tokens = total, 0, 0
    self.t0, self.step0, self.t_last, self.step_last = time.time(), start, time.time(), start

  def add_tokens(self, computed: int, real: int) -> None:
    self.tokens += computed  # batch tokens the step computes on, padding included
    self.real_tokens += real

  def line(self, step: int, loss: float) -> tuple[str, float]:
    now = time.time()
    overall = (step - self.step0) / max(now - self.t0, 1e-9)
    eta = (self.total - step) / max(overall, 1e-9)
    tps = self.tokens / max(now - self.t_last, 1e-9)
    real = self.real_tokens / max(self.tokens, 1)
    self.t_last, self.step_last, self.tokens, self.real_tokens = now, step, 0, 0
    return (f"step {step}/{self.total} loss {loss:.4f} tokens/s {tps:,.0f} "
            f"real {real:.0%} eta {int(eta // 60)}m{int(eta % 60):02d}s"), tps, real


def train(config: ml_collections.ConfigDict, workdir: str, *, is_primary: bool | None = None):
  """Trains (or resumes) to config.train.steps; returns (params, model_config, last eval).

  Every process of a multi-host run calls this; only the primary (process 0 unless
  `is_primary` says otherwise) prints and writes metrics and the export.
  """
  data_lib = _data_lib()
  model_config = model_config_from(config)
  mixture = mixture_from(config)
  _validate(config, mixture)
  t = config.train
  if is_primary is None:
    is_primary = parallel.is_primary()
  mesh = parallel.mesh_from_config(config)
  parallel.check_batch(t.batch_size, mesh)
  optimizer = make_optimizer(t)
  abstract, shardings = state_shardings(model_config, optimizer, mesh)
  step_fn = sharded_train_step(model_config, optimizer, mesh, shardings)
  os.makedirs(workdir, exist_ok=True)
  ckpt = TrainCheckpointer(os.path.join(workdir, "checkpoints"), t.max_to_keep)

  # Each process reads its own rows of every global batch (processes whose devices hold
  # the same rows, e.g. across a tensor axis that spans hosts, read the same ones).
  data_index, data_count = parallel.process_data_shard(mesh, t.batch_size)
  dataset = data_lib.make_dataset(mixture, t.batch_size, t.seq_len,
                                  pack=bool(config.data.get("pack", False)),
                                  process_index=data_index, process_count=data_count)
  data_iter = iter(dataset)
  # Restore into abstract arrays carrying this run's shardings: a checkpoint written on any
  # mesh shape lands directly in this one's layout.
  restored = (ckpt.restore_latest(parallel.abstract_with(abstract, shardings), model_config)
              if ckpt.latest_step() is not None else None)
  if restored is not None:
    state, data_state = restored
    data_iter.set_state(data_state)
    if is_primary:
      _say(f"resumed from step {int(state.step)} (checkpoint in {ckpt.directory})")
  else:
    init_from = t.get("init_params", "")
    if init_from:
      # Fine-tuning: start from a shipped checkpoint's weights (the decode cache length,
      # max_seq_len, is not a weight shape and may differ), with a fresh optimizer.
      params = load_initial_params(init_from, model_config)
      state = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                           opt_state=optimizer.init(p)),
                      out_shardings=shardings)(params)
    else:
      with parallel.activate(mesh, model_config):
        state = parallel.init_sharded(lambda: init_state(model_config, optimizer, t.seed),
                                      shardings)
    if is_primary:
      start_from = f" from {init_from}" if init_from else ""
      _say(f"model: {count_params(state.params):,} params; training {t.steps} steps"
           + start_from)
  if is_primary and mesh.devices.size > 1:
    _say("mesh " + " ".join(f"{a}={n}" for a, n in mesh.shape.items())
         + f" over {jax.process_count()} process(es)")

  heldout = data_lib.heldout_problems(mixture.tasks, mixture.difficulties, t.eval_problems,
                                      seed=t.eval_seed, split_key=mixture.split_key
                                      ) if t.eval_problems else {}
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  start = int(state.step)
  if is_primary:
    _truncate_metrics(metrics_path, start)
  progress = _Progress(t.steps, start)
  kill_at = int(os.environ.get(KILL_ENV, "-1"))
  last_eval: dict[str, float] = {}
  loss = float("nan")
  t_start = time.time()
  pad_id = CharTokenizer().pad_id
  fill = {"inputs": pad_id, "targets": pad_id, "loss_mask": 0.0, "inputs_positions": 0,
          "inputs_segment_ids": 0}
  for step in range(start + 1, t.steps + 1):
    local = next(data_iter)
    # Real (non-padding) tokens, counted on this process's rows and scaled to the batch.
    real_tokens = int((local["targets"] != pad_id).sum()) * t.batch_size // len(local["targets"])
    batch = parallel.global_batch(local, mesh, t.batch_size, fill)
    with parallel.activate(mesh, model_config):  # the model's constraints bind to the mesh
      state, metrics = step_fn(state, batch)
    progress.add_tokens(batch["inputs"].size, real_tokens)
    record: dict[str, Any] = {}
    if step % t.log_every == 0 or step == t.steps:
      loss = float(metrics["loss"])  # blocks: the timing below is honest
      line, tps, real = progress.line(step, loss)
      record.update(loss=loss, grad_norm=float(metrics["grad_norm"]), tokens_per_s=tps,
                    real_token_fraction=real)
      if is_primary:
        _say(line)
    if t.eval_problems and (step % t.eval_every == 0 or step == t.steps):
      last_eval = _evaluate(state.params, model_config, heldout, mesh)
      record["eval"] = last_eval
      if is_primary:
        _say(f"eval step {step}: " + " ".join(f"{k}={v:.2f}" for k, v in last_eval.items()))
    if record and is_primary:
      with open(metrics_path, "a") as f:
        f.write(json.dumps({"step": step, "elapsed_s": time.time() - t_start, **record}) + "\n")
    if step % t.checkpoint_every == 0 or step == t.steps:
      # All processes save together (each writes its shards). Their iterators all stand at
      # the same batch index, so the data state process 0 writes restores every process.
      ckpt.save(step, state, data_iter.get_state(), model_config)
    if step == kill_at:
      ckpt.wait()
      os.kill(os.getpid(), signal.SIGKILL)
  ckpt.wait()
  ckpt.close()
  data_iter.close()  # stops the read-ahead thread now, not in an interpreter-exit finalizer
  if t.export_dir:
    params = parallel.to_host(state.params)  # every process: a gather when spread over hosts
    if is_primary:
      save_pretrained(t.export_dir, params, model_config,
                      {"train_config": json.loads(config.to_json()), "eval": last_eval})
  return state.params, model_config, last_eval
