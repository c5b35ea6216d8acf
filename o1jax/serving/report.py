"""Pooled tail latencies over seeds with bootstrap intervals, and the issue-32 goals.

Every policy serves the same requests at a (mix, arrivals, load, seed) point, so a ratio
of two policies' p99 is bootstrapped *paired*: one resample of request indices (within each
seed: the seeds are strata) is applied to both. Fixed seed, 1,000 resamples, 95% percentile
intervals.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

B = 1000


def _resamples(sizes: Sequence[int], seed: int = 0):
  rng = np.random.default_rng(seed)
  return [[rng.integers(0, n, n) for n in sizes] for _ in range(B)]


def pooled(latencies_by_seed: Sequence[np.ndarray], q: float = 99) -> float:
  return float(np.percentile(np.concatenate(latencies_by_seed), q))


def p_with_ci(latencies_by_seed: Sequence[np.ndarray], q: float = 99, seed: int = 0):
  """(point, low, high): the q-th percentile of the seeds pooled, with a stratified
  bootstrap interval."""
  xs = [np.asarray(x) for x in latencies_by_seed]
  idx = _resamples([len(x) for x in xs], seed)
  boot = [np.percentile(np.concatenate([x[i] for x, i in zip(xs, r)]), q) for r in idx]
  return pooled(xs, q), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def ratio_with_ci(a_by_seed, b_by_seed, q: float = 99, seed: int = 0):
  """(point, low, high) of p_q(a) / p_q(b), a and b the same requests (paired resamples)."""
  a = [np.asarray(x) for x in a_by_seed]
  b = [np.asarray(x) for x in b_by_seed]
  if [len(x) for x in a] != [len(x) for x in b]:
    raise ValueError("paired ratio needs the same requests in both")
  idx = _resamples([len(x) for x in a], seed)
  boot = [np.percentile(np.concatenate([x[i] for x, i in zip(a, r)]), q) /
          np.percentile(np.concatenate([x[i] for x, i in zip(b, r)]), q) for r in idx]
  return pooled(a, q) / pooled(b, q), float(np.percentile(boot, 2.5)), float(
      np.percentile(boot, 97.5))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
  if n == 0:
    return math.nan, math.nan, math.nan
  p = k / n
  d = 1 + z * z / n
  c = (p + z * z / (2 * n)) / d
  h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
  return p, c - h, c + h
