"""Budget-conditioned SFT (L1-style, stage 1): fine-tune a reasoner on `[budget N]` prompts
whose thinking is the most informative plan that fits N (o1jax/training/budget_sft.py).

  python launch/budget_sft.py --config=configs/budget_sft.py --workdir=runs/l1_sft

Prints a progress line every 50 steps (loss, tokens/s, ETA) and writes the policy to
<workdir>/final, a checkpoint directory that launch/grpo.py (`--config.grpo.base`),
launch/eval_budget.py and launch/think.py read.
"""

import collections
import dataclasses
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/budget_sft.py",
                                          "Config with `base` and an `sft` section.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.", required=True)


def _say(line: str) -> None:
  print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from o1jax.training import budget_sft
  from o1jax.training.checkpoint import save_pretrained
  from o1jax.training.grpo_train import load_policy
  try:
    cfg = budget_sft.SFTConfig.from_config_dict(_CONFIG.value.sft)
    params, model_config, tokenizer = load_policy(_CONFIG.value.base)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  t0 = time.time()
  examples = budget_sft.make_examples(cfg)
  plans = collections.Counter(e.plan if e.budget is not None or e.forced else "plain"
                              for e in examples)
  _say(f"{len(examples)} examples in {time.time() - t0:.0f}s; plans: {dict(plans)}")
  params, losses = budget_sft.finetune(params, model_config, examples, cfg,
                                       tokenizer=tokenizer, log=_say)
  wall = time.time() - t0
  out = os.path.join(_WORKDIR.value, "final")
  save_pretrained(out, params, model_config, {
      "version": "budget-conditioned SFT (L1-style stage 1)",
      "base": _CONFIG.value.base or "embedded reasoner v2",
      "sft_config": dataclasses.asdict(cfg), "plans": dict(plans),
      "final_loss": sum(losses[-50:]) / len(losses[-50:]), "wall_s": wall,
      "load_avg": os.getloadavg()})
  _say(f"wrote {out} ({wall:.0f}s in all)")


if __name__ == "__main__":
  app.run(main)
