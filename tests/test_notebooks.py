"""The Colab notebooks in colab/: each runs headless in fast mode without an error and writes
its figures as real PNGs; every notebook is committed without outputs; the runtime cell
follows the convention (one cell reads O1JAX_FAST, the install only runs on Colab).

Execution takes a few minutes on a 2-core CPU; run just the cheap checks with
`pytest tests/test_notebooks.py -k "not execute"`. Timings are printed (use -s to see them).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import struct
import subprocess

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB_DIR = os.path.join(REPO_ROOT, "colab")

_spec = importlib.util.spec_from_file_location("run_notebooks",
                                               os.path.join(COLAB_DIR, "run_notebooks.py"))
run_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_notebooks)

NOTEBOOKS = ["quickstart", "train_to_reason", "open_weights"]
# The figures each notebook must leave in O1JAX_NOTEBOOK_OUT.
FIGURES = {
    "quickstart": ["accuracy_vs_budget.png"],
    "train_to_reason": ["train_loss.png", "voting_vs_best_of_n.png"],
    "open_weights": ["hf_thinking_vs_budget.png"],
}
# Modules a notebook needs beyond the base and `notebooks` extras: skipped without them.
NEEDS = {"open_weights": ["torch", "transformers", "tokenizers", "safetensors", "jinja2"]}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _path(name: str) -> str:
  return os.path.join(COLAB_DIR, f"{name}.ipynb")


def _committed_notebooks() -> list[str]:
  """Notebooks git tracks under colab/, plus any on disk (so a new one is checked before it
  is added)."""
  on_disk = set(glob.glob(os.path.join(COLAB_DIR, "*.ipynb")))
  try:
    out = subprocess.run(["git", "ls-files", "colab/*.ipynb"], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True).stdout
    tracked = {os.path.join(REPO_ROOT, line) for line in out.splitlines() if line}
  except (OSError, subprocess.CalledProcessError):
    tracked = set()
  return sorted(on_disk | tracked)


def test_every_notebook_is_listed():
  on_disk = sorted(os.path.splitext(os.path.basename(p))[0]
                   for p in glob.glob(os.path.join(COLAB_DIR, "*.ipynb")))
  assert on_disk == sorted(NOTEBOOKS), "add new notebooks to NOTEBOOKS and FIGURES"


@pytest.mark.parametrize("path", _committed_notebooks(), ids=os.path.basename)
def test_outputs_stripped(path):
  assert os.path.exists(path), f"{path} is tracked by git but missing"
  bad = run_notebooks.has_outputs(path)
  assert not bad, (f"{os.path.relpath(path, REPO_ROOT)} carries outputs ({'; '.join(bad)}): "
                   "run `python colab/run_notebooks.py --strip` before committing")
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    assert "execution" not in cell.metadata, "per-run timing metadata left in a cell"


def _code_cells(name):
  return [c.source for c in nbformat.read(_path(name), as_version=4).cells
          if c.cell_type == "code"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runtime_cell_convention(name):
  """The first code cell detects Colab and the backend and reads the environment; no other
  cell reads O1JAX_FAST or O1JAX_NOTEBOOK_OUT, and shell installs only run on Colab."""
  cells = _code_cells(name)
  first = cells[0]
  assert "jax.default_backend()" in first
  assert '"google.colab" in sys.modules' in first
  assert 'os.environ.get("O1JAX_FAST"' in first and "O1JAX_NOTEBOOK_OUT" in first
  for src in cells[1:]:
    assert "O1JAX_FAST" not in src and "O1JAX_NOTEBOOK_OUT" not in src
  for i, src in enumerate(cells):
    lines = src.splitlines()
    for j, line in enumerate(lines):
      if re.match(r"\s*!\s*(pip|git)\b", line):
        # Inside `if IN_COLAB:` (indented, with that guard above it in the same cell).
        guard = [l for l in lines[:j] if l.strip() == "if IN_COLAB:"]
        assert line.startswith((" ", "\t")) and guard, (
            f"{name} cell {i}: shell install {line.strip()!r} is not guarded by `if IN_COLAB:`")


def _png_size(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
  assert head[12:16] == b"IHDR", f"{path}: PNG without IHDR"
  return struct.unpack(">II", head[16:24])


def _missing(modules):
  return [m for m in modules if importlib.util.find_spec(m) is None]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_execute_fast(name, tmp_path):
  missing = _missing(NEEDS.get(name, []))
  if missing:
    pytest.skip(f"{name} needs {', '.join(missing)} (pip install -e '.[hf]')")
  out_dir = tmp_path / "out"
  nb, seconds, cpu = run_notebooks.execute(_path(name), str(out_dir), fast=True, timeout=600)
  print(f"\n[notebook] {name}: {seconds:.1f}s wall, {cpu:.1f}s CPU (fast mode)")

  errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.output_type == "error"]
  assert not errors, errors  # nbclient raises first; this guards allow_errors changes
  for figure in FIGURES[name]:
    path = out_dir / figure
    assert path.exists(), f"{name} did not write {figure} (found {sorted(os.listdir(out_dir))})"
    assert path.stat().st_size > 5_000, f"{figure} is suspiciously small ({path.stat().st_size} B)"
    width, height = _png_size(path)
    assert 300 <= width <= 4000 and 200 <= height <= 4000, (figure, width, height)
  # Every figure is also shown inline.
  images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
  assert len(images) >= len(FIGURES[name])
