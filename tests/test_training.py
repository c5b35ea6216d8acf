"""Training: the loss falls, `kill -9` then resume equals an uninterrupted run bit for bit,
checkpoints round-trip, and bad input fails early with a message naming the problem."""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import configs.tiny as tiny
from o1jax.model import ModelConfig, init_params
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.training import data as data_lib
from o1jax.training import trainer
from o1jax.training.checkpoint import (CheckpointMismatchError, load_params, load_pretrained,
                                       save_pretrained)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"model.embed_dim": 32, "model.num_layers": 2, "model.num_heads": 4,
         "model.num_kv_heads": 2, "model.head_dim": 8, "model.mlp_dim": 64,
         "train.batch_size": 8, "train.seq_len": 160, "train.warmup_steps": 2,
         "train.log_every": 1, "train.eval_every": 1000, "train.eval_problems": 0,
         "train.checkpoint_every": 4, "data.difficulties": (1, 2), "mesh.shape": (1, 1, 1)}


def _config(**overrides):
  c = tiny.get_config()
  for key, value in {**SMALL, **overrides}.items():
    section, field = key.split(".")
    c[section][field] = value
  return c


def _flags(steps):
  flags = [f"--config.{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
           for k, v in SMALL.items()]
  return flags + [f"--config.train.steps={steps}"]


def _env():
  # This checkout's o1jax, not whichever one the interpreter has installed.
  path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
  return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=path)


def _run_train(workdir, steps, kill_at=None):
  env = _env()
  if kill_at is not None:
    env[trainer.KILL_ENV] = str(kill_at)
  return subprocess.run([sys.executable, "launch/train.py", "--config=configs/tiny.py",
                         f"--workdir={workdir}", *_flags(steps)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_short_run_lowers_the_loss(tmp_path):
  config = _config(**{"train.steps": 40, "train.learning_rate": 1e-2})
  trainer.train(config, str(tmp_path))
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl") if "loss" in l]
  losses = [r["loss"] for r in records]
  assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])
  # Packed rows (the default) are nearly all real tokens; the tiny config's padded batches
  # were under half.
  assert min(r["real_token_fraction"] for r in records) > 0.85


def test_kill_then_resume_equals_uninterrupted(tmp_path):
  steps = 10
  straight = _run_train(tmp_path / "straight", steps)
  assert straight.returncode == 0, straight.stderr[-2000:]
  # A real SIGKILL at step 6, two steps after the step-4 checkpoint: the resumed run must
  # replay steps 5 and 6 with the same data and land on the same parameters.
  killed = _run_train(tmp_path / "resumed", steps, kill_at=6)
  assert killed.returncode == -signal.SIGKILL
  resumed = _run_train(tmp_path / "resumed", steps)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from step 4" in resumed.stdout
  # Steps 5 and 6 were logged before the kill and again after it: recorded once.
  with open(tmp_path / "resumed" / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == list(range(1, steps + 1))
  a, _, info_a = load_params(str(tmp_path / "straight"))
  b, _, info_b = load_params(str(tmp_path / "resumed"))
  assert info_a["step"] == info_b["step"] == steps
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise on CPU


@pytest.mark.parametrize("pack", [False, True])
def test_data_order_is_a_function_of_the_seed(pack):
  mixture = data_lib.Mixture(seed=3, task_run=1 if pack else 4)
  make = lambda: iter(data_lib.make_dataset(mixture, 4, 240, pack=pack))
  first = [b["inputs"] for _, b in zip(range(3), make())]
  it = make()
  next(it)
  state = it.get_state()
  again = make()
  again.set_state(state)
  np.testing.assert_array_equal(next(again)["inputs"], first[1])


def test_packed_rows_hold_the_stream_examples_whole():
  """Every segment of a packed batch is one example of the stream, encoded exactly as the
  padded path encodes it (inputs, targets, loss mask, positions from 0), and the segments
  of the first packing round are exactly the first examples of the stream."""
  mixture = data_lib.Mixture(seed=5, truncated_thinking_fraction=0.2)
  rows, seq_len = 3, 240
  tok = CharTokenizer()
  it = iter(data_lib.make_dataset(mixture, rows, seq_len, pack=True))
  # One packing round is _PACKING_BINS_PER_ROW batches.
  batches = [next(it) for _ in range(data_lib._PACKING_BINS_PER_ROW)]
  segments, used = [], 0
  for b in batches:
    assert all(v.shape == (rows, seq_len) for v in b.values())
    for r in range(rows):
      seg = b["inputs_segment_ids"][r]
      used += int((seg > 0).sum())
      for s in range(1, seg.max() + 1):
        at = np.nonzero(seg == s)[0]
        assert np.array_equal(at, np.arange(at[0], at[0] + len(at)))  # contiguous
        np.testing.assert_array_equal(b["inputs_positions"][r, at], np.arange(len(at)))
        segments.append({k: b[k][r, at] for k in ("inputs", "targets", "loss_mask")})
      assert not b["loss_mask"][r, seg == 0].any()
  expected = [data_lib.encode_unpadded(*mixture.text(i)[:2], seq_len, tok, mixture.text(i)[2])
              for i in range(len(segments))]
  key = lambda e: (tuple(e["inputs"]), tuple(e["targets"]), tuple(e["loss_mask"]))
  assert sorted(map(key, segments)) == sorted(map(key, expected))
  assert used / (rows * seq_len * len(batches)) > 0.85  # packing, not one example a row


def test_packed_batches_do_not_depend_on_the_process_count():
  mixture = data_lib.Mixture(seed=2)
  whole = iter(data_lib.make_dataset(mixture, 4, 240, pack=True))
  halves = [iter(data_lib.make_dataset(mixture, 4, 240, pack=True, process_index=i,
                                       process_count=2)) for i in range(2)]
  for _ in range(3):
    batch, parts = next(whole), [next(h) for h in halves]
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])


