"""GRPO on the embedded reasoner (launch/grpo.py reads the `grpo` section).

  python launch/grpo.py --config=configs/grpo.py --workdir=runs/grpo \
      [--config.grpo.steps=200 --config.grpo.kl_coef=0.02 ...]
  # L1-style budget-conditioned prompts and rewards:
  python launch/grpo.py --config=configs/grpo.py:budget --workdir=runs/grpo_budget
  # L1 stage 2, from the budget-conditioned SFT policy (launch/budget_sft.py, stage 1):
  python launch/grpo.py --config=configs/grpo.py:budget_l1 --workdir=runs/l1_grpo
  # A Hugging Face thinking model on JSONL problem sets, math-verify rewards:
  python launch/grpo.py --config=configs/grpo.py:hf --workdir=runs/grpo_qwen3 \
      --hf_dir=/models/Qwen3-0.6B --data=train.jsonl [--eval_data=test.jsonl]
  # Level 5 only, held-out evaluation between chunks (issue 31):
  python launch/grpo_level5.py --config=configs/grpo.py:level5 --workdir=runs/l5_grpo_s0
  # ... with the recipe that does not collapse (lr 3e-5, KL 0.04 to the start):
  python launch/grpo_level5.py --config=configs/grpo.py:level5_kl --workdir=runs/l5_kl_s0

Defaults are sized for a shared 2-core CPU: a step (16 prompts x 8 samples, one update) takes
about a second or two on the embedded model. Field meanings: o1jax/training/grpo.py.
"""

import ml_collections
from ml_collections import config_dict


def get_config(variant: str = ""):
  c = ml_collections.ConfigDict()
  c.grpo = ml_collections.ConfigDict(dict(
      base="",                       # "": the embedded reasoner; or a checkpoint / HF dir
      tasks=("addition", "equation", "countdown"),
      data_files=(),                 # JSONL problem sets (launch/grpo.py --data); (): tasks
      verifier="exact",              # for JSONL records without a task: exact, numeric, math
      eval_files=(),                 # held-out JSONL (--eval_data), with data_files
      difficulties=(1, 2, 3, 4),
      split_key="prompt",            # the shipped v2's split; "canonical": no permuted twins
      steps=200,
      prompts_per_step=16,
      group_size=8,
      temperature=1.0,
      # think()'s hard budget per rollout: reasoner v2's reflective traces run 50-230 tokens
      # at levels 1-4 (v1's were 11-163).
      max_thinking=256,
      cache_len=320,
      max_answer_tokens=16,
      clip_eps=0.2,
      # DAPO clip-higher: e.g. low 0.2, high 0.28 (unset: clip_eps); float placeholders so
      # --config.grpo.clip_eps_high=0.28 works
      clip_eps_low=config_dict.placeholder(float),
      clip_eps_high=config_dict.placeholder(float),
      loss_type="grpo",              # or "dr_grpo" (no std division, constant normaliser)
      kl_coef=0.0,                   # > 0 adds beta * k3 KL to the frozen start policy
      log_kl=True,                   # log that KL (only exists when kl_coef > 0)
      updates_per_batch=1,
      tis_cap=2.0,                   # C of truncated importance sampling vs the sampler; 0: off
      dynamic_sampling=False,        # DAPO: drop zero-advantage groups, refill with new prompts
      dynamic_sampling_tries=4,
      logprob_chunk=512,             # positions per logits block (0: full [B, L, V] logits)
      remat=True,
      length_bucket=64,              # batch width: longest trained row rounded up to this
      learning_rate=1e-4,
      warmup_steps=10,
      final_lr_fraction=1.0,
      grad_clip=1.0,
      weight_decay=0.0,
      adv_eps=1e-4,
      truncation="mask",             # or "penalize" (reward truncation_penalty)
      truncation_penalty=-0.5,
      budget_targets=(),
      budget_reward="max",
      budget_alpha=0.5,
      eval_problems=16,              # held-out problems per (task, level), greedy
      eval_every=25,
      eval_seed=1234,
      log_every=1,
      checkpoint_every=10,
      max_to_keep=2,
      mesh_shape=(-1, 1, 1),
      seed=0,
      # Engine slots the rollouts decode in (o1jax/rl/rollouts.py); 0: half the rows, so
      # finished rows' slots take queued rows (docs/REASONING_TRAINING.md, "rollouts").
      rollout_slots=0))
  if variant == "budget":
    c.grpo.update(budget_targets=(16, 32, 48), budget_reward="max", budget_alpha=0.5)
  elif variant == "budget_l1":
    # From the SFT stage's policy, the budgets launch/eval_budget.py measures; a few
    # minutes on the 2-core CPU (docs/REASONING_TRAINING.md, "Budget-conditioned thinking").
    c.grpo.update(base="runs/l1_sft/final", budget_targets=(8, 16, 32, 64, 128, 256),
                  budget_reward="max", budget_alpha=0.5, steps=40, eval_problems=4,
                  eval_every=40, checkpoint_every=20)
  elif variant == "level5":
    # Issue 31: GRPO where reasoner v2 fails, level 5 of addition and equation (38% and 58%
    # greedy; countdown's 96% leaves its groups all right). Their traces run ~200-270
    # tokens, longer with a `wait`; launch/grpo_level5.py evaluates held-out problems
    # between chunks of steps (eval_problems=0 here). Sized for the shared 2-core CPU:
    # 8 prompts x 8 samples a step (~1-3 min there), a learning rate that can move the
    # policy within the few dozen steps that fit.
    c.grpo.update(tasks=("addition", "equation"), difficulties=(5,), split_key="canonical",
                  max_thinking=448,
                  cache_len=512, prompts_per_step=8, group_size=8, learning_rate=3e-4,
                  warmup_steps=5, steps=60, eval_problems=0, checkpoint_every=10,
                  max_to_keep=1)
  elif variant == "level5_kl":
    # Issue 31, the recipe after `level5` collapsed (3e-4 with no KL: level 5 0.66 -> 0.07 in
    # 40 steps). Adam moves every weight by about the learning rate per step whatever the
    # gradient's size, and a 64-rollout policy gradient is mostly noise, so the step size is
    # what bounds the drift: 10x lower, a k3 KL to the start policy (beta as DeepSeekMath),
    # a short warmup; 20 steps (what fits the shared CPU), docs/REASONING_TRAINING.md.
    c.grpo.update(tasks=("addition", "equation"), difficulties=(5,), split_key="canonical",
                  max_thinking=448, cache_len=512, prompts_per_step=8, group_size=8,
                  learning_rate=3e-5, warmup_steps=3, kl_coef=0.04, grad_clip=1.0, steps=20,
                  eval_problems=0, checkpoint_every=10, max_to_keep=1)
  elif variant == "hf":
    # An HF thinking model (--hf_dir) on JSONL sets (--data): math-verify rewards, answers
    # of up to 1,024 tokens after </think>, RL-sized steps. Sized for an accelerator, not
    # for this CPU; cache_len must fit the prompt, both caps and the close text (Qwen3's
    # early-exit message is ~30 tokens), and stay within the model's context.
    c.grpo.update(verifier="math", max_thinking=1024, max_answer_tokens=1024,
                  cache_len=2304, learning_rate=1e-6, warmup_steps=0, kl_coef=0.0,
                  log_kl=False, eval_problems=0, steps=100, checkpoint_every=10)
  elif variant:
    raise ValueError(f"unknown configs/grpo.py variant {variant!r}; known: 'budget', "
                     "'budget_l1', 'level5', 'level5_kl', 'hf'")
  return c
