"""Test-time search strategies over the compiled thinking loop.

* `sample` (best-of-N family): N independent solutions per problem, each scored at every
  step end by the PRM and at EOS by the ORM while it is decoded; majority vote, best-of-N
  and the score-weighted vote are then choices among the same N (`select.choose`).
* `beam`: step-level beam search (search-and-learn's semantics): N rows per problem; after
  each step the PRM scores every row, finished solutions are set aside (they take no slot),
  and the best N / M live paths refill the N rows. It ends once N solutions are set aside.
* `dvts`: N / M independent subtrees of width M, each continuing its own best candidate,
  and ending when that best candidate is finished (diverse verifier tree search).
* backtracking (beam and dvts, `backtrack_threshold > 0`): when every candidate of a beam
  scores under the threshold, the beam backs up to the latest earlier step its PRM still
  trusted (score >= threshold; else the start of thinking) and resamples from there, at most
  `max_backtracks` times per beam.
The per-round decisions are `tree.py`'s (pure, tested on constructed score tables).

Rows of one batch hold several problems; a fork copies KV rows by gather. Every row is keyed
from its problem's key and its place in the search tree (never its batch row), so results
do not depend on batch layout, and every tie breaks by that tree order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np

from o1jax.model.config import ModelConfig
from o1jax.search import compute as compute_lib
from o1jax.search import rows as rows_lib
from o1jax.search import tree
from o1jax.search.select import Candidate, aggregate
from o1jax.thinking.api import prepare_inputs
from o1jax.thinking.config import Phase, StopReason, ThinkConfig
from o1jax.thinking.state import Segment, fill_settings, request_keys

STRATEGIES = ("sample", "beam", "dvts")

# (problem index, the path's steps so far, whether the newest step ended the thinking) ->
# P(the newest step is good): a scorer run on the host, e.g. a task's exact step checker or
# a PRM on a separate trunk (search/scorers.py).
HostScorer = Callable[[int, Sequence[str], bool], float]


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  strategy: str = "beam"
  n: int = 16                     # rows per problem: samples, or candidates per round
  beam_width: int = 4             # M: candidates each kept beam expands into
  aggregate: str = "last"         # path score for keeping beams (search-and-learn: last)
  backtrack_threshold: float = 0.0  # 0: off
  max_backtracks: int = 2         # per beam
  temperature: float = 1.0         # the thinking's
  # The answer's (after `</think>`): 0 answers each searched path greedily, so a path is
  # judged by its reasoning, not by a noisy last draw; None: at `temperature`.
  answer_temperature: float | None = 0.0
  delimiter: str = ";"            # the step delimiter string
  # Step records per row. None: as many as a row can end (a step holds a token and its
  # delimiter, so cache_len // 2 + 1), so no step goes unscored; a smaller value is a
  # memory cap, and a path that ends more steps is refused (ValueError), never cut.
  max_steps: int | None = None
  max_rounds: int = 512
  rows_per_batch: int = 256       # problems are packed n rows each into batches this size
  seed: int = 0

  def __post_init__(self):
    problems = []
    if self.strategy not in STRATEGIES:
      problems.append(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
    if self.n < 1:
      problems.append(f"n must be >= 1, got {self.n}")
    if self.strategy != "sample" and (self.beam_width < 1 or self.n % self.beam_width):
      problems.append(f"n ({self.n}) must be a multiple of beam_width ({self.beam_width})")
    if not 0.0 <= self.backtrack_threshold < 1.0:
      problems.append(f"backtrack_threshold must be in [0, 1), got {self.backtrack_threshold}")
    if (self.max_backtracks < 0 or (self.max_steps is not None and self.max_steps < 1)
        or self.max_rounds < 1):
      problems.append("max_backtracks must be >= 0, max_steps and max_rounds >= 1")
    if self.temperature < 0:
      problems.append(f"temperature must be >= 0, got {self.temperature}")
    if self.answer_temperature is not None and self.answer_temperature < 0:
      problems.append(f"answer_temperature must be >= 0 or None, got {self.answer_temperature}")
    if not self.delimiter:
      problems.append("delimiter must be a non-empty string")
    if problems:
      raise ValueError("invalid SearchConfig: " + "; ".join(problems))


@dataclasses.dataclass
class SearchResult:
  candidates: list[list[Candidate]]   # per problem: its finished solutions, in tree order
  compute: list[compute_lib.Compute]  # per problem
  backtracks: list[int]               # per problem


def delimiter_ids(tokenizer, delimiter: str) -> tuple[int, ...]:
  """Every token id whose text contains the delimiter: a step ends at any of them (a BPE
  vocabulary also has the delimiter inside longer tokens, e.g. ".\n\n")."""
  found = tuple(i for i in range(tokenizer.vocab_size)
                if delimiter in tokenizer.decode([i], stop_at_eos=False))
  if not found:
    raise ValueError(f"no token of the vocabulary contains the step delimiter {delimiter!r}")
  return found


def search(params, tokenizer, prompts: Sequence[str], think_config: ThinkConfig,
           cfg: SearchConfig, *, heads=None, host_scorer: HostScorer | None = None,
           budgets=None, min_thinking=0) -> SearchResult:
  """Runs `cfg.strategy` on every prompt. `heads`: {"prm": head, "orm": head} on the
  policy's own hidden states (either may be missing); `host_scorer` replaces the PRM head
  (its scores drive beam selection and backtracking). Problem i's rows are keyed from
  `request_keys(cfg.seed, i)`."""
  prompts = list(prompts)
  if not prompts:
    raise ValueError("no prompts given")
  if host_scorer is not None and heads is not None and "prm" in heads:
    raise ValueError("give either heads['prm'] or host_scorer as the step scorer, not both "
                     "(the ORM head may stay in heads)")
  rows_lib.check_config(think_config)   # speculative decoding and KV eviction: refused
  budgets = budgets if budgets is not None else [None] * len(prompts)
  budgets = list(budgets) if isinstance(budgets, (list, tuple, np.ndarray)) else (
      [budgets] * len(prompts))
  mins = list(min_thinking) if isinstance(min_thinking, (list, tuple, np.ndarray)) else (
      [min_thinking] * len(prompts))
  # Validate every prompt and control before any compute.
  width = int(prepare_inputs(tokenizer, prompts, think_config, budgets, mins).tokens.shape[1])
  delims = delimiter_ids(tokenizer, cfg.delimiter)
  per_batch = max(1, cfg.rows_per_batch // cfg.n)
  result = SearchResult([], [], [])
  for start in range(0, len(prompts), per_batch):
    ids = list(range(start, min(start + per_batch, len(prompts))))
    chunk = _Chunk(params, tokenizer, prompts, ids, per_batch, width, think_config, cfg,
                   heads, host_scorer, budgets, mins, delims)
    chunk.run()
    result.candidates += chunk.candidates
    result.compute += chunk.compute
    result.backtracks += chunk.backtracks
  return result


class _Chunk:
  """One batch of problems, n rows each, searched together."""

  def __init__(self, params, tokenizer, prompts, ids, per_batch, width, think_config, cfg,
               heads, host_scorer, budgets, mins, delims):
    self.params, self.tok, self.cfg, self.heads = params, tokenizer, cfg, heads
    self.host_scorer, self.delims, self.ids = host_scorer, delims, ids
    self.model: ModelConfig = think_config.model
    self.think_config = think_config
    padded = ids + [ids[0]] * (per_batch - len(ids))   # one batch shape for every chunk
    inputs = prepare_inputs(tokenizer, [prompts[i] for i in padded], think_config,
                            [budgets[i] for i in padded], [mins[i] for i in padded],
                            width=width, temperature=cfg.temperature,
                            answer_temperature=cfg.answer_temperature)
    inputs = inputs.replace(request_key=request_keys(cfg.seed, np.asarray(padded)))
    self.inputs = fill_settings(inputs, think_config)
    self.prompt_lengths = np.asarray(self.inputs.lengths)
    self.live_problems = len(ids)
    self.n, self.total_rows = cfg.n, per_batch * cfg.n
    self.max_steps = cfg.max_steps or think_config.cache_len // 2 + 1
    self.live = np.zeros(self.total_rows, bool)   # rows the last round advanced
    self.candidates = [[] for _ in ids]
    self.compute = [compute_lib.Compute() for _ in ids]
    self.backtracks = [0 for _ in ids]
    self.host_scores = [[] for _ in range(self.total_rows)]   # host scorer's mirror

  # --- device calls -------------------------------------------------------------------
  def _advance(self, rows, parent, salt, restore, retire, pause):
    return rows_lib.advance(
        rows, self.params, np.asarray(parent, np.int32), np.asarray(salt, np.int32),
        np.asarray(restore, np.int32), np.asarray(retire, bool),
        self.heads, config=self.think_config.compile_key(),
        delimiter_ids=self.delims, pause_at_step_end=pause,
        max_tokens=self.think_config.cache_len)

  def _read(self, rows) -> dict:
    """Host copies of what a round decides on; host-scored steps filled in (and their
    forwards' cost, per row, in `scorer_tokens` / `scorer_flops`)."""
    s = rows.state
    out = {k: np.asarray(v) for k, v in dict(
        phase=s.phase, tokens=s.tokens, segments=s.segments, num_generated=s.num_generated,
        thinking_tokens=s.thinking_tokens, stop_reason=s.stop_reason,
        num_steps=rows.num_steps, step_scores=rows.step_scores, final_score=rows.final_score,
        decoded=rows.decoded, refed=rows.refed, position=s.position).items()}
    over = np.flatnonzero(self.live & (out["num_steps"] > self.max_steps))
    if len(over):
      raise ValueError(
          f"a searched path ended {int(out['num_steps'][over[0]])} steps, more than "
          f"SearchConfig.max_steps={self.max_steps} records: its later steps cannot be "
          "scored; raise max_steps or leave it None (sized from the cache)")
    out["scorer_tokens"] = np.zeros(self.total_rows, np.int64)
    out["scorer_flops"] = np.zeros(self.total_rows, np.float64)
    cost = getattr(self.host_scorer, "forward_cost", None)
    scores = []
    for r in range(self.total_rows):
      steps_now = int(out["num_steps"][r])
      if self.host_scorer is None:
        scores.append(list(out["step_scores"][r, :steps_now]))
        continue
      mirror = self.host_scores[r][:steps_now]
      if len(mirror) < steps_now and self.live[r]:
        steps = self._steps(out, r)
        closed = out["phase"][r] != Phase.THINKING   # its last step ended at the close
        for k in range(len(mirror), steps_now):
          args = (self.ids[r // self.n], steps[:k + 1], bool(closed and k == steps_now - 1))
          mirror.append(float(self.host_scorer(*args)))
          if cost is not None:
            tokens, flops = cost(*args)
            out["scorer_tokens"][r] += tokens
            out["scorer_flops"][r] += flops
      self.host_scores[r] = mirror
      scores.append(list(mirror))
    out["scores"] = scores
    return out

  def _steps(self, out, r) -> list[str]:
    thinking = self._thinking(out, r)
    return [x.strip() for x in thinking.split(self.cfg.delimiter) if x.strip()]

  def _thinking(self, out, r) -> str:
    n = out["num_generated"][r]
    toks, segs = out["tokens"][r, :n], out["segments"][r, :n]
    return self.tok.decode(toks[segs == Segment.THINKING], stop_at_eos=False)

  def _candidate(self, out, r, index) -> Candidate:
    n = out["num_generated"][r]
    toks, segs = out["tokens"][r, :n], out["segments"][r, :n]
    return Candidate(index=index, thinking=self._thinking(out, r),
                     answer=self.tok.decode(toks[segs == Segment.ANSWER]),
                     step_scores=tuple(float(x) for x in out["scores"][r]),
                     final_score=float(out["final_score"][r]),
                     thinking_tokens=int(out["thinking_tokens"][r]),
                     tokens=int(out["num_generated"][r]),
                     stop_reason=StopReason(int(out["stop_reason"][r])).name.lower())

  def _charge(self, out, problem_rows, p, steps_before):
    """Adds problem p's round: what its live rows decoded and re-fed, each token at its
    row's own mean context over the round, the PRM reads of the steps they ended, the ORM
    reads of the answers they finished, and a host scorer's forwards. Only the problem's
    own live rows count, so the sum never depends on the batch layout."""
    rows = [r for r in problem_rows if self.live[r]]
    total = compute_lib.Compute()
    for r in rows:
      decoded, refed = int(out["decoded"][r]), int(out["refed"][r])
      evals = 0 if np.isnan(out["final_score"][r]) else 1
      if self.host_scorer is None:
        evals += max(len(out["scores"][r]) - int(steps_before[r]), 0)
      total = total.add(compute_lib.count(
          self.model, generated=decoded, prompt=0, refed=refed, evaluations=evals,
          mean_context=float(out["position"][r]) - decoded / 2,
          scorer_tokens=int(out["scorer_tokens"][r]),
          scorer_flops=float(out["scorer_flops"][r])))
    self.compute[p] = self.compute[p].add(total)

  # --- strategies ---------------------------------------------------------------------
  def run(self):
    cfg, n = self.cfg, self.n
    rows = rows_lib.start(self.params, self.inputs, self.think_config.compile_key(),
                          self.max_steps)
    for p in range(len(self.ids)):
      self.compute[p] = compute_lib.count(self.model, generated=0,
                                          prompt=int(self.prompt_lengths[p]),
                                          mean_context=self.prompt_lengths[p] / 2)
    problem = np.repeat(np.arange(self.total_rows // n), n)
    child = np.tile(np.arange(n), self.total_rows // n)
    retire = problem >= self.live_problems
    self.live = ~retire
    rows = self._advance(rows, problem, child, np.full(self.total_rows, rows_lib.NO_RESTORE),
                         retire, pause=cfg.strategy != "sample")
    if cfg.strategy == "sample":
      out = self._read(rows)
      for p in range(self.live_problems):
        mine = np.arange(p * n, (p + 1) * n)
        self._charge(out, mine, p, np.zeros(self.total_rows, np.int64))
        self.candidates[p] = [self._candidate(out, r, j) for j, r in enumerate(mine)]
      return
    self._tree_search(rows)

  def _tree_search(self, rows):
    """Rounds until every problem is done. A row's slot says which unit it belongs to and
    its place in the tree (parent rank, child): ties and keys follow that, never the row."""
    cfg, n, m = self.cfg, self.n, self.cfg.beam_width
    dvts = cfg.strategy == "dvts"
    # Round 0 made n rows per problem from the prompt: DVTS subtree t owns children
    # [t*m, (t+1)*m) of parent t; beam search's rows are each their own parent.
    slots = {p: [(j // m, j // m, j) if dvts else (0, j, j) for j in range(n)]
             for p in range(self.live_problems)}
    progress = {p: tree.Progress() for p in slots}
    self.live = np.zeros(self.total_rows, bool)
    self.live[:self.live_problems * n] = True
    steps_before = np.zeros(self.total_rows, np.int64)
    for _ in range(cfg.max_rounds):
      out = self._read(rows)
      parent = np.arange(self.total_rows)    # idle rows stay themselves, DONE
      salt = np.full(self.total_rows, -1, np.int64)
      restore = np.full(self.total_rows, rows_lib.NO_RESTORE, np.int64)
      retire = np.ones(self.total_rows, bool)
      for p in slots:
        mine = np.arange(p * n, (p + 1) * n)
        self._charge(out, mine, p, steps_before)
        cands = [tree.Scored(row=int(r), unit=slot[0], parent=slot[1], child=slot[2],
                             scores=tuple(out["scores"][r]),
                             score=aggregate(out["scores"][r], cfg.aggregate),
                             finished=bool(out["phase"][r] == Phase.DONE))
                 for r, slot in zip(mine, slots[p]) if slot is not None]
        aside, beams = tree.decide(cands, cfg.strategy, n, m, cfg.backtrack_threshold,
                                   cfg.max_backtracks, progress[p])
        for c in aside:
          self.candidates[p].append(self._candidate(out, c.row, len(self.candidates[p])))
        self.backtracks[p] = progress[p].backtracks
        slots[p] = [None] * n
        r = p * n
        for b, (beam, count) in enumerate(zip(beams, tree.children(beams, cfg.strategy, n,
                                                                   m))):
          for c in range(count):
            parent[r], salt[r], retire[r] = beam.row, beam.salt + c, False
            if beam.restore is not None:
              restore[r] = beam.restore
            slots[p][r - p * n] = (beam.unit, b, c)
            r += 1
      if retire.all():
        break
      self.live = ~retire
      rows = self._advance(rows, parent, salt, restore, retire, pause=True)
      steps_before = np.array([len(out["scores"][parent[r]]) for r in range(self.total_rows)])
      backed = restore != rows_lib.NO_RESTORE
      steps_before[backed] = np.where(restore[backed] == rows_lib.TO_PROMPT, 0,
                                      restore[backed] + 1)
      if self.host_scorer is not None:
        self.host_scores = [list(self.host_scores[parent[r]][:steps_before[r]])
                            for r in range(self.total_rows)]
