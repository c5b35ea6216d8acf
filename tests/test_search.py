"""Test-time search: selection rules, accounting, budgets, layout independence, backtracking,
and checker-guided beam search solving problems that greedy decoding fails."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from o1jax import tasks
from o1jax.search import Candidate, SearchConfig, choose, search
from o1jax.search import select
from o1jax import search as search_lib
from o1jax.tasks.tokenizer import CharTokenizer
from o1jax.thinking import SpeculativeConfig, make_think_config, think_texts
from o1jax.search.scorers import checker_scorer

TOK = CharTokenizer()
COUNTDOWN = tasks.get_task("countdown")


def _cand(index, answer, steps=(), final=float("nan")):
  return Candidate(index=index, thinking="", answer=answer, step_scores=tuple(steps),
                   final_score=final)


def test_selection_rules_and_deterministic_ties():
  c = [_cand(0, "7", (0.9, 0.1), 0.1), _cand(1, "8", (0.6, 0.7), 0.9),
       _cand(2, " 8", (0.5, 0.5), 0.3), _cand(3, "7", (0.9, 0.9), 0.2)]
  assert select.aggregate((0.9, 0.2), "min") == pytest.approx(0.2)
  assert select.aggregate((0.9, 0.2), "last") == pytest.approx(0.2)
  assert select.aggregate((0.5, 0.4), "prod") == pytest.approx(0.2)
  assert select.aggregate((), "min") == 0.0
  # "8" and " 8" are one answer; 2 votes each for 7 and 8: the first seen (7) wins.
  assert choose(c, "majority").index == 0
  assert choose(c, "best:prm_min").index == 3          # min scores .1 .6 .5 .9
  assert choose(c, "best:prm_last").index == 3
  assert choose(c, "best:orm").index == 1
  assert choose(c, "vote:prm_min").answer == "8"       # 8: .6+.5 = 1.1 > 7: .1+.9
  # Equal best scores: the lowest index wins, whatever the list order.
  tied = [_cand(5, "1", (0.5,)), _cand(2, "2", (0.5,)), _cand(9, "3", (0.5,))]
  assert choose(tied, "best:prm_last").index == 2
  assert choose(tied[::-1], "vote:prm_last").index == 2
  with pytest.raises(ValueError, match="unknown selector"):
    choose(c, "best_of")
  with pytest.raises(ValueError, match="aggregate"):
    select.aggregate((0.5,), "mean")


def test_search_config_rejects_bad_values():
  with pytest.raises(ValueError, match="strategy"):
    SearchConfig(strategy="mcts")
  with pytest.raises(ValueError, match="multiple of beam_width"):
    SearchConfig(strategy="beam", n=6, beam_width=4)
  with pytest.raises(ValueError, match="backtrack_threshold"):
    SearchConfig(backtrack_threshold=1.5)
  with pytest.raises(ValueError, match="not both"):
    search(None, TOK, ["1+2="], None, SearchConfig(), heads={"prm": {}},
           host_scorer=lambda i, steps, closed: 1.0)


@pytest.fixture(scope="module")
def setup(model):
  params, config = model
  # Room for reflective traces (a countdown level-2 trace with its check is ~140 tokens).
  return params, make_think_config(config, TOK, 320, max_answer_tokens=16)


def _heads():
  """A random PRM/ORM head: the tests below check mechanics, not the head's quality."""
  from o1jax.model.heads import HeadConfig, init_head
  make = lambda kind, s: init_head(HeadConfig(128, 16, kind), jax.random.key(s))
  return {"prm": make("prm", 1), "orm": make("orm", 2)}


