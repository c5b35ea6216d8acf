"""RL data and verifiers (o1jax/rl/data.py, o1jax/rl/verifiers.py) and GRPO on a tiny random
Qwen3 (BPE tokenizer, chat template with <think>) over the shipped JSONL fixture.

Verifiers are checked on tables of cases written here, including answers that must fail;
the step order against a plain NumPy permutation bookkeeping; the end-to-end run against
rewards recomputed with math-verify directly from the same rollouts.
"""

import dataclasses
import fractions
import json
import os

import jax
import numpy as np
import pytest

from o1jax.rl import data as rl_data
from o1jax.rl import verifiers
from o1jax.training import grpo

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "rl",
                       "tiny_math.jsonl")


# ---- verifiers --------------------------------------------------------------------------

EXACT = [("42", "42", True), ("42", "  42\n", True), ("42", "42.", False),
         ("42", "The answer is 42", False), ("abc", "ABC", False), ("42", "", False)]
NUMERIC = [
    ("42", "42", True), ("42", "The answer is 42.", True), ("42", "so 41, no: 42", True),
    ("1234", "1,234", True), ("1,234", "1234", True), ("1234567", "1,234,567 apples", True),
    ("0.75", "3/4", True), ("3/4", "0.75", True), ("-3", "it is -3", True),
    ("-3", "it is \u22123", True), ("1500", "1.5e3", True), ("1.5e-3", "0.0015", True),
    ("100", "100.00001", True),            # within 1e-6 relative
    ("100", "100.001", False),             # 1e-5 relative: outside
    ("0", "0.0", True), ("0", "1e-9", False),  # a gold of 0 needs exactly 0
    ("42", "42 or 43", False),             # the last number counts
    ("42", "x42", False), ("42", "no number", False), ("42", "", False),
    ("1/3", "0.33333", False), ("1/3", "0.333333", True),   # 1e-5 / 1e-6 relative
    ("5", "1/0", False), ("10", "2*5", False), ("3", "3/4", False),
    ("1" * 600, "1" * 600, False),          # past the digit cap: no number read
]
MATH = [
    ("\\frac{3}{4}", "The answer is \\boxed{0.75}", True),
    ("3/4", "so \\boxed{\\frac34}", True),
    ("9", "Therefore the answer is \\boxed{9}.", True),
    ("x^2+2x+1", "\\boxed{(x+1)^2}", True),
    ("5\\sqrt{2}", "$\\sqrt{50}$", True),
    ("9\\pi", "\\boxed{9\\pi}", True),
    ("\\boxed{1234}", "1234", True),
    ("9", "\\boxed{8}", False),
    ("\\frac{3}{4}", "\\boxed{\\frac{4}{3}}", False),
    ("x^2+2x+1", "\\boxed{x^2+1}", False),
    ("12", "I think 12 or 13", False),       # the last answer counts
    ("9", "no answer here", False), ("9", "", False),
]


@pytest.mark.parametrize("gold,answer,want", EXACT)
def test_exact(gold, answer, want):
  assert verifiers.get_verifier("exact")(gold, answer) is want


@pytest.mark.parametrize("gold,answer,want", NUMERIC)
def test_numeric(gold, answer, want):
  assert verifiers.get_verifier("numeric")(gold, answer) is want


def test_numeric_parses_against_fractions():
  cases = {"3/4": fractions.Fraction(3, 4), "1,234.5": fractions.Fraction(2469, 2),
           "-2.5e2": fractions.Fraction(-250), ".5": fractions.Fraction(1, 2),
           "1,2": None, "12 apples": None, "": None}
  for text, want in cases.items():
    assert verifiers.parse_number(text) == want, text
  assert verifiers.last_number("from 3/4 to 7/8.") == fractions.Fraction(7, 8)


@pytest.mark.parametrize("gold,answer,want", MATH)
def test_math(gold, answer, want):
  pytest.importorskip("math_verify")
  assert verifiers.get_verifier("math")(gold, answer) is want


