"""Rollouts for reasoning training: sample with think(), lay out tokens, read hidden states.

STaR, the process reward model and the confidence/budget heads all need the same few things:
many sampled solutions (`sample_rollouts`), continuations from a thinking prefix
(`continue_thinking`), greedy answers forced at a prefix (`forced_answers`, what a
confidence probe computes), where each step ends in the token sequence (`layout`) and the
policy's final hidden states there (`hidden_at`). Shapes are bucketed (batch padded to a
fixed size, widths rounded up to 16) so a whole experiment compiles a handful of programs.

Every function takes the `tokenizer` the policy was trained with (the character tokenizer by
default, an `o1jax.hf.HFTokenizer` for a Hugging Face model): nothing here assumes one token
per character except where a docstring says so.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from o1jax import tasks as tasks_lib
from o1jax.model.cache import KVCache
from o1jax.model.decode import decode_step, prefill
from o1jax.model.transformer import forward
from o1jax.tasks.base import Problem
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import UNLIMITED, ThinkConfig, parse_budget, think_texts
from o1jax.thinking.api import Thought

# The default tokenizer (the embedded reasoner's); kept under its old name for callers.
TOK = CharTokenizer()
STEP_DELIMITER = ";"
SEMI_ID = TOK.encode(STEP_DELIMITER)[0]  # the character tokenizer's delimiter id (tests use it)


def tokenizer_or_default(tokenizer):
  """`tokenizer`, or the character tokenizer when None."""
  return TOK if tokenizer is None else tokenizer


@functools.lru_cache(maxsize=8)
def step_delimiter_ids(tokenizer) -> frozenset[int]:
  """Every token whose text contains the step delimiter ";": one id for the character
  tokenizer; a BPE vocabulary also has it inside longer tokens ("; ", "=3;")."""
  found = frozenset(i for i in range(tokenizer.vocab_size)
                    if STEP_DELIMITER in tokenizer.decode([i], stop_at_eos=False))
  if not found:
    raise ValueError(f"no token of the vocabulary contains the step delimiter "
                     f"{STEP_DELIMITER!r}")
  return found


def _bucket(n: int, multiple: int = 16) -> int:
  return -(-max(n, 1) // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class Rollout:
  """One sampled solution of `problem` (sampled from `prompt`, which may carry a hint)."""
  problem: Problem
  prompt: str
  thinking: str
  answer: str
  correct: bool
  thinking_tokens: int
  stop_reason: str

  @property
  def text(self) -> str:
    """The training text with the problem's own prompt: never the hinted one."""
    return f"{self.problem.prompt}<think>{self.thinking}</think>{self.answer.strip()}"


def verify(problem: Problem, answer: str) -> bool:
  return tasks_lib.get_task(problem.task).verify(problem, answer)


def continue_thinking(params, config: ThinkConfig, prompts: Sequence[str],
                      prefixes: Sequence[str] | None = None, *, seed: int = 0,
                      batch_size: int = 64, heads=None, budgets=None,
                      min_thinking=0, tokenizer=None) -> list[Thought]:
  """think() from `prompt<think>prefix` for each pair; the Thought's thinking excludes the
  prefix. This is `think_texts` (its batching, validation and request keys: prompt i
  samples from `request_keys(seed, i)`) with a fixed batch size, the last batch padded, so
  sweeps reuse one compiled program; budgets default to unlimited."""
  prompts = list(prompts)
  prefixes = [""] * len(prompts) if prefixes is None else list(prefixes)
  if len(prefixes) != len(prompts):
    raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
  if not prompts:
    return []
  tok = tokenizer_or_default(tokenizer)
  budgets = [UNLIMITED] * len(prompts) if budgets is None else list(budgets)
  if len(budgets) != len(prompts):
    raise ValueError(f"{len(budgets)} budgets for {len(prompts)} prompts")
  # A budget beyond what the context leaves is capped by the context, as think() caps it
  # (the cap and its CONTEXT stop reason are the same as for an unlimited budget); a
  # head-set budget in a sweep may exceed it, which prepare_inputs would refuse.
  room = lambda p, x: config.cache_len - len(tok.encode_prompt(p)) - len(tok.encode(x)) - (
      config.reserve)
  budgets = [UNLIMITED if b > room(p, x) else b
             for b, p, x in zip(map(parse_budget, budgets), prompts, prefixes)]
  return think_texts(params, tok, prompts, config, budgets=budgets, min_thinking=min_thinking,
                     seed=seed, batch_size=batch_size, heads=heads, prefixes=prefixes)


def sample_rollouts(params, config: ThinkConfig, problems: Sequence[Problem], samples: int, *,
                    prompts: Sequence[str] | None = None, seed: int = 0, batch_size: int = 64,
                    min_thinking: int = 0, heads=None, tokenizer=None) -> list[list[Rollout]]:
  """`samples` solutions per problem (from `prompts[i]` if given, e.g. with a hint);
  [problem][sample]. Each rollout is verified against its problem."""
  prompts = [p.prompt for p in problems] if prompts is None else list(prompts)
  flat = [i for i in range(len(problems)) for _ in range(samples)]
  thoughts = continue_thinking(params, config, [prompts[i] for i in flat], seed=seed,
                               batch_size=batch_size, heads=heads, min_thinking=min_thinking,
                               tokenizer=tokenizer)
  out: list[list[Rollout]] = [[] for _ in problems]
  for i, th in zip(flat, thoughts):
    p = problems[i]
    out[i].append(Rollout(p, prompts[i], th.thinking, th.answer, verify(p, th.answer),
                          th.thinking_tokens, th.stop_reason))
  return out


