#!/bin/bash
# Reasoner v3 (issue 31, item 3): v2's recipe retrained from scratch on the canonical split,
# so no held-out problem has a permuted twin in training. Every stage resumes from its last
# checkpoint after a kill; rerunning the script skips finished stages' steps.
#
#   bash launch/reasoner_v3.sh            # from the repository root; PYTHON=... to choose
#
# Stages (wall times on the 2-core CPU dev VM; 1-2 on 2026-12-07 beside a test run):
#   1. the tiny recipe (configs/tiny.py, 1700 steps of 18 x 240 tokens): 23.7 min
#   2. reasoner v2's fine-tune (configs/reasoner.py, 3000 steps of 8 x 640 tokens): 44.8 min
# Training-time evaluation after stage 2 (canonical held-out, 16 problems a cell): 1.00 on
# levels 1-4 but equation 1 (0.94); level 5 addition 0.94, equation 0.81, countdown 1.00.
#   3. budget conditioning folded in (configs/budget_sft.py:v3: 3600 steps, levels 1-5, 30%
#      plain and 20% forced-close examples, 3e-4): 31.1 min
#   4. GRPO on level 5 (configs/grpo.py:level5_kl, 20 steps, evaluated at 0/10/20): 11.4 min
#      beside seed 1 and RFT (docs/v3/level5_rl.*)
#   5. ship checks on the canonical held-out side: the forced-budget sweep (3.2 min) and
#      [budget N] vs forcing (3.0 min), run side by side; launch/ship_checks.py reads both.
# Measured 2026-12-08 on the 2-core CPU dev VM; results and the checks v3 missed:
# docs/REASONING_TRAINING.md, "Reasoner v3", and docs/v3/.
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
OUT=${OUT:-$RUNS/checks}
$PY launch/sweep.py --checkpoint="$V3" --split_key=canonical --nostop_rule_sweep --out="$OUT"
$PY launch/eval_budget.py --policy="$V3" --base="$V3" --split_key=canonical --out="$OUT"
$PY launch/ship_checks.py --sweep="$OUT" --budget="$OUT" --out="$OUT/ship_checks.json"