def test_verifiers_never_raise_on_untrusted_answers():
  pytest.importorskip("math_verify")
  for name in verifiers.VERIFIERS:
    for answer in (None, 7, "\\boxed{", "}}}{{{", "9" * 10_000, "\\frac{1}{0}", "\x00"):
      assert verifiers.get_verifier(name)("9", answer) is False


def test_unknown_verifier_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown verifier 'maths'.*exact, numeric, math"):
    verifiers.get_verifier("maths")
  with pytest.raises(ValueError, match="unknown verifier"):
    grpo.GRPOConfig(verifier="fuzzy")


# ---- JSONL problem sets -----------------------------------------------------------------

def test_fixture_loads_and_each_gold_scores_one():
  pytest.importorskip("math_verify")
  problems = rl_data.load_problems([FIXTURE], "math")
  assert len(problems) == 12
  assert [p.source for p in problems] == [f"{FIXTURE}:{i}" for i in range(1, 13)]
  for p in problems:
    if p.task:  # the built-in task's own verifier: an addition answer is a bare integer
      assert p.task == "addition" and p.data == (41, 24)
      right, wrong = p.answer, str(int(p.answer) + 1)
    else:
      right, wrong = f"So the answer is \\boxed{{{p.answer}}}.", "\\boxed{7}"
    assert verifiers.verify_problem(p, right), (p.source, right)
    assert not verifiers.verify_problem(p, wrong), (p.source, wrong)


BAD_RECORDS = [
    ("{not json", "not valid JSON"),
    ('["a", "b"]', "must be a JSON object"),
    ('{"answer": "1"}', "missing field 'prompt'"),
    ('{"prompt": "p"}', "missing field 'answer'"),
    ('{"prompt": "p", "answer": 42}', "field 'answer' must be a string, got int 42"),
    ('{"prompt": ["p"], "answer": "1"}', "field 'prompt' must be a string, got list"),
    ('{"prompt": "  ", "answer": "1"}', "field 'prompt' is empty"),
    ('{"prompt": "p", "answer": ""}', "field 'answer' is empty"),
    ('{"prompt": "p", "answer": "1", "task": "algebra"}', "unknown task 'algebra'"),
    ('{"prompt": "p", "answer": "1", "task": 3}', "unknown task 3"),
    ('{"prompt": "what?", "answer": "1", "task": "addition"}', "is not a addition prompt"),
    ('{"prompt": "41+24=", "answer": "64", "task": "addition"}', "'64' is not correct"),
    ('{"prompt": "p", "answer": "seven"}', "'seven' is not a number"),
]


@pytest.mark.parametrize("line,error", BAD_RECORDS)
def test_bad_record_names_file_and_line(tmp_path, line, error):
  path = tmp_path / "set.jsonl"
  good = json.dumps({"prompt": "1+1=", "answer": "2"})
  path.write_text(f"{good}\n\n{good}\n{line}\n{good}\n")   # the bad record is on line 4
  with pytest.raises(ValueError) as e:
    rl_data.read_jsonl(str(path), "numeric")
  assert str(e.value).startswith(f"{path}:4: ") and error in str(e.value), str(e.value)


def test_bad_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    rl_data.read_jsonl(str(tmp_path / "missing.jsonl"))
  (tmp_path / "empty.jsonl").write_text("\n \n")
  with pytest.raises(ValueError, match="empty.jsonl: no records"):
    rl_data.read_jsonl(str(tmp_path / "empty.jsonl"))
  (tmp_path / "latin1.jsonl").write_bytes(b'{"prompt": "p", "answer": "1"}\n{"prompt": "\xe9"}\n')
  with pytest.raises(ValueError, match="latin1.jsonl:2: not UTF-8"):
    rl_data.read_jsonl(str(tmp_path / "latin1.jsonl"))
  (tmp_path / "unparsable.jsonl").write_text('{"prompt": "p", "answer": "}{"}\n')
  pytest.importorskip("math_verify")
  with pytest.raises(ValueError, match="unparsable.jsonl:1: .*not an expression math-verify can parse"):
    rl_data.read_jsonl(str(tmp_path / "unparsable.jsonl"), "math")


