"""GRPO's rollouts: G completions of each prompt, verified and laid out for the loss.

Two ways to decode them, with the same tokens:

- `sample_groups`: each prompt is prefilled once, and that one row is inserted into G
  decode slots of the serving engine (o1jax/serving/engine.py), each copy with its own PRNG
  key: a fork of one prefill, as search forks rows (o1jax/search/rows.py), never a
  re-prefill. The engine runs think()'s own step over its slots; when rows finish, their
  slots take the next rows of the queue (continuous batching), so the batch no longer
  decodes until its longest row ends.
- `sample_groups_in_one_batch` (the path before; the reference and the benchmark's
  baseline): one think() over all P * G rows, each prompt prefilled G times, every row
  carried until the longest one ends.

Row r = prompt * G + sample draws from `request_keys(seed, r)` on both paths, and a row's
tokens depend only on its prompt, controls and key (the engine's guarantee: a request
decodes as think() on it alone), so both give the same Rollouts token for token
(tests/test_rl_rollouts.py). Not bit for bit below that: XLA rounds a row's float32 logits
differently at another batch size (about 1e-6 here), so the sampler's log-probs agree to
that, and a draw at a near-tie could go the other way (either is a sample of the policy).
Budgets and minimums are per prompt; the controller carries them per row.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import numpy as np

from o1jax.serving.engine import Engine, Prefix, Request
from o1jax.rl import verifiers
from o1jax.tasks.base import Problem
from o1jax.thinking import (Phase, Segment, StopReason, ThinkConfig, decode_result,
                            prepare_inputs, request_keys, think)
from o1jax.thinking.controller import to_result
from o1jax.training import budget_prompt

TRUNCATED_REASONS = (int(StopReason.BUDGET), int(StopReason.CONTEXT))


@dataclasses.dataclass
class Rollouts:
  """A step's G completions per prompt, laid out for the loss ([N] host arrays, row =
  prompt * G + sample)."""
  prompts: list[str]
  answers: list[str]
  correct: np.ndarray
  thinking_tokens: np.ndarray
  stop_reason: np.ndarray
  truncated: np.ndarray
  tokens: np.ndarray        # [N, L] prompt + generated, padded
  loss_mask: np.ndarray     # [N, L-1] 1 where token t+1 was sampled by the policy
  thinking_ctx: np.ndarray  # [N, L-1] True where token t+1 was drawn while thinking
  generated: int            # tokens generated in all
  sampler_logp: np.ndarray | None = None  # [N, L-1] the sampler's log-prob of token t+1


@dataclasses.dataclass
class Schedule:
  """How `sample_groups` decoded a batch (what the benchmark and the tests read)."""
  slots: int
  prefilled: int      # prompts prefilled (padding rows of a prefill batch not counted)
  inserted: int       # rows inserted into slots
  rounds: int         # engine.generate calls
  steps: int          # decode steps run, each one forward over every slot
  refills: int        # rows inserted after the first round, into slots freed by finished rows


def group_prompts(problems: Sequence[Problem], targets: Sequence[int | None]) -> list[str]:
  """Each problem's prompt, budget-conditioned where a target is given."""
  if len(targets) != len(problems):
    raise ValueError(f"{len(targets)} targets for {len(problems)} problems")
  return [p.prompt if t is None else budget_prompt.with_budget(p.prompt, t)
          for p, t in zip(problems, targets)]


def _per_prompt(value, n: int, name: str) -> list:
  if isinstance(value, (list, tuple, np.ndarray)):
    if len(value) != n:
      raise ValueError(f"{name} has {len(value)} entries for {n} problems")
    return list(value)
  return [value] * n


def _controls(problems, targets, group_size, budget, min_thinking, temperature):
  if not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
  if not problems:
    raise ValueError("no problems given")
  n = len(problems)
  settings = {} if temperature is None else {"temperature": temperature}
  return (group_prompts(problems, targets), _per_prompt(budget, n, "budget"),
          _per_prompt(min_thinking, n, "min_thinking"), settings)


