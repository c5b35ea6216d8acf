"""STaR: the filter keeps only verified rationales and never leaks a hint; an iteration
checkpoints, writes its table and resumes; an iteration with nothing verified fails loudly."""

import json
import os

import jax
import pytest

from o1jax import tasks
from o1jax.model import ModelConfig, init_params
from o1jax.training import rollouts as rl
from o1jax.training import star, star_report, trainer
from o1jax.training.checkpoint import save_pretrained

TINY = ModelConfig(embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16,
                   mlp_dim=64, max_seq_len=128)
HINT = " [hint: {answer}]"


def _problem(seed=0, d=1):
  return tasks.get_task("addition").generate_problems(seed, d, 1)[0]


def _rollout(p, thinking, answer, prompt=None):
  prompt = prompt or p.prompt
  return rl.Rollout(p, prompt, thinking, answer, rl.verify(p, answer), len(thinking), "natural")


def test_filter_keeps_only_verified_deduplicated_rationales():
  p = _problem()
  good = "; ".join(p.steps)
  wrong_answer = str(int(p.answer) + 1)
  rollouts = [
      _rollout(p, good, p.answer),
      _rollout(p, good, p.answer),                   # duplicate
      _rollout(p, " " + good + " ", p.answer + " "),  # duplicate up to whitespace
      _rollout(p, good, wrong_answer),               # wrong answer: dropped
      _rollout(p, "", p.answer),                     # no rationale: dropped
      _rollout(p, "1+1+0=2", p.answer),              # wrong steps, right answer: kept
  ]
  # A rollout that claims to be correct is re-verified, not trusted.
  rollouts.append(rl.Rollout(p, p.prompt, good, wrong_answer, True, 3, "natural"))
  kept = star.filter_rationales(rollouts, hint_template=HINT)
  assert [e.text for e in kept] == [f"{p.prompt}<think>{good}</think>{p.answer}",
                                    f"{p.prompt}<think>1+1+0=2</think>{p.answer}"]
  assert [e.steps_correct for e in kept] == [True, False]
  for e in kept:
    assert rl.verify(p, e.text)
  # With the process filter, the right answer reached by wrong steps goes too.
  strict = star.filter_rationales(rollouts, hint_template=HINT, require_correct_steps=True)
  assert [e.text for e in strict] == [kept[0].text]
  # Empty rationales are kept when asked; `seen` deduplicates across calls.
  seen = set()
  assert len(star.filter_rationales(rollouts, require_thinking=False, seen=seen)) == 3
  assert star.filter_rationales(rollouts, require_thinking=False, seen=seen) == []


def test_rationalised_examples_never_carry_the_hint():
  p = _problem(seed=3, d=2)
  hinted = star.hinted_prompt(p, HINT)
  assert hinted == f"{p.prompt} [hint: {p.answer}]"
  good = "; ".join(p.steps)
  rollouts = [_rollout(p, good, p.answer, prompt=hinted),
              _rollout(p, f"[hint: {p.answer}]", p.answer, prompt=hinted),   # quotes the hint
              _rollout(p, good, f"{p.answer} [hint: {p.answer}]", prompt=hinted)]
  kept = star.filter_rationales(rollouts, rationalized=True, hint_template=HINT)
  assert len(kept) == 1
  e = kept[0]
  assert e.rationalized and e.prompt == p.prompt
  assert e.text == f"{p.prompt}<think>{good}</think>{p.answer}"
  assert "hint" not in e.text
  # The encoded training example starts from the plain prompt too.
  ids = rl.TOK.encode(e.text)
  assert rl.TOK.decode(ids[:len(rl.TOK.encode(p.prompt))]) == p.prompt


def _base(tmp_path):
  params = init_params(TINY, jax.random.key(0))
  path = str(tmp_path / "base")
  save_pretrained(path, params, TINY)
  return path


def _cfg(base, **kw):
  kw = {**dict(base=base, iterations=1, difficulties=(1, 2), problems_per_level=3, samples=2,
               rationalize_samples=1, finetune_steps=3, finetune_batch_size=4,
               eval_problems=2, batch_size=8, cache_len=64, max_answer_tokens=8), **kw}
  return star.StarConfig(**kw)


