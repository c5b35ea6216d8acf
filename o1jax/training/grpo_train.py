"""The resumable GRPO run (the algorithm is o1jax/training/grpo.py): sample, score, update,
log, checkpoint; rerunning the same call after a `kill -9` continues to the same result.

Everything a step does is a pure function of (config, step, state at the step before): the
problems and targets come from `step_problems(cfg, step)`, the sampling keys from
`step_seed(seed, step)`, so the checkpoint holds only the state (params, optimizer state,
reference params) and the step. A run refuses to resume a workdir written with a different
config (the result would be neither run's).

Several processes (`jax.distributed`, launch/grpo.py): every process samples its own share of
the step's prompts (`_prompt_share`: the batch rows its devices hold in the update, whole
groups), on its own devices from a copy of the policy (`_sampler_mesh`), scores them, and
the update is one SPMD step over the whole mesh on the global batch built from every
process's rows. A row's PRNG key and prompt layout are those of its row in the whole batch,
so the run samples and learns the same whatever the process count. Metrics are over the
whole batch; only process 0 prints and writes metrics; checkpoints are written by all.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from o1jax import parallel
from o1jax import tasks as tasks_lib
from o1jax.rl import data as rl_data
from o1jax.rl import logprobs as logprobs_lib
from o1jax.rl import losses
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import prepare_inputs
from o1jax.training import budget_prompt, grpo
from o1jax.training import trainer
from o1jax.training.checkpoint import (TrainCheckpointer, embedded_checkpoint_dir, load_params,
                                       save_pretrained)

# Settings that may change between a run and its resumption: they change no result.
_RESUMABLE_CHANGES = ("log_every", "checkpoint_every", "max_to_keep", "rollout_slots")


def _say(line: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def load_policy(base: str):
  """(params, model_config, tokenizer) from `base`: "" is the embedded reasoner; a directory
  with model.json or checkpoints/ is an o1jax checkpoint (character tokenizer); one with
  config.json and tokenizer.json is a Hugging Face model."""
  if not base:
    params, config, _ = load_params(embedded_checkpoint_dir())
    return params, config, CharTokenizer()
  if (os.path.exists(os.path.join(base, "config.json"))
      and not os.path.exists(os.path.join(base, "model.json"))):
    from o1jax import hf  # local: the HF extras are optional
    return hf.load_hf(base)
  params, config, _ = load_params(base)
  return params, config, CharTokenizer()


def _check_workdir_config(workdir: str, cfg: grpo.GRPOConfig, write: bool = True) -> None:
  path = os.path.join(workdir, "grpo_config.json")
  current = json.loads(json.dumps(dataclasses.asdict(cfg)))
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    diffs = [f"{k}: workdir has {saved.get(k)!r}, config has {current.get(k)!r}"
             for k in sorted(set(saved) | set(current))
             if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k)]
    if diffs:
      raise ValueError(f"{workdir} holds a GRPO run with another config; use a new workdir "
                       "or the same config: " + "; ".join(diffs))
  if not write:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(current, f, indent=2)
  os.replace(tmp, path)


def _initial_state(cfg, params, optimizer, shardings):
  host = jax.tree.map(np.asarray, params)  # each put below makes its own buffers
  policy = parallel.put(host, shardings.params)
  opt_state = jax.jit(optimizer.init, out_shardings=shardings.opt_state)(policy)
  return grpo.GRPOState(step=parallel.put(jnp.zeros((), jnp.int32), shardings.step),
                        params=policy, opt_state=opt_state,
                        ref_params=parallel.put(host, shardings.params)
                        if cfg.uses_reference else None)


def _prompts(problems, targets) -> list[str]:
  return [p.prompt if t is None else budget_prompt.with_budget(p.prompt, t)
          for p, t in zip(problems, targets)]


def _check_prompts_fit(cfg, tokenizer, think_config) -> None:
  """Fails before any sampling when the first step's (budgeted) prompts, or the longest
  prompt a task level makes (with data_files: of all records), cannot hold max_thinking
  and the answer in cache_len."""
  if cfg.data_files:
    _check_records_fit(cfg, tokenizer, think_config)
    return
  problems, targets = grpo.step_problems(cfg, 1)
  prompts = _prompts(problems, targets)
  longest = max(cfg.budget_targets, default=None)
  for t in cfg.tasks:  # a handful of each level's prompts, the longest of them
    for d in cfg.difficulties:
      level = tasks_lib.get_task(t).generate_problems(cfg.seed, d, 8)
      p = max((x.prompt for x in level), key=len)
      prompts.append(p if longest is None else budget_prompt.with_budget(p, longest))
  prepare_inputs(tokenizer, prompts, think_config, [cfg.max_thinking] * len(prompts))


def _check_records_fit(cfg, tokenizer, think_config) -> None:
  """The longest record prompt (in tokens, chat template included) must fit; the error
  names its file and line."""
  longest = max(cfg.budget_targets, default=None)
  records = [*rl_data.load_problems(cfg.data_files, cfg.verifier),
             *(rl_data.load_problems(cfg.eval_files, cfg.verifier) if cfg.eval_files else ())]
  prompts = [p.prompt if longest is None else budget_prompt.with_budget(p.prompt, longest)
             for p in records]
  i = int(np.argmax([len(tokenizer.encode_prompt(p)) for p in prompts]))
  try:
    prepare_inputs(tokenizer, [prompts[i]], think_config, [cfg.max_thinking])
  except ValueError as e:
    raise ValueError(f"{records[i].source}: {e}") from None


# ---- several processes ------------------------------------------------------------------

def _prompt_share(cfg, mesh) -> tuple[int, int]:
  """[lo, hi): the step's prompts this process samples. Its devices hold batch rows
  [i * n, (i + 1) * n) in the update (parallel.process_data_shard), and row = prompt * G +
  sample, so the share is whole groups: rewards and advantages need no other process."""
  index, count = parallel.process_data_shard(mesh, cfg.rows)
  if cfg.prompts_per_step % count:
    raise ValueError(f"prompts_per_step={cfg.prompts_per_step} must be a multiple of the "
                     f"{count} processes that hold different batch rows (a group of "
                     "rollouts is sampled and scored by one process)")
  n = cfg.prompts_per_step // count
  return index * n, (index + 1) * n


def _sampler_mesh(mesh):
  """Where this process samples: the training mesh with one process; with several, a mesh
  over this process's own devices (rows over them, the tensor split kept where the host has
  the devices for it), so no decode step waits on another host."""
  if jax.process_count() == 1:
    return mesh
  local = jax.local_devices()
  tensor = math.gcd(parallel.shards_of(mesh, "heads"), len(local))
  return parallel.make_mesh((-1, 1, tensor), devices=local)


def _sampling_params(params, model_config, sampler_mesh):
  """The policy on `sampler_mesh`: itself with one process; with several, a whole copy on
  this process's devices (a gather through the host, as the trainer's evaluation does; the
  policy must fit in one host's devices for sampling)."""
  if jax.process_count() == 1:
    return params
  return parallel.put(parallel.to_host(params),
                      parallel.param_shardings(model_config, sampler_mesh))


