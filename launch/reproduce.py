"""Regenerate the docs' data folders from the shipped checkpoint with the commands the docs
name, timing each part (issue 34).

  python launch/reproduce.py --what=sweep,search --write_docs   # rewrite docs/sweep, docs/search
  python launch/reproduce.py --fast                              # every part, reduced, to a temp dir
  python launch/reproduce.py --what=search,serving --stamp_only  # stamp data already regenerated
  python launch/reproduce.py --list                              # the commands, part by part

Each part is the list of commands its doc names (PARTS, launch/reproduce_parts.py), run one after
another as subprocesses from the repository root. Without --write_docs the outputs go to a
temporary directory (--out), so a dry run never touches docs/. --fast appends reduced sizes
to every command whose flags allow it (fewer problems, budgets, reps; training for a couple
of steps) and skips the few steps that cannot be reduced (a 46-minute training run, memory
compilations of 0.6B-8B models). After each step the files it wrote in the part's folder
are stamped (docs/<folder>/STAMP.json: the checkpoint's content hash, the exact command, the
date; o1jax/analysis/provenance.py), and the wall time of every step and part is printed and
written to --timings (JSON). Full-run wall times measured so far: docs/REPRODUCE.md.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from launch.reproduce_parts import PARTS, Part, Step  # noqa: E402,F401
from o1jax.analysis import provenance  # noqa: E402


def render(step: Step, docs: str, runs: str, fast: bool) -> str:
  cmd = step.cmd.format(docs=docs, runs=runs)
  return cmd + (step.fast or "") if fast else cmd


def _snapshot(folder: pathlib.Path) -> dict[str, tuple[float, int]]:
  if not folder.is_dir():
    return {}
  return {f: ((folder / f).stat().st_mtime_ns, (folder / f).stat().st_size)
          for f in provenance.data_files(folder)}


def run_step(cmd: str, folder: pathlib.Path, step: Step, stamp: bool,
             made_by: str | None = None) -> dict:
  """Runs one command from the repository root; stamps the files it wrote in folder with
  it (after `made_by`, the commands that made its inputs)."""
  before = _snapshot(folder)
  argv = shlex.split(cmd)
  argv[0] = sys.executable if argv[0] == "python" else argv[0]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  env.update(compilation_cache_env(FLAGS.compilation_cache if FLAGS.is_parsed() else ""))
  print(f"[reproduce] $ {cmd}", flush=True)
  t0 = time.time()
  proc = subprocess.run(argv, cwd=ROOT, env=env)
  wall = time.time() - t0
  if proc.returncode != 0:
    raise SystemExit(f"[reproduce] failed ({proc.returncode}) after {wall:.0f}s: {cmd}")
  after = _snapshot(folder)
  written = sorted(f for f, s in after.items() if before.get(f) != s)
  if stamp and written:
    ckpt = ROOT / provenance.SHIPPED_CHECKPOINT if step.checkpoint else None
    provenance.write_stamp(folder, f"{made_by} && {cmd}" if made_by else cmd, ckpt,
                           files=written, note=step.note, root=ROOT)
  print(f"[reproduce]   {wall:.1f}s, wrote {len(written)} file(s) in {folder.name}/",
        flush=True)
  return {"command": cmd, "wall_s": round(wall, 1), "files": written}


def compilation_cache_env(cache_dir: str) -> dict[str, str]:
  """Environment that makes every step's JAX programs persist in `cache_dir` (JAX's
  persistent compilation cache), so a rerun, or a later step compiling a program an earlier
  one compiled, loads it instead of compiling: most of a --fast step is compilation. Only
  programs that took >= 0.5 s to compile are kept. Empty `cache_dir`: no cache."""
  if not cache_dir:
    return {}
  return {"JAX_COMPILATION_CACHE_DIR": str((ROOT / cache_dir).resolve()),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _outputs(cmd: str) -> list[str]:
  """The paths a command writes: its --out / --plot / --workdir values, a cp's destination."""
  argv = shlex.split(cmd)
  outs = [a.split("=", 1)[1] for a in argv if a.startswith(("--out=", "--plot=", "--workdir="))]
  return outs + ([argv[-1]] if argv[0] == "cp" else [])


def _made_by(cmd: str, made: dict[str, str]) -> str | None:
  """The earlier commands whose outputs this one reads (a cp's source, compare's --sweeps),
  joined with &&, so a stamp says how its inputs were made too."""
  used = []
  for out, by in made.items():
    if by != cmd and by not in used and re.search(
        rf"(?<![\w/.-]){re.escape(out)}(?![\w.-])", cmd):
      used.append(by)
  return " && ".join(used) or None


def stamp_folder(part: Part, docs: str, runs: str) -> None:
  """Stamps every file in docs/<folder> with the (full) command that writes it: the step
  whose output is that file, or a path prefix of it (--out=.../thinking_vs_training writes
  thinking_vs_training.csv and .png), or a subfolder holding it (--out=.../sweep/seed1),
  else the step whose output is the folder itself."""
  folder = ROOT / "docs" / part.folder
  claims = {}
  for f in provenance.data_files(folder):
    path = f"{docs}/{part.folder}/{f}"
    for match in (lambda o: o == path,
                  lambda o: path.startswith(o + "."),
                  lambda o: (o.rstrip("/") != f"{docs}/{part.folder}"       # a subfolder
                             and path.startswith(o.rstrip("/") + "/")),
                  lambda o: o.rstrip("/") == f"{docs}/{part.folder}"):
      steps = [s for s in part.steps
               if any(match(o) for o in _outputs(render(s, docs, runs, False)))]
      if steps:
        claims.setdefault(steps[0], []).append(f)
        break
    else:
      print(f"[reproduce] no command of part {part.folder} writes {f}: left as stamped")
  for step, files in claims.items():
    cmd = render(step, docs, runs, False)
    made = {o.rstrip("/"): render(s, docs, runs, False) for s in part.steps
            for o in _outputs(render(s, docs, runs, False)) if not o.startswith(docs)}
    by = _made_by(cmd, made)
    cmd = f"{by} && {cmd}" if by else cmd
    provenance.write_stamp(folder, cmd, ROOT / provenance.SHIPPED_CHECKPOINT
                           if step.checkpoint else None, files=files, note=step.note,
                           root=ROOT)
    print(f"[reproduce] stamped {', '.join(files)} in docs/{part.folder}/ with: {cmd}")