def _scripted_sampler(calls):
  """Stands in for the policy: right answers for level 1 (directly), hinted ones for level 2
  (only when the prompt carries the hint), so both paths of an iteration are exercised."""
  def sample(params, config, problems, samples, *, prompts=None, **kw):
    calls.append(prompts)
    out = []
    for i, p in enumerate(problems):
      prompt = p.prompt if prompts is None else prompts[i]
      right = p.difficulty == 1 or "[hint:" in prompt
      answer = p.answer if right else "0"
      out.append([_rollout(p, "; ".join(p.steps), answer, prompt)] * samples)
    return out
  return sample


def test_iteration_checkpoints_tables_and_resumes(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(rl, "sample_rollouts", _scripted_sampler(calls))
  base, work = _base(tmp_path), str(tmp_path / "star")
  compiled = trainer.train_step._cache_size()
  # Sized by epochs, iteration 2 (12 examples) fine-tunes for more steps than iteration 1 (6).
  cfg = lambda **kw: _cfg(base, finetune_epochs=1.0, **kw)
  rows = star.run_star(cfg(), work, log=lambda _: None)
  assert [r["iteration"] for r in rows] == [0, 1]
  r = rows[1]
  assert r["problems"] == 6 and r["rationales_kept"] == 3 and r["rationalized"] == 3
  assert r["finetune_examples"] == 6 and r["kept/addition/1"] == 3
  assert "acc/addition/2" in r and "acc/mean" in r
  examples = [json.loads(l) for l in open(os.path.join(work, "iter_01", "examples.jsonl"))]
  assert all("hint" not in e["text"] and e["text"].startswith(e["prompt"] + "<think>")
             for e in examples)
  assert sum(e["rationalized"] for e in examples) == 3
  for name in ("table.csv", "table.json", "iter_01/params.msgpack", "iter_01/model.json"):
    assert os.path.exists(os.path.join(work, name))
  # Rerunning with more iterations resumes after iteration 1 (no re-sampling of it).
  calls.clear()
  rows = star.run_star(cfg(iterations=2), work, log=lambda _: None)
  assert [r["iteration"] for r in rows] == [0, 1, 2]
  assert [r["finetune_steps"] for r in rows[1:]] == [2, 3]
  # Both fine-tunes ran one compiled step (none at all if an earlier test compiled it).
  assert trainer.train_step._cache_size() - compiled <= 1
  assert len(calls) == 2  # iteration 2 only: a direct pass and a hinted pass
  assert json.load(open(os.path.join(work, "table.json")))[-1]["finetune_examples"] == 12


def test_an_iteration_with_nothing_verified_is_an_error(tmp_path):
  # A random tiny model verifies nothing: a clear error, not a silent empty fine-tune.
  base = _base(tmp_path)
  with pytest.raises(star.StarError, match="no verified rationale"):
    star.run_star(_cfg(base, rationalize=False), str(tmp_path / "a"), log=lambda _: None)
  with pytest.warns(UserWarning, match="no verified rationale"):
    rows = star.run_star(_cfg(base, rationalize=False, on_empty="skip"), str(tmp_path / "b"),
                         log=lambda _: None)
  assert rows[-1]["finetune_examples"] == 0
  with pytest.raises(star.StarError, match="no examples"):
    star.finetune(None, TINY, [], steps=1, batch_size=1, learning_rate=1e-3, seq_len=32)


def test_curriculum_and_the_answers_only_baseline(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(rl, "sample_rollouts", _scripted_sampler(calls))
  base = _base(tmp_path)
  cfg = _cfg(base, difficulties=(1, 2, 3), curriculum=1, iterations=2, rationalize=False)
  # STaR's curriculum: one level at iteration 1, the next harder one added each iteration.
  assert [cfg.levels_at(i) for i in (1, 2, 3, 4)] == [(1,), (1, 2), (1, 2, 3), (1, 2, 3)]
  assert star.StarConfig(base="x", difficulties=(1, 2)).levels_at(5) == (1, 2)
  rows = star.run_star(cfg, str(tmp_path / "cur"), log=lambda _: None)
  assert [r["problems"] for r in rows[1:]] == [3, 6]
  # The answers-only baseline: the same problems with their answers and no rationale, the
  # same number of fine-tune steps, no sampling at all.
  calls.clear()
  base_cfg = _cfg(base, difficulties=(1, 2), iterations=2, finetune_steps=4)
  runs = star_report.variants(base_cfg)
  assert [c.run_name for c in runs.values()] == list(star_report.RUNS)
  work = str(tmp_path / "ans")
  rows = star.run_star(runs["answers_only"], work, log=lambda _: None)
  assert calls == []
  assert [r["finetune_steps"] for r in rows[1:]] == [4, 4]
  assert [r["finetune_examples"] for r in rows[1:]] == [6, 12]
  assert rows[2]["examples/addition/2"] == 6 and rows[2]["rationales_kept"] == 0
  examples = [json.loads(l) for l in open(os.path.join(work, "iter_01", "examples.jsonl"))]
  problems = [p for d in (1, 2) for p in tasks.get_task("addition").generate_problems(
      1, d, 3, split="train")]  # iteration 1's problems (seed 0 * 1000 + 1)
  assert [e["text"] for e in examples] == [f"{p.prompt}<think></think>{p.answer}"
                                           for p in problems]
  # The comparison table: one row per iteration and level, the columns the issue names.
  table = star_report.csv_rows("answers_only", rows, ("addition",), (1, 2))
  path = str(tmp_path / "star.csv")
  star_report.write_csv(path, table)
  back = star_report.read_csv(path)
  assert [(r["iteration"], r["difficulty"]) for r in back] == [
      (i, d) for i in (0, 1, 2) for d in (1, 2)]
  assert [r["examples"] for r in back] == [0, 0, 3, 3, 6, 6]
  assert [r["accuracy"] for r in back] == [round(rows[i][f"acc/addition/{d}"], 4)
                                           for i in (0, 1, 2) for d in (1, 2)]


def test_comparison_gains_against_a_hand_computation(tmp_path):
  def rows(run, accs):  # accs[iteration] = (level 1, level 2, level 3)
    return [{"run": run, "iteration": i, "task": "addition", "difficulty": d,
             "accuracy": a, "kept": 0, "rationalised": 0, "examples": 0}
            for i, levels in enumerate(accs) for d, a in zip((1, 2, 3), levels)]
  table = (rows("star", [(1.0, 0.0, 0.0), (1.0, 0.5, 0.25), (0.9, 0.75, 0.75)])
           + rows("answers_only", [(1.0, 0.0, 0.0), (1.0, 0.25, 0.0), (1.0, 0.25, 0.25)]))
  curves = star_report.held_back_accuracy(table, (2, 3))
  assert curves == {"star": [0.0, 0.375, 0.75], "answers_only": [0.0, 0.125, 0.25]}
  g = star_report.gains(table, (2, 3))
  assert g == pytest.approx({"gain/star": 0.75, "gain/answers_only": 0.25,
                             "star_minus/answers_only": 0.5})
  star_report.plot(table, (2, 3), str(tmp_path / "star.png"), "test")
  assert os.path.getsize(tmp_path / "star.png") > 1000


def test_bad_config_is_named():
  with pytest.raises(ValueError, match="hint_template"):
    star.StarConfig(base="x", hint_template="no placeholder")
  with pytest.raises(ValueError, match="on_empty"):
    star.StarConfig(base="x", on_empty="ignore")
  with pytest.raises(ValueError, match="difficulty"):
    star.StarConfig(base="x", difficulties=(7,))
  with pytest.raises(ValueError, match="method"):
    star.StarConfig(base="x", method="answers")
  with pytest.raises(ValueError, match="curriculum"):
    star.StarConfig(base="x", difficulties=(1, 2), curriculum=3)
