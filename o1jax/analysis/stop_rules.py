"""Early-stop rules side by side (issue 19): what each saves and costs, against the oracle.

Every rule is the loop's own stop rule (`ThinkConfig.stop_rules`), run by `think()` on the
same held-out problems at an unlimited budget:
- Dynasor's certaindex: a probe (forced close, greedy trial answer) every `probe_every`
  thinking tokens; stop when `agreement` + 1 consecutive probes give the same answer. The
  probability threshold is set above 1 so only agreement stops.
- DEER / the article: stop when the probe's mean token probability reaches 0.95.
- the trained confidence head (no extra forward) at the article's 0.95 and at 0.8.
- a confidence head trained at step ends (";") of the policy's own traces, read only there,
  at the threshold its selection split picked (launch/fit_step_head.py).
- convergence: the article's rule, the last 50 thinking tokens' mean hidden state vs the
  previous 50 at cosine >= 0.9; and with windows of 8.
The oracle ceiling comes from forced answers at every `probe_every`-th prefix of the
unlimited runs: stop a run that ends right at the first prefix from which its forced
answer stays right, and a run that ends wrong at once (`oracle_saved`); or let wrong runs
think to the end (`oracle_saved_right_only`). Calibration (ECE, AUC) of the probe and of
the head is measured on those same prefixes.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from o1jax.thinking import ThinkConfig

NEVER = 2.0  # a probability threshold no estimate reaches: agreement alone stops


def settings(base: ThinkConfig, probe_every: int, head_every: int, has_head: bool,
             step_head_threshold: float | None = None, step_end_ids: Sequence[int] = ()
             ) -> dict[str, ThinkConfig]:
  """The rules to compare, by the name they carry in the table. With `step_head_threshold`,
  also the step-end head (launch/fit_step_head.py) at the threshold picked on its selection
  split; its config reads at `step_end_ids` (`confidence_reads="step_ends"`)."""
  conf = ("natural", "budget", "confidence")
  probe = lambda **kw: dataclasses.replace(base, stop_rules=conf, confidence_estimate="probe",
                                           probe_every=probe_every, **kw)
  out = {
      "natural+budget": base,
      "certaindex (3 probes agree)": probe(confidence_threshold=NEVER, probe_agreement=2),
      "certaindex (2 probes agree)": probe(confidence_threshold=NEVER, probe_agreement=1),
      "probe >= 0.95 (article)": probe(confidence_threshold=0.95, probe_agreement=0),
  }
  if has_head:
    for threshold in (0.95, 0.8):
      label = " (article)" if threshold == 0.95 else ""
      out[f"head >= {threshold}{label}"] = dataclasses.replace(
          base, stop_rules=conf, confidence_estimate="head", probe_every=head_every,
          confidence_threshold=threshold)
  if step_head_threshold is not None:
    out[f"step-end head >= {step_head_threshold:g} (selected)"] = dataclasses.replace(
        base, stop_rules=conf, confidence_estimate="head", confidence_reads="step_ends",
        step_end_ids=tuple(step_end_ids), confidence_threshold=step_head_threshold)
  for window, label in ((50, " (article)"), (8, "")):
    out[f"converged W={window} >= 0.9{label}"] = dataclasses.replace(
        base, stop_rules=("natural", "budget", "converged"), converge_window=window,
        converge_threshold=0.9)
  return out


def oracle_and_calibration(params, model_config, base: ThinkConfig, problems: Sequence,
                           probe_every: int, confidence_head=None, batch_size: int = 64
                           ) -> dict:
  """The oracle ceilings and the probe's (and head's) calibration on forced stops."""
  from o1jax.training import heads as heads_lib  # local: training code pulls in optax
  data = heads_lib.confidence_data(params, model_config, base, problems, every=probe_every,
                                   batch_size=batch_size)
  saved, saved_right_only = heads_lib.oracle_savings(data)
  out = {
      "prefixes": int(len(data.labels)), "prefixes_right": float(data.labels.mean()),
      "oracle_saved_pct": 100.0 * saved,
      "oracle_saved_right_only_pct": 100.0 * saved_right_only,
      "ece_probe": heads_lib.ece(data.probe, data.labels),
      "auc_probe": heads_lib.auc(data.probe, data.labels)}
  if confidence_head is not None:
    head_p = heads_lib.predict(confidence_head, data.features)
    out.update(ece_head=heads_lib.ece(head_p, data.labels),
               auc_head=heads_lib.auc(head_p, data.labels))
  return out


def replay_threshold_rule(data, probs: np.ndarray, threshold: float) -> tuple[float, float]:
  """What a threshold rule on a confidence estimate would give on greedy runs, replayed on
  forced-stop data (o1jax.training.heads.ConfidenceData) without decoding again.

  At temperature 0 a run that stops at prefix k has thought exactly the full run's first k
  tokens, and answers what the forced answer there says (the data's label). So the rule stops
  each run at its first read prefix (every prefix but the full run's last) whose estimate
  `probs` reaches `threshold`, or lets it finish. Returns (fraction of the thinking saved,
  accuracy)."""
  used, right = 0, []
  for i, natural in enumerate(data.natural):
    mine = np.flatnonzero(data.rollout == i)
    mine = mine[data.prefix[mine] < natural]              # the reads, in prefix order
    fire = mine[probs[mine] >= threshold]
    if len(fire):
      used += int(data.prefix[fire[0]])
      right.append(bool(data.labels[fire[0]]))
    else:
      used += int(natural)
      right.append(bool(data.correct[i]))
  return 1.0 - used / max(int(np.sum(data.natural)), 1), float(np.mean(right))


def select_threshold(data, probs: np.ndarray, thresholds: Sequence[float],
                     max_loss_pts: float) -> tuple[float | None, list[dict]]:
  """The threshold that saves the most thinking on `data` (a selection split, disjoint from
  the problems the rule is evaluated on) at no more than `max_loss_pts` of accuracy lost
  against letting every run finish; None if none qualifies. Also every threshold's replay."""
  full = float(np.mean(data.correct))
  table = []
  for t in thresholds:
    saved, accuracy = replay_threshold_rule(data, probs, t)
    table.append({"threshold": float(t), "saved_pct": 100.0 * saved,
                  "accuracy": accuracy, "accuracy_delta_pts": 100.0 * (accuracy - full)})
  ok = [r for r in table if r["accuracy_delta_pts"] >= -max_loss_pts - 1e-9]
  best = max(ok, key=lambda r: (r["saved_pct"], -r["threshold"])) if ok else None
  return (None if best is None else best["threshold"]), table


def by_level(rule_rows: dict[str, list], reference: str) -> list[dict]:
  """Thinking tokens saved and accuracy change per difficulty level, every rule."""
  out = []
  levels = sorted({r.difficulty for r in rule_rows[reference]})
  for name, rows in rule_rows.items():
    line = {"setting": name}
    for d in levels:
      ref = [r for r in rule_rows[reference] if r.difficulty == d]
      mine = [r for r in rows if r.difficulty == d]
      ref_tokens = np.mean([r.thinking_tokens for r in ref])
      line[f"saved_pct_L{d}"] = 100.0 * (1 - np.mean([r.thinking_tokens for r in mine])
                                         / ref_tokens) if ref_tokens else 0.0
      line[f"acc_delta_pts_L{d}"] = 100.0 * (np.mean([r.correct for r in mine])
                                             - np.mean([r.correct for r in ref]))
    out.append(line)
  return out


def best_within(table: Sequence[dict], points: float = 1.0) -> dict | None:
  """The rule that saves the most thinking at no more than `points` of accuracy lost."""
  ok = [r for r in table if r["accuracy_delta_pts"] >= -points - 1e-9
        and r["setting"] != "natural+budget"]
  return max(ok, key=lambda r: r["tokens_saved_pct"]) if ok else None


__all__ = ["NEVER", "best_within", "by_level", "oracle_and_calibration",
           "replay_threshold_rule", "select_threshold", "settings"]