# ---- which records a step draws ---------------------------------------------------------

def _numbered(tmp_path, n):
  path = tmp_path / f"n{n}.jsonl"
  path.write_text("".join(json.dumps({"prompt": f"p{i}", "answer": str(i)}) + "\n"
                          for i in range(n)))
  return str(path)


def _cfg(**kw):
  base = dict(verifier="exact", prompts_per_step=4, group_size=2, mesh_shape=(1, 1, 1),
              max_thinking=8, cache_len=64)
  return grpo.GRPOConfig(**{**base, **kw})


def test_steps_walk_shuffled_epochs_as_a_pure_function_of_seed_and_step(tmp_path):
  cfg = _cfg(data_files=(_numbered(tmp_path, 12),))
  ids = lambda c, s: [int(p.answer) for p in grpo.step_problems(c, s)[0]]
  epoch1 = [i for s in (1, 2, 3) for i in ids(cfg, s)]
  epoch2 = [i for s in (4, 5, 6) for i in ids(cfg, s)]
  assert sorted(epoch1) == sorted(epoch2) == list(range(12))   # each record once per epoch
  assert epoch1 != epoch2 and epoch1 != list(range(12))       # reshuffled, not file order
  # Resuming: any step alone, in any order, in a fresh cache, is what the run drew there.
  rl_data.step_dataset.cache_clear()
  rl_data._load_cached.cache_clear()
  assert [i for s in (6, 5, 4) for i in ids(cfg, s)] == [i for s in (6, 5, 4)
                                                         for i in ids(cfg, s)]
  assert [i for s in (4, 5, 6) for i in ids(cfg, s)] == epoch2
  assert [i for s in (1, 2, 3) for i in ids(dataclasses.replace(cfg, seed=1), s)] != epoch1
  # Several files are one set, in file order.
  cfg2 = _cfg(data_files=(_numbered(tmp_path, 12), _numbered(tmp_path, 4)))
  assert len(rl_data.load_problems(cfg2.data_files, "exact")) == 16


def test_shards_split_the_step_contiguously(tmp_path):
  cfg = _cfg(data_files=(_numbered(tmp_path, 10),), prompts_per_step=6, budget_targets=(8, 16))
  for step in (1, 2, 7):
    whole, targets = grpo.step_problems(cfg, step)
    parts = [grpo.step_problems(cfg, step, shard=(i, 3)) for i in range(3)]
    assert [p for ps, _ in parts for p in ps] == whole
    assert [t for _, ts in parts for t in ts] == targets
  tasks_cfg = _cfg(tasks=("addition",), difficulties=(1, 2))   # the generator path too
  whole = grpo.step_problems(tasks_cfg, 3)[0]
  assert grpo.step_problems(tasks_cfg, 3, shard=(1, 2))[0] == whole[2:]
  with pytest.raises(ValueError, match="cannot split 6 prompts into 4"):
    grpo.step_problems(cfg, 1, shard=(0, 4))
  assert rl_data.process_shard() == (0, 1)


def test_config_checks_the_data_fields(tmp_path):
  f = _numbered(tmp_path, 4)
  with pytest.raises(ValueError, match="data_files must be a tuple of JSONL paths"):
    _cfg(data_files=f)
  with pytest.raises(ValueError, match="eval_files needs data_files"):
    _cfg(eval_files=(f,), eval_problems=2)
  with pytest.raises(ValueError, match="with data_files needs eval_files"):
    _cfg(data_files=(f,), eval_problems=2)
  with pytest.raises(ValueError, match="eval_problems=0 evaluates nothing"):
    _cfg(data_files=(f,), eval_files=(f,))
  # Answer caps up to 1,024 tokens, as long as cache_len holds them.
  assert _cfg(max_answer_tokens=1024, max_thinking=1024, cache_len=2304).max_answer_tokens == 1024
  with pytest.raises(ValueError, match="cannot hold max_thinking=1024 \\+ max_answer_tokens=1024"):
    _cfg(max_answer_tokens=1024, max_thinking=1024, cache_len=2048)