def _whole_batch(local: dict[str, np.ndarray], mesh, rows: int) -> dict[str, np.ndarray]:
  """Per-row values of every process's rows, in batch order, on every process (the step's
  metrics are over the whole batch). A collective with several processes."""
  if jax.process_count() == 1:
    return local
  local = {k: v.astype(jax.dtypes.canonicalize_dtype(v.dtype)) for k, v in local.items()}
  return parallel.to_host(parallel.global_batch(local, mesh, rows, fill={}))


def _total_generated(generated: int, mesh, rows: int) -> int:
  """Tokens the step's rollouts generated on all processes (processes that hold the same
  rows sampled the same ones: counted once)."""
  if jax.process_count() == 1:
    return generated
  index, _ = parallel.process_data_shard(mesh, rows)
  per = multihost_utils.process_allgather(np.array([index, generated], np.int32))
  return int(sum(dict(per.reshape(-1, 2).tolist()).values()))


def _eval_problems(cfg):
  if cfg.data_files:
    return list(rl_data.load_problems(cfg.eval_files, cfg.verifier)[:cfg.eval_problems])
  return [p for t in cfg.tasks for d in cfg.difficulties
          for p in tasks_lib.get_task(t).generate_problems(cfg.eval_seed, d, cfg.eval_problems,
                                                           split="eval")]


def _attempt_seed(cfg, step: int, attempt: int) -> int:
  """The seed of a step's sampling round `attempt` (0: the step's own, step_seed)."""
  if attempt == 0:
    return grpo.step_seed(cfg.seed, step)
  return int(np.random.SeedSequence([int(cfg.seed), int(step), int(attempt)]
                                    ).generate_state(1)[0])


