"""Per-step calibration of a PRM head: Platt scaling by step-position bin.

A head trained with weighted (hard-negative) losses on a label mix is not calibrated: its
P(step good) is off by an amount that depends on where the step is in the trace (the last
step is read at `</think>` and predicts the answer, an early step predicts a checker label).
Platt scaling fits sigmoid(a * logit + b) per bin of step position on problems held out
from the head's training, float64 Newton iterations on the (weighted) log loss.

The thinking loop reads `sigmoid(apply_head(head, hidden))` and knows no step position, so
a *global* fit is folded into the head's last layer (`fold`: exact), and the per-bin fit
travels in the head's json for host-side scoring (`apply`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from o1jax.model.heads import apply_head


@dataclasses.dataclass(frozen=True)
class Calibration:
  """Platt (a[k], b[k]) for bin k of `position_bins(n, edges)`: bin 0 is a trace's last
  step, bin k >= 1 its other steps with index in [edges[k-2], edges[k-1])."""
  edges: tuple[int, ...]
  a: tuple[float, ...]
  b: tuple[float, ...]

  def to_dict(self) -> dict:
    return {"edges": list(self.edges), "a": list(self.a), "b": list(self.b)}

  @classmethod
  def from_dict(cls, d: dict) -> "Calibration":
    return cls(tuple(d["edges"]), tuple(d["a"]), tuple(d["b"]))


def position_bins(n_steps: int, edges: Sequence[int]) -> np.ndarray:
  """Bin per step of an `n_steps` trace: the last step is bin 0 (it is read at
  `</think>`); step i of the others is 1 + the number of `edges` <= i."""
  if list(edges) != sorted(edges) or any(e <= 0 for e in edges):
    raise ValueError(f"calibration edges must be positive and ascending, got {edges}")
  idx = np.arange(n_steps)
  out = 1 + np.searchsorted(np.asarray(edges), idx, side="right")
  if n_steps:
    out[-1] = 0
  return out.astype(np.int64)


def fit_platt(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None,
              l2: float = 1e-4, iters: int = 50) -> tuple[float, float]:
  """(a, b) minimising the weighted log loss of sigmoid(a * logit + b) against `labels`
  in [0, 1] (+ l2/2 (a^2 + b^2), so a separable bin stays finite), subject to a >= 0.

  Calibration may shrink the head's confidence but never reverse its ranking: a negative
  slope, fitted on a bin where the head carries no signal, turns noise into an inverted
  score that search then maximises. The loss is convex, so when the unconstrained optimum
  has a < 0 the constrained one lies on a = 0 (the bin's base rate). Newton's method."""
  x = np.asarray(logits, np.float64)
  y = np.asarray(labels, np.float64)
  w = np.ones_like(x) if weights is None else np.asarray(weights, np.float64)
  if not (len(x) == len(y) == len(w)) or len(x) == 0:
    raise ValueError(f"fit_platt needs matching, non-empty inputs; got {len(x)}, {len(y)}, "
                     f"{len(w)}")
  a, b = _newton(np.stack([x, np.ones_like(x)], -1), y, w, l2, iters)
  if a < 0:
    a, (b,) = 0.0, _newton(np.ones_like(x)[:, None], y, w, l2, iters)
  return float(a), float(b)


def _newton(feats: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, iters: int
            ) -> np.ndarray:
  """argmin over theta of the weighted log loss of sigmoid(feats @ theta) + l2/2 |theta|^2,
  from theta = (1, 0, ...) (the identity map when feats is (logit, 1)). Newton steps halved
  until the loss falls: a full step from far away (a slope of the wrong sign) overshoots."""
  def loss(t):
    z = feats @ t
    return np.sum(w * (np.logaddexp(0, z) - y * z)) + 0.5 * l2 * t @ t

  theta = np.eye(feats.shape[1])[0]
  current = loss(theta)
  for _ in range(iters):
    p = 1 / (1 + np.exp(-(feats @ theta)))
    grad = feats.T @ (w * (p - y)) + l2 * theta
    hess = (feats * (w * p * (1 - p))[:, None]).T @ feats + l2 * np.eye(len(theta))
    step = np.linalg.solve(hess, grad)
    scale = 1.0
    while loss(theta - scale * step) > current and scale > 1e-6:
      scale /= 2
    theta = theta - scale * step
    current = loss(theta)
    if np.abs(scale * step).max() < 1e-10:
      break
  return theta


def fit(logits: np.ndarray, labels: np.ndarray, bins: np.ndarray, edges: Sequence[int],
        min_per_class: int = 5) -> Calibration:
  """Platt per bin; a bin with fewer than `min_per_class` examples of either class takes
  the fit over all steps."""
  logits, labels, bins = map(np.asarray, (logits, labels, bins))
  everyone = fit_platt(logits, labels)
  a, b = [], []
  for k in range(len(edges) + 2):
    m = bins == k
    pos, neg = labels[m] >= 0.5, labels[m] < 0.5
    ab = fit_platt(logits[m], labels[m]) if min(pos.sum(), neg.sum()) >= min_per_class \
        else everyone
    a.append(ab[0])
    b.append(ab[1])
  return Calibration(tuple(edges), tuple(a), tuple(b))


def apply(cal: Calibration, logits: np.ndarray, bins: np.ndarray) -> np.ndarray:
  """Calibrated probabilities."""
  a, b = np.asarray(cal.a)[bins], np.asarray(cal.b)[bins]
  return 1 / (1 + np.exp(-(a * np.asarray(logits, np.float64) + b)))


def logits(head, features: np.ndarray) -> np.ndarray:
  return np.asarray(apply_head(head, jnp.asarray(features, jnp.float32)), np.float64)


def fold(head: dict, a: float, b: float) -> dict:
  """The head whose logit is a * head's logit + b: the last layer scaled and shifted."""
  return {**head, "w2": head["w2"] * a, "b2": head["b2"] * a + b}
