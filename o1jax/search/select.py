"""Choosing one answer from several sampled solutions: majority vote, best-of-N by a PRM or
an ORM, and the score-weighted vote. Host-side and deterministic: every tie breaks to the
candidate produced first (lowest `index`), so a result never depends on dict or batch order.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

AGGREGATES = ("last", "min", "prod")


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One finished solution of a problem."""
  index: int                 # the order it was produced in (sample number): ties break low
  thinking: str
  answer: str
  step_scores: tuple[float, ...]   # the PRM's P(step good) at each step end
  final_score: float         # the ORM's P(correct) at the answer's EOS (nan: not read)
  thinking_tokens: int = 0
  tokens: int = 0            # every token of the path: thinking, close, answer
  stop_reason: str = ""


def aggregate(step_scores: Sequence[float], how: str = "min") -> float:
  """A path's PRM score from its step scores: the last step's (search-and-learn), the
  minimum (Math-Shepherd: the weakest step) or the product. A path with no scored step
  scores 0: there is no evidence for it."""
  if how not in AGGREGATES:
    raise ValueError(f"aggregate must be one of {AGGREGATES}, got {how!r}")
  s = np.asarray([x for x in step_scores if not np.isnan(x)], np.float64)
  if len(s) == 0:
    return 0.0
  return float({"last": s[-1], "min": s.min(), "prod": np.prod(s)}[how])


def answer_key(answer: str) -> str:
  """Answers that differ only in whitespace are the same answer."""
  return "".join(answer.split())


def scorer(name: str) -> Callable[[Candidate], float]:
  """`prm_last`, `prm_min`, `prm_prod` (aggregated step scores) or `orm`."""
  if name == "orm":
    return lambda c: c.final_score
  if name.startswith("prm_") and name[4:] in AGGREGATES:
    how = name[4:]
    return lambda c: aggregate(c.step_scores, how)
  raise ValueError(f"unknown scorer {name!r}: use orm or prm_{{{','.join(AGGREGATES)}}}")


def _ordered(cands: Sequence[Candidate]) -> list[Candidate]:
  if not cands:
    raise ValueError("no candidates to choose from")
  return sorted(cands, key=lambda c: c.index)


def majority(cands: Sequence[Candidate]) -> Candidate:
  """Self-consistency: the most frequent answer (ties: the answer seen first)."""
  return weighted_vote(cands, lambda c: 1.0)


def best(cands: Sequence[Candidate], score: Callable[[Candidate], float]) -> Candidate:
  """The highest-scoring candidate (nan scores lose; ties: the first produced)."""
  cands = _ordered(cands)
  values = np.array([score(c) for c in cands], np.float64)
  values = np.where(np.isnan(values), -np.inf, values)
  return cands[int(np.argmax(values))]          # argmax returns the first maximum


def weighted_vote(cands: Sequence[Candidate], score: Callable[[Candidate], float]
                  ) -> Candidate:
  """The answer with the largest total score over the candidates that give it (ties: the
  answer seen first); returns that answer's first candidate."""
  cands = _ordered(cands)
  totals: dict[str, float] = {}
  first: dict[str, Candidate] = {}
  for c in cands:
    key = answer_key(c.answer)
    value = score(c)
    totals[key] = totals.get(key, 0.0) + (0.0 if np.isnan(value) else value)
    first.setdefault(key, c)
  top = max(totals.values())
  return next(first[k] for k in first if totals[k] == top)   # dicts keep insertion order


def choose(cands: Sequence[Candidate], selector: str) -> Candidate:
  """By name: `majority`, `best:<scorer>` or `vote:<scorer>` (scorer as in `scorer`)."""
  if selector == "majority":
    return majority(cands)
  kind, _, name = selector.partition(":")
  if kind == "best":
    return best(cands, scorer(name))
  if kind == "vote":
    return weighted_vote(cands, scorer(name))
  raise ValueError(f"unknown selector {selector!r}: majority, best:<scorer> or vote:<scorer>")
