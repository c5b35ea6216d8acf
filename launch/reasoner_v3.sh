#!/bin/bash
# Reasoner v3 (issue 31, item 3): v2's recipe retrained from scratch on the canonical split,
# so no held-out problem has a permuted twin in training. Every stage resumes from its last
# checkpoint after a kill; rerunning the script skips finished stages' steps.
#
#   bash launch/reasoner_v3.sh            # from the repository root; PYTHON=... to choose
#
# Stages so far (wall times on the 2-core CPU dev VM, 2026-12-07, shared with a test run):
#   1. the tiny recipe (configs/tiny.py, 1700 steps of 18 x 240 tokens): 23.7 min
#   2. reasoner v2's fine-tune (configs/reasoner.py, 3000 steps of 8 x 640 tokens): 44.8 min
# Training-time evaluation after stage 2 (canonical held-out, 16 problems a cell): 1.00 on
# levels 1-4 but equation 1 (0.94); level 5 addition 0.94, equation 0.81, countdown 1.00.
#   3. budget conditioning folded in (configs/budget_sft.py:v3, 3600 steps, levels 1-5): TBD
#   4. GRPO on level 5 (configs/grpo.py:level5_kl, 20 steps, evaluated at 0/10/20): TBD
#   5. ship checks (canonical held-out): the forced-budget sweep, [budget N] vs forcing: TBD
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RUNS=${RUNS:-runs/v3}

$PY launch/train.py --config=configs/tiny.py --workdir="$RUNS/tiny" \
  --config.data.split_key=canonical --config.train.export_dir="$RUNS/tiny_export"
$PY launch/train.py --config=configs/reasoner.py --workdir="$RUNS/reasoner" \
  --config.data.split_key=canonical --config.train.init_params="$RUNS/tiny_export" \
  --config.train.export_dir="$RUNS/reasoner_export"

# Budget SFT has no mid-run checkpoint (18-25 min); a finished stage is skipped.
[ -f "$RUNS/budget/final/model.json" ] || $PY launch/budget_sft.py \
  --config=configs/budget_sft.py:v3 --config.base="$RUNS/reasoner_export" --workdir="$RUNS/budget"
$PY launch/grpo_level5.py --config=configs/grpo.py:level5_kl --workdir="$RUNS/rl" \
  --config.grpo.base="$RUNS/budget/final"
V3="$RUNS/rl/final"
$PY launch/sweep.py --checkpoint="$V3" --split_key=canonical --nostop_rule_sweep \
  --out="$RUNS/checks/sweep"
$PY launch/eval_budget.py --policy="$V3" --base="$V3" --split_key=canonical \
  --out="$RUNS/checks/budget"
$PY launch/ship_checks.py --sweep="$RUNS/checks/sweep" --budget="$RUNS/checks/budget" \
  --out="$RUNS/checks/ship_checks.json"
