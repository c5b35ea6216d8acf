"""A training run configured with data.split_key="canonical" never trains on a problem whose
canonical key is held out; the default "prompt" split does (so the check has power).

The rows are read back from the real packed pipeline (trainer.mixture_from ->
data.make_dataset), and the held-out decision is recomputed here from the prompt text alone
(sorted operands / sorted numbers, sha256 mod 10), independently of the task classes.
"""

import hashlib
import importlib.util
import os
import re

import numpy as np
import pytest

from o1jax.tasks.tokenizer import THINK_TEXT, CharTokenizer
from o1jax.training import data as data_lib
from o1jax.training import trainer

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ADDITION = re.compile(r"(\d+)\+(\d+)=")
_COUNTDOWN = re.compile(r"([\d ]+) to (\d+)")


def _config(split_key):
  spec = importlib.util.spec_from_file_location("tiny_cfg", os.path.join(_ROOT, "configs/tiny.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  # Levels 1-2, where permuted twins are common (issue 31): 80-90% of held-out prompts had one.
  c.data.tasks, c.data.difficulties = ("addition", "countdown"), (1, 2)
  c.train.batch_size, c.train.seq_len = 8, 160
  if split_key is not None:
    c.data.split_key = split_key
  return c


def _canonical_heldout(prompt: str) -> bool:
  """The canonical split's held-out test, written from the prompt text alone."""
  if m := _ADDITION.fullmatch(prompt):
    a, b = sorted(int(x) for x in m.groups())
    key = f"{a}+{b}="
  else:
    m = _COUNTDOWN.fullmatch(prompt)
    assert m, prompt
    key = f"{' '.join(sorted(m.group(1).split()))} to {m.group(2)}"
  return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10 == 0


def _trained_prompts(split_key, batches=12):
  config = _config(split_key)
  mixture = trainer.mixture_from(config)
  tok = CharTokenizer()
  ds = data_lib.make_dataset(mixture, config.train.batch_size, config.train.seq_len, pack=True)
  it = iter(ds)
  prompts = []
  for _ in range(batches):
    batch = next(it)
    for row, seg in zip(batch["inputs"], batch["inputs_segment_ids"]):
      for s in np.unique(seg[seg > 0]):
        text = tok.decode(row[seg == s], stop_at_eos=False)
        prompts.append(text[:text.index(THINK_TEXT)])
  it.close()
  return mixture, prompts


def test_canonical_split_never_trains_on_a_canonical_heldout_problem():
  mixture, prompts = _trained_prompts("canonical")
  assert mixture.split_key == "canonical"
  assert len(prompts) > 300
  leaked = [p for p in prompts if _canonical_heldout(p)]
  assert leaked == []


def test_prompt_split_does_train_on_canonical_heldout_problems():
  # Power: the default split (what every shipped checkpoint trained on) draws training
  # problems whose permuted twin, hence canonical key, is held out.
  mixture, prompts = _trained_prompts(None)
  assert mixture.split_key == "prompt"
  leaked = [p for p in prompts if _canonical_heldout(p)]
  assert len(leaked) >= 0.03 * len(prompts), (len(leaked), len(prompts))


def test_bad_split_key_is_refused_early():
  with pytest.raises(ValueError, match="split_key"):
    trainer.mixture_from(_config("canonicall"))


def _budget_sft_prompts(split_key):
  from o1jax.training import budget_prompt, budget_sft
  cfg = budget_sft.SFTConfig(tasks=("addition", "countdown"), difficulties=(1, 2),
                             num_examples=600, split_key=split_key)
  return [budget_prompt.parse_budget_prompt(e.prompt)[0] for e in budget_sft.make_examples(cfg)]


def test_budget_sft_draws_from_the_split_it_is_given():
  # Reasoner v3's budget stage (configs/budget_sft.py:v3) must not reintroduce the twins.
  assert [p for p in _budget_sft_prompts("canonical") if _canonical_heldout(p)] == []
  leaked = [p for p in _budget_sft_prompts("prompt") if _canonical_heldout(p)]
  assert len(leaked) >= 0.03 * 600, len(leaked)
  from o1jax.training import budget_sft
  with pytest.raises(ValueError, match="split_key"):
    budget_sft.SFTConfig(split_key="canon")