@dataclasses.dataclass(frozen=True)
class Layout:
  """Token ids of `prompt<think>thinking</think>answer<eos>` and where things are in them."""
  ids: tuple[int, ...]
  think_at: int                  # index of <think>: the prompt's last context token
  end_think_at: int              # index of </think>
  steps: tuple[str, ...]         # the non-empty steps, stripped
  step_ends: tuple[int, ...]     # per step, the index of its delimiter (";" or "</think>")
  eos_at: int                    # index of EOS: the ORM reads the state after the answer


def layout(prompt: str, thinking: str, answer: str = "", tokenizer=None) -> Layout:
  """Splits the thinking on ";" in token space: a step ends at every token holding the
  delimiter (the char tokenizer's one ";" token; with BPE, text a delimiter token carries
  before its ";" belongs to the step it ends). Empty segments are not steps. The last step
  ends at `</think>`."""
  tok = tokenizer_or_default(tokenizer)
  head = tok.encode_prompt(prompt)
  body = tok.encode(thinking)
  ids = head + body + [tok.end_think_id] + tok.encode(answer.strip()) + [tok.eos_id]
  steps, ends, seg_start = [], [], 0
  delims = step_delimiter_ids(tok)
  cuts = [i for i, t in enumerate(body) if t in delims] + [len(body)]
  for cut in cuts:
    step = tok.decode(body[seg_start:cut + 1], stop_at_eos=False)
    if cut < len(body):  # drop the delimiter and what its token carries after it
      step = step.rsplit(STEP_DELIMITER, 1)[0]
    step = step.strip()
    if step:
      steps.append(step)
      ends.append(len(head) + cut)  # for the last segment: the </think> index
    seg_start = cut + 1
  return Layout(tuple(ids), len(head) - 1, len(head) + len(body), tuple(steps), tuple(ends),
                len(ids) - 1)


@functools.partial(jax.jit, static_argnames=("model_config",))
def _final_hidden(params, tokens, positions, model_config):
  return forward(params, tokens, positions, None, model_config)[1]


def hidden_at(params, model_config, id_seqs: Sequence[Sequence[int]],
              positions: Sequence[Sequence[int]], batch_size: int = 64,
              tokenizer=None) -> list[np.ndarray]:
  """The trunk's final hidden states [len(positions[i]), E] at those indices of each
  sequence: one causal forward per batch, so a state depends only on tokens up to it
  (what the thinking loop has at that point)."""
  out: list[np.ndarray] = []
  for start in range(0, len(id_seqs), batch_size):
    chunk = [list(s) for s in id_seqs[start:start + batch_size]]
    n = len(chunk)
    chunk += [chunk[0]] * (batch_size - n)
    width = _bucket(max(len(s) for s in chunk))
    tokens = tokenizer_or_default(tokenizer).pad_batch(chunk, width)
    lengths = np.array([len(s) for s in chunk])
    pos = np.where(np.arange(width)[None] < lengths[:, None], np.arange(width)[None], -1)
    hidden = np.asarray(_final_hidden(params, jnp.asarray(tokens), jnp.asarray(pos, jnp.int32),
                                      model_config))
    for b in range(n):
      out.append(hidden[b, np.asarray(positions[start + b], np.int64)])
  return out


def forced_answers(params, model_config, contexts: Sequence[Sequence[int]],
                   max_answer_tokens: int = 12, batch_size: int = 64, tokenizer=None
                   ) -> tuple[list[str], np.ndarray]:
  """Greedy answers after each context (which ends in `</think>`), and each answer's mean
  greedy-token probability: the confidence probe's estimate, computed offline."""
  tok = tokenizer_or_default(tokenizer)
  eos_ids = np.asarray(getattr(tok, "eos_ids", (tok.eos_id,)))
  texts: list[str] = []
  probs: list[float] = []
  # Answer token t is fed back at position len(context) + t; the last one fed is t = A - 1.
  need = max(len(c) for c in contexts) + max_answer_tokens
  if need > model_config.max_seq_len:
    raise ValueError(f"a context needs {need} positions; the model has "
                     f"{model_config.max_seq_len}")
  cache_len = min(_bucket(need), model_config.max_seq_len)
  for start in range(0, len(contexts), batch_size):
    chunk = [list(c) for c in contexts[start:start + batch_size]]
    n = len(chunk)
    chunk += [chunk[0]] * (batch_size - n)
    lengths = np.array([len(c) for c in chunk], np.int32)
    tokens = tok.pad_batch(chunk, _bucket(int(lengths.max())))
    cache = KVCache.init(model_config, batch_size, cache_len)
    logits, _, cache = prefill(params, jnp.asarray(tokens), jnp.asarray(lengths), cache,
                               config=model_config)
    pos = jnp.asarray(lengths)
    done = np.zeros(batch_size, bool)
    out = np.full((batch_size, max_answer_tokens), tok.pad_id, np.int32)
    psum, plen = np.zeros(batch_size), np.zeros(batch_size)
    for t in range(max_answer_tokens):
      p = np.asarray(jax.nn.softmax(logits, -1))
      token = p.argmax(-1)
      live = ~done
      out[live, t] = token[live]
      psum += np.where(live, p.max(-1), 0.0)
      plen += live
      done |= np.isin(token, eos_ids)
      if done.all():
        break
      logits, _, cache = decode_step(params, jnp.asarray(token, jnp.int32), pos, cache,
                                     config=model_config)
      pos = pos + 1
    texts += [tok.decode(row) for row in out[:n]]
    probs += list(psum[:n] / np.maximum(plen[:n], 1))
  return texts, np.asarray(probs)
