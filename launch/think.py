"""Think, then answer, with a per-prompt thinking budget and early-stop rules.

With no flags it draws held-out problems of every task from the embedded tiny reasoner:
  python launch/think.py
  python launch/think.py --prompt="2x+5=13" --max_thinking_tokens=8 --show_thinking
  python launch/think.py --task=countdown --difficulty=4 --num_problems=8 --json
  python launch/think.py --max_thinking_tokens=auto     # the shipped budget head decides
  python launch/think.py --heads_dir=runs/heads --max_thinking_tokens=auto \
      --stop_rules=natural,budget,confidence --confidence_estimate=head --probe_every=4 \
      --confidence_threshold=0.5          # heads from launch/train_heads.py
  python launch/think.py --heads_dir=o1jax/checkpoints/tiny_step_heads \
      --stop_rules=natural,budget,confidence --confidence_estimate=head \
      --confidence_reads=step_ends --confidence_threshold=T   # T: its confidence_head.json
  python launch/think.py --hf_dir=/models/DeepSeek-R1-Distill-Qwen-1.5B --prompt="..." \
      --max_thinking_tokens=512 --dtype=bfloat16
  python launch/think.py --mesh_shape=-1,1,2   # this host's devices: data x tensor 2
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging

from o1jax import parallel  # importing builds no arrays: the backend is not started

_PROMPT = flags.DEFINE_multi_string("prompt", [], "A prompt (repeatable).")
_PROMPTS_FILE = flags.DEFINE_string("prompts_file", None, "A file with one prompt per line.")
_TASK = flags.DEFINE_string("task", None, "Draw held-out problems from this task ('all': every "
                            "task); the default when no prompt is given.")
_DIFFICULTY = flags.DEFINE_string("difficulty", "all", "Difficulty level 1..5 or 'all'.")
_NUM_PROBLEMS = flags.DEFINE_integer("num_problems", 2, "Problems per task and difficulty.")
_MAX_THINKING = flags.DEFINE_string("max_thinking_tokens", "inf",
                                    "Thinking budget: an integer, 'inf', 'auto' (the trained "
                                    "budget head reads it off the prompt; 'head' is the same) "
                                    "or 'article' (the o1 article's table x --budget_scale, "
                                    "indexed by the problem's TRUE difficulty label: an "
                                    "oracle, for reproducing the article's table).")
_BUDGET_SCALE = flags.DEFINE_float("budget_scale", 0.1, "Scale of the article's budgets for "
                                   "budget=article (its table is for o1-sized models).")
_MIN_THINKING = flags.DEFINE_integer("min_thinking_tokens", 0, "Suppress closing before this.")
_WAIT_TEXT = flags.DEFINE_string("wait_text", "", "Inserted when the model tries to close "
                                 "before the minimum (s1's 'Wait'); empty: just suppress.")
_CLOSE_TEXT = flags.DEFINE_string("close_text", None, "Forced when thinking is stopped from "
                                  "outside; must contain the end-of-thinking marker.")
_STOP_RULES = flags.DEFINE_list("stop_rules", ["natural", "budget"],
                                "Any of natural, budget, confidence, converged.")
_CONF_THRESHOLD = flags.DEFINE_float("confidence_threshold", 0.95, "Probe confidence to stop.")
_PROBE_EVERY = flags.DEFINE_integer("probe_every", 16, "Thinking tokens between probes.")
_PROBE_AGREEMENT = flags.DEFINE_integer("probe_agreement", 2, "Stop when this many previous "
                                        "probes gave the same answer (0: off).")
_CONF_ESTIMATE = flags.DEFINE_enum("confidence_estimate", "probe", ["probe", "head"],
                                   "What the confidence rule reads: a trial-answer probe, "
                                   "or the confidence head in --heads_dir (no extra forward).")
_CONF_READS = flags.DEFINE_enum("confidence_reads", "periodic", ["periodic", "step_ends"],
                                 "When the confidence estimate is taken: every --probe_every "
                                 "thinking tokens, or after each ';' (step end).")
_GIVE_UP = flags.DEFINE_float("give_up_threshold", 0.0, "With the head estimate: also stop "
                              "when the value head in --heads_dir falls below this (0: off).")
_HEADS_DIR = flags.DEFINE_string("heads_dir", None, "Trained heads (a launch/train_heads.py "
                                 "workdir) for --confidence_estimate=head, "
                                 "--give_up_threshold and --max_thinking_tokens=auto "
                                 "(default: the heads/ shipped beside the checkpoint).")
_CONV_WINDOW = flags.DEFINE_integer("converge_window", 16, "Window W of the converged rule.")
_CONV_THRESHOLD = flags.DEFINE_float("converge_threshold", 0.9, "Cosine similarity to stop.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "0: off.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "1: off.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed; the same seed gives the same result.")
_SHOW_THINKING = flags.DEFINE_bool("show_thinking", False, "Print the hidden thinking too.")
_JSON = flags.DEFINE_bool("json", False, "One JSON object per line per prompt.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint dir or training workdir "
                                  "(default: the embedded tiny reasoner).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A local Hugging Face model directory.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_CACHE_LEN = flags.DEFINE_integer("cache_len", None, "Context length (default: the model's).")
_MAX_ANSWER = flags.DEFINE_integer("max_answer_tokens", 32, "Answer length cap.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Prompts per compiled batch.")
_MESH_SHAPE = flags.DEFINE_string("mesh_shape", "-1,1,1", "Device mesh (data, fsdp, tensor) "
                                  "over this host's devices, as --config.mesh.shape of "
                                  "launch/train.py: prompts split over data*fsdp, heads over "
                                  "tensor; -1 takes the remaining devices (docs/PARALLEL.md).")


_HF_DEFAULT_CACHE = 4096


def _load():
  """(params, model_config, tokenizer) from --hf_dir, --checkpoint or the embedded model."""
  if _HF_DIR.value:
    from o1jax import hf
    # Real checkpoints declare contexts of 32K-128K; the cache is sized by --cache_len.
    return hf.load_hf(_HF_DIR.value, dtype=_DTYPE.value,
                      max_seq_len=_CACHE_LEN.value or _HF_DEFAULT_CACHE)
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.training.checkpoint import embedded_checkpoint_dir, load_params
  params, config, _ = load_params(_CHECKPOINT.value or embedded_checkpoint_dir())
  return params, config.replace(dtype=_DTYPE.value), CharTokenizer()


def _shard(params, model_config):
  """The mesh from --mesh_shape and the parameters placed on it (one process: this host)."""
  mesh = parallel.make_mesh(parallel.parse_shape(_MESH_SHAPE.value))
  if mesh.devices.size > 1:
    print("mesh " + " ".join(f"{a}={n}" for a, n in mesh.shape.items()), file=sys.stderr)
  return mesh, parallel.shard_params(params, model_config, mesh)


def _problems():
  """[(prompt, Problem or None)] from the flags."""
  from o1jax import tasks
  prompts = list(_PROMPT.value)
  if _PROMPTS_FILE.value:
    with open(_PROMPTS_FILE.value) as f:
      prompts += [line.rstrip("\n") for line in f if line.strip()]
  items = [(p, tasks.find_task_for_prompt(p)) for p in prompts]
  task = _TASK.value or (None if items else "all")
  if task:
    names = sorted(tasks.TASKS) if task == "all" else [task]
    for name in names:
      t = tasks.get_task(name)
      levels = t.difficulties if _DIFFICULTY.value == "all" else [int(_DIFFICULTY.value)]
      for d in levels:
        items += [(p.prompt, p) for p in t.generate_problems(_SEED.value + 7, d,
                                                             _NUM_PROBLEMS.value, split="eval")]
  if not items:
    raise ValueError("no prompts: give --prompt, --prompts_file or --task")
  return items


def _heads(params, model_config):
  """({kind: head params} for think(), budgets from the budget head or None)."""
  need = []
  if "confidence" in _STOP_RULES.value and _CONF_ESTIMATE.value == "head":
    need += ["confidence"] + (["value"] if _GIVE_UP.value > 0 else [])
  if _MAX_THINKING.value in ("auto", "head"):
    need.append("budget")
  if not need:
    return None, None
  heads_dir = _HEADS_DIR.value or _shipped_heads_dir()
  if not heads_dir:
    raise ValueError(f"the {', '.join(need)} head{'s' * (len(need) > 1)} asked for by the "
                     "flags need --heads_dir (a launch/train_heads.py workdir)")
  from o1jax.model.heads import load_head
  loaded = {kind: load_head(heads_dir, kind)[0] for kind in need}
  for kind, model in loaded.items():
    if model.separate or model.head_config.embed_dim != model_config.embed_dim:
      raise ValueError(f"the {kind} head in {heads_dir} does not sit on this model's "
                       f"trunk (embed_dim {model.head_config.embed_dim} vs "
                       f"{model_config.embed_dim}): train it on this checkpoint")
  budget_head = loaded.pop("budget", None)
  return {k: m.head for k, m in loaded.items()} or None, budget_head


def _shipped_heads_dir():
  """The heads/ beside the checkpoint in use (the embedded one ships its heads), or None."""
  import os
  if _HF_DIR.value:
    return None
  from o1jax.training.checkpoint import embedded_checkpoint_dir
  path = os.path.join(_CHECKPOINT.value or embedded_checkpoint_dir(), "heads")
  return path if os.path.isdir(path) else None


def _budgets(items, params=None, model_config=None, budget_head=None):
  from o1jax.thinking import article_budget
  value = _MAX_THINKING.value
  if value in ("auto", "head"):
    from o1jax.training.heads import head_budgets
    return head_budgets(params, model_config, budget_head.head, [p for p, _ in items])
  if value != "article":
    return [value] * len(items)
  # The task label's (true) difficulty when the prompt is a known task; 'moderate' otherwise.
  return [article_budget(p.difficulty if p else 2, _BUDGET_SCALE.value) for _, p in items]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax import tasks
  from o1jax.thinking import make_think_config, think_texts
  try:
    if _DIFFICULTY.value != "all" and _DIFFICULTY.value not in ("1", "2", "3", "4", "5"):
      raise ValueError(f"--difficulty must be 1..5 or 'all', got {_DIFFICULTY.value!r}")
    if _TASK.value and _TASK.value != "all":
      tasks.get_task(_TASK.value)
    items = _problems()
    params, model_config, tokenizer = _load()
    mesh, params = _shard(params, model_config)
    heads, budget_head = _heads(params, model_config)
    overrides = dict(stop_rules=tuple(_STOP_RULES.value), temperature=_TEMPERATURE.value,
                     confidence_estimate=_CONF_ESTIMATE.value,
                     confidence_reads=_CONF_READS.value,
                     give_up_threshold=_GIVE_UP.value,
                     top_k=_TOP_K.value, top_p=_TOP_P.value,
                     confidence_threshold=_CONF_THRESHOLD.value, probe_every=_PROBE_EVERY.value,
                     probe_agreement=_PROBE_AGREEMENT.value,
                     converge_window=_CONV_WINDOW.value, converge_threshold=_CONV_THRESHOLD.value,
                     max_answer_tokens=_MAX_ANSWER.value)
    if _CONF_READS.value == "step_ends":
      from o1jax.training.rollouts import step_delimiter_ids
      overrides["step_end_ids"] = tuple(sorted(step_delimiter_ids(tokenizer)))
    if _WAIT_TEXT.value:
      overrides["wait_ids"] = tuple(tokenizer.encode(_WAIT_TEXT.value))
    if _CLOSE_TEXT.value is not None:
      overrides["close_ids"] = tuple(tokenizer.encode(_CLOSE_TEXT.value))
    config = make_think_config(model_config, tokenizer, _CACHE_LEN.value, **overrides)
    prompts = [p for p, _ in items]
    budgets = _budgets(items, params, model_config, budget_head)
    if _MAX_THINKING.value in ("auto", "head", "article"):
      # A derived budget past what the context holds means "as much as fits" (the article's
      # research budget is 1000 tokens at scale 0.1; the embedded context is 704).
      budgets = [min(b, config.cache_len - len(tokenizer.encode_prompt(p)) - config.reserve)
                 for b, p in zip(budgets, prompts)]
    # A whole number of rows per batch shard (think_texts pads the batch with repeats).
    shards = parallel.shards_of(mesh, "batch")
    batch_size = -(-min(_BATCH_SIZE.value, len(prompts)) // shards) * shards
    with parallel.activate(mesh, model_config):  # think() is traced for the mesh
      thoughts = think_texts(params, tokenizer, prompts, config, budgets=budgets,
                             min_thinking=_MIN_THINKING.value, seed=_SEED.value,
                             batch_size=batch_size,
                             heads=heads and parallel.put(heads, parallel.replicated(mesh)))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")

  correct = []
  for (prompt, problem), th in zip(items, thoughts):
    ok = None if problem is None else tasks.get_task(problem.task).verify(problem, th.answer)
    if ok is not None:
      correct.append(ok)
    if _JSON.value:
      row = {"prompt": prompt, "answer": th.answer, "thinking_tokens": th.thinking_tokens,
             "answer_tokens": th.answer_tokens, "stop_reason": th.stop_reason, "correct": ok,
             "thinking": th.thinking if _SHOW_THINKING.value else None,
             "task": problem.task if problem else None,
             "difficulty": problem.difficulty if problem else None,
             "num_probes": th.num_probes, "confidence": th.confidence}
      print(json.dumps(row))
      continue
    mark = {True: "correct", False: "WRONG", None: "unverified"}[ok]
    print(f"{prompt}")
    if _SHOW_THINKING.value:
      print(f"  thinking: {th.thinking}")
    print(f"  answer: {th.answer}   [{th.thinking_tokens} thinking tokens, stop: "
          f"{th.stop_reason}, {mark}]")
  if correct and not _JSON.value:
    print(f"accuracy: {sum(correct)}/{len(correct)} = {sum(correct) / len(correct):.1%}")


if __name__ == "__main__":
  app.run(main)
