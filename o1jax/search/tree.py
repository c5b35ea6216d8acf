"""The host's decision after each round of beam search or DVTS: which candidates are set
aside as solutions, which live ones are continued, and which beams back up. Pure python on
the round's scores, so it is tested on constructed score tables (tests/test_search_tree.py).

Semantics are Hugging Face search-and-learn's:
* beam search keeps the N / M best *live* candidates (a finished candidate is set aside as a
  solution and takes no slot) and refills the problem's N rows from them: M children each,
  or more when fewer than N / M live (the live beams are duplicated). It ends once N
  solutions are set aside, or nothing lives.
* a DVTS subtree continues its best candidate; when that best candidate is finished the
  subtree ends (its solution set aside). A finished sibling that is not the best is set
  aside too (it was paid for) and does not end the subtree.
* backtracking (threshold > 0): when every candidate of a unit (beam search: the problem's
  whole beam; DVTS: the subtree) scores its newest step under the threshold, each parent of
  the unit backs up to the latest earlier step its PRM still trusted (else to the prompt),
  at most `max_backtracks` times per unit.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

TO_PROMPT = -1              # restore: back up to the start of thinking
BACKTRACK_SALT = 1000       # child c of a unit's k-th back-up folds k * 1000 + c


@dataclasses.dataclass(frozen=True)
class Scored:
  """One candidate of a round."""
  row: int                  # its batch row
  unit: int                 # beam search: 0; DVTS: its subtree
  parent: int               # the rank of the beam it was forked from this round
  child: int                # its child index under that beam
  scores: tuple[float, ...]  # its path's step scores, oldest first
  score: float              # the path's aggregated score (what ranks it)
  finished: bool

  @property
  def order(self):
    return (self.parent, self.child)


@dataclasses.dataclass(frozen=True)
class Beam:
  row: int                  # the row its children fork from
  salt: int                 # child c folds salt + c into the row's key
  unit: int
  restore: int | None = None  # back the children up to this step first (a backtrack)


@dataclasses.dataclass
class Progress:
  """One problem's search so far."""
  solutions: int = 0                                                  # set aside
  finished_units: set = dataclasses.field(default_factory=set)       # dvts subtrees done
  backtracks_left: dict = dataclasses.field(default_factory=dict)    # unit -> left
  backtracks: int = 0


def decide(cands: Sequence[Scored], strategy: str, n: int, m: int, threshold: float,
           max_backtracks: int, progress: Progress) -> tuple[list[Scored], list[Beam]]:
  """(candidates set aside as solutions, in tree order; beams of the next round, in rank
  order). Updates `progress`. Every tie breaks by tree order (parent rank, child)."""
  by_unit: dict[int, list[Scored]] = {}
  for c in cands:
    if c.unit not in progress.finished_units:
      by_unit.setdefault(c.unit, []).append(c)
  aside: list[Scored] = []
  backed: list[Beam] = []
  kept: list[Beam] = []
  for unit in sorted(by_unit):
    ranked = sorted(by_unit[unit], key=lambda c: (-c.score, c.order))
    aside += [c for c in ranked if c.finished]   # paid for: a solution either way
    newest = [c.scores[-1] if c.scores else 0.0 for c in ranked]
    left = progress.backtracks_left.get(unit, max_backtracks)
    if threshold > 0 and left > 0 and max(newest) < threshold:
      progress.backtracks_left[unit] = left - 1
      progress.backtracks += 1
      attempt = max_backtracks - left + 1
      seen = set()
      for c in ranked:   # each parent backs up once, from its best candidate's row
        if c.parent in seen:
          continue
        seen.add(c.parent)
        good = [k for k, v in enumerate(c.scores[:-1]) if v >= threshold]
        backed.append(Beam(row=c.row, salt=attempt * BACKTRACK_SALT, unit=unit,
                           restore=good[-1] if good else TO_PROMPT))
      continue
    if strategy == "dvts":
      if ranked[0].finished:
        progress.finished_units.add(unit)
      else:
        kept.append(Beam(row=ranked[0].row, salt=0, unit=unit))
    else:
      kept += [Beam(row=c.row, salt=0, unit=unit) for c in ranked if not c.finished]
  aside.sort(key=lambda c: c.order)
  if strategy == "beam":
    progress.solutions += len(aside)
    if progress.solutions >= n:
      return aside, []
    return aside, (backed + kept)[:n // m]
  return aside, backed + kept


def children(beams: Sequence[Beam], strategy: str, n: int, m: int) -> list[int]:
  """How many rows each beam's children fill: DVTS M each; beam search all N rows, M or
  more each (search-and-learn duplicates the live beams when fewer than N / M remain)."""
  if strategy == "dvts" or not beams:
    return [m] * len(beams)
  k = len(beams)
  return [n // k + (b < n % k) for b in range(k)]
