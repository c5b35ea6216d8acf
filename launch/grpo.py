r"""GRPO from a reasoner with verifier rewards; rerunning the same command resumes after a kill.

  python launch/grpo.py --config=configs/grpo.py --workdir=runs/grpo \
      [--config.grpo.steps=300 --config.grpo.truncation=penalize ...]
  python launch/grpo.py --config=configs/grpo.py:budget --workdir=runs/grpo_budget

A Hugging Face thinking model (Qwen3, R1-Distill-Qwen, Llama 3 with <think> tags) on JSONL
problem sets (one {"prompt": ..., "answer": ..., "task": optional} object per line):

  python launch/grpo.py --config=configs/grpo.py:hf --workdir=runs/grpo_qwen3 \
      --hf_dir=/models/Qwen3-0.6B --data=train.jsonl[,more.jsonl] \
      [--eval_data=test.jsonl --config.grpo.eval_problems=64] \
      [--config.grpo.verifier=numeric --config.grpo.max_answer_tokens=512 ...]

Prompts go through the model's chat template with thinking opened; the text after </think>
is the answer, scored by --config.grpo.verifier (exact, numeric or math: math-verify on
\boxed{} / LaTeX answers); records with a "task" use that built-in task's verifier. A bad
record stops the run before any weights load, naming its file and line.

Prints a progress line per step (reward, accuracy, thinking tokens, truncation rate, KL,
tokens/s, ETA), appends the same to <workdir>/metrics.jsonl, checkpoints every
`checkpoint_every` steps, and writes the final policy to <workdir>/final (a checkpoint
directory launch/think.py --checkpoint reads). The config is checked before any model loads.

Multi-host (docs/REASONING_TRAINING.md, "GRPO at scale: multi-host"): every process runs the
same command; each samples its share of the prompts and the update is one SPMD step.
  python launch/grpo.py --workdir=runs/g --config.grpo.mesh_shape=-1,1,2 \
      --coordinator_address=host0:1234 --num_processes=2 --process_id=0   # once per process
On TPU VMs and under SLURM the cluster is detected without the three process flags
(launch/tpu_pod.sh and launch/slurm_gpu.sbatch start it with SCRIPT=launch/grpo.py).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from o1jax import parallel

_CONFIG = config_flags.DEFINE_config_file("config", "configs/grpo.py", "Config with a `grpo` "
                                          "section.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.jsonl.",
                               required=True)
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A local Hugging Face model directory "
                              "(config.json, safetensors, tokenizer.json, chat template) to "
                              "train; sets grpo.base.")
_DATA = flags.DEFINE_list("data", None, "Comma-separated JSONL problem sets to train on "
                          "(sets grpo.data_files); without it, the built-in task generators.")
_EVAL_DATA = flags.DEFINE_list("eval_data", None, "Comma-separated held-out JSONL sets "
                               "(sets grpo.eval_files): the first grpo.eval_problems records "
                               "(set it, e.g. --config.grpo.eval_problems=64) are evaluated "
                               "greedily every grpo.eval_every steps.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax is chatty at INFO
  from o1jax.training import grpo, grpo_train
  c = _CONFIG.value.grpo
  if _HF_DIR.value:
    c.base = _HF_DIR.value
  if _DATA.value:
    c.data_files = tuple(_DATA.value)
  if _EVAL_DATA.value:
    c.eval_files = tuple(_EVAL_DATA.value)
  try:
    cfg = grpo.GRPOConfig.from_config_dict(c)  # validated here, early
    # Before any JAX computation: joining a cluster must precede backend creation.
    parallel.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    _, _, last = grpo_train.train(cfg, _WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:  # configuration problems: one clear line
    sys.exit(f"error: {e}")
  if parallel.is_primary():
    print("last step:", last)


if __name__ == "__main__":
  app.run(main)
