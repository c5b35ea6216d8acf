"""Test-time search strategies over the compiled thinking loop.

* `sample` (best-of-N family): N independent solutions per problem, each scored at every
  step end by the PRM and at EOS by the ORM while it is decoded; majority vote, best-of-N
  and the score-weighted vote are then choices among the same N (`select.choose`).
* `beam`: step-level beam search (search-and-learn's layout): N rows per problem; after each
  step the PRM scores every row and the best N / M paths are kept, each expanded into M
  candidates for the next step. Finished solutions leave the beam and fill a pool the final
  answer is chosen from.
* `dvts`: N / M independent subtrees of width M, each keeping only its own best candidate
  (diverse verifier tree search).
* backtracking (beam and dvts, `backtrack_threshold > 0`): when every candidate of a beam
  scores under the threshold, the beam backs up to the latest earlier step its PRM still
  trusted (score >= threshold; else the start of thinking) and resamples from there, at most
  `max_backtracks` times per beam.

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
  temperature: float = 1.0
  delimiter: str = ";"            # the step delimiter string
  max_steps: int = 64             # step records per row (later steps are not scored)
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
    if self.max_backtracks < 0 or self.max_steps < 1 or self.max_rounds < 1:
      problems.append("max_backtracks must be >= 0, max_steps and max_rounds >= 1")
    if self.temperature < 0:
      problems.append(f"temperature must be >= 0, got {self.temperature}")
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


@dataclasses.dataclass
class _Beam:
  row: int                    # the row its children fork from
  salt: int                   # child j folds salt + j into the row's key
  unit: int                   # beam search: 0 (one beam per problem); dvts: the subtree
  restore: int | None = None  # back the children up to this step first (a backtrack)


@dataclasses.dataclass
class _Progress:
  slots_left: int                                   # beam: finished solutions still to find
  finished_units: set = dataclasses.field(default_factory=set)      # dvts subtrees done
  backtracks_left: dict = dataclasses.field(default_factory=dict)   # unit -> backtracks


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
                            width=width, temperature=cfg.temperature)
    inputs = inputs.replace(request_key=request_keys(cfg.seed, np.asarray(padded)))
    self.inputs = fill_settings(inputs, think_config)
    self.prompt_lengths = np.asarray(self.inputs.lengths)
    self.live_problems = len(ids)
    self.n, self.total_rows = cfg.n, per_batch * cfg.n
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

  def _read(self, rows, previous_steps=None) -> dict:
    """Host copies of what a round decides on; host-scored steps filled in."""
    s = rows.state
    out = {k: np.asarray(v) for k, v in dict(
        phase=s.phase, tokens=s.tokens, segments=s.segments, num_generated=s.num_generated,
        thinking_tokens=s.thinking_tokens, stop_reason=s.stop_reason,
        num_steps=rows.num_steps, step_scores=rows.step_scores, final_score=rows.final_score,
        decoded=rows.decoded, refed=rows.refed, position=s.position).items()}
    steps_now = np.minimum(out["num_steps"], self.cfg.max_steps)
    scores = []
    for r in range(self.total_rows):
      if self.host_scorer is None:
        scores.append(list(out["step_scores"][r, :steps_now[r]]))
        continue
      mirror = self.host_scores[r][:steps_now[r]]
      if len(mirror) < steps_now[r]:
        steps = self._steps(out, r)
        closed = out["phase"][r] != Phase.THINKING   # its last step ended at the close
        for k in range(len(mirror), steps_now[r]):
          mirror.append(float(self.host_scorer(
              self.ids[r // self.n], steps[:k + 1], bool(closed and k == steps_now[r] - 1))))
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

  def _charge(self, out, problem_rows, p, steps_before=None):
    """Adds a round's decoded tokens, back-up forwards and reward reads for problem p."""
    c = self.compute[p]
    context = float(np.mean(out["position"][problem_rows])) / 2 + 1
    # ORM reads at EOS, and PRM reads at step ends (a host scorer's cost is not the model's).
    evals = int(np.sum(~np.isnan(out["final_score"][problem_rows])))
    if self.host_scorer is None:
      before = 0 if steps_before is None else steps_before[problem_rows]
      steps = np.array([len(out["scores"][r]) for r in problem_rows])
      evals += int(np.maximum(steps - before, 0).sum())
    self.compute[p] = c.add(compute_lib.count(
        self.model, generated=int(out["decoded"][problem_rows].sum()), prompt=0,
        refed=int(out["refed"][problem_rows].sum()), evaluations=evals,
        mean_context=context))

  # --- strategies ---------------------------------------------------------------------
  def run(self):
    cfg, n = self.cfg, self.n
    rows = rows_lib.start(self.params, self.inputs, self.think_config.compile_key(),
                          cfg.max_steps)
    for p in range(len(self.ids)):
      self.compute[p] = compute_lib.count(self.model, generated=0,
                                          prompt=int(self.prompt_lengths[p]),
                                          mean_context=self.prompt_lengths[p] / 2)
    problem = np.repeat(np.arange(self.total_rows // n), n)
    child = np.tile(np.arange(n), self.total_rows // n)
    retire = problem >= self.live_problems
    rows = self._advance(rows, problem, child, np.full(self.total_rows, rows_lib.NO_RESTORE),
                         retire, pause=cfg.strategy != "sample")
    if cfg.strategy == "sample":
      out = self._read(rows)
      for p in range(self.live_problems):
        mine = np.arange(p * n, (p + 1) * n)
        self._charge(out, mine, p)
        self.candidates[p] = [self._candidate(out, r, j) for j, r in enumerate(mine)]
      return
    self._tree_search(rows)

  def _tree_search(self, rows):
    cfg, n, m = self.cfg, self.n, self.cfg.beam_width
    live = range(self.live_problems)
    # Round 0 made n rows per problem from the prompt. A row's group is the beam it was
    # forked from (round 0 beam search: every row its own; dvts: subtree t owns rows
    # [t*m, (t+1)*m)); a beam's `unit` is what backtracking and selection act on (beam: the
    # problem's whole beam; dvts: its subtree).
    first = [_Beam(row=-1, salt=0, unit=(j // m if cfg.strategy == "dvts" else 0))
             for j in range(n)]
    groups = {p: [(j // m if cfg.strategy == "dvts" else j, j) for j in range(n)]
              for p in live}
    makers = {p: ({t: _Beam(row=-1, salt=0, unit=t) for t in range(n // m)}
                  if cfg.strategy == "dvts" else dict(enumerate(first))) for p in live}
    state = {p: _Progress(slots_left=n // m) for p in live}
    steps_before = np.zeros(self.total_rows, np.int64)
    for _ in range(cfg.max_rounds):
      out = self._read(rows)
      parent = np.zeros(self.total_rows, np.int64)
      salt = np.full(self.total_rows, -1, np.int64)
      restore = np.full(self.total_rows, rows_lib.NO_RESTORE, np.int64)
      retire = np.ones(self.total_rows, bool)
      for p in live:
        mine = np.arange(p * n, (p + 1) * n)
        self._charge(out, mine, p, steps_before)
        kept = self._decide(p, out, mine, groups[p], makers[p], state[p])
        # Each kept beam's m children fill the problem's rows, in rank order.
        for b, beam in enumerate(kept):
          for j in range(m):
            r = p * n + b * m + j
            parent[r], salt[r], retire[r] = beam.row, beam.salt + j, False
            if beam.restore is not None:
              restore[r] = beam.restore
        groups[p] = [(b, j) for b in range(len(kept)) for j in range(m)]
        groups[p] += [(-1, -1)] * (n - len(groups[p]))
        makers[p] = dict(enumerate(kept))
      if retire.all():
        break
      rows = self._advance(rows, parent, salt, restore, retire, pause=True)
      steps_before = np.array([len(out["scores"][parent[r]]) for r in range(self.total_rows)])
      backed = restore != rows_lib.NO_RESTORE
      steps_before[backed] = np.where(restore[backed] == rows_lib.TO_PROMPT, 0,
                                      restore[backed] + 1)
      if self.host_scorer is not None:
        self.host_scores = [list(self.host_scores[parent[r]][:steps_before[r]])
                            for r in range(self.total_rows)]

  def _decide(self, p, out, mine, groups, makers, progress) -> list["_Beam"]:
    """After a round: a unit whose candidates (finished or not) all score under the
    backtrack threshold backs up; otherwise finished rows join the pool of solutions and
    the best live candidates become the next round's beams."""
    cfg = self.cfg
    by_unit: dict[int, list[tuple[float, int, int, int, bool]]] = {}
    for r, (g, j) in zip(mine, groups):
      if g < 0:
        continue
      unit = makers[g].unit
      if unit in progress.finished_units:
        continue
      score = aggregate(out["scores"][r], cfg.aggregate)
      by_unit.setdefault(unit, []).append((-score, g, j, r, out["phase"][r] == Phase.DONE))
    kept: list[_Beam] = []
    for unit in sorted(by_unit):
      cands = sorted(by_unit[unit])       # best first; ties by (parent rank, child)
      newest = [out["scores"][r][-1] if out["scores"][r] else 0.0 for *_, r, _ in cands]
      left = progress.backtracks_left.get(unit, cfg.max_backtracks)
      backs_up = (cfg.backtrack_threshold > 0 and left > 0
                  and max(newest) < cfg.backtrack_threshold)
      for *_, r, done in cands:
        if done:   # a finished solution joins the pool either way: it was paid for
          self.candidates[p].append(self._candidate(out, r, len(self.candidates[p])))
          if not backs_up and cfg.strategy == "beam":
            progress.slots_left = max(progress.slots_left - 1, 0)
          elif not backs_up:
            progress.finished_units.add(unit)
      if backs_up:
        progress.backtracks_left[unit] = left - 1
        self.backtracks[p] += 1
        # Every parent beam of the unit backs up, from its best candidate's row (they share
        # the parent's path), to the latest step its PRM still trusted.
        seen = set()
        for _, g, _, r, _ in cands:
          if g in seen:
            continue
          seen.add(g)
          path = out["scores"][r][:-1]
          good = [k for k, v in enumerate(path) if v >= cfg.backtrack_threshold]
          kept.append(_Beam(row=r, salt=(cfg.max_backtracks - left + 1) * 1000, unit=unit,
                            restore=good[-1] if good else rows_lib.TO_PROMPT))
        continue
      if unit in progress.finished_units:
        continue
      live = [c for c in cands if not c[4]]
      take = 1 if cfg.strategy == "dvts" else len(live)
      kept += [_Beam(row=r, salt=0, unit=unit) for _, _, _, r, _ in live[:take]]
    if cfg.strategy == "beam":
      # Backed-up beams first (in unit order), then the best live candidates.
      kept = sorted(kept, key=lambda b: b.restore is None)[:progress.slots_left]
    return kept