# ---- GRPO on a tiny random Qwen3 over the JSONL fixture -----------------------------------

@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
  """A tiny random Qwen3 directory (test_hf's byte-level BPE with <think>/</think> added
  tokens, its Qwen chat template and sizes), untied and tilted so the random policy closes its
  own thinking (~10% per token) and so has answers to verify: hidden dimension 0 is a
  constant 1 that no layer writes to, and only </think>'s output row reads it strongly."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  pytest.importorskip("math_verify")
  from test_hf import DIMS, _train_tokenizer, _write_tokenizer
  d = str(tmp_path_factory.mktemp("qwen3"))
  tok = _train_tokenizer()
  torch.manual_seed(0)
  model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
      **DIMS, head_dim=32, tie_word_embeddings=False, rope_theta=1e6,
      eos_token_id=tok.token_to_id("<|im_end|>"), pad_token_id=tok.token_to_id("<|endoftext|>")))
  with torch.no_grad():
    for name, p in model.named_parameters():  # HF's init is too flat to sample anything varied
      p.copy_(1 + 0.2 * torch.randn_like(p)) if name.endswith("norm.weight") else p.normal_(0, 0.15)
    model.model.embed_tokens.weight[:, 0] = 1.0
    model.model.norm.weight[0] = 4.0
    model.lm_head.weight[tok.token_to_id("</think>"), 0] = 2.5
    model.lm_head.weight[tok.token_to_id("\u01201"), 0] = 4.2   # " 1" (~3%): numbers to verify
    for layer in model.model.layers:
      layer.self_attn.o_proj.weight[0] = 0.0
      layer.mlp.down_proj.weight[0] = 0.0
  model.save_pretrained(d)
  _write_tokenizer(tok, d, "qwen")
  return d


def test_grpo_on_a_tiny_qwen3_with_a_jsonl_set(qwen3_dir, tmp_path):
  import math_verify
  from o1jax import hf, parallel
  from o1jax.thinking import StopReason
  from o1jax.training import grpo_train

  params, config, tok = grpo_train.load_policy(qwen3_dir)
  assert isinstance(tok, hf.HFTokenizer)
  first = rl_data.load_problems([FIXTURE], "math")[0].prompt
  # The chat template with the generation prompt, thinking opened: the loop starts thinking.
  assert tok.prompt_text(first) == ("<|im_start|>user\n" + first
                                    + "<|im_end|>\n<|im_start|>assistant\n<think>\n")
  cfg = grpo.GRPOConfig(base=qwen3_dir, data_files=(FIXTURE,), verifier="math", steps=2,
                        prompts_per_step=4, group_size=4, max_thinking=8, max_answer_tokens=16,
                        cache_len=256, truncation="penalize", learning_rate=1e-3,
                        log_kl=False, mesh_shape=(1, 1, 1), checkpoint_every=100)

  # Step 1's rollouts, sampled here as train() will sample them (same params and keys).
  mesh = parallel.make_mesh(cfg.mesh_shape)
  tc = grpo.think_config_for(cfg, config, tok)
  problems, targets = grpo.step_problems(cfg, 1)
  with parallel.activate(mesh, config):
    r = grpo.sample_groups(params, tok, tc, problems, targets, cfg.group_size, cfg.max_thinking,
                           grpo.step_seed(cfg.seed, 1))
  natural = r.stop_reason == int(StopReason.NATURAL)
  assert 0 < natural.sum() < len(natural)
  for b in np.flatnonzero(natural):   # the answer is the text after the model's own </think>
    p = len(tok.encode_prompt(r.prompts[b]))
    gen = list(r.tokens[b, p:])
    after = gen[gen.index(tok.end_think_id) + 1:]
    assert r.answers[b] == tok.decode(after), b
  assert r.correct.sum() == 0   # the fixture's real answers: a random model gets none

  # A copy of the set whose golds for step 1's prompts are a number that one of its rollouts
  # wrote (as math-verify reads it), so some rows are right and train() must score them 1.
  records = [json.loads(line) for line in open(FIXTURE)]
  for i, prob in enumerate(problems):
    if prob.task:   # a built-in task's record keeps its true answer (loading checks it)
      continue
    for b in range(i * cfg.group_size, (i + 1) * cfg.group_size):
      said = math_verify.parse(r.answers[b])
      if natural[b] and said and str(said[-1]).lstrip("-").isdigit():
        records[int(prob.source.rsplit(":", 1)[1]) - 1]["answer"] = str(said[-1])
        break
  path = tmp_path / "set.jsonl"
  path.write_text("".join(json.dumps(x) + "\n" for x in records))
  cfg = dataclasses.replace(cfg, data_files=(str(path),))
  new = grpo.step_problems(cfg, 1)[0]
  assert [p.prompt for p in new] == [p.prompt for p in problems]   # same draw, new golds
  gold = [new[b // cfg.group_size].answer for b in range(len(r.answers))]
  want_correct = np.array([bool(math_verify.verify(math_verify.parse(f"\\boxed{{{g}}}"),
                                                   math_verify.parse(a)))
                           for g, a in zip(gold, r.answers)])
  assert want_correct.sum() > 0
  want_reward = np.where(r.truncated, cfg.truncation_penalty, want_correct).mean()

  final, _, last = grpo_train.train(cfg, str(tmp_path / "run"), log=lambda s: None)
  recs = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert [x["step"] for x in recs] == [1, 2] and last["step"] == 2
  assert recs[0]["accuracy"] == pytest.approx(want_correct.mean())
  assert recs[0]["reward"] == pytest.approx(want_reward)
  for x in recs:
    assert all(np.isfinite(x[k]) for k in ("loss", "pg_loss", "grad_norm", "reward"))
  moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(params)))
  assert moved > 0


def test_launch_flags_reach_the_data_check_before_any_model_loads(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "answer": 4}\n')
  run = lambda *args: subprocess.run([sys.executable, os.path.join(root, "launch", "grpo.py"),
                                      *args], capture_output=True, text=True, cwd=root,
                                     env={**os.environ, "PYTHONPATH": root}, timeout=120)
  out = run(f"--workdir={tmp_path / 'run'}", "--config=configs/grpo.py:hf",
            f"--hf_dir={tmp_path / 'no_such_model'}", f"--data={bad}")
  assert out.returncode != 0
  assert f"{bad}:2: field 'answer' must be a string, got int 4" in out.stderr, out.stderr
  assert not (tmp_path / "run").exists()
  usage = run("--help").stdout
  assert "--hf_dir=/models/Qwen3-0.6B --data=train.jsonl" in usage and "--eval_data" in usage


def test_the_longest_record_must_fit_and_is_named(tmp_path, model):
  from o1jax.tasks.tokenizer import CharTokenizer
  from o1jax.training import grpo_train
  path = tmp_path / "set.jsonl"
  lines = [{"prompt": "1+1=", "answer": "2"}] * 4
  lines[2] = {"prompt": "1+1+" * 20 + "1=", "answer": "21"}   # line 3: 82 chars + <think>
  path.write_text("".join(json.dumps(x) + "\n" for x in lines))
  cfg = _cfg(data_files=(str(path),), max_thinking=8, max_answer_tokens=8, cache_len=100)
  tc = grpo.think_config_for(cfg, model[1], CharTokenizer())
  grpo_train._check_prompts_fit(cfg, CharTokenizer(), tc)   # 83 + 8 + 9 fit in 100 exactly
  with pytest.raises(ValueError, match=f"^{path}:3: prompt 0 .* does not fit"):
    grpo_train._check_prompts_fit(dataclasses.replace(cfg, max_thinking=9), CharTokenizer(), tc)