def _sample_scored(cfg, params, tokenizer, think_config, mesh, model_config, step: int,
                   attempt: int, share: tuple[int, int]):
  """One sampling round of step `step` for this process's prompts [lo, hi) (`share`):
  (rollouts, rewards [N], valid [N], advantages [P, G], row targets). Round 0 is the step's
  problems; later rounds (dynamic sampling's refills) draw fresh problems from a seed that
  is a pure function of (seed, step, round). Every process computes the whole problem list
  and samples its share, row keys by global row."""
  lo, hi = share
  problems_cfg = cfg if attempt == 0 else dataclasses.replace(
      cfg, seed=_attempt_seed(cfg, step, attempt))
  problems, targets = grpo.step_problems(problems_cfg, step)
  problems, targets = problems[lo:hi], targets[lo:hi]
  with parallel.activate(mesh, model_config):
    r = grpo.sample_groups(params, tokenizer, think_config, problems, targets,
                           cfg.group_size, cfg.max_thinking, _attempt_seed(cfg, step, attempt),
                           first_row=lo * cfg.group_size, slots=cfg.rollout_slots or None)
  row_targets = [t for t in targets for _ in range(cfg.group_size)]
  reward, valid = grpo.rollout_rewards(cfg, r.correct, r.thinking_tokens, r.truncated,
                                       row_targets)
  shape = (hi - lo, cfg.group_size)
  adv = np.asarray(grpo.group_advantages(reward.reshape(shape), valid.reshape(shape),
                                         cfg.adv_eps, scale=cfg.loss_type == "grpo"))
  return r, reward, valid, adv, row_targets


def _loss_rows(settings, r, valid, adv) -> dict[str, np.ndarray]:
  rows = {"tokens": r.tokens, "thinking_ctx": r.thinking_ctx,
          "loss_mask": r.loss_mask * valid[:, None],
          "advantages": adv.reshape(-1).astype(np.float32)}
  if settings.tis_cap > 0:
    sampler_logp = getattr(r, "sampler_logp", None)
    if sampler_logp is None:
      raise ValueError("tis_cap > 0 needs the sampler's recorded log-probs "
                       "(Rollouts.sampler_logp); set tis_cap=0 to train without TIS")
    rows["sampler_logp"] = np.asarray(sampler_logp, np.float32)
  return rows


def _loss_batch(cfg, settings, sample, first, prompts: int | None = None):
  """(this process's host rows for the update, sampling rounds, tokens generated beyond
  round 0), for its `prompts` groups.

  Without dynamic sampling: round 0's rows. With it (DAPO): groups whose advantages are all
  zero are dropped and the batch is refilled, group by group, from further rounds of fresh
  problems, at most `dynamic_sampling_tries` more; a batch still short then is completed
  with dropped groups, masked out of the loss. With several processes each refills its own
  share. Then the width is trimmed to the longest trained row, rounded up to
  `length_bucket` (o1jax/rl/logprobs.py: packed_width; global_batch pads every process to
  the widest)."""
  r, valid, adv = first
  g = cfg.group_size
  prompts = cfg.prompts_per_step if prompts is None else prompts
  rows = _loss_rows(settings, r, valid, adv)
  rounds, generated = 1, 0
  if cfg.dynamic_sampling:
    group = lambda rs, p: {k: v[p * g:(p + 1) * g] for k, v in rs.items()}
    kept = [group(rows, p) for p in np.flatnonzero(np.asarray(losses.informative_groups(adv)))]
    dropped = [group(rows, p) for p in np.flatnonzero(~np.asarray(
        losses.informative_groups(adv)))]
    while len(kept) < prompts and rounds <= cfg.dynamic_sampling_tries:
      r2, _, valid2, adv2, _ = sample(rounds)
      rounds, generated = rounds + 1, generated + r2.generated
      more = _loss_rows(settings, r2, valid2, adv2)
      kept += [group(more, p)
               for p in np.flatnonzero(np.asarray(losses.informative_groups(adv2)))]
    for d in dropped[:max(0, prompts - len(kept))]:
      kept.append({**d, "loss_mask": np.zeros_like(d["loss_mask"]),
                   "advantages": np.zeros_like(d["advantages"])})
    rows = {k: np.concatenate([x[k] for x in kept[:prompts]])
            for k in rows}
  width = logprobs_lib.packed_width(rows["loss_mask"], cfg.length_bucket,
                                    rows["tokens"].shape[1])
  rows = {k: v if k == "advantages" else v[:, :width - (k != "tokens")]
          for k, v in rows.items()}
  return rows, rounds, generated


