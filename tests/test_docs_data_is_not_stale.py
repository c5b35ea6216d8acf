"""Every data file under docs/ is stamped (docs/<folder>/STAMP.json: checkpoint content hash,
command, date), unedited since, and made from the shipped checkpoint -- or declared in
docs/DATA_MANIFEST.json as historical (with the checkpoint that made it, and its docs saying
so next to it) or as checkpoint-free (random weights). The rules are in
o1jax/analysis/provenance.py; the checker's power is shown on a temp docs tree below."""

import hashlib
import json
import re
import os
import shutil

import pytest

from o1jax.analysis import provenance


def test_docs_data_is_not_stale():
  problems = provenance.check_docs()
  assert not problems, "\n".join(problems)


def test_every_docs_data_file_names_its_command_and_date():
  root = provenance.repo_root()
  for folder in provenance.data_folders(root):
    stamp = provenance.read_stamp(folder)
    assert stamp is not None, folder
    for name, e in stamp["files"].items():
      assert e["command"].startswith("python launch/"), (folder.name, name, e["command"])
      assert len(e["date"]) == 10 and e["date"].startswith("2026-"), (folder.name, name)
      # No machine paths: every path a stamp names is relative to the repository.
      assert not re.search(r'(^|[\s="])/[A-Za-z]', json.dumps(e)), (folder.name, name)


# ---------------------------------------------------------------- the checker's power


def reference_checkpoint_hash(d):
  """The documented rule, written again independently."""
  lines = []
  for dirpath, _, files in os.walk(d):
    for f in files:
      full = os.path.join(dirpath, f)
      rel = os.path.relpath(full, d).replace(os.sep, "/")
      lines.append(f"{rel}\0{hashlib.sha256(open(full, 'rb').read()).hexdigest()}\n")
  return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def make_checkpoint(d, params=b"p" * 100, head=b"h"):
  os.makedirs(d / "heads", exist_ok=True)
  (d / "params.msgpack").write_bytes(params)
  (d / "model.json").write_text('{"model_config": {}}')
  (d / "heads" / "value_head.msgpack").write_bytes(head)
  return d


@pytest.fixture
def tree(tmp_path):
  """A repo with a shipped checkpoint, an old one, one data folder stamped on the shipped
  one and one declared historical, with its doc saying so."""
  root = tmp_path / "repo"
  make_checkpoint(root / provenance.SHIPPED_CHECKPOINT)
  make_checkpoint(root / "o1jax/checkpoints/old", params=b"q" * 100)
  for folder in ("now", "old"):
    (root / "docs" / folder).mkdir(parents=True)
    (root / "docs" / folder / "table.csv").write_text("a,b\n1,2\n")
    (root / "docs" / folder / "plot.png").write_bytes(b"\x89PNG")
  provenance.write_stamp(root / "docs/now", "python launch/x.py --out=docs/now",
                         root / provenance.SHIPPED_CHECKPOINT, root=root)
  provenance.write_stamp(root / "docs/old", "python launch/y.py --out=docs/old",
                         root / "o1jax/checkpoints/old", root=root)
  (root / "docs/OLD.md").write_text("# Old\n\nHistorical: reasoner v1.\n\n| a | b |\n\n"
                                    "Data: `docs/old/table.csv`.\n")
  manifest = {"entries": {"docs/old": {"status": "historical",
                                       "checkpoint": "o1jax/checkpoints/old",
                                       "docs": ["docs/OLD.md"], "reason": "made on v1"}}}
  write_manifest(root, manifest)
  return root, manifest


def write_manifest(root, manifest):
  (root / provenance.MANIFEST_PATH).write_text(json.dumps(manifest))


def problems(root):
  return provenance.check_docs(root)


def test_checkpoint_hash_follows_its_documented_rule(tmp_path):
  a = make_checkpoint(tmp_path / "a")
  assert provenance.checkpoint_sha256(a) == reference_checkpoint_hash(a)
  b = tmp_path / "elsewhere" / "b"
  shutil.copytree(a, b)                         # location and mtimes do not matter
  os.utime(b / "params.msgpack", (0, 0))
  assert provenance.checkpoint_sha256(b) == provenance.checkpoint_sha256(a)
  (b / "heads" / "value_head.msgpack").write_bytes(b"H")           # a head changed
  assert provenance.checkpoint_sha256(b) != provenance.checkpoint_sha256(a)
  shutil.rmtree(b)
  shutil.copytree(a, b)
  os.rename(b / "heads" / "value_head.msgpack", b / "heads" / "budget_head.msgpack")
  assert provenance.checkpoint_sha256(b) != provenance.checkpoint_sha256(a)   # renamed
  with pytest.raises(ValueError, match="checkpoint_dir"):
    provenance.checkpoint_sha256(tmp_path / "missing")


