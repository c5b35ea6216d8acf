"""The controller's contract under every stop rule: the minimum binds early stops, give-up has
its own reason, a request samples alike wherever it sits, any of several EOS ids ends an
answer, per-request settings share one compiled program, and the README's example runs."""

import re

import jax
import numpy as np
import pytest

from o1jax import tasks
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import (UNLIMITED, ThinkConfig, make_think_config, prepare_inputs, think,
                            think_texts)
from o1jax.thinking.loop import _think

TOK = CharTokenizer()


def _config(mc, **kw) -> ThinkConfig:
  kw.setdefault("max_answer_tokens", 12)
  return make_think_config(mc, TOK, 192, **kw)


def _prompts(seed, levels=(3, 4)):
  return [p.prompt for name in ("addition", "equation", "countdown") for d in levels
          for p in tasks.get_task(name).generate_problems(seed, d, 1, split="eval")]


def test_min_thinking_binds_every_early_stop(model):
  # Rules built to fire at their first check (probe threshold 0, convergence threshold -1)
  # may not stop a request below its minimum; without the minimum they stop early.
  params, mc = model
  prompts = _prompts(seed=21)
  floor = 40
  for rules, kw in ((("natural", "budget", "confidence"),
                     dict(probe_every=4, confidence_threshold=0.0)),
                    (("natural", "budget", "converged"),
                     dict(converge_window=4, converge_threshold=-1.0))):
    config = _config(mc, stop_rules=rules, **kw)
    free = think_texts(params, TOK, prompts, config, budgets=UNLIMITED)
    held = think_texts(params, TOK, prompts, config, budgets=UNLIMITED, min_thinking=floor)
    assert min(t.thinking_tokens for t in free) < floor  # the rule does fire early
    for t in held:
      assert t.thinking_tokens >= floor, (rules, t)
      assert t.stop_reason in ("confidence", "converged", "natural")
  # The cap still cuts below nothing: min_thinking <= budget is enforced up front.
  with pytest.raises(ValueError, match="above the thinking budget"):
    prepare_inputs(TOK, prompts[:1], _config(mc), budgets=10, min_thinking=floor)


def test_give_up_has_its_own_reason_and_needs_the_confidence_rule(model):
  from o1jax.model.heads import HeadConfig, init_head
  params, mc = model

  def constant(value):
    head = init_head(HeadConfig(mc.embed_dim, 8, "confidence"), jax.random.key(0), value)
    return {**head, "w2": jax.numpy.zeros_like(head["w2"])}

  config = _config(mc, stop_rules=("natural", "budget", "confidence"),
                   confidence_estimate="head", probe_every=4, give_up_threshold=0.5)
  heads = {"confidence": constant(-10.0), "value": constant(-10.0)}  # never sure, hopeless
  out = think_texts(params, TOK, _prompts(seed=22), config, heads=heads, min_thinking=8)
  assert {t.stop_reason for t in out} == {"give_up"}
  assert all(t.thinking_tokens == 8 for t in out)
  with pytest.raises(ValueError, match="needs 'confidence' in stop_rules"):
    _config(mc, give_up_threshold=0.5)
  with pytest.raises(ValueError, match="needs 'confidence' in stop_rules"):
    _config(mc, stop_rules=("natural", "budget", "confidence"), give_up_threshold=0.5)


def test_sampling_does_not_depend_on_batch_layout(model):
  params, mc = model
  config = _config(mc, temperature=3.0, top_k=20)
  prompts = _prompts(seed=23, levels=(2, 3))
  whole = think_texts(params, TOK, prompts, config, seed=5)
  small = think_texts(params, TOK, prompts, config, seed=5, batch_size=4)
  assert [t.thinking for t in whole] == [t.thinking for t in small]
  other_seed = think_texts(params, TOK, prompts, config, seed=6)
  assert [t.thinking for t in whole] != [t.thinking for t in other_seed]
  # With a seed per prompt (a request's own identity), order does not matter either.
  seeds = list(range(100, 100 + len(prompts)))
  forward = think_texts(params, TOK, prompts, config, seed=seeds)
  backward = think_texts(params, TOK, prompts[::-1], config, seed=seeds[::-1], batch_size=5)
  assert [t.thinking for t in forward] == [t.thinking for t in backward[::-1]]


def test_per_request_settings_match_the_config_and_share_one_program(model):
  params, mc = model
  prompts = _prompts(seed=24, levels=(2,))
  greedy = _config(mc)
  hot = _config(mc, temperature=3.0, top_k=20)
  ref_greedy = think_texts(params, TOK, prompts, greedy, seed=1)
  ref_hot = think_texts(params, TOK, prompts, hot, seed=1)
  before = _think._cache_size()
  mixed = think_texts(params, TOK, prompts, greedy, seed=1,
                      temperature=[0.0, 3.0, 0.0], top_k=[0, 20, 0])
  assert [m.thinking for m in mixed] == [ref_greedy[0].thinking, ref_hot[1].thinking,
                                         ref_greedy[2].thinking]
  # Other prompts (another width within the bucket), other temperatures and thresholds:
  # no new compilation.
  think_texts(params, TOK, _prompts(seed=25, levels=(2,)), hot, seed=2,
              temperature=[0.5, 1.0, 2.0])
  assert _think._cache_size() == before
  with pytest.raises(ValueError, match="temperature"):
    think_texts(params, TOK, prompts, greedy, temperature=[0.0, -1.0, 0.0])
  with pytest.raises(ValueError, match="unknown per-request setting"):
    think_texts(params, TOK, prompts, greedy, temprature=1.0)


def test_any_of_several_eos_ids_ends_the_answer(model):
  params, mc = model
  prompts = _prompts(seed=26, levels=(1, 2))
  # Budget 0 (answers with no thinking), since every EOS id is also banned while thinking.
  plain = think_texts(params, TOK, prompts, _config(mc), budgets=0)
  # Declare the first character of the first answer an extra EOS id: that answer now ends
  # right there, finished; answers without that character are unchanged.
  extra = TOK.encode(plain[0].answer.strip())[0]
  config = _config(mc, eos_ids=(TOK.eos_id, extra))
  assert config.eos_ids == (TOK.eos_id, extra)
  out = think_texts(params, TOK, prompts, config, budgets=0)
  assert out[0].answer_tokens == 1 and out[0].finished
  unchanged = 0
  for a, b in zip(plain, out):
    if extra not in TOK.encode(a.answer):
      assert (b.answer, b.finished) == (a.answer, a.finished)
      unchanged += 1
    else:
      assert b.answer_tokens <= TOK.encode(a.answer).index(extra) + 1 and b.finished
  assert unchanged > 0


def test_readme_python_example_runs_and_answers_right(model, capsys):
  import pathlib
  readme = pathlib.Path(__file__).parent.parent.joinpath("README.md").read_text()
  blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
  assert blocks
  namespace = {}
  for block in blocks:  # one namespace: later blocks use what earlier ones defined
    exec(compile(block, "README.md", "exec"), namespace)
  printed = capsys.readouterr().out
  # The README states what its example prints: the answers must be right.
  expected = re.findall(r"^# prints: (.*)$", readme, re.M)
  assert len(expected) >= 3
  assert [line.strip() for line in printed.splitlines()] == [e.strip() for e in expected]
