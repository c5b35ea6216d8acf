#!/usr/bin/env bash
# Trains on every host of a Cloud TPU VM slice (e.g. v4-32 = 4 hosts): copies this repo's
# HEAD to each worker, installs it, then starts launch/train.py on all workers at once.
# JAX finds its peers through the TPU metadata (o1jax.parallel.initialize detects the TPU VM),
# so no process flags are needed; extra arguments go to launch/train.py:
#
#   TPU=my-v4-32 ZONE=us-central2-b WORKDIR=/mnt/runs/v4 \
#     bash launch/tpu_pod.sh --config.mesh.shape=-1,1,4 --config.train.steps=5000
#
# WORKDIR must be one directory that every worker sees (orbax writes each host's shards
# there and process 0 the metadata): set BUCKET to mount a GCS bucket with gcsfuse at /mnt,
# or point it at an NFS/Filestore mount. Uncommitted changes are not copied (git archive HEAD).
# DETACH=1 runs training under nohup (log in ~/o1jax/train.log on each worker), so a dropped
# ssh connection does not stop it. The virtualenv (~/o1jax-venv) is kept between launches.
set -euo pipefail

: "${TPU:?set TPU to the TPU VM name}"
: "${ZONE:?set ZONE to its zone}"
: "${WORKDIR:?set WORKDIR to a directory every worker sees}"
PROJECT=${PROJECT:-$(gcloud config get-value project 2>/dev/null)}
JAX_SPEC=${JAX_SPEC:-jax[tpu]}
GC=(gcloud compute tpus tpu-vm --zone="$ZONE" --project="$PROJECT")

cd "$(git rev-parse --show-toplevel)"
tarball=$(mktemp -t o1jax-XXXX.tar.gz)
git archive --format=tar.gz -o "$tarball" HEAD
"${GC[@]}" scp "$tarball" "$TPU":o1jax.tar.gz --worker=all
rm -f "$tarball"

mount_cmd=true
if [ -n "${BUCKET:-}" ]; then
  mount_cmd="mountpoint -q /mnt || sudo gcsfuse --implicit-dirs -o allow_other $BUCKET /mnt"
fi

train_args=$(printf ' %q' "$@")
run="cd ~/o1jax && ~/o1jax-venv/bin/python launch/train.py --workdir=$(printf %q "$WORKDIR")$train_args"
if [ "${DETACH:-0}" = 1 ]; then
  run="cd ~/o1jax && nohup bash -c $(printf %q "$run") > train.log 2>&1 &"
fi

# One ssh per worker, all at once: every host must start training for any to proceed.
"${GC[@]}" ssh "$TPU" --worker=all --command="set -e
  rm -rf ~/o1jax && mkdir -p ~/o1jax && tar xzf ~/o1jax.tar.gz -C ~/o1jax
  [ -x ~/o1jax-venv/bin/python ] || python3 -m venv ~/o1jax-venv
  cd ~/o1jax && ~/o1jax-venv/bin/pip install -q -e . '$JAX_SPEC'
  $mount_cmd
  $run"
