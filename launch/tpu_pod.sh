#!/usr/bin/env bash
# Trains on every host of a Cloud TPU VM slice (e.g. v4-32 = 4 hosts): copies this repo's
# HEAD to each worker, installs it, then starts launch/train.py (or SCRIPT) on all workers at
# once. JAX finds its peers through the TPU metadata (o1jax.parallel.initialize detects the TPU
# VM), so no process flags are needed; extra arguments go to the script:
#
#   TPU=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/runs/v4 \
#     bash launch/tpu_pod.sh --config.mesh.shape=-1,1,4 --config.train.steps=5000
#   SCRIPT=launch/grpo.py TPU=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/runs/grpo \
#     bash launch/tpu_pod.sh --config=configs/grpo.py --config.grpo.mesh_shape=-1,1,4
#
# SCRIPT is launch/train.py (default) or launch/grpo.py: a launcher that joins the cluster
# through o1jax.parallel.initialize and takes --workdir.
# WORKDIR must be one directory that every worker sees (orbax writes each host's shards
# there and process 0 the metadata): set BUCKET to mount a GCS bucket with gcsfuse at /mnt,
# or point it at an NFS/Filestore mount. Uncommitted changes are not copied (git archive HEAD).
# DETACH=1 runs training under nohup (log in ~/o1jax/train.log on each worker), so a dropped
# ssh connection does not stop it. The virtualenv (~/o1jax-venv) is kept between launches.
#
# Python: o1jax and current jax need 3.11+, but TPU VM images ship 3.10 as python3. The
# venv is made from the newest python3.1x >= 3.11 on the worker, else from a Python that
# uv downloads (PYTHON_VERSION, default 3.11); a venv on an older Python is replaced.
set -euo pipefail

: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to its zone}"
: "${WORKDIR:?set WORKDIR to a directory every worker sees}"
PROJECT=${PROJECT:-$(gcloud config get-value project 2>/dev/null)}
JAX_SPEC=${JAX_SPEC:-jax[tpu]}
SCRIPT=${SCRIPT:-launch/train.py}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
GC=(gcloud compute tpus tpu-vm --zone="$ZONE" --project="$PROJECT")

cd "$(git rev-parse --show-toplevel)"
[ -f "$SCRIPT" ] || { echo "SCRIPT=$SCRIPT is not a file of this repository" >&2; exit 1; }
tarball=$(mktemp -t o1jax-XXXX.tar.gz)
git archive --format=tar.gz -o "$tarball" HEAD
"${GC[@]}" scp "$tarball" "$TPU":o1jax.tar.gz --worker=all
rm -f "$tarball"

mount_cmd=true
if [ -n "${BUCKET:-}" ]; then
  # orbax commits a checkpoint by renaming its temporary directory; on a bucket without
  # hierarchical namespace gcsfuse refuses directory renames unless --rename-dir-limit
  # allows them (a rename copies every object below, so the limit must exceed the files
  # of one checkpoint).
  mount_cmd="mountpoint -q /mnt || sudo gcsfuse --implicit-dirs --rename-dir-limit=200000 \
    -o allow_other $BUCKET /mnt"
fi

# Runs on each worker: a venv on Python >= 3.11 (see the header).
venv_cmd='ok() { "$1" -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null; }
  if ! ok ~/o1jax-venv/bin/python; then
    rm -rf ~/o1jax-venv
    py=$(for p in python3.13 python3.12 python3.11; do ok "$p" && echo "$p" && break; done; true)
    if [ -n "$py" ]; then
      "$py" -m venv ~/o1jax-venv
    else
      command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
      PATH=$HOME/.local/bin:$PATH uv venv --seed --python "'"$PYTHON_VERSION"'" ~/o1jax-venv
    fi
  fi'

train_args=$(printf ' %q' "$@")
run="cd ~/o1jax && ~/o1jax-venv/bin/python $(printf %q "$SCRIPT") --workdir=$(printf %q "$WORKDIR")$train_args"
if [ "${DETACH:-0}" = 1 ]; then
  run="cd ~/o1jax && nohup bash -c $(printf %q "$run") > train.log 2>&1 &"
fi

# One ssh per worker, all at once: every host must start training for any to proceed.
"${GC[@]}" ssh "$TPU" --worker=all --command="set -e
  rm -rf ~/o1jax && mkdir -p ~/o1jax && tar xzf ~/o1jax.tar.gz -C ~/o1jax
  $venv_cmd
  cd ~/o1jax && ~/o1jax-venv/bin/pip install -q -e . '$JAX_SPEC'
  $mount_cmd
  $run"
