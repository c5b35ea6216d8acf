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
# Still to come: the budget-conditioning stage folded in, RL on the hard levels, ship checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RUNS=${RUNS:-runs/v3}

$PY launch/train.py --config=configs/tiny.py --workdir="$RUNS/tiny" \
  --config.data.split_key=canonical --config.train.export_dir="$RUNS/tiny_export"
$PY launch/train.py --config=configs/reasoner.py --workdir="$RUNS/reasoner" \
  --config.data.split_key=canonical --config.train.init_params="$RUNS/tiny_export" \
  --config.train.export_dir="$RUNS/reasoner_export"