def _layout(problems, prompts, group_size: int, result, tokenizer, cache_len: int
            ) -> Rollouts:
  """Verifies every row of `result` (a host ThinkResult, row = prompt * G + sample) and lays
  out its tokens, loss mask and thinking context as the loss reads them."""
  rows = [i for i in range(len(problems)) for _ in range(group_size)]
  row_prompts = [prompts[i] for i in rows]
  thoughts = decode_result(result, tokenizer, row_prompts)
  correct = np.array([verifiers.verify_problem(problems[i], th.answer)
                      for i, th in zip(rows, thoughts)])
  n = len(rows)
  tokens = np.full((n, cache_len), tokenizer.pad_id, np.int32)
  loss_mask = np.zeros((n, cache_len - 1), np.float32)
  thinking_ctx = np.zeros((n, cache_len - 1), bool)
  sampler_logp = np.zeros((n, cache_len - 1), np.float32)
  prompt_ids = [list(tokenizer.encode_prompt(p)) for p in prompts]
  for b, i in enumerate(rows):
    p, g = len(prompt_ids[i]), int(result.num_generated[b])
    tokens[b, :p] = prompt_ids[i]
    tokens[b, p:p + g] = result.tokens[b, :g]
    seg = result.segments[b, :g]
    sampled = (seg == Segment.THINKING) | (seg == Segment.ANSWER)
    close = np.flatnonzero(seg == Segment.CLOSE)
    natural_close = close[:1] if result.stop_reason[b] == StopReason.NATURAL else close[:0]
    sampled[natural_close] = True  # the model's own </think>; forced closes stay masked
    drawn_thinking = seg == Segment.THINKING
    drawn_thinking[natural_close] = True
    loss_mask[b, p - 1:p - 1 + g] = sampled   # logits at t predict token t + 1
    thinking_ctx[b, p - 1:p - 1 + g] = drawn_thinking
    sampler_logp[b, p - 1:p - 1 + g] = result.logprobs[b, :g]
  stop = result.stop_reason[:n].astype(np.int32)
  return Rollouts(prompts=row_prompts, answers=[t.answer for t in thoughts],
                  correct=correct, thinking_tokens=result.thinking_tokens[:n].astype(np.int64),
                  stop_reason=stop, truncated=np.isin(stop, TRUNCATED_REASONS),
                  tokens=tokens, loss_mask=loss_mask, thinking_ctx=thinking_ctx,
                  generated=int(result.num_generated[:n].sum()), sampler_logp=sampler_logp)


# ---- the engine path -----------------------------------------------------------------------

