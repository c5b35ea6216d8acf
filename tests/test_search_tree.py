"""Beam search and DVTS decisions on constructed score tables (issue 33 item 1).

The search's compiled half is replaced by a fake tree: a row is its path (the child salts
from the prompt), its newest step's PRM score and whether it finished come from a table, so
every decision of the real `_tree_search` is checked exactly, with no model. The semantics
are search-and-learn's: beam search keeps the N/M best *live* candidates and refills N rows
from them (finished candidates are set aside and take no slot; the search ends once N
solutions are set aside or nothing lives); a DVTS subtree continues its best candidate and
ends only when that best candidate is finished.
"""

import numpy as np

from o1jax.search import SearchConfig
from o1jax.search import strategies
from o1jax.search.select import Candidate
from o1jax.thinking.config import Phase


class FakeChunk(strategies._Chunk):
  """One problem; rows are paths; `table[path] = (score, finished)`."""

  def __init__(self, cfg, table):
    self.cfg, self.n, self.ids = cfg, cfg.n, [0]
    self.live_problems, self.total_rows = 1, cfg.n
    self.host_scorer, self.heads = None, None
    self.candidates, self.backtracks = [[]], [0]
    self.compute = [None]
    self.table = table
    self.rounds = []          # the live rows' paths of every round after the first

  def _advance(self, rows, parent, salt, restore, retire, pause):
    assert (np.asarray(restore) == -2).all(), "no backtracking in these tables"
    new = []
    for r in range(self.total_rows):
      if retire[r]:
        new.append(None)
      else:
        new.append(rows[parent[r]] + (int(salt[r]),))
    self.rounds.append(sorted(p for p in new if p is not None))
    return new

  def _read(self, rows, previous_steps=None):
    phase, scores = [], []
    for path in rows:
      if path is None:
        phase.append(Phase.DONE)
        scores.append([])
        continue
      phase.append(Phase.DONE if self.table[path][1] else Phase.THINKING)
      scores.append([self.table[path[:k]][0] for k in range(1, len(path) + 1)])
    return dict(phase=np.asarray(phase), scores=scores, paths=list(rows),
                final_score=np.full(len(rows), np.nan))

  def _charge(self, *args, **kwargs):
    pass

  def _candidate(self, out, r, index):
    return Candidate(index=index, thinking=str(out["paths"][r]), answer="",
                     step_scores=tuple(out["scores"][r]), final_score=float("nan"))


def _run(strategy, n, m, table):
  chunk = FakeChunk(SearchConfig(strategy=strategy, n=n, beam_width=m), table)
  chunk._tree_search([(j,) for j in range(n)])     # round 0: n rows forked from the prompt
  return [c.thinking for c in chunk.candidates[0]], chunk.rounds


def test_beam_finished_candidates_take_no_slot():
  """The issue's reproduction: two finishers scored 0.05 beside a live 0.95 (and a live
  0.3). The old search spent both of its N/M = 2 slots on the finishers and stopped,
  dropping the 0.95 path; now both live paths go on, M = 2 children each."""
  table = {(0,): (0.05, True), (1,): (0.05, True), (2,): (0.95, False), (3,): (0.3, False),
           (2, 0): (0.9, True), (2, 1): (0.8, True), (3, 0): (0.2, True), (3, 1): (0.1, True)}
  pool, rounds = _run("beam", 4, 2, table)
  assert rounds[0] == [(2, 0), (2, 1), (3, 0), (3, 1)]
  assert len(rounds) == 1, "4 solutions set aside (6 >= N): the search ends"
  assert pool == [str(p) for p in [(0,), (1,), (2, 0), (2, 1), (3, 0), (3, 1)]]


def test_beam_keeps_only_the_best_n_over_m_live_candidates():
  """Eight live candidates, N/M = 2 kept: the two best by score, ties by tree order."""
  scores = [0.1, 0.7, 0.3, 0.7, 0.2, 0.9, 0.1, 0.4]
  table = {(j,): (s, False) for j, s in enumerate(scores)}
  table.update({(j, c): (0.5, True) for j in range(8) for c in range(8)})
  pool, rounds = _run("beam", 8, 4, table)
  assert rounds[0] == sorted([(5, c) for c in range(4)] + [(1, c) for c in range(4)])
  assert len(pool) == 8


def test_beam_refills_n_rows_from_fewer_live_candidates():
  """Three finish and one lives: search-and-learn duplicates the live beams to N rows."""
  table = {(0,): (0.1, True), (1,): (0.2, True), (2,): (0.3, True), (3,): (0.6, False)}
  table.update({(3, c): (0.5, c != 3) for c in range(4)})
  table.update({(3, 3, c): (0.5, True) for c in range(4)})
  pool, rounds = _run("beam", 4, 2, table)
  assert rounds == [[(3, 0), (3, 1), (3, 2), (3, 3)]], "pool 3 + 3 = 6 >= 4 ends it"
  assert len(pool) == 6


def test_dvts_subtree_continues_its_best_candidate_and_ends_when_that_finished():
  """Subtree 0: a finisher at 0.05 beside a live 0.95: the subtree continues the 0.95 path
  (the old search ended it). Subtree 1: its best candidate (0.9) is finished: the subtree
  ends although a live sibling (0.2) remains."""
  table = {(0,): (0.05, True), (1,): (0.95, False), (2,): (0.9, True), (3,): (0.2, False),
           (1, 0): (0.4, False), (1, 1): (0.8, True),
           (1, 0, 0): (0.3, True), (1, 0, 1): (0.3, True)}
  pool, rounds = _run("dvts", 4, 2, table)
  # Round 1: subtree 0's best (1,) expands into M = 2; subtree 1 is done. Round 2: the best
  # of (1, 0) live 0.4 and (1, 1) finished 0.8 is finished: subtree 0 ends too.
  assert rounds == [[(1, 0), (1, 1)]]
  assert pool == [str(p) for p in [(0,), (2,), (1, 1)]]


def test_dvts_live_best_goes_on_while_finished_siblings_are_set_aside():
  table = {(0,): (0.2, True), (1,): (0.7, False), (1, 0): (0.6, False), (1, 1): (0.1, True),
           (1, 0, 0): (0.5, True), (1, 0, 1): (0.6, True)}
  pool, rounds = _run("dvts", 2, 2, table)
  assert rounds == [[(1, 0), (1, 1)], [(1, 0, 0), (1, 0, 1)]]
  assert pool == [str(p) for p in [(0,), (1, 1), (1, 0, 0), (1, 0, 1)]]