def define_flags() -> None:
  """Flags are defined only when run as a script, so tests import PARTS freely."""
  flags.DEFINE_list("what", None, "Parts to run (default: all): see --list.")
  flags.DEFINE_bool("fast", False, "Reduced sizes (a smoke run of every command).")
  flags.DEFINE_bool("write_docs", False, "Write into docs/ (default: --out).")
  flags.DEFINE_string("out", None, "Root for the outputs without --write_docs "
                      "(default: a new temporary directory).")
  flags.DEFINE_string("runs", None, "Training workdirs (default: runs/ with --write_docs, "
                      "else OUT/runs).")
  flags.DEFINE_string("timings", None, "Wall times as JSON (default: "
                      "OUT/reproduce_timings.json; runs/ with --write_docs).")
  flags.DEFINE_bool("stamp_only", False, "Run nothing: stamp every file in the parts' "
                    "docs folders with the command that writes it.")
  flags.DEFINE_bool("list", False, "Print the parts and their commands, then exit.")
  flags.DEFINE_string("compilation_cache", "runs/jax_compilation_cache", "JAX's persistent "
                      "compilation cache for every step (relative to the repository root); "
                      "empty: none. A second run loads what the first compiled.")


def main(argv):
  del argv
  parts = FLAGS.what or list(PARTS)
  unknown = [p for p in parts if p not in PARTS]
  if unknown:
    raise app.UsageError(f"--what: unknown part(s) {unknown}; known: {list(PARTS)}")
  if FLAGS.list:
    for name in parts:
      print(f"{name} ({PARTS[name].doc}):")
      for s in PARTS[name].steps:
        print(f"  {render(s, 'docs', 'runs', False)}")
        print(f"    --fast: {'skipped' if s.fast is None else s.fast.strip() or 'as is'}")
    return
  if FLAGS.write_docs or FLAGS.stamp_only:
    if FLAGS.fast:
      raise app.UsageError("--fast is a smoke run: it never writes into docs/")
    if FLAGS.out:
      raise app.UsageError("--out is for runs without --write_docs / --stamp_only")
    docs, runs = "docs", FLAGS.runs or "runs"
    timings = FLAGS.timings or "runs/reproduce_timings.json"
  else:
    out = pathlib.Path(FLAGS.out or tempfile.mkdtemp(prefix="o1jax_reproduce_"))
    docs, runs = str(out / "docs"), FLAGS.runs or str(out / "runs")
    timings = FLAGS.timings or str(out / "reproduce_timings.json")
  if FLAGS.stamp_only:
    for name in parts:
      stamp_folder(PARTS[name], docs, runs)
    return
  record = {"date": datetime.date.today().isoformat(),
            "machine": provenance.machine_description(), "fast": FLAGS.fast,
            "write_docs": FLAGS.write_docs, "parts": {}}
  if FLAGS.compilation_cache:
    cache = ROOT / FLAGS.compilation_cache
    record["compilation_cache"] = {  # a warm cache is a different measurement: say which
        "dir": FLAGS.compilation_cache,
        "entries_before": len(list(cache.iterdir())) if cache.is_dir() else 0}
  record["load_average_before"] = os.getloadavg()[0]
  t_all = time.time()
  for name in parts:
    part = PARTS[name]
    folder = pathlib.Path(docs) / part.folder
    if not folder.is_absolute():
      folder = ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    t0, steps, made = time.time(), [], {}
    for step in part.steps:
      if FLAGS.fast and step.fast is None:
        print(f"[reproduce] skipped under --fast: {render(step, docs, runs, False)}")
        steps.append({"command": render(step, docs, runs, False), "skipped": True})
        continue
      cmd = render(step, docs, runs, FLAGS.fast)
      steps.append(run_step(cmd, folder, step, stamp=True, made_by=_made_by(cmd, made)))
      made.update((o.rstrip("/"), cmd) for o in _outputs(cmd) if not o.startswith(docs))
    wall = time.time() - t0
    record["parts"][name] = {"wall_s": round(wall, 1), "steps": steps}
    print(f"[reproduce] part {name}: {wall:.1f}s", flush=True)
    pathlib.Path(timings).parent.mkdir(parents=True, exist_ok=True)
    record["total_wall_s"] = round(time.time() - t_all, 1)
    record["load_average_after"] = os.getloadavg()[0]
    pathlib.Path(timings).write_text(json.dumps(record, indent=1) + "\n")
  print(f"[reproduce] all parts: {time.time() - t_all:.1f}s; wall times in {timings}")
  for name, r in record["parts"].items():
    print(f"  {name:12s} {r['wall_s']:8.1f}s")


if __name__ == "__main__":
  define_flags()
  app.run(main)