def test_sampling_accounting_budgets_and_layout(setup):
  params, tc = setup
  problems = COUNTDOWN.generate_problems(3, 3, 3, split="eval")
  prompts = [p.prompt for p in problems]
  budgets = [6, 20, None]   # None: unlimited
  cfg = SearchConfig(strategy="sample", n=4, temperature=1.0, rows_per_batch=4, seed=3)
  res = search(params, TOK, prompts, tc, cfg, heads=_heads(), budgets=budgets)
  for i, cands in enumerate(res.candidates):
    assert len(cands) == 4
    # Token accounting: the rows decoded exactly the tokens of the solutions they produced.
    assert res.compute[i].generated_tokens == sum(c.tokens for c in cands)
    assert res.compute[i].prompt_tokens == len(TOK.encode_prompt(prompts[i]))
    # One PRM read per step end, one ORM read per finished answer.
    reads = sum(len(c.step_scores) + (not np.isnan(c.final_score)) for c in cands)
    assert res.compute[i].reward_evaluations == reads
    for c in cands:  # per-request budgets hold inside search
      assert c.thinking_tokens <= (budgets[i] or 10**9)
      if c.thinking_tokens == budgets[i]:
        assert c.stop_reason == "budget"
  assert {c.stop_reason for c in res.candidates[0]} == {"budget"}
  # Another batch layout (all three problems in one batch) gives the same solutions.
  again = search(params, TOK, prompts, tc, cfg.__class__(**{**cfg.__dict__,
                                                             "rows_per_batch": 12}),
                 heads=_heads(), budgets=budgets)
  for a, b in zip(res.candidates, again.candidates):
    assert [(c.thinking, c.answer) for c in a] == [(c.thinking, c.answer) for c in b]
    np.testing.assert_allclose([c.step_scores[:2] for c in a if len(c.step_scores) > 1],
                               [c.step_scores[:2] for c in b if len(c.step_scores) > 1],
                               rtol=1e-5)
  # Sample j of a problem is the same sample whatever N is (nested pools).
  more = search(params, TOK, prompts[:1], tc, cfg.__class__(**{**cfg.__dict__, "n": 8}),
                budgets=budgets[:1])
  assert [c.thinking for c in more.candidates[0][:4]] == [c.thinking
                                                          for c in res.candidates[0]]


def test_a_single_beam_path_is_greedy_decoding_and_a_backtrack_restores_exactly(setup):
  """At temperature 0 a one-row dvts is greedy decoding. A scorer that rejects step 2 the
  first time it sees it makes the beam back up to step 1 and decode again: greedy must
  rewrite the same step (the cache, position and logits were restored exactly), and the
  rejected step's tokens are charged."""
  params, tc = setup
  problems = COUNTDOWN.generate_problems(11, 3, 2, split="eval")
  prompts = [p.prompt for p in problems]
  greedy = think_texts(params, TOK, prompts, tc)
  seen = set()

  def trap(i, steps, closed):
    if len(steps) == 2 and i not in seen:
      seen.add(i)
      return 0.0
    return 1.0

  cfg = SearchConfig(strategy="dvts", n=1, beam_width=1, temperature=0.0,
                     backtrack_threshold=0.5, max_backtracks=1, rows_per_batch=2)
  res = search(params, TOK, prompts, tc, cfg, host_scorer=trap)
  plain = search(params, TOK, prompts, tc, cfg.__class__(**{**cfg.__dict__,
                                                            "backtrack_threshold": 0.0}),
                 host_scorer=trap)
  assert res.backtracks == [1, 1]
  for i, g in enumerate(greedy):
    (c,), (p,) = res.candidates[i], plain.candidates[i]
    assert (c.thinking, c.answer) == (g.thinking, g.answer) == (p.thinking, p.answer)
    assert p.tokens == plain.compute[i].generated_tokens
    step2 = len(TOK.encode(";" + g.thinking.split(";")[1]))  # the rejected step's tokens
    assert res.compute[i].generated_tokens == p.tokens + step2
    assert res.compute[i].refed_tokens == 1


def test_a_backtrack_to_the_prompt_forgets_the_discarded_paths_probes(setup):
  """With the probe rule (it stops only when probe_agreement probes in a row give one answer),
  a greedy one-row search whose first step is rejected once backs up to the prompt and
  decodes again: it must equal greedy think() exactly. A row that kept the probe answers
  of its discarded path would agree with them at once and stop early."""
  params, tc = setup
  tc = dataclasses.replace(tc, stop_rules=("natural", "budget", "confidence"), probe_every=3,
                           confidence_threshold=2.0, probe_agreement=2)
  prompts = [p.prompt for p in COUNTDOWN.generate_problems(11, 3, 2, split="eval")]
  greedy = think_texts(params, TOK, prompts, tc)
  seen = set()

  def reject_first_step_once(i, steps, closed):
    if len(steps) == 1 and i not in seen:
      seen.add(i)
      return 0.0
    return 1.0

  cfg = SearchConfig(strategy="dvts", n=1, beam_width=1, temperature=0.0,
                     backtrack_threshold=0.5, max_backtracks=1, rows_per_batch=2)
  res = search(params, TOK, prompts, tc, cfg, host_scorer=reject_first_step_once)
  assert res.backtracks == [1, 1]
  for g, (c,) in zip(greedy, res.candidates):
    assert g.num_probes >= 2, "the first pass must have probed before its first step ended"
    assert (c.thinking, c.answer, c.thinking_tokens, c.stop_reason) == (
        g.thinking, g.answer, g.thinking_tokens, g.stop_reason)


