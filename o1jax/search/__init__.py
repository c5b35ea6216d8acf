"""Test-time search over the compiled thinking loop: majority vote, best-of-N by PRM/ORM,
the score-weighted vote, step-level beam search with backtracking, DVTS (strategies.py),
their compute accounting (compute.py) and compute-optimal allocation (allocation.py)."""

from o1jax.search.compute import Compute
from o1jax.search.select import Candidate, aggregate, choose
from o1jax.search.strategies import SearchConfig, SearchResult, delimiter_ids, search

__all__ = ["Candidate", "Compute", "SearchConfig", "SearchResult", "aggregate", "choose",
           "delimiter_ids", "search"]