def test_task_weights_set_the_share_of_each_task():
  """Weights are relative, unlisted tasks weigh 1, tasks outside the mixture are ignored;
  the observed shares over 3000 examples match within 4 binomial standard deviations."""
  mixture = data_lib.Mixture(tasks=("addition", "equation", "countdown"), seed=7,
                             task_weights=(("countdown", 3.0), ("equation", 0.0)))
  n = 3000
  counts = {t: 0 for t in mixture.tasks}
  for i in range(n):
    counts[mixture.example(i)[0].task] += 1
  assert counts["equation"] == 0
  share = counts["countdown"] / n  # weight 3 against addition's default 1
  assert abs(share - 0.75) < 4 * np.sqrt(0.75 * 0.25 / n), counts
  narrowed = data_lib.Mixture(tasks=("addition",), task_weights=(("countdown", 3.0),))
  assert {narrowed.example(i)[0].task for i in range(50)} == {"addition"}
  with pytest.raises(ValueError, match="weight 0"):
    data_lib.Mixture(tasks=("equation",), task_weights=(("equation", 0.0),))


def test_forced_closes_are_context_and_truncations_are_prefixes():
  """No-thinking and truncated examples: the `</think>` the loop would force is never a
  target, the shown thinking is a proper prefix of the reference, the answer is whole; a
  complete trace keeps its close as a target (the only close the model learns to make)."""
  tok = data_lib.CharTokenizer()
  from o1jax import tasks as tasks_lib
  truncated = data_lib.Mixture(no_thinking_fraction=0.0, truncated_thinking_fraction=1.0)
  empty = data_lib.Mixture(no_thinking_fraction=1.0)
  full = data_lib.Mixture(no_thinking_fraction=0.0)
  for i in range(40):
    problem, shown = truncated.example(i)
    reference = tasks_lib.thinking_text(problem)
    text, prompt, closed = truncated.text(i)
    thinking, answer = tasks_lib.split_thinking(text)
    assert not closed and 0 < shown < len(reference) and thinking == reference[:shown]
    assert answer == problem.answer and prompt == problem.prompt
    for mixture, model_closes in ((truncated, False), (empty, False), (full, True)):
      text, prompt, closed = mixture.text(i)
      ex = data_lib.encode_example(text, prompt, 240, tok, closed)
      at_close = ex["targets"] == tok.end_think_id
      assert at_close.sum() == 1 and closed == model_closes
      assert ex["loss_mask"][at_close].item() == float(model_closes)
      # ... while every answer token and the EOS stay targets.
      after = np.arange(240) > np.argmax(at_close)
      assert ex["loss_mask"][after & (ex["targets"] != tok.pad_id)].all()
  with pytest.raises(ValueError, match="truncated_thinking_fraction"):
    data_lib.Mixture(truncated_thinking_fraction=1.5)


def test_pretrained_round_trip_and_mismatch(tmp_path):
  config = ModelConfig(embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                       mlp_dim=64)
  params = init_params(config, jax.random.key(1))
  save_pretrained(str(tmp_path), params, config, {"eval": {"mean": 0.5}})
  loaded, loaded_config, info = load_pretrained(str(tmp_path))
  assert loaded_config == config and info["eval"]["mean"] == 0.5
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(CheckpointMismatchError, match="num_layers: checkpoint has 2, config has 3"):
    load_pretrained(str(tmp_path), config.replace(num_layers=3))
  with open(tmp_path / "params.msgpack", "r+b") as f:
    f.truncate(100)
  with pytest.raises(CheckpointMismatchError, match="corrupt"):
    load_pretrained(str(tmp_path))


