"""Run the Colab notebooks headless, or strip their outputs before a commit.

  python colab/run_notebooks.py                     # every notebook, fast mode, figures in colab_out/
  python colab/run_notebooks.py quickstart --full   # one notebook, full size
  python colab/run_notebooks.py --strip             # clear outputs and execution counts in place

Execution uses nbclient with the `python3` kernel of the running interpreter, the repository
root as the working directory, O1JAX_FAST=1 (unless --full) and O1JAX_NOTEBOOK_OUT=--out.
Executed copies are written to --out (the notebooks in colab/ are never modified, except by
--strip). tests/test_notebooks.py calls `execute` and `strip` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import time

COLAB_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(COLAB_DIR)


def notebook_paths(names=()) -> list[str]:
  """colab/*.ipynb, or those named (with or without the .ipynb suffix)."""
  paths = sorted(glob.glob(os.path.join(COLAB_DIR, "*.ipynb")))
  if not names:
    return paths
  by_name = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
  missing = [n for n in names if n.removesuffix(".ipynb") not in by_name]
  if missing:
    raise SystemExit(f"no notebook named {missing}; known: {sorted(by_name)}")
  return [by_name[n.removesuffix(".ipynb")] for n in names]


@contextlib.contextmanager
def _environ(**values):
  old = {k: os.environ.get(k) for k in values}
  os.environ.update(values)
  try:
    yield
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


def execute(path: str, out_dir: str, *, fast: bool = True, timeout: int = 600,
            extra_env: dict[str, str] | None = None):
  """Executes the notebook at `path` (cwd: the repository root).

  Returns (executed notebook, wall seconds, CPU seconds of the kernel). On a shared machine
  the CPU time is the steadier measure of what a notebook costs.

  The kernel inherits this process's environment plus O1JAX_FAST / O1JAX_NOTEBOOK_OUT and
  `extra_env`. A cell that raises makes nbclient raise CellExecutionError, naming the cell.
  """
  import nbformat
  from nbclient import NotebookClient

  nb = nbformat.read(path, as_version=4)
  os.makedirs(out_dir, exist_ok=True)
  env = {"O1JAX_FAST": "1" if fast else "0", "O1JAX_NOTEBOOK_OUT": os.path.abspath(out_dir),
         # Hugging Face libraries must not reach for the network in CI.
         "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
         **(extra_env or {})}
  client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                          resources={"metadata": {"path": REPO_ROOT}})
  cpu_before = _children_cpu()
  start = time.perf_counter()
  with _environ(**env):  # the kernel is started inside execute() and copies os.environ
    client.execute()
  # The kernel has been shut down and reaped here, so its CPU time is in RUSAGE_CHILDREN.
  return nb, time.perf_counter() - start, _children_cpu() - cpu_before


def _children_cpu() -> float:
  import resource
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def strip(path: str) -> bool:
  """Clears outputs, execution counts and per-run metadata in place; True if it changed."""
  import nbformat
  nb = nbformat.read(path, as_version=4)
  before = nbformat.writes(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      cell.outputs = []
      cell.execution_count = None
    for key in ("execution", "collapsed", "scrolled"):
      cell.metadata.pop(key, None)
  nb.metadata.pop("widgets", None)
  after = nbformat.writes(nb)
  if after != before:
    with open(path, "w", encoding="utf-8") as f:
      f.write(after)
  return after != before


def has_outputs(path: str) -> list[str]:
  """Descriptions of the code cells that still carry outputs or execution counts."""
  import nbformat
  nb = nbformat.read(path, as_version=4)
  bad = []
  for i, cell in enumerate(nb.cells):
    if cell.cell_type != "code":
      continue
    if cell.get("outputs"):
      bad.append(f"cell {i}: {len(cell.outputs)} output(s)")
    if cell.get("execution_count") is not None:
      bad.append(f"cell {i}: execution_count {cell.execution_count}")
  return bad


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
  parser.add_argument("--full", action="store_true", help="full size (O1JAX_FAST=0)")
  parser.add_argument("--out", default=os.path.join(REPO_ROOT, "colab_out"),
                      help="figures and executed copies (O1JAX_NOTEBOOK_OUT)")
  parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
  parser.add_argument("--strip", action="store_true", help="strip outputs in place and exit")
  args = parser.parse_args(argv)
  paths = notebook_paths(args.names)
  if args.strip:
    for p in paths:
      print(("stripped " if strip(p) else "clean    ") + os.path.relpath(p, REPO_ROOT))
    return 0
  import nbformat
  failed = 0
  for p in paths:
    name = os.path.basename(p)
    try:
      nb, seconds, cpu = execute(p, args.out, fast=not args.full, timeout=args.timeout)
    except Exception as e:  # report and go on with the next notebook
      failed += 1
      print(f"FAILED {name}: {type(e).__name__}: {str(e)[-2000:]}", flush=True)
      continue
    nbformat.write(nb, os.path.join(args.out, name))
    print(f"ok {name}: {seconds:.1f}s wall, {cpu:.1f}s CPU (executed copy in "
          f"{args.out}/{name})", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