def test_a_consistent_tree_passes(tree):
  root, _ = tree
  assert problems(root) == []
  stamp = provenance.read_stamp(root / "docs/now")
  assert stamp["files"]["table.csv"]["checkpoint"] == provenance.SHIPPED_CHECKPOINT
  assert stamp["files"]["table.csv"]["command"] == "python launch/x.py --out=docs/now"


def test_rejects_an_edited_file(tree):
  root, _ = tree
  (root / "docs/now/table.csv").write_text("a,b\n1,3\n")
  assert any("table.csv: edited after stamping" in p for p in problems(root))


def test_rejects_a_missing_stamp(tree):
  root, _ = tree
  (root / "docs/now" / provenance.STAMP_NAME).unlink()
  assert any("docs/now: no STAMP.json" in p for p in problems(root))


def test_rejects_an_unstamped_or_vanished_file(tree):
  root, _ = tree
  (root / "docs/now/extra.json").write_text("{}")
  assert any("extra.json: not stamped" in p for p in problems(root))
  (root / "docs/now/extra.json").unlink()
  (root / "docs/now/plot.png").unlink()
  assert any("plot.png: in the stamp but not in the folder" in p for p in problems(root))


def test_rejects_data_from_another_checkpoint(tree):
  root, _ = tree
  # The shipped checkpoint changes (a retrained head): every file stamped on it goes stale.
  (root / provenance.SHIPPED_CHECKPOINT / "heads" / "value_head.msgpack").write_bytes(b"new")
  found = problems(root)
  assert sum("docs/now/" in p and "stale" in p for p in found) == 2, found
  # Data stamped on an old checkpoint without a manifest entry are stale too.
  write_manifest(root, {"entries": {}})
  assert any("docs/old/table.csv: stale" in p for p in problems(root))


def test_historical_entries_must_match_and_be_said(tree):
  root, manifest = tree
  # The manifest names the wrong checkpoint for the folder.
  manifest["entries"]["docs/old"]["checkpoint"] = provenance.SHIPPED_CHECKPOINT
  write_manifest(root, manifest)
  assert any("manifest says it came from" in p for p in problems(root))
  manifest["entries"]["docs/old"]["checkpoint"] = "o1jax/checkpoints/old"
  # The doc shows the data without the note...
  write_manifest(root, manifest)
  (root / "docs/OLD.md").write_text("# Old\n\n| a | b |\n\nData: `docs/old/table.csv`.\n")
  assert any("without saying so" in p for p in problems(root))
  # ...or with the note far from any reference to the data.
  far = "# Old\n\nHistorical: v1.\n" + "text\n" * 100 + "Data: `old/table.csv`.\n"
  (root / "docs/OLD.md").write_text(far)
  assert any("without saying so" in p for p in problems(root))
  # A mention of the checkpoint's path counts as the note.
  (root / "docs/OLD.md").write_text("Made on `o1jax/checkpoints/old`: `old/table.csv`.\n")
  assert problems(root) == []
  # A doc that never refers to the data cannot carry its note.
  (root / "docs/OLD.md").write_text("historical, but of what? o1jax/old/table.csv\n")
  assert any("never refers to it" in p for p in problems(root))


def test_stale_manifest_entries_and_checkpoint_free_data(tree):
  root, manifest = tree
  # Regenerated on the shipped checkpoint while the manifest still calls it historical.
  provenance.write_stamp(root / "docs/old", "python launch/y.py", root / provenance.SHIPPED_CHECKPOINT,
                         root=root)
  assert any("remove the entry" in p for p in problems(root))
  # No checkpoint: accepted only where the manifest says checkpoint_free.
  provenance.write_stamp(root / "docs/now", "python launch/bench.py", None, files=["plot.png"],
                         note="random weights", root=root)
  assert any("docs/now/plot.png: stamped without a checkpoint" in p for p in problems(root))
  manifest["entries"] = {"docs/now/plot.png": {"status": "checkpoint_free", "reason": "bench"}}
  write_manifest(root, manifest)
  assert problems(root) == []
  manifest["entries"]["docs/gone"] = {"status": "checkpoint_free", "reason": "x"}
  write_manifest(root, manifest)
  assert any("docs/gone does not exist" in p for p in problems(root))


def test_bad_stamps_and_manifests_are_refused(tree):
  root, manifest = tree
  with pytest.raises(ValueError, match="command"):
    provenance.write_stamp(root / "docs/now", " ", None, note="x", root=root)
  with pytest.raises(ValueError, match="note"):
    provenance.write_stamp(root / "docs/now", "python launch/x.py", None, root=root)
  with pytest.raises(ValueError, match="files not in"):
    provenance.write_stamp(root / "docs/now", "python launch/x.py", None, note="x",
                           files=["nope.csv"], root=root)
  manifest["entries"]["docs/old"]["status"] = "old"
  write_manifest(root, manifest)
  with pytest.raises(ValueError, match="status"):
    problems(root)
  manifest["entries"]["docs/old"] = {"status": "historical", "checkpoint": "x", "reason": "r"}
  write_manifest(root, manifest)
  with pytest.raises(ValueError, match="docs"):
    problems(root)
