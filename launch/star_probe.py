"""Can STaR start from this base? Samples K rationales per problem, with and without the
answer as a hint, and prints how often they verify: STaR bootstraps only what its sampler
sometimes finds (pass@K > 0 on the levels it is meant to lift).

  python launch/star_probe.py --base=runs/star_base --levels=3,4
  python launch/star_probe.py --base=runs/star_base --levels=3,4 --temperature=0.7 --samples=16

Per level: the fraction of samples whose answer verifies, pass@K (problems with at least one),
the rationales STaR's filter would keep (verified, non-empty, hint-free, deduplicated) and the
fraction of those whose every step passes the task's checker. Training-split problems, a
fixed seed: the same command prints the same numbers.
"""

import sys

from absl import app, flags, logging

_BASE = flags.DEFINE_string("base", "runs/star_base", "Checkpoint dir or training workdir.")
_TASK = flags.DEFINE_string("task", "addition", "Task to probe.")
_LEVELS = flags.DEFINE_list("levels", ["3", "4"], "Difficulty levels to probe.")
_PROBLEMS = flags.DEFINE_integer("problems", 32, "Training problems per level.")
_SAMPLES = flags.DEFINE_integer("samples", 8, "K samples per problem.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature.")
_MIN_THINKING = flags.DEFINE_integer("min_thinking", 8, "Close suppressed below this many "
                                     "thinking tokens (as configs/star.py samples).")
_CACHE_LEN = flags.DEFINE_integer("cache_len", 128, "Decode cache length.")
_HINT = flags.DEFINE_string("hint_template", " [hint: {answer}]", "Rationalisation hint.")
_SEED = flags.DEFINE_integer("seed", 7, "Problem and sampling seed.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  import numpy as np
  from o1jax import tasks
  from o1jax.thinking import make_think_config
  from o1jax.training import rollouts as rl
  from o1jax.training import star
  from o1jax.training.checkpoint import load_params
  try:
    task = tasks.get_task(_TASK.value)
    levels = [task.check_difficulty(int(d)) for d in _LEVELS.value]
    if _PROBLEMS.value <= 0 or _SAMPLES.value <= 0:
      raise ValueError("--problems and --samples must be positive")
    params, model_config, _ = load_params(_BASE.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  config = make_think_config(model_config, rl.TOK, _CACHE_LEN.value,
                             temperature=_TEMPERATURE.value, max_answer_tokens=16)
  print(f"{_BASE.value}: K={_SAMPLES.value} at temperature {_TEMPERATURE.value}, "
        f"{_PROBLEMS.value} problems per level")
  for d in levels:
    problems = task.generate_problems(_SEED.value, d, _PROBLEMS.value, split="train")
    for hinted in (False, True):
      prompts = [star.hinted_prompt(p, _HINT.value) for p in problems] if hinted else None
      rollouts = rl.sample_rollouts(params, config, problems, _SAMPLES.value, prompts=prompts,
                                    seed=_SEED.value, batch_size=256,
                                    min_thinking=_MIN_THINKING.value)
      ok = np.asarray([[rl.verify(r.problem, r.answer) for r in row] for row in rollouts])
      kept = star.filter_rationales([r for row in rollouts for r in row], rationalized=hinted,
                                    hint_template=_HINT.value)
      steps_ok = np.mean([e.steps_correct for e in kept]) if kept else float("nan")
      print(f"{task.name} level {d} {'hinted' if hinted else 'plain ':6}: "
            f"sample accuracy {ok.mean():.3f}  pass@{_SAMPLES.value} {ok.any(1).mean():.3f}  "
            f"kept {len(kept)}  steps all correct {steps_ok:.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
