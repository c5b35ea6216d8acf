"""launch/tpu_pod.sh, run against a fake `gcloud`: the command it sends to every worker is
then run here in a sandbox HOME with fake binaries (no network, no TPU, no real venv)."""

from __future__ import annotations

import os
import stat
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(path, body):
  path.write_text("#!/bin/bash\n" + body + "\n")
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_tpu_pod_builds_a_python_311_venv_and_mounts_with_directory_renames(tmp_path):
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  bin_dir.mkdir()
  home.mkdir()
  sent = tmp_path / "worker_command"
  _script(bin_dir / "gcloud", f"""[ "$1" = config ] && {{ echo project; exit 0; }}
for a in "$@"; do case "$a" in --command=*) printf '%s' "${{a#--command=}}" > {sent};; esac; done""")
  env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", TPU="t", ZONE="z",
             WORKDIR="/mnt/runs", BUCKET="my-bucket")
  run = subprocess.run(["bash", "launch/tpu_pod.sh", "--config.train.steps=5"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr
  command = sent.read_text()
  # orbax commits by renaming a directory: gcsfuse must allow it on a flat bucket.
  assert "gcsfuse" in command and "--rename-dir-limit=" in command

  # The worker: TPU VM images have Python 3.10 as python3 and an old venv may exist.
  calls = tmp_path / "calls"
  venv_python = ('[ "$1" = -c ] && exit {rc}; echo "venv-python $*" >> ' + str(calls))
  worker_bin = tmp_path / "worker_bin"
  worker_bin.mkdir()
  for name in ("python3.13", "python3.12"):
    _script(worker_bin / name, "exit 127")  # not installed
  _script(worker_bin / "python3.11", f"""echo "python3.11 $*" >> {calls}
mkdir -p "$3/bin"; printf '#!/bin/bash\\n%s\\n' '{venv_python.format(rc=0)}' > "$3/bin/python"
cp "$3/bin/python" "$3/bin/pip"; chmod +x "$3/bin/python" "$3/bin/pip\"""")
  _script(worker_bin / "mountpoint", "exit 0")  # /mnt already mounted: no sudo needed
  (home / "o1jax-venv" / "bin").mkdir(parents=True)
  _script(home / "o1jax-venv" / "bin" / "python", venv_python.format(rc=1))  # Python 3.10
  subprocess.run(["tar", "czf", str(home / "o1jax.tar.gz"), "-T", "/dev/null"], check=True)
  worker = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                          env=dict(HOME=str(home), PATH=f"{worker_bin}:/usr/bin:/bin"))
  assert worker.returncode == 0, worker.stderr
  log = calls.read_text()
  assert f"python3.11 -m venv {home}/o1jax-venv" in log  # the 3.10 venv was replaced
  assert "launch/train.py --workdir=/mnt/runs --config.train.steps=5" in log


def _fake_gcloud(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  sent = tmp_path / "worker_command"
  _script(bin_dir / "gcloud", f"""[ "$1" = config ] && {{ echo project; exit 0; }}
for a in "$@"; do case "$a" in --command=*) printf '%s' "${{a#--command=}}" > {sent};; esac; done""")
  return bin_dir, sent


def test_tpu_pod_starts_grpo_when_script_says_so(tmp_path):
  bin_dir, sent = _fake_gcloud(tmp_path)
  env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", TPU="t", ZONE="z",
             WORKDIR="/mnt/g", SCRIPT="launch/grpo.py")
  run = subprocess.run(["bash", "launch/tpu_pod.sh", "--config=configs/grpo.py",
                        "--config.grpo.mesh_shape=-1,1,4"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr
  # Arguments are quoted with printf %q for the worker's shell (`-1\,1\,4` reads as -1,1,4).
  assert ("~/o1jax-venv/bin/python launch/grpo.py --workdir=/mnt/g --config=configs/grpo.py "
          r"--config.grpo.mesh_shape=-1\,1\,4") in sent.read_text()
  bad = subprocess.run(["bash", "launch/tpu_pod.sh"], cwd=REPO, capture_output=True, text=True,
                       env={**env, "SCRIPT": "launch/nope.py"}, timeout=60)
  assert bad.returncode != 0 and "SCRIPT=launch/nope.py" in bad.stderr


def test_slurm_script_starts_grpo_on_every_task(tmp_path):
  """A fake `srun` runs the task command once per task with SLURM's variables; a fake
  Python records what each task would run."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  calls = tmp_path / "calls"
  _script(bin_dir / "scontrol", "echo node-a; echo node-b")
  _script(bin_dir / "srun", """shift  # --kill-on-bad-exit=1
for id in 0 1 2 3; do SLURM_PROCID=$id SLURM_LOCALID=$((id % 2)) "$@" || exit 1; done""")
  _script(tmp_path / "python", f'echo "$JAX_LOCAL_DEVICE_IDS $*" >> {calls}')
  env = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", SLURM_JOB_NODELIST="node-[a-b]",
             SLURM_JOB_ID="77", SLURM_NTASKS="4", SLURM_NTASKS_PER_NODE="2",
             PYTHON=str(tmp_path / "python"), SCRIPT="launch/grpo.py", WORKDIR="/shared/g")
  run = subprocess.run(["bash", "launch/slurm_gpu.sbatch", "--config=configs/grpo.py"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr
  lines = calls.read_text().splitlines()
  assert lines == [f"{i % 2} launch/grpo.py --workdir=/shared/g --coordinator_address="
                   f"node-a:20077 --num_processes=4 --process_id={i} --config=configs/grpo.py"
                   for i in range(4)]
