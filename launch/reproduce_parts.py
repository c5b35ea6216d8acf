"""The parts launch/reproduce.py runs: each docs data folder, the doc that names its
commands, and those commands in order, with their reduced --fast variants (None: skipped
under --fast) and, where no checkpoint made the data, what did (the stamp's note).

{docs} in a command is the docs root (docs/ or OUT/docs), {runs} the workdir root."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Step:
  """One command. {docs} is the docs root (docs/ or OUT/docs), {runs} the workdir root."""
  cmd: str
  fast: str | None = ""          # flags appended under --fast; None: skipped under --fast
  checkpoint: bool = True        # its data come from the shipped checkpoint
  note: str | None = None        # what made the data when no checkpoint did


@dataclasses.dataclass(frozen=True)
class Part:
  folder: str                    # docs/<folder>
  doc: str                       # where the commands are named
  steps: tuple[Step, ...]


_NO_CKPT = dict(checkpoint=False)
_SWEEP_FAST = " --num_problems=1 --difficulties=1 --budgets=0,inf"
_KV_SWEEP = "python launch/sweep.py --nostop_rule_sweep"
_SCALING_NOTE = ("models trained from scratch by this part's train.py commands "
                 "(configs/scaling.py, canonical split), not the shipped checkpoint")

_V3_NOTE = ("reasoner v3 candidate runs/v3/rl/final, trained from scratch by this part's "
            "commands (launch/reasoner_v3.sh, canonical split), not the shipped checkpoint")

PARTS: dict[str, Part] = {
  "sweep": Part("sweep", "docs/RESULTS.md", (
    Step("python launch/sweep.py --out={docs}/sweep",
         " --num_problems=1 --difficulties=1 --tasks=addition,equation --budgets=0,16,inf"
         " --nostop_rule_sweep --batch_size=8"),
    Step("python launch/intervals.py --sweep={docs}/sweep --out={docs}/sweep/intervals.csv",
         " --n_boot=200"),
    # A second seed (another held-out draw and sampling seed) for the headline claims.
    Step("python launch/sweep.py --seed=1 --out={docs}/sweep/seed1", None),
    Step("python launch/intervals.py --sweep={docs}/sweep/seed1"
         " --out={docs}/sweep/seed1/intervals.csv", None),)),
  "search": Part("search", "docs/SEARCH.md", (
    # The whole issue-33 grid in one process (~20M tokens; docs/SEARCH.md ran it as six
    # processes merged by --reanalyze, and says what of the grid is still missing).
    Step("python launch/search.py --out={docs}/search --tasks=addition,equation --difficulty=5"
         " --num_problems=48 --seeds=0,1 --n=1,4,16,64 --temperature_sweep=0.7,1.0,1.5 --bins=2"
         " --cache_len=512",
         " --strategies=majority,beam --n=4 --tasks=countdown --difficulty=3 --num_problems=2"
         " --seeds=0 --temperature_sweep= --bins=1 --rows_per_batch=8 --cache_len=256"),
    # No flag shrinks its 256-row batches of temperature-1.5 samples: 12+ min even at N=4.
    Step("python launch/bench_search.py --out={docs}/search/bench_search.json", None),
    Step("python launch/train.py --config=configs/tiny.py --workdir={runs}/tenth_2l"
         " --config.model.num_layers=2 --config.train.steps=680 --config.train.batch_size=9"
         " --config.train.warmup_steps=30",
         " --config.train.steps=2 --config.train.warmup_steps=1 --config.train.eval_every=2"
         " --config.train.eval_problems=1"),
    Step("python launch/train.py --config=configs/tiny.py --workdir={runs}/tenx_nothink"
         " --config.data.no_thinking_fraction=1.0",
         " --config.train.steps=2 --config.train.warmup_steps=1 --config.train.eval_every=2"
         " --config.train.eval_problems=1"),
    Step("python launch/thinking_vs_training.py --small={runs}/tenth_2l"
         " --large={runs}/tenx_nothink --out={docs}/search/thinking_vs_training",
         " --num_problems=1 --difficulty=1 --budgets=0,inf --vote_n=4"),
  )),
  "serving": Part("serving", "docs/SERVING.md", (
    Step("python launch/bench_serving.py --out={docs}/serving --slo_p99_s=0"
         " --cost_model=docs/serving/cost_model.json",
         " --mix=article --arrivals=poisson --loads=0.8 --seeds=0 --requests=100"
         " --policies=fcfs,preempt --wall= --slo_loads=1.0 --slo_requests=100"
         " --real_pool=8,4 --article_pool=8,4 --validate_replay="),
    # Compilations and a tiny request's latency beside a new prompt width; the "before"
    # file was made with --repo= a checkout of 5c28868 (no chunked prefill) and is kept.
    Step("python launch/bench_serving_compile.py --out={docs}/serving/compile_after.json",
         " --models=tiny"),)),
  "kv": Part("kv", "docs/BENCHMARKS.md", (
    Step("python launch/bench_kv.py --mode=memory --out={docs}/kv/memory.json", "",
         **_NO_CKPT, note="bytes from model shapes, no weights"),
    Step("python launch/bench_kv.py --mode=decode --reps=5 --out={docs}/kv/decode.json",
         " --reps=1 --cache_lens=256 --batches=1 --tokens=4", **_NO_CKPT,
         note="random-weight ~25M model"),
    Step("python launch/bench_kv.py --mode=attention --reps=15 --out={docs}/kv/attention.json",
         " --reps=1 --cache_lens=256 --batches=1", **_NO_CKPT,
         note="random keys and values"),
    Step("python launch/bench_kv.py --mode=evict_speed --reps=5 --kv_budgets=none,80,40,16"
         " --out={docs}/kv/evict_speed.json", " --reps=1 --kv_budgets=none,16"),
    Step("python launch/bench_kv.py --mode=evict_step --reps=5 --tokens=64"
         " --evict_step_budgets=300,16 --out={docs}/kv/evict_step.json", " --reps=1 --tokens=8"),
    Step(f"{_KV_SWEEP} --out={{runs}}/kv/float", _SWEEP_FAST),
    Step(f"{_KV_SWEEP} --kv_dtype=int8 --out={{runs}}/kv/int8", _SWEEP_FAST),
    Step("python launch/bench_kv.py --mode=compare --sweeps=float:{runs}/kv/float,"
         "int8:{runs}/kv/int8 --out={docs}/kv/sweep_int8.json", " --cells=addition:1"),
    Step("cp {runs}/kv/float/accuracy_vs_budget.csv {docs}/kv/sweep_float_accuracy.csv"),
    Step("cp {runs}/kv/int8/accuracy_vs_budget.csv {docs}/kv/sweep_int8_accuracy.csv"),
    *(Step(f"{_KV_SWEEP} --thinking_kv_budget={k}{flag} --out={{runs}}/kv/{name}{k}", None)
      for k in (160, 80, 40, 16)
      for name, flag in (("rkv", ""), ("imp", " --kv_importance_weight=1.0"),
                         ("old", " --kv_evict_policy=oldest"))),
    Step("python launch/bench_kv.py --mode=compare --sweeps=full:{runs}/kv/float,"
         + ",".join(f"{n}{k}:{{runs}}/kv/{n}{k}" for k in (160, 80, 40, 16)
                    for n in ("rkv", "imp", "old"))
         + " --out={docs}/kv/eviction.json --plot={docs}/kv/eviction_kept.png", None),
    *(Step(f"{_KV_SWEEP} --tasks=countdown --difficulties=3,4 --budgets=inf"
           f"{'' if k is None else f' --thinking_kv_budget={k} --kv_importance_weight={lam}'}"
           f" --out={{runs}}/kv/{name}", None)
      for name, k, lam in (("window_full", None, None), ("window_l0.1_k80", 80, 0.1),
                           ("window_l0.5_k80", 80, 0.5), ("window_l1.0_k80", 80, 1.0),
                           ("window_l0.1_k40", 40, 0.1), ("window_l1.0_k40", 40, 1.0),
                           ("window_l0.1_k16", 16, 0.1), ("window_l1.0_k16", 16, 1.0),
                           ("window_l0.0_k80", 80, 0.0))),
    Step("python launch/bench_kv.py --mode=compare --sweeps=full:{runs}/kv/window_full,"
         + ",".join(f"{n}:{{runs}}/kv/window_{n}" for n in
                    ("l0.1_k80", "l0.5_k80", "l1.0_k80", "l0.1_k40", "l1.0_k40", "l0.1_k16",
                     "l1.0_k16"))
         + " --cells=countdown:3,countdown:4 --out={docs}/kv/eviction_window.json", None),
    Step("python launch/bench_kv.py --mode=compare --sweeps=full:{runs}/kv/window_full,"
         + ",".join(f"{n}:{{runs}}/kv/window_{n}" for n in ("l0.0_k80", "l0.1_k80",
                                                            "l0.5_k80", "l1.0_k80"))
         + " --cells=countdown:3,countdown:4 --out={docs}/kv/eviction_ablation.json", None),
  )),
  "speculative": Part("speculative", "docs/BENCHMARKS.md", (
    Step("python launch/train.py --config=configs/policy25m.py --workdir={runs}/policy25m"
         " --config.train.export_dir={runs}/policy25m/export", None),
    Step("python launch/bench_speculative.py --policy_25m={runs}/policy25m/export"
         " --out={docs}/speculative/bench.json",
         " --models=tiny --batches=1 --reps=1 --budget=32"),
    *(Step(f"python launch/bench_speculative.py --policy_25m={{runs}}/policy25m/export"
           f" --models=25m --batches=1 --gamma={g} --out={{docs}}/speculative/gamma{g}.json",
           None) for g in (2, 4, 6)),
  )),
  "star": Part("star", "docs/REASONING_TRAINING.md", (
    Step("python launch/train.py --config=configs/star.py --workdir={runs}/star_base",
         " --config.train.steps=2 --config.train.warmup_steps=1 --config.train.eval_every=2"
         " --config.train.eval_problems=1", **_NO_CKPT, note="trains its own base"),
    Step("python launch/star.py --config=configs/star.py --workdir={runs}/star_final --compare"
         " --config.star.base={runs}/star_base --out={docs}/star",
         " --config.star.iterations=1 --config.star.problems_per_level=2"
         " --config.star.finetune_steps=1 --config.star.eval_problems=1"
         " --config.star.on_empty=skip", **_NO_CKPT,
         note="experiment A: STaR from a base trained from scratch by the step before"),
    Step("python launch/intervals.py --star={docs}/star --out={docs}/star/intervals.csv"
         " --star_eval_problems=32", " --star_eval_problems=1", **_NO_CKPT,
         note="intervals of experiment A's accuracies"),
  )),
  "grpo": Part("grpo", "docs/REASONING_TRAINING.md", (
    Step("python launch/budget_sft.py --config=configs/budget_sft.py --workdir={runs}/l1_sft",
         None),
    Step("python launch/grpo.py --config=configs/grpo.py:budget_l1 --workdir={runs}/l1_grpo"
         " --config.grpo.base={runs}/l1_sft/final", None),
    Step("python launch/eval_budget.py --policy={runs}/l1_grpo/final --out={docs}/grpo", None),
    Step("python launch/eval_budget.py --policy={runs}/l1_sft/final --out={runs}/l1_sft_eval",
         None),
    Step("cp {runs}/l1_sft_eval/budget.csv {docs}/grpo/budget_sft_stage.csv", None),
    Step("python launch/bench_rollouts.py --reps=5 --out={docs}/grpo/rollouts_bench.csv",
         " --reps=1 --prompts=2 --group=2 --long=24 --short=8 --nouniform"),
    Step("python launch/grpo_memory.py --out={docs}/grpo/memory.csv", None, **_NO_CKPT,
         note="random-weight Qwen3-shaped models on simulated devices"),
    Step("python launch/split_report.py --out={docs}/grpo/canonical_split.csv",
         " --draws=500 --sample=200", **_NO_CKPT, note="split counts (hashing only, no model)"),
    # Exploratory GRPO / RFT from v2 on level 5 (docs/REASONING_TRAINING.md): hours here.
    Step("python launch/grpo_level5.py --config=configs/grpo.py:level5 --workdir={runs}/l5_grpo_s0"
         " --config.grpo.seed=0 --eval_every=10 --level5_problems=64 --low_problems=8", None),
    Step("python launch/grpo_level5.py --config=configs/grpo.py:level5 --workdir={runs}/l5_grpo_s1"
         " --config.grpo.seed=1 --eval_every=10 --level5_problems=64 --low_problems=8", None),
    Step("python launch/grpo_level5.py --method=rft --config=configs/grpo.py:level5"
         " --workdir={runs}/l5_rft_s0 --config.grpo.seed=0 --eval_every=10 --level5_problems=64"
         " --low_problems=8 --baseline_evals={runs}/l5_grpo_s0/evals.jsonl", None),
    Step("python launch/grpo_level5.py --plot={runs}/l5_grpo_s0,{runs}/l5_grpo_s1,{runs}/l5_rft_s0"
         " --out={docs}/grpo/level5_rl_3e-4", None),
    # The recipe after that collapse (lr 3e-5, KL 0.04 to the start), RFT beside it.
    Step("python launch/grpo_level5.py --config=configs/grpo.py:level5_kl --workdir={runs}/l5_kl_s0"
         " --config.grpo.seed=0 --eval_every=10 --level5_problems=64 --low_problems=8", None),
    Step("python launch/grpo_level5.py --config=configs/grpo.py:level5_kl --workdir={runs}/l5_kl_s1"
         " --config.grpo.seed=1 --eval_every=10 --level5_problems=64 --low_problems=8"
         " --baseline_evals={runs}/l5_kl_s0/evals.jsonl", None),
    Step("python launch/grpo_level5.py --method=rft --config=configs/grpo.py:level5_kl"
         " --workdir={runs}/l5_kl_rft_s0 --config.grpo.seed=0 --eval_every=10"
         " --level5_problems=64 --low_problems=8 --baseline_evals={runs}/l5_kl_s0/evals.jsonl",
         None),
    Step("python launch/grpo_level5.py --config=configs/grpo.py:level5_kl"
         " --workdir={runs}/l5_kl1e-4_s0 --config.grpo.seed=0 --config.grpo.learning_rate=1e-4"
         " --config.grpo.steps=10 --eval_every=10 --level5_problems=64 --low_problems=8"
         " --baseline_evals={runs}/l5_kl_s0/evals.jsonl", None),
    Step("python launch/grpo_level5.py --config=configs/grpo.py:level5_kl"
         " --workdir={runs}/l5_kl1e-4_t06_s0 --config.grpo.seed=0"
         " --config.grpo.learning_rate=1e-4 --config.grpo.temperature=0.6 --config.grpo.steps=10"
         " --eval_every=10 --level5_problems=64 --low_problems=8"
         " --baseline_evals={runs}/l5_kl_s0/evals.jsonl", None),
    Step("python launch/grpo_level5.py --plot={runs}/l5_kl_s0,{runs}/l5_kl_s1,{runs}/l5_kl_rft_s0,"
         "{runs}/l5_kl1e-4_s0,{runs}/l5_kl1e-4_t06_s0 --out={docs}/grpo/level5_rl", None),
  )),
  # The candidate PRM on the shipped policy's own hard-regime samples (docs/PRM.md; not
  # shipped: it fails the reward-hacking check). Hours on 2 cores: no fast variant.
  "prm": Part("prm", "docs/PRM.md", (
    Step("python launch/train_prm.py --config=configs/prm.py:search --workdir={runs}/prm_search"
         " --config.prm.pool_cache={runs}/prm_cache --config.prm.stages=train,eval", None),
    Step("cp {runs}/prm_search/prm_results.json {docs}/prm/prm_results.json", None),
    Step("cp {runs}/prm_search/prm_results.md {docs}/prm/prm_results.md", None),
    Step("cp {runs}/prm_search/prm_head.json {docs}/prm/prm_head_candidate.json", None),
  )),
  # Thinking vs training on levels 1-5, canonical split (docs/SCALING.md): six models trained
  # from scratch (configs/scaling.py), then evaluated. About 2 hours on the shared 2 cores.
  "scaling": Part("scaling", "docs/SCALING.md", (
    *(Step(f"python launch/train.py --config=configs/scaling.py:{size},{mode}"
           f" --workdir={{runs}}/scaling/{size}_{mode}",
           " --config.train.steps=2 --config.train.warmup_steps=1", **_NO_CKPT,
           note=_SCALING_NOTE)
      for size in ("L", "M", "S") for mode in ("think", "answers")),
    Step("python launch/scaling_study.py --runs={runs}/scaling"
         " --out={docs}/scaling/thinking_vs_training",
         " --num_problems=1 --difficulty=1,5 --budgets=0,inf", **_NO_CKPT,
         note=_SCALING_NOTE),
  )),
  # Reasoner v3's chain (launch/reasoner_v3.sh, docs/REASONING_TRAINING.md "Reasoner v3"):
  # trained from scratch on the canonical split, RL'd, ship-checked. About 2 h 10 min on
  # the 2 cores; no fast variant (each stage starts from the one before).
  "v3": Part("v3", "docs/REASONING_TRAINING.md", (
    Step("python launch/train.py --config=configs/tiny.py --workdir={runs}/v3/tiny"
         " --config.data.split_key=canonical --config.train.export_dir={runs}/v3/tiny_export",
         None, **_NO_CKPT, note=_V3_NOTE),
    Step("python launch/train.py --config=configs/reasoner.py --workdir={runs}/v3/reasoner"
         " --config.data.split_key=canonical --config.train.init_params={runs}/v3/tiny_export"
         " --config.train.export_dir={runs}/v3/reasoner_export", None, **_NO_CKPT,
         note=_V3_NOTE),
    Step("python launch/budget_sft.py --config=configs/budget_sft.py:v3"
         " --config.base={runs}/v3/reasoner_export --workdir={runs}/v3/budget", None,
         **_NO_CKPT, note=_V3_NOTE),
    *(Step(f"python launch/grpo_level5.py {method}--config=configs/grpo.py:level5_kl"
           f" --workdir={{runs}}/v3/{name} --config.grpo.base={{runs}}/v3/budget/final"
           f" --config.grpo.seed={seed}", None, **_NO_CKPT, note=_V3_NOTE)
      for name, method, seed in (("rl", "", 0), ("rl_s1", "", 1), ("rft", "--method=rft ", 0))),
    Step("python launch/grpo_level5.py --plot={runs}/v3/rl,{runs}/v3/rl_s1,{runs}/v3/rft"
         " --out={docs}/v3/level5_rl", None, **_NO_CKPT, note=_V3_NOTE),
    # The control: stage 2 (before the budget stage) through the same sweep.
    Step("python launch/sweep.py --checkpoint={runs}/v3/reasoner_export --split_key=canonical"
         " --nostop_rule_sweep --out={docs}/v3/stage2", None, **_NO_CKPT, note=_V3_NOTE),
    Step("python launch/sweep.py --checkpoint={runs}/v3/rl/final --split_key=canonical"
         " --nostop_rule_sweep --out={docs}/v3", None, **_NO_CKPT, note=_V3_NOTE),
    Step("python launch/eval_budget.py --policy={runs}/v3/rl/final --base={runs}/v3/rl/final"
         " --split_key=canonical --out={docs}/v3", None, **_NO_CKPT, note=_V3_NOTE),
    Step("python launch/ship_checks.py --sweep={docs}/v3 --budget={docs}/v3"
         " --out={docs}/v3/ship_checks.json", None, **_NO_CKPT, note=_V3_NOTE),
  )),
  "sampling": Part("sampling", "docs/BENCHMARKS.md", (
    Step("python launch/bench_sampling.py --reps=3 --steps=4"
         " --out={docs}/sampling/bench_sampling.json",
         " --reps=1 --steps=1 --layers=1 --batches=1", **_NO_CKPT,
         note="random-weight Qwen2.5-0.5B-shaped model"),)),
}