def default_slots(rows: int, group_size: int) -> int:
  """Decode slots when none are asked for: half the rows (at least one group), so finished
  rows have queued rows to take their slots."""
  return max(group_size, -(-rows // 2))


@functools.partial(jax.jit, static_argnames=("config",))
def _slot_results(state, config: ThinkConfig):
  """Every slot's phase and its row of think()'s result (whatever fields ThinkResult has)."""
  return state.phase, to_result(state, config)


def _keyed(prefix: Prefix, key) -> Prefix:
  """The prefilled row with its PRNG key replaced: one copy of a fork (the KV cache and the
  controller are shared; insert copies them into the slot)."""
  keys = prefix.state.keys.at[prefix.row].set(key)
  return dataclasses.replace(prefix, state=prefix.state.replace(keys=keys))


def decode_groups(engine: Engine, requests: Sequence[Request], group_size: int, keys
                  ) -> tuple[Any, Schedule]:
  """Decodes G rows of each request on `engine` (its slots free), row r = request * G + g
  with PRNG key `keys[r]`. Each request is prefilled once, when its first row gets a slot;
  its prefill is inserted into a slot per row (fork) and dropped after its last row. Rows
  that finish free their slots for the next rows. Returns (host ThinkResult [N], Schedule).
  """
  n_rows = len(requests) * group_size
  free = list(range(engine.slots))[::-1]   # pop() hands out slot 0 first
  live: dict[int, int] = {}                # slot -> row
  prefixes: dict[int, Prefix] = {}
  sched = Schedule(slots=engine.slots, prefilled=0, inserted=0, rounds=0, steps=0, refills=0)
  out, next_row = None, 0
  config = engine.config.compile_key()
  while next_row < n_rows or live:
    if free and next_row < n_rows:
      take = range(next_row, min(n_rows, next_row + len(free)))
      new = sorted({r // group_size for r in take} - prefixes.keys())
      if new:  # the prompts starting now, in one prefill call
        prefixes.update(zip(new, engine.prefill_batch([requests[i] for i in new])))
        sched.prefilled += len(new)
      for r in take:
        slot = free.pop()
        engine.insert(_keyed(prefixes[r // group_size], keys[r]), slot)
        live[slot] = r
        if r % group_size == group_size - 1:
          del prefixes[r // group_size]     # its last row is in: its prefill is done with
      sched.inserted += len(take)
      sched.refills += len(take) if sched.rounds else 0
      next_row = take.stop
    # With rows still queued, hand control back as soon as a row finishes (its slot is
    # refilled at once); with none, decode to the end in one call. Every row ends within
    # cache_len steps.
    sched.steps += engine.generate(engine.config.cache_len,
                                   return_on_finish=next_row < n_rows)
    sched.rounds += 1
    phase, result = jax.device_get(_slot_results(engine.state, config))
    if out is None:
      out = jax.tree.map(lambda a: np.zeros((n_rows,) + a.shape[1:], a.dtype), result)
    done = [s for s in live if phase[s] == Phase.DONE]
    rows = [live.pop(s) for s in done]
    # A finished slot is DONE already (what engine.free would set): it takes the next row.
    free.extend(done)
    for o, a in zip(jax.tree.leaves(out), jax.tree.leaves(result)):
      o[rows] = a[done]
  return out, sched


def sample_groups_with_schedule(params, tokenizer, think_config: ThinkConfig,
                                problems: Sequence[Problem], targets: Sequence[int | None],
                                group_size: int, budget, seed: int,
                                temperature: float | None = None, *, min_thinking=0,
                                slots: int | None = None, mesh=None, first_row: int = 0
                                ) -> tuple[Rollouts, Schedule]:
  """`sample_groups`, also returning how the engine scheduled the rows."""
  prompts, budgets, mins, settings = _controls(problems, targets, group_size, budget,
                                               min_thinking, temperature)
  n_rows = len(prompts) * group_size
  # Every prompt and control checked before any compute, as think_texts does.
  prepare_inputs(tokenizer, prompts, think_config, budgets, mins, **settings)
  slots = default_slots(n_rows, group_size) if slots is None else slots
  if not isinstance(slots, int) or slots < 1:
    raise ValueError(f"slots must be a positive integer, got {slots!r}")
  engine = Engine(params, tokenizer, think_config, min(slots, n_rows), mesh=mesh)
  requests = [Request(p, budget=b, min_thinking=m, settings=settings)
              for p, b, m in zip(prompts, budgets, mins)]
  result, sched = decode_groups(engine, requests, group_size,
                                request_keys(seed, first_row + np.arange(n_rows)))
  return _layout(problems, prompts, group_size, result, tokenizer,
                 think_config.cache_len), sched


def sample_groups(params, tokenizer, think_config: ThinkConfig, problems: Sequence[Problem],
                  targets: Sequence[int | None], group_size: int, budget, seed: int,
                  temperature: float | None = None, *, min_thinking=0,
                  slots: int | None = None, mesh=None, first_row: int = 0) -> Rollouts:
  """`group_size` completions of each problem (budget-conditioned prompts where a target is
  given), verified, with the token layout the loss reads. `budget` and `min_thinking`:
  thinking tokens, one value or one per problem. Decoded by `decode_groups` on `slots`
  engine slots (default: `default_slots`); `mesh`: the engine's mesh (slots split over its
  batch axes). These rows are rows [first_row, first_row + N) of the step's batch: a row's
  PRNG key is that of its batch row, so it samples the same whichever process samples it
  (grpo_train.py)."""
  return sample_groups_with_schedule(params, tokenizer, think_config, problems, targets,
                                     group_size, budget, seed, temperature,
                                     min_thinking=min_thinking, slots=slots, mesh=mesh,
                                     first_row=first_row)[0]


# ---- the one-batch path (before; the reference) --------------------------------------------

def sample_groups_in_one_batch(params, tokenizer, think_config: ThinkConfig,
                               problems: Sequence[Problem], targets: Sequence[int | None],
                               group_size: int, budget, seed: int,
                               temperature: float | None = None, *, min_thinking=0
                               ) -> Rollouts:
  """`sample_groups` by one think() over all P * G rows: every row prefills its prompt and
  the batch decodes until its longest row ends."""
  prompts, result = think_groups(params, tokenizer, think_config, problems, targets,
                                 group_size, budget, seed, temperature,
                                 min_thinking=min_thinking)
  return _layout(problems, prompts, group_size, result, tokenizer, think_config.cache_len)


def think_groups(params, tokenizer, think_config: ThinkConfig, problems: Sequence[Problem],
                 targets: Sequence[int | None], group_size: int, budget, seed: int,
                 temperature: float | None = None, *, min_thinking=0):
  """(prompts, host ThinkResult [P * G]) of the one-batch path, before verification."""
  prompts, budgets, mins, settings = _controls(problems, targets, group_size, budget,
                                               min_thinking, temperature)
  rows = [i for i in range(len(prompts)) for _ in range(group_size)]
  pick = lambda xs: [xs[i] for i in rows]
  inputs = prepare_inputs(tokenizer, pick(prompts), think_config, pick(budgets), pick(mins),
                          **settings)
  inputs = inputs.replace(request_key=request_keys(seed, np.arange(len(rows))))
  return prompts, jax.tree.map(np.asarray, think(params, inputs, think_config))
