"""Where every number under docs/ came from: a checkpoint's content hash, the command and
the date, stamped beside the data, and the check that the docs still describe the shipped
checkpoint (issue 34).

Every folder under docs/ (docs/sweep, docs/search, ...) is a *data folder*; its files
(CSV, JSON, PNG, anything but STAMP.json and hidden files) are its *data files*.
`docs/<folder>/STAMP.json` records, per data file:

  {"format": 1,
   "files": {"rows.csv": {"sha256": <the file's sha256>,
                          "checkpoint": "o1jax/checkpoints/tiny" or null,
                          "checkpoint_sha256": <checkpoint_sha256(checkpoint)> or null,
                          "command": "python launch/sweep.py --out=docs/sweep",
                          "date": "2026-12-07", "machine": "...", "note": optional}}}

Per file rather than per folder because folders mix commands and models (docs/kv holds a
random-weight decode bench beside accuracy sweeps of the embedded reasoner).

`check_docs(root)` fails a data file when the folder has no stamp, the file is not in it,
its bytes changed since stamping, or it was made from another checkpoint than the shipped
one (`SHIPPED_CHECKPOINT`) -- unless docs/DATA_MANIFEST.json declares it (or its folder):

  {"entries": {"docs/search": {"status": "historical",
                               "checkpoint": "o1jax/checkpoints/tiny_v1",
                               "docs": ["docs/SEARCH.md"], "reason": "..."},
               "docs/kv/decode.json": {"status": "checkpoint_free", "reason": "..."}}}

- "historical": the stamp must name that checkpoint (its hash must equal the checkpoint
  directory's hash, or the entry's own "checkpoint_sha256" where the directory is not
  shipped), and each doc in "docs" must say so next to the data: within NOTE_WINDOW lines
  of a line that refers to the file or folder (its path under docs/, with or without the
  leading "docs/"), some line contains the word "historical" or the checkpoint's path.
- "checkpoint_free": data that no checkpoint produced (benchmarks on random weights,
  experiments that train their own model from scratch); the stamp's checkpoint is null.
A manifest entry that no longer applies (the data were restamped on the shipped checkpoint)
is itself reported, so the manifest cannot silently go stale.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import platform
import re

STAMP_NAME = "STAMP.json"
MANIFEST_PATH = "docs/DATA_MANIFEST.json"
SHIPPED_CHECKPOINT = "o1jax/checkpoints/tiny"
STATUSES = ("historical", "checkpoint_free")
NOTE_WINDOW = 80   # lines either side of a reference (a doc section's length)
_FORMAT = 1


def repo_root() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parents[2]


def file_sha256(path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _visible_files(folder: pathlib.Path, skip=()) -> list[str]:
  """Regular files under folder, recursively, as sorted posix paths relative to it; hidden
  files and folders (.DS_Store, .ipynb_checkpoints), __pycache__ and `skip` left out."""
  out = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
    for name in filenames:
      rel = (pathlib.Path(dirpath) / name).relative_to(folder).as_posix()
      if not name.startswith(".") and rel not in skip:
        out.append(rel)
  return sorted(out)


def checkpoint_sha256(checkpoint_dir) -> str:
  """The content hash of a checkpoint directory (params.msgpack, model.json, heads/*, ...).

  sha256 over the lines "<relative posix path>\\0<sha256 of the file>\\n" of every visible
  file, sorted by path: independent of file order, timestamps and where the directory lies,
  and any change to any file's bytes, or a file added, removed or renamed, changes it.
  """
  d = pathlib.Path(checkpoint_dir)
  if not d.is_dir():
    raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} is not a directory")
  files = _visible_files(d)
  if not files:
    raise ValueError(f"checkpoint_dir {str(checkpoint_dir)!r} holds no files")
  h = hashlib.sha256()
  for rel in files:
    h.update(f"{rel}\0{file_sha256(d / rel)}\n".encode())
  return h.hexdigest()


def data_files(folder) -> list[str]:
  return _visible_files(pathlib.Path(folder), skip=(STAMP_NAME,))


def _display_path(path, root: pathlib.Path) -> str:
  """Repo-relative where the path lies in the repo (no machine paths in tracked files)."""
  p = pathlib.Path(path).resolve()
  try:
    return p.relative_to(root.resolve()).as_posix()
  except ValueError:
    return pathlib.Path(path).as_posix()


def machine_description() -> str:
  return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"


def read_stamp(folder) -> dict | None:
  path = pathlib.Path(folder) / STAMP_NAME
  if not path.exists():
    return None
  stamp = json.loads(path.read_text())
  if not isinstance(stamp, dict) or not isinstance(stamp.get("files"), dict):
    raise ValueError(f"{path}: a stamp needs a 'files' object")
  return stamp


def write_stamp(folder, command: str, checkpoint_dir, *, files=None, date: str | None = None,
                machine: str | None = None, note: str | None = None, root=None) -> dict:
  """Stamps `files` (default: every data file in folder) as made by `command` from
  `checkpoint_dir` (None: no checkpoint; then `note` must say what made the data).

  Entries for other files already in the stamp are kept (folders mix commands); entries
  for files no longer in the folder are dropped. Returns the stamp written."""
  folder = pathlib.Path(folder)
  root = pathlib.Path(root) if root is not None else repo_root()
  if not folder.is_dir():
    raise ValueError(f"folder {str(folder)!r} is not a directory")
  if not command or not command.strip():
    raise ValueError("command is empty: the stamp must say how to remake the data")
  if checkpoint_dir is None and not note:
    raise ValueError("checkpoint_dir is None: give a note saying what made the data")
  present = data_files(folder)
  names = present if files is None else list(files)
  missing = sorted(set(names) - set(present))
  if missing:
    raise ValueError(f"files not in {folder}: {missing}")
  ckpt, ckpt_hash = None, None
  if checkpoint_dir is not None:
    ckpt, ckpt_hash = _display_path(checkpoint_dir, root), checkpoint_sha256(checkpoint_dir)
  stamp = read_stamp(folder) or {"format": _FORMAT, "files": {}}
  entries = {k: v for k, v in stamp["files"].items() if k in present}
  for name in names:
    entry = {"sha256": file_sha256(folder / name), "checkpoint": ckpt,
             "checkpoint_sha256": ckpt_hash, "command": command.strip(),
             "date": date or datetime.date.today().isoformat(),
             "machine": machine or machine_description()}
    if note:
      entry["note"] = note
    entries[name] = entry
  stamp = {"format": _FORMAT,
           "checkpoint_hash_rule": "o1jax/analysis/provenance.py: checkpoint_sha256",
           "files": dict(sorted(entries.items()))}
  (folder / STAMP_NAME).write_text(json.dumps(stamp, indent=1) + "\n")
  return stamp


def load_manifest(path) -> dict:
  """The manifest's entries, keyed by repo-relative path; ValueError names a bad field."""
  path = pathlib.Path(path)
  if not path.exists():
    return {}
  data = json.loads(path.read_text())
  entries = data.get("entries")
  if not isinstance(entries, dict):
    raise ValueError(f"{path}: needs an 'entries' object")
  for key, e in entries.items():
    if e.get("status") not in STATUSES:
      raise ValueError(f"{path}: {key}: status must be one of {STATUSES}, got "
                       f"{e.get('status')!r}")
    if not e.get("reason"):
      raise ValueError(f"{path}: {key}: every entry needs a 'reason'")
    if e["status"] == "historical":
      if not e.get("checkpoint"):
        raise ValueError(f"{path}: {key}: a historical entry names its 'checkpoint'")
      if not e.get("docs"):
        raise ValueError(f"{path}: {key}: a historical entry lists the 'docs' that show it")
  return entries


def _manifest_entry(entries: dict, rel_file: str):
  """The entry for a docs file (its own, else its folder's) and the key it was found at."""
  parts = rel_file.split("/")
  for n in range(len(parts), 1, -1):
    key = "/".join(parts[:n])
    if key in entries:
      return key, entries[key]
  return None, None


def _reference_pattern(root: pathlib.Path, key: str) -> re.Pattern:
  """A line refers to docs/kv/x.json as `docs/kv/x.json` or `kv/x.json` (a relative link
  from a doc in docs/), and to the folder docs/kv as `docs/kv` or as `kv/<one of its data
  files>`; never as part of another path (`o1jax/search/` and `search/scorers.py` are not
  docs/search)."""
  rel = key[len("docs/"):] if key.startswith("docs/") else key
  path = root / key
  names = [f"{rel}/{f}" for f in data_files(path)] if path.is_dir() else [rel]
  alts = "|".join(re.escape(n) for n in names)
  return re.compile(rf"(?<![\w/.-])docs/{re.escape(rel)}(?![\w.-])"
                    rf"|(?<![\w/.-])(?:{alts})(?![\w.-])")


def doc_note_problems(root: pathlib.Path, key: str, entry: dict) -> list[str]:
  """The rule for a historical entry: each of its docs has, within NOTE_WINDOW lines of a
  line referring to the data, a line with the word "historical" or the checkpoint path."""
  problems = []
  ref = _reference_pattern(root, key)
  note = re.compile(rf"\bhistorical\b|{re.escape(entry['checkpoint'])}", re.IGNORECASE)
  for doc in entry["docs"]:
    path = root / doc
    if not path.exists():
      problems.append(f"{key}: manifest names doc {doc}, which does not exist")
      continue
    lines = path.read_text().splitlines()
    refs = [i for i, line in enumerate(lines) if ref.search(line)]
    if not refs:
      problems.append(f"{key}: {doc} never refers to it (manifest 'docs' is wrong)")
      continue
    notes = [i for i, line in enumerate(lines) if note.search(line)]
    if not any(abs(i - j) <= NOTE_WINDOW for i in refs for j in notes):
      problems.append(f"{key}: {doc} shows historical data (from {entry['checkpoint']}) "
                      f"without saying so: no 'historical' or '{entry['checkpoint']}' "
                      f"within {NOTE_WINDOW} lines of a reference to it")
  return problems


def check_folder(folder, *, root=None, entries: dict | None = None,
                 shipped_sha256: str | None = None) -> list[str]:
  """Problems with one docs data folder (empty: its data are stamped, unedited, and from
  the shipped checkpoint or declared in the manifest). Doc notes: see check_docs."""
  root = pathlib.Path(root) if root is not None else repo_root()
  folder = pathlib.Path(folder)
  if entries is None:
    entries = load_manifest(root / MANIFEST_PATH)
  if shipped_sha256 is None:
    shipped_sha256 = checkpoint_sha256(root / SHIPPED_CHECKPOINT)
  rel_folder = _display_path(folder, root)
  stamp = read_stamp(folder)
  if stamp is None:
    return [f"{rel_folder}: no {STAMP_NAME} (stamp it with provenance.write_stamp)"]
  problems = []
  present = data_files(folder)
  for name in sorted(set(stamp["files"]) - set(present)):
    problems.append(f"{rel_folder}/{name}: in the stamp but not in the folder")
  for name in present:
    rel = f"{rel_folder}/{name}"
    e = stamp["files"].get(name)
    if e is None:
      problems.append(f"{rel}: not stamped (a file added without its provenance)")
      continue
    if e.get("sha256") != file_sha256(folder / name):
      problems.append(f"{rel}: edited after stamping (sha256 differs from the stamp)")
    if not e.get("command") or not e.get("date"):
      problems.append(f"{rel}: the stamp lacks its command or date")
    key, m = _manifest_entry(entries, rel)
    status = m["status"] if m else None
    if e.get("checkpoint_sha256") == shipped_sha256 and e.get("checkpoint") is not None:
      if m:
        problems.append(f"{rel}: stamped on the shipped checkpoint, but the manifest still "
                        f"lists {key} as {status}: remove the entry")
    elif e.get("checkpoint") is None:
      if status != "checkpoint_free":
        problems.append(f"{rel}: stamped without a checkpoint, and the manifest does not "
                        f"declare it checkpoint_free")
    elif status != "historical":
      problems.append(f"{rel}: stale: made from {e.get('checkpoint')} "
                      f"({str(e.get('checkpoint_sha256'))[:12]}), not the shipped "
                      f"{SHIPPED_CHECKPOINT} ({shipped_sha256[:12]}); regenerate it or list "
                      f"it in {MANIFEST_PATH} as historical")
    else:
      ckpt_dir = root / m["checkpoint"]
      expected = (checkpoint_sha256(ckpt_dir) if ckpt_dir.is_dir()
                  else m.get("checkpoint_sha256"))
      if expected is None:
        problems.append(f"{key}: historical checkpoint {m['checkpoint']} is not shipped; "
                        f"the manifest entry must give its checkpoint_sha256")
      elif e.get("checkpoint_sha256") != expected:
        problems.append(f"{rel}: the manifest says it came from {m['checkpoint']}, but its "
                        f"stamp names another checkpoint hash")
  return problems


def data_folders(root) -> list[pathlib.Path]:
  docs = pathlib.Path(root) / "docs"
  return sorted(p for p in docs.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_docs(root=None) -> list[str]:
  """Every problem with every docs data folder, the manifest and the docs' notes."""
  root = pathlib.Path(root) if root is not None else repo_root()
  entries = load_manifest(root / MANIFEST_PATH)
  shipped = checkpoint_sha256(root / SHIPPED_CHECKPOINT)
  problems = []
  for folder in data_folders(root):
    problems += check_folder(folder, root=root, entries=entries, shipped_sha256=shipped)
  for key, entry in entries.items():
    if not (root / key).exists():
      problems.append(f"{MANIFEST_PATH}: {key} does not exist")
    elif entry["status"] == "historical":
      problems += doc_note_problems(root, key, entry)
  return problems