def _line(step, total, rec, eta_s) -> str:
  kl = "" if rec.get("kl") is None else f" kl {rec['kl']:.4f}"
  return (f"step {step}/{total} reward {rec['reward']:.3f} acc {rec['accuracy']:.3f} "
          f"think {rec['thinking_tokens']:.1f} trunc {rec['truncation_rate']:.2f}{kl} "
          f"tokens/s {rec['tokens_per_s']:,.0f} eta {int(eta_s // 60)}m{int(eta_s % 60):02d}s")


def train(cfg: grpo.GRPOConfig, workdir: str, *, policy=None, stop_after: int | None = None,
          log: Callable[[str], None] = _say):
  """Runs (or resumes) GRPO to cfg.steps; returns (params, model_config, last record).

  `policy` = (params, model_config, tokenizer) overrides cfg.base (e.g. a model already
  loaded). `stop_after` ends this call after that step, as an interruption would (the
  run resumes from its last checkpoint). With several processes every process calls this
  (module docstring); only process 0 logs.
  """
  for files in (cfg.data_files, cfg.eval_files):  # bad records fail before weights load
    if files:
      rl_data.load_problems(files, cfg.verifier)
  primary = parallel.is_primary()
  if not primary:
    log = lambda _: None
  params, model_config, tokenizer = policy if policy is not None else load_policy(cfg.base)
  mesh = parallel.make_mesh(cfg.mesh_shape)
  parallel.check_batch(cfg.rows, mesh, "prompts_per_step * group_size")
  lo, hi = _prompt_share(cfg, mesh)
  sampler_mesh = _sampler_mesh(mesh)
  parallel.check_batch((hi - lo) * cfg.group_size, sampler_mesh,
                       "prompts_per_step * group_size per process")
  think_config = grpo.think_config_for(cfg, model_config, tokenizer)
  optimizer = grpo.optimizer_for(cfg)
  abstract, shardings = grpo.state_shardings(model_config, optimizer, mesh,
                                             cfg.uses_reference)
  settings = grpo.loss_settings_for(cfg, think_config.eos_ids)
  update = grpo.make_update_fn(model_config, optimizer, mesh, settings, cfg.uses_reference)
  _check_prompts_fit(cfg, tokenizer, think_config)

  os.makedirs(workdir, exist_ok=True)
  _check_workdir_config(workdir, cfg, write=primary)
  ckpt = TrainCheckpointer(os.path.join(workdir, "checkpoints"), cfg.max_to_keep)
  start = 0
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore_latest(parallel.abstract_with(abstract, shardings),
                                            model_config)
    start = int(data_state["grpo_step"])
    log(f"resumed from step {start} (checkpoint in {ckpt.directory})")
  else:
    with parallel.activate(mesh, model_config):
      state = _initial_state(cfg, params, optimizer, shardings)
  if jax.process_count() > 1:
    log(f"mesh {dict(mesh.shape)} over {jax.process_count()} processes; each samples "
        f"{hi - lo} of {cfg.prompts_per_step} prompts on mesh {dict(sampler_mesh.shape)}")
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if primary:
    trainer._truncate_metrics(metrics_path, start)  # steps a killed run logged are replayed
  eval_problems = _eval_problems(cfg) if cfg.eval_problems else []
  kill_at = int(os.environ.get(trainer.KILL_ENV, "-1"))
  t_start, step0, record = time.time(), start, {}
  for step in range(start + 1, cfg.steps + 1):
    if stop_after is not None and step > stop_after:
      break
    t0 = time.time()
    policy_now = _sampling_params(state.params, model_config, sampler_mesh)
    sample = lambda attempt: _sample_scored(cfg, policy_now, tokenizer, think_config,
                                            sampler_mesh, model_config, step, attempt, (lo, hi))
    r, reward, valid, adv, row_targets = sample(0)
    rows, rounds, generated = _loss_batch(cfg, settings, sample, (r, valid, adv), hi - lo)
    del policy_now
    generated = _total_generated(r.generated + generated, mesh, cfg.rows)
    batch = parallel.global_batch(rows, mesh, cfg.rows,
                                  fill={"tokens": tokenizer.pad_id, "thinking_ctx": False,
                                        "loss_mask": 0.0, "sampler_logp": 0.0})
    with parallel.activate(mesh, model_config):
      if settings.old_from_batch:
        batch["old_logp"] = grpo._old_logprobs(state.params, batch["tokens"],
                                               batch["thinking_ctx"], model_config,
                                               cfg.temperature, settings.eos_ids,
                                               chunk=settings.chunk)
      per_update = []
      for _ in range(cfg.updates_per_batch):
        state, metrics = update(state, batch)
        per_update.append(metrics)
    # KL, loss and TIS as the batch found the policy; clipping over every update (on the
    # first of a batch the ratio is 1, so only later updates can clip).
    m = jax.tree.map(float, per_update[0])
    m["clip_fraction"] = float(np.mean([float(x["clip_fraction"]) for x in per_update]))
    per_row = {"reward": reward, "valid": valid, "correct": np.asarray(r.correct),
               "adv": adv.reshape(-1), "thinking_tokens": r.thinking_tokens,
               "truncated": r.truncated}
    if cfg.budget_targets:
      per_row["within_target"] = r.thinking_tokens <= np.asarray(row_targets)
    w = _whole_batch(per_row, mesh, cfg.rows)
    dt = time.time() - t0
    record = {"step": step,
              "reward": float(w["reward"][w["valid"]].mean()) if w["valid"].any() else None,
              "accuracy": float(w["correct"].mean()),
              "thinking_tokens": float(w["thinking_tokens"].mean()),
              "truncation_rate": float(w["truncated"].mean()),
              "kl": m.get("kl") if cfg.log_kl else None, "loss": m["loss"],
              "pg_loss": m["pg_loss"], "clip_fraction": m["clip_fraction"],
              "grad_norm": m["grad_norm"],
              "zero_advantage_fraction": float(np.mean(w["adv"] == 0)),
              "batch_width": int(batch["tokens"].shape[1]),
              "rollout_tokens": generated,
              "tokens_per_s": generated / max(dt, 1e-9),
              "elapsed_s": time.time() - t_start}
    if cfg.dynamic_sampling:
      record["sampling_rounds"] = rounds
    if "tis_weight" in m:
      record["tis_weight"], record["tis_capped_fraction"] = (m["tis_weight"],
                                                             m["tis_capped_fraction"])
    if cfg.budget_targets:
      record["within_target"] = float(np.mean(w["within_target"]))
    if eval_problems and (step % cfg.eval_every == 0 or step == cfg.steps):
      # Every process evaluates all problems on its own copy (as the trainer does).
      policy_now = _sampling_params(state.params, model_config, sampler_mesh)
      with parallel.activate(sampler_mesh, model_config):
        ev = grpo.evaluate_policy(policy_now, tokenizer, think_config, cfg, eval_problems,
                                  seed=cfg.eval_seed, temperature=0.0)
      del policy_now
      record.update({f"eval_{k}": v for k, v in ev.items()})
      log(f"eval step {step}: " + " ".join(f"{k}={v:.3f}" for k, v in ev.items()))
    if primary:
      with open(metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")
    if step % cfg.log_every == 0 or step == cfg.steps:
      rate = (step - step0) / max(time.time() - t_start, 1e-9)
      shown = {**record, "reward": float("nan") if record["reward"] is None else record["reward"]}
      log(_line(step, cfg.steps, shown, (cfg.steps - step) / max(rate, 1e-9)))
    if step % cfg.checkpoint_every == 0 or step == cfg.steps:
      ckpt.save(step, state, {"grpo_step": step}, model_config)
    if step == kill_at:  # tests: a real kill -9 right after this step's checkpoint
      ckpt.wait()
      os.kill(os.getpid(), signal.SIGKILL)
  ckpt.wait()
  ckpt.close()
  if int(state.step) == cfg.steps * cfg.updates_per_batch:
    final = parallel.to_host(state.params)  # every process: a gather across processes
    if primary:
      save_pretrained(os.path.join(workdir, "final"), final, model_config,
                      {"grpo_config": dataclasses.asdict(cfg), "last_record": record})
  return state.params, model_config, record
