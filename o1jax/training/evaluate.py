"""Exact-answer accuracy of greedy generation, per task and difficulty."""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.model.config import ModelConfig
from o1jax.model.decode import greedy_decode
from o1jax.tasks.tokenizer import CharTokenizer, END_THINK_TEXT, THINK_TEXT


def context_text(prompt: str, with_thinking: bool = True) -> str:
  """What the model is given: the prompt and `<think>`, closed at once for no thinking."""
  return prompt + THINK_TEXT + ("" if with_thinking else END_THINK_TEXT)


def generate_texts(params, config: ModelConfig, contexts: Sequence[str], max_new_tokens: int,
                   batch_size: int = 64) -> list[str]:
  """Greedy continuations of each context (decoded, EOS stripped)."""
  tok = CharTokenizer()
  out: list[str] = []
  for start in range(0, len(contexts), batch_size):
    chunk = [tok.encode(c) for c in contexts[start:start + batch_size]]
    lengths = np.array([len(c) for c in chunk], np.int32)
    width = int(lengths.max())
    # Pad the batch to a fixed size so every chunk reuses one compiled step.
    rows = chunk + [chunk[0]] * (batch_size - len(chunk))
    lens = np.concatenate([lengths, np.full(batch_size - len(chunk), lengths[0], np.int32)])
    tokens, _ = greedy_decode(params, config, tok.pad_batch(rows, width), lens, max_new_tokens,
                              tok.eos_id, cache_len=config.max_seq_len)
    out += [tok.decode(t) for t in tokens[: len(chunk)]]
  return out


def accuracy_table(problems: Mapping[tuple[str, int], Sequence[tasks_lib.Problem]],
                   generate: Callable[[list[str]], list[str]],
                   with_thinking: bool = True) -> dict[str, float]:
  """{"task/d": accuracy} plus "mean"; `generate` maps contexts to continuations."""
  keys = list(problems)
  flat = [(k, p) for k in keys for p in problems[k]]
  texts = generate([context_text(p.prompt, with_thinking) for _, p in flat])
  correct: dict[tuple[str, int], list[bool]] = {k: [] for k in keys}
  for (k, p), text in zip(flat, texts):
    correct[k].append(tasks_lib.get_task(p.task).verify(p, text))
  table = {f"{t}/{d}": float(np.mean(v)) for (t, d), v in correct.items()}
  table["mean"] = float(np.mean([np.mean(v) for v in correct.values()]))
  return table


def evaluate(params, config: ModelConfig, problems, with_thinking: bool = True,
             batch_size: int = 64) -> dict[str, float]:
  max_new = config.max_seq_len - max(
      len(CharTokenizer().encode(context_text(p.prompt, with_thinking)))
      for ps in problems.values() for p in ps)
  gen = lambda contexts: generate_texts(params, config, contexts, max_new, batch_size)
  return accuracy_table(problems, gen, with_thinking)
