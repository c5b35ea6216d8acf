r"""How the canonical split changes the train/held-out sides (issue 31), hashing only.

  python launch/split_report.py --out=docs/grpo/canonical_split.csv

Per task and level, over --draws draws (split "any", seed --seed): the distinct prompts, how
many changed side between the prompt-hash split reasoner v2 was trained on
(split_key="prompt") and the canonical split (split_key="canonical"), and the leak each
split leaves: held-out prompts with a permuted twin (countdown's numbers in another order,
b+a for a+b; equation has none) in a --sample-problem training sample of the same split, as
issue 31 counted it. Then the v2 leak on the canonical held-out side: how many canonical
held-out prompts v2's training side held, themselves or a twin (every twin that is a valid
prompt of the task, whatever its level, is looked up; no sampling), and for countdown, whose
levels can be listed whole, those counts over the whole pool.
"""

import csv
import itertools
import os

from absl import app, flags

_DRAWS = flags.DEFINE_integer("draws", 10_000, "Draws per task and level.")
_SAMPLE = flags.DEFINE_integer("sample", 5_000, "Training problems per level in the leak "
                               "sample (issue 31 used 5k).")
_SEED = flags.DEFINE_integer("seed", 0, "Draw seed.")
_OUT = flags.DEFINE_string("out", "docs/grpo/canonical_split.csv", "CSV to write.")


def permuted_twins(task, problem):
  """The other valid prompts of the task with the same operands in another order."""
  if problem.task == "equation":
    return []
  if problem.task == "addition":
    a, b = problem.data
    texts = {f"{b}+{a}="}
  else:
    *numbers, target = problem.data
    texts = {f"{' '.join(map(str, p))} to {target}" for p in itertools.permutations(numbers)}
  twins = [task.from_prompt(t) for t in texts - {problem.prompt}]
  return [t for t in twins if t is not None]


def main(argv):
  del argv
  from o1jax import tasks
  rows = []
  for name in sorted(tasks.TASKS):
    task = tasks.get_task(name)
    for d in task.difficulties:
      pool = {p.prompt: p for p in task.generate_problems(_SEED.value, d, _DRAWS.value, "any")}
      side = {k: {q: task.in_split(p, "eval", k) for q, p in pool.items()}
              for k in tasks.SPLIT_KEYS}
      changed = sum(side["prompt"][q] != side["canonical"][q] for q in pool)
      row = {"task": name, "level": d, "distinct_prompts": len(pool), "changed_side": changed,
             "heldout_to_train": sum(side["prompt"][q] and not side["canonical"][q]
                                     for q in pool),
             "train_to_heldout": sum(side["canonical"][q] and not side["prompt"][q]
                                     for q in pool)}
      for k in tasks.SPLIT_KEYS:
        train = {p.prompt for p in task.generate_problems(_SEED.value + 1, d, _SAMPLE.value,
                                                          "train", split_key=k)}
        held = [p for q, p in pool.items() if side[k][q]]
        row[f"{k}_heldout"] = len(held)
        row[f"{k}_heldout_twin_in_sample"] = sum(
            any(t.prompt in train for t in permuted_twins(task, p)) for p in held)
      # v2's leak on the canonical held-out side: the prompt or a twin on v2's training side.
      held = [p for q, p in pool.items() if side["canonical"][q]]
      row["canonical_heldout_in_v2_train_side"] = sum(
          any(not task.in_split(t, "eval", "prompt") for t in [p] + permuted_twins(task, p))
          for p in held)
      row["canonical_heldout_twin_in_v2_train_side"] = sum(
          any(not task.in_split(t, "eval", "prompt") for t in permuted_twins(task, p))
          for p in held)
      # Where the level's every prompt can be listed (countdown's tables), the whole pool:
      # its canonical held-out prompts, and those v2's training side held neither themselves
      # nor as a twin (tasks.registry.unseen_heldout_problems draws from these).
      row["pool_canonical_heldout"] = row["pool_unseen_by_v2"] = ""
      if name == "countdown":
        from o1jax.tasks import countdown
        whole = [task.from_prompt(f"{' '.join(map(str, n))} to {t}")
                 for n, t in countdown._prompts_by_difficulty(d)]
        held = [p for p in whole if task.in_split(p, "eval")]
        row["pool_canonical_heldout"] = len(held)
        row["pool_unseen_by_v2"] = sum(
            all(task.in_split(t, "eval", "prompt") for t in [p] + permuted_twins(task, p))
            for p in held)
      rows.append(row)
      print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
  os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
  with open(_OUT.value, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  print("wrote", _OUT.value)


if __name__ == "__main__":
  app.run(main)