def test_search_refuses_speculative_decoding_by_name(setup):
  """Search's step-level forks run the plain one-token step: a speculative config is
  refused before any compute, naming the field, not searched without speculation."""
  params, tc = setup
  spec = dataclasses.replace(tc, speculative=SpeculativeConfig(gamma=2, draft_layers=1))
  with pytest.raises(ValueError, match=r"ThinkConfig\.speculative"):
    search(params, TOK, ["1+2="], spec, SearchConfig(strategy="sample", n=1))
  with pytest.raises(ValueError, match=r"ThinkConfig\.speculative"):
    search(params, TOK, ["1+2="], spec, SearchConfig(strategy="beam", n=2, beam_width=1))


@pytest.mark.parametrize("strategy", ["beam", "dvts"])
def test_checker_guided_search_solves_problems_greedy_fails(setup, strategy):
  """A damaged policy (seeded weight noise) fails countdown problems greedily; search with
  the exact step checker as its scorer solves a good share of exactly those."""
  params, tc = setup
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(0), len(leaves))
  noisy = jax.tree.unflatten(tree, [
      x + 0.15 * jnp.std(x) * jax.random.normal(k, x.shape) if x.ndim >= 2 else x
      for x, k in zip(leaves, keys)])
  pool = COUNTDOWN.generate_problems(5, 2, 24, split="eval")
  greedy = think_texts(noisy, TOK, [p.prompt for p in pool], tc)
  failed = [p for p, g in zip(pool, greedy) if not COUNTDOWN.verify(p, g.answer)]
  assert len(failed) >= 4, "the noisy policy should fail several problems greedily"
  scorer = checker_scorer(failed)
  cfg = SearchConfig(strategy=strategy, n=8, beam_width=4, temperature=1.0,
                     backtrack_threshold=0.5 if strategy == "dvts" else 0.0,
                     rows_per_batch=64)
  res = search(noisy, TOK, [p.prompt for p in failed], tc, cfg, host_scorer=scorer)
  solved = [COUNTDOWN.verify(p, choose(c, "best:prm_min").answer)
            for p, c in zip(failed, res.candidates) if c]
  assert sum(solved) >= max(2, len(failed) // 4), (sum(solved), len(failed))


def test_search_on_a_hugging_face_model_splits_steps_by_a_delimiter_string(tmp_path):
  """A tiny random Qwen3 checkpoint with a BPE tokenizer: steps end at any token holding the
  delimiter; a one-row greedy search is think_on_hf's greedy decoding, and the rows' token
  accounting holds."""
  pytest.importorskip("transformers")
  from test_hf import _build, _train_tokenizer
  from o1jax import hf
  from o1jax.model.heads import HeadConfig, init_head
  _build("qwen3", str(tmp_path), _train_tokenizer())
  params, config, tok = hf.load_hf(str(tmp_path))
  delims = search_lib.delimiter_ids(tok, " ")
  assert len(delims) > 10 and all(" " in tok.decode([i], stop_at_eos=False) for i in delims)
  prompts = ["What is 12 + 7?", "hello world"]
  tc = make_think_config(config, tok, 192, max_answer_tokens=8)
  prm = {"prm": init_head(HeadConfig(config.embed_dim, 8, "prm"), jax.random.key(0))}
  one = search(params, tok, prompts, tc, SearchConfig(strategy="dvts", n=1, beam_width=1,
                                                     temperature=0.0, delimiter=" "),
               heads=prm, budgets=[24, 24])
  greedy = hf.think_on_hf((params, config, tok), prompts, [24, 24], cache_len=192,
                          max_answer_tokens=8)
  for cands, g in zip(one.candidates, greedy):
    assert (cands[0].thinking, cands[0].answer) == (g.thinking, g.answer)
    assert len(cands[0].step_scores) >= 1
  beam = search(params, tok, prompts, tc, SearchConfig(strategy="beam", n=4, beam_width=2,
                                                      delimiter=" "), heads=prm,
                budgets=[24, 24])
  for cands, c in zip(beam.candidates, beam.compute):
    assert cands and all(x.thinking_tokens <= 24 for x in cands)
    assert c.generated_tokens >= max(x.tokens for x in cands)


def test_a_separate_trunk_prm_scores_each_step_as_the_offline_prm_does(setup):
  """The host-side scorer of a PRM with its own trunk gives, at every step of a searched
  path, the score training's offline `prm.score` gives the finished solution's steps."""
  from o1jax.model import init_params
  from o1jax.model.heads import HeadConfig, RewardModel, init_head
  from o1jax.search.scorers import separate_prm_scorer
  from o1jax.training import prm
  from o1jax.training import rollouts as rl
  params, tc = setup
  trunk_config = tc.model.replace(embed_dim=64, num_layers=1, num_heads=2, num_kv_heads=1,
                                  mlp_dim=128)
  model = RewardModel(HeadConfig(64, 16, "prm"),
                      init_head(HeadConfig(64, 16, "prm"), jax.random.key(4)), trunk_config,
                      init_params(trunk_config, jax.random.key(5)))
  problems = COUNTDOWN.generate_problems(2, 2, 2, split="eval")
  prompts = [p.prompt for p in problems]
  res = search(params, TOK, prompts, tc, SearchConfig(strategy="dvts", n=1, beam_width=1,
                                                     temperature=0.0),
               host_scorer=separate_prm_scorer(model, prompts))
  alone = search(params, TOK, prompts, tc, SearchConfig(strategy="dvts", n=1, beam_width=1,
                                                       temperature=0.0))
  for i, (p, (c,)) in enumerate(zip(problems, res.candidates)):
    item = prm.lay_out([rl.Rollout(p, p.prompt, c.thinking, c.answer, True, 0, "natural")])
    offline = prm.score(item, model, params, tc.model, batch_size=1)[0]
    np.testing.assert_allclose(c.step_scores, offline, rtol=1e-4, atol=1e-5)
    # Its forwards are counted: at step k it re-read the prompt, `<think>`, the first k
    # steps joined by "; " (";" after an open step), `</think>` and EOS.
    steps = [x.strip() for x in c.thinking.split(";") if x.strip()]
    fed = [len(TOK.encode(p.prompt)) + 1 + len(TOK.encode("; ".join(steps[:k]) + (
        ";" if k < len(steps) else ""))) + 2 for k in range(1, len(steps) + 1)]
    got, policy_only = res.compute[i], alone.compute[i]
    assert got.scorer_tokens == sum(fed) and policy_only.scorer_tokens == 0
    assert got.generated_tokens == policy_only.generated_tokens
    trunk_matmuls = search_lib.compute.matmul_params(trunk_config)
    assert got.flops - policy_only.flops >= 2 * trunk_matmuls * sum(fed)
  with pytest.raises(ValueError, match="own trunk"):
    separate_prm_scorer(RewardModel(HeadConfig(128, 16, "prm"), {}), prompts)


def test_launch_search_writes_the_table_its_outcomes_recompute(tmp_path):
  import csv
  import json
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = str(tmp_path / "search")
  run = subprocess.run(
      [sys.executable, "launch/search.py", f"--out={out}",
       "--strategies=majority,weighted_vote,dvts", "--n=1,2", "--beam_width=2",
       "--tasks=addition", "--difficulty=1", "--num_problems=2", "--bins=1", "--seeds=0,1",
       "--cache_len=256"],
      cwd=repo, capture_output=True, text=True, timeout=600,
      env={**os.environ, "PYTHONPATH": repo})
  assert run.returncode == 0, run.stderr[-3000:]
  with open(os.path.join(out, "search.csv")) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["strategy", "n", "task", "difficulty", "problems", "accuracy",
                           "generated_tokens", "flops"]
  report = json.load(open(os.path.join(out, "search.json")))
  for row in rows:
    mine = [o for o in report["outcomes"] if o["strategy"] == row["strategy"]
            and o["n"] == int(row["n"])]
    assert int(row["problems"]) == len(mine) == 4     # 2 problems x 2 seeds
    assert float(row["accuracy"]) == pytest.approx(np.mean([o["correct"] for o in mine]))
    assert float(row["generated_tokens"]) == pytest.approx(np.mean([o["tokens"] for o in mine]),
                                                           abs=0.0501)
  assert {r["strategy"] for r in rows} == {"greedy", "majority", "weighted_vote", "dvts"}
  assert {int(r["n"]) for r in rows if r["strategy"] == "dvts"} == {2}   # N=1 < beam width
  assert {int(r["n"]) for r in rows if r["strategy"] == "majority"} == {1, 2}
  assert os.path.exists(os.path.join(out, "search.png"))
  with open(os.path.join(out, "compute_optimal.csv")) as f:
    optimal = list(csv.DictReader(f))
  assert [r["n"] for r in optimal] == ["1", "2", "greedy"]   # the curve starts at N = 1
  # Every file is recomputed from search.json alone.
  again = str(tmp_path / "again")
  subprocess.run([sys.executable, "launch/search.py", f"--out={again}",
                  f"--reanalyze={out}/search.json"], cwd=repo, check=True, capture_output=True,
                 env={**os.environ, "PYTHONPATH": repo})
  for name in ("search.csv", "search.md", "compute_optimal.csv"):
    assert open(os.path.join(out, name)).read() == open(os.path.join(again, name)).read()
  with pytest.raises(subprocess.CalledProcessError):
    subprocess.run([sys.executable, "launch/search.py", "--strategies=mcts", f"--out={out}"],
                   cwd=repo, check=True, capture_output=True, env={**os.environ,
                                                                   "PYTHONPATH": repo})


@pytest.mark.parametrize("strategy", ["sample", "beam", "dvts"])
def test_search_and_every_counter_do_not_depend_on_batch_layout(setup, strategy):
  """Three problems searched one per batch and all in one batch: the same solutions and
  every compute counter equal (tokens, prompt, back-ups, PRM/ORM reads, FLOPs). Idle rows
  of a batch are copies of other problems' rows: none of their work may be counted."""
  params, tc = setup
  prompts = [p.prompt for p in COUNTDOWN.generate_problems(8, 3, 3, split="eval")]
  runs = [search(params, TOK, prompts, tc,
                 SearchConfig(strategy=strategy, n=4, beam_width=2, temperature=1.0,
                              backtrack_threshold=0.0 if strategy == "sample" else 0.5,
                              rows_per_batch=rows), heads=_heads())
          for rows in (4, 12)]
  for a, b in zip(runs[0].candidates, runs[1].candidates):
    assert [(c.thinking, c.answer) for c in a] == [(c.thinking, c.answer) for c in b]
    # Scores agree to float rounding (batch shapes differ).
    assert [c.final_score for c in a] == pytest.approx([c.final_score for c in b], rel=1e-5,
                                                       nan_ok=True)
  assert runs[0].backtracks == runs[1].backtracks
  for a, b in zip(runs[0].compute, runs[1].compute):
    assert a.generated_tokens > 0 and a.reward_evaluations > 0
    assert dataclasses.asdict(a) == pytest.approx(dataclasses.asdict(b), rel=1e-12)


def test_steps_past_max_steps_are_refused_not_dropped(setup):
  """A path that ends more steps than the rows record is refused by name; by default the
  records are sized from the cache, and every step of every path is scored."""
  params, tc = setup
  prompts = [p.prompt for p in COUNTDOWN.generate_problems(8, 3, 2, split="eval")]
  cfg = SearchConfig(strategy="sample", n=2, temperature=1.0, rows_per_batch=4)
  for strategy in ("sample", "dvts"):
    with pytest.raises(ValueError, match="max_steps=2"):
      search(params, TOK, prompts, tc, dataclasses.replace(
          cfg, strategy=strategy, beam_width=1, max_steps=2), heads=_heads())
  assert cfg.max_steps is None
  res = search(params, TOK, prompts, tc, cfg, heads=_heads())
  for cands in res.candidates:
    for c in cands:
      steps = [x for x in c.thinking.split(";") if x.strip()]
      assert len(c.step_scores) == len(steps) > 2
      assert not np.isnan(c.step_scores).any()