def test_resume_with_a_different_model_is_refused(tmp_path):
  trainer.train(_config(**{"train.steps": 4}), str(tmp_path))
  with pytest.raises(CheckpointMismatchError, match="embed_dim: checkpoint has 32, config has 48"):
    trainer.train(_config(**{"train.steps": 8, "model.embed_dim": 48}), str(tmp_path))
def test_scratchpad_hints_only_on_worked_examples():
  """The STaR base's mixture: scratchpad thinking, answers alone on the held-back levels, and
  a hint (the answer after the prompt) on a share of the worked examples only; a hinted
  example's prompt, the context the loss skips, includes the hint."""
  from o1jax import tasks as tasks_lib
  mixture = data_lib.Mixture(tasks=("addition",), difficulties=(1, 2, 3), seed=3,
                             trace_style="scratchpad", hint_fraction=0.5,
                             answer_only_difficulties=(("addition", (3,)),))
  hinted = 0
  for i in range(200):
    problem, shown = mixture.example(i)
    example = mixture.render(i)
    thinking, answer = tasks_lib.split_thinking(example.text)
    assert answer == problem.answer
    if problem.difficulty == 3 or shown == 0:
      assert thinking == "" and example.prompt == problem.prompt
      continue
    assert thinking == "; ".join(tasks_lib.get_task("addition").scratchpad_steps(problem))
    if example.prompt != problem.prompt:
      hinted += 1
      assert example.prompt == f"{problem.prompt} [hint: {problem.answer}]"
    assert example.text.startswith(example.prompt + "<think>")
  assert 40 < hinted < 110  # about half of the ~130 worked examples
  assert mixture.max_text_len() >= max(len(mixture.render(i).text) for i in range(200))
  # STaR's few worked solutions on the answer-only levels: about that share, the rest of
  # every example (problem, hint, no-thinking draw) unchanged.
  few = dataclasses.replace(mixture, answer_only_worked_fraction=0.1)
  worked = 0
  for i in range(600):
    problem, shown = few.example(i)
    assert problem == mixture.example(i)[0]
    if problem.difficulty != 3:
      assert few.render(i) == mixture.render(i)
    elif shown is None:
      worked += 1
  assert 5 <= worked <= 40  # ~0.1 * 0.85 of ~200 level-3 examples
  with pytest.raises(ValueError, match="answer_only_worked_fraction"):
    data_lib.Mixture(answer_only_worked_fraction=2.0)
  with pytest.raises(ValueError, match="no scratchpad"):
    data_lib.Mixture(trace_style="scratchpad")
  with pytest.raises(ValueError, match="hint_fraction"):
    data_lib.Mixture(trace_style="reflective", hint_fraction=0.2)
  with pytest.raises(ValueError, match="hint_template"):
    data_lib.Mixture(hint_template="no placeholder")


@pytest.mark.parametrize("overrides, message", [
    ({"data.tasks": ("addition", "sudoku")}, "unknown task 'sudoku'; known: addition"),
    ({"data.difficulties": (1, 9)}, "difficulty 9 is not a level of task"),
    ({"train.steps": 0}, "train.steps must be a positive integer"),
    ({"train.seq_len": 40}, "train.seq_len=40 is too short"),
    ({"train.learning_rate": -1.0}, "learning_rate must be positive"),
    ({"data.task_weights": {"countdown": -1.0}}, "task weight of 'countdown' must be >= 0"),
    ({"model.attention_impl": "pallas"}, "data.pack=True needs model.attention_impl"),
    ({"data.task_weights": {"sudoku": 1.0}}, "unknown task 'sudoku'"),
    ({"model.num_kv_heads": 3}, "multiple of num_kv_heads"),
    ({"data.split_key": "hash"}, "split_key must be one of 'canonical', 'prompt'; got 'hash'"),
])
def test_bad_config_values_are_named(tmp_path, overrides, message):
  with pytest.raises(ValueError, match=message):
    trainer.train(_config(**overrides), str(tmp_path))


def test_unknown_config_field_from_the_command_line(tmp_path):
  result = subprocess.run([sys.executable, "launch/train.py", f"--workdir={tmp_path}",
                           "--config.train.stepz=3"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "stepz" in result.stderr and "Traceback" not in result.stderr[-300:]
