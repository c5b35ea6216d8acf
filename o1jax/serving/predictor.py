"""Predicting a request's thinking from its prompt alone, for `spf` and `pools`.

A budget head (o1jax/model/heads.py, kind "budget") reads the final hidden state at `<think>`,
which the engine's prefill computes anyway, and predicts log(1 + thinking tokens). It is fit
here on the policy's own greedy thinking lengths over *training-split* problems (never the
held-out prompts a benchmark serves, and never a difficulty label), and shipped beside the
embedded checkpoint (`o1jax/checkpoints/tiny/heads/`).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.model.heads import HeadConfig, RewardModel, load_head, save_head
from o1jax.thinking import UNLIMITED, make_think_config, prepare_inputs, think_texts
from o1jax.thinking.controller import prefill
from o1jax.training import heads as heads_lib

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "checkpoints", "tiny",
                           "heads")


@functools.partial(jax.jit, static_argnames=("config",))
def _prompt_hidden(params, inputs, config):
  return prefill(params, inputs, config)[1]


def prompt_features(params, tokenizer, config, prompts, batch_size: int = 64) -> np.ndarray:
  """[N, embed] final hidden state at each prompt's `<think>` (what the engine's prefill
  gives the head)."""
  out = []
  for start in range(0, len(prompts), batch_size):
    chunk = list(prompts[start:start + batch_size])
    chunk += [chunk[0]] * (batch_size - len(chunk))
    inputs = prepare_inputs(tokenizer, chunk, config)
    out.append(np.asarray(_prompt_hidden(params, inputs, config.compile_key())))
  return np.concatenate(out)[:len(prompts)]


def fit_thinking_head(params, model_config, tokenizer, *, per_level: int = 32, seed: int = 0,
                      train: heads_lib.HeadTrainConfig = heads_lib.HeadTrainConfig(steps=600),
                      log=print):
  """Fits the budget head on greedy thinking lengths of training-split problems.

  Returns (head params, info with the fit's problem count and its error on a held-back 20%).
  """
  config = make_think_config(model_config, tokenizer)
  problems = [p for name in tasks_lib.TASKS for d in tasks_lib.get_task(name).difficulties
              for p in tasks_lib.get_task(name).generate_problems(seed, d, per_level,
                                                                  split="train")]
  prompts = [p.prompt for p in problems]
  log(f"fitting the thinking predictor on {len(prompts)} training-split prompts")
  thoughts = think_texts(params, tokenizer, prompts, config, budgets=UNLIMITED, batch_size=64)
  y = np.log1p([t.thinking_tokens for t in thoughts]).astype(np.float32)
  x = prompt_features(params, tokenizer, config, prompts)
  order = np.random.default_rng(seed).permutation(len(y))
  cut = int(0.8 * len(y))
  fit, held = order[:cut], order[cut:]
  head, _ = heads_lib.train_head(x[fit], y[fit], "budget", train)
  pred = np.expm1(np.maximum(heads_lib.predict(head, x[held], "budget"), 0))
  truth = np.expm1(y[held])
  info = {"problems": len(y), "held_back": len(held),
          "mean_abs_error_tokens": float(np.mean(np.abs(pred - truth))),
          "spearman": float(_spearman(pred, truth))}
  log(f"thinking predictor: mean abs error {info['mean_abs_error_tokens']:.1f} tokens, "
      f"rank correlation {info['spearman']:.2f} on {len(held)} held-back prompts")
  head, _ = heads_lib.train_head(x, y, "budget", train)  # final fit on everything
  return head, info


def _spearman(a, b) -> float:
  from scipy.stats import spearmanr
  return spearmanr(a, b).statistic


def save_thinking_head(directory: str, head, embed_dim: int, info: dict) -> None:
  hidden = int(np.shape(head["w1"])[1])
  save_head(directory, RewardModel(HeadConfig(embed_dim, hidden, "budget"), head), info)


def load_thinking_head(directory: str = SHIPPED_DIR):
  """The budget head saved by `save_thinking_head` (the shipped one by default)."""
  model, info = load_head(directory, "budget")
  return model.head, info
