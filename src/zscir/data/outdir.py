"""Output folders that zscir owns: created new (or empty), recorded file by file, rebuilt without harm.

Every command that writes files into a folder the user names goes through this module —
`zscir data make-triplets`, ``scripts/build_real_corpus.py``, the real benchmark builder, `zscir demo`
and every `zscir train ...` (`zscir.train.run_folder`) — so one rule keeps a user's files safe:

* **Whose folder.** The folder must be new, empty, or carry the writer's *marker* file (`check_out`); a
  non-empty folder without it is the user's and is refused with one line, before any work.
* **Recorded file by file.** `start_marker` writes the marker and opens its *journal*
  (``<marker stem>.files.jsonl``, one JSON list a line); the `Recorder` it returns appends a line *before*
  each file is written (``["+", name]``: zscir is about to write it) and one *after* it
  (``["=", name, size, blake2b]``), and a line for each sub-folder it creates (``["d", name]``). Appending a
  short line per file keeps this cheap for the many thousands of images of make-triplets, and the record
  never depends on the clock (same input, byte-identical folder, journal included).
* **Deleting** (`prepare_out`, when a generator rebuilds into its own folder). A recorded file is deleted
  only when all of these hold: its name is a plain relative path (not absolute, no ``..``, not ``.``) that
  matches one of the names the generator writes (``patterns``, e.g. ``images/*.png``); no part of its path
  is a symbolic link; it is a regular file; its size and content hash still equal the recorded ones.
  Recorded sub-folders are then removed only when empty (deepest first): a folder is never deleted with
  what is in it. So a forged or copied marker deletes nothing outside the folder, nothing the generator
  could not have written, nothing it did not write, nothing changed since; a user's file put beside
  zscir's (``images/my-photo.png``) survives every rebuild.
* **Writing.** `Recorder.claim` refuses, with one line, to write over a file that exists and is not
  recorded in the journal (a user's file under exactly a generator's name) or over a symbolic link.
* **Interrupted runs.** Everything finished before a crash is recorded and cleared by the next rebuild.
  The file being written at the moment of the crash has only its ``+`` line: it is *not* deleted (it cannot
  be told apart from a user's file of that name) but its name stays recorded, so the next run may write it
  again. (make-triplets picks image names not yet taken, so such a file stays in ``images/`` until you
  remove it.)
* **Older markers** (zscir before the journal recorded sub-folders and cleared them whole) carry no
  ``journal`` key: such a folder is refused with one line; remove it yourself or choose a new folder.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

__all__ = ["OutputFolderError", "Recorder", "check_out", "has_marker", "journal_name", "prepare_out", "read_marker",
           "read_journal", "safe_name", "start_marker", "write_marker"]


class OutputFolderError(ValueError):
    """The output path is not a folder this generator may write into (a user mistake: ``error: ...``)."""


def journal_name(marker: str) -> str:
    """The journal beside ``marker``: ``make-triplets.json`` → ``make-triplets.files.jsonl``."""
    return f"{marker.rsplit('.', 1)[0] if '.' in marker.lstrip('.') else marker}.files.jsonl"


def has_marker(out: Path, marker: str) -> bool:
    m = out / marker
    return m.is_file() and not m.is_symlink()


def check_out(out: Path, marker: str, what: str) -> None:
    """Refuse a file, or a non-empty folder without ``marker`` (``what`` names the generator in messages)."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not has_marker(out, marker):
        raise OutputFolderError(f"{out} is not empty and was not created by {what} (no {marker}); "
                                "choose a new or empty folder")


def safe_name(name: Any) -> str | None:
    """``name`` as a plain relative POSIX path inside a folder, or None (absolute, ``..``, ``.``, empty...)."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return None
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", ".", "") for part in name.split("/")):
        return None
    return p.as_posix()


def _matches(name: str, patterns: Iterable[str], prefix: bool = False) -> bool:
    """Whether ``name`` matches a pattern part by part (``prefix``: matches the leading parts of one)."""
    parts = name.split("/")
    for pat in patterns:
        pp = pat.split("/")
        if (len(pp) > len(parts) if prefix else len(pp) == len(parts)) and \
                all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pp)):
            return True
    return False


def _inside(root: Path, name: str) -> bool:
    """Whether ``root/name`` is itself (no part of it a symbolic link) and inside ``root`` (resolved)."""
    p = root / name
    return not p.is_symlink() and p.resolve() == root / name


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.blake2b(digest_size=16)
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def read_journal(out: Path, marker: str) -> tuple[dict[str, tuple[int, str] | None], list[str]]:
    """The journal beside ``marker``: {file name: (size, hash) of its last ``=`` line, or None for only a
    ``+`` line}, and the recorded folders. Unsafe names and broken lines (a crash mid-line) are skipped."""
    files: dict[str, tuple[int, str] | None] = {}
    dirs: list[str] = []
    j = out / journal_name(marker)
    if not j.is_file() or j.is_symlink():
        return files, dirs
    for line in j.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, list) or len(rec) < 2 or safe_name(rec[1]) is None:
            continue
        kind, name = rec[0], safe_name(rec[1])
        if kind == "+":
            files.setdefault(name, None)
        elif kind == "=" and len(rec) == 4 and isinstance(rec[2], int) and isinstance(rec[3], str):
            files[name] = (rec[2], rec[3])
        elif kind == "d" and name not in dirs:
            dirs.append(name)
    return files, dirs


def read_marker(m: Path) -> dict:
    """The record of marker file ``m`` (a JSON object); an unreadable or foreign one is an `OutputFolderError`."""
    try:
        record = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputFolderError(f"{m} is unreadable ({e}); remove the folder yourself or choose a new one") from None
    if not isinstance(record, dict):
        raise OutputFolderError(f"{m} is not a zscir marker; remove the folder yourself or choose a new one")
    return record


def prepare_out(out: Path, marker: str, what: str, patterns: Sequence[str]) -> None:
    """Create ``out``, or delete what an earlier run of the same generator recorded writing there (see the
    module docstring for exactly which files). ``patterns`` are the names the generator writes, relative to
    ``out`` with ``*`` wildcards per path part (``images/*.png``)."""
    check_out(out, marker, what)
    if has_marker(out, marker):
        record = read_marker(out / marker)
        if "journal" not in record:
            raise OutputFolderError(f"{out / marker} was written by an older zscir that did not record its files "
                                    "one by one; remove the folder yourself or choose a new one")
        files, dirs = read_journal(out, marker)
        root = out.resolve()
        carried: list[list] = []
        for name, rec in files.items():
            if not _matches(name, patterns) or not _inside(root, name) or not (root / name).is_file():
                continue
            p = root / name
            if rec is not None and p.stat().st_size == rec[0] and _file_digest(p) == tuple(rec):
                p.unlink()
            elif rec is None:  # being written at a crash: kept, and still ours to write again
                carried.append(["+", name])
        for name in sorted(dirs, key=lambda d: -d.count("/")):
            d = root / name
            if _matches(name, patterns, prefix=True) and _inside(root, name) and d.is_dir():
                if any(d.iterdir()):
                    carried.append(["d", name])
                else:
                    d.rmdir()
        _write_atomic(out / journal_name(marker), "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in carried))
    out.mkdir(parents=True, exist_ok=True)


def write_marker(out: Path, marker: str, record: dict, **json_kw) -> None:
    """Write ``record`` (plus the ``journal`` key that says files are recorded one by one) atomically."""
    _write_atomic(out / marker, json.dumps({**record, "journal": journal_name(marker)}, **json_kw))


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` through a fresh ``<path>.tmp`` (never through a link someone left under that name)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    with open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


class Recorder:
    """Appends to a folder's journal what a run writes there (see the module docstring)."""

    def __init__(self, out: Path, marker: str):
        self.out, self.marker = Path(out), marker
        self.root = self.out.resolve()
        files, dirs = read_journal(self.out, marker)
        self._ours = set(files) | set(dirs)  # names this run may (re)write
        self._dirs_ok: set[str] = {""}
        self._written: dict[str, tuple[int, str]] = {}  # size and hash of what this run wrote, by name
        j = self.out / journal_name(marker)
        if j.is_symlink() or (j.exists() and not j.is_file()):
            raise OutputFolderError(f"{j} is not a plain file; remove the folder yourself or choose a new one")
        self._f = open(self.out / journal_name(marker), "a", encoding="utf-8")

    def _line(self, rec: list) -> None:
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()

    def _check_parent(self, name: str) -> None:
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        if parent not in self._dirs_ok:
            if not (_inside(self.root, parent) and (self.root / parent).is_dir()):
                raise OutputFolderError(f"{self.out / parent} is not a plain folder inside {self.out}; "
                                        "zscir writes nothing through a link")
            self._dirs_ok.add(parent)

    def mkdir(self, name: str) -> Path:
        """Create the sub-folder ``name`` (and its parents) and record those it created."""
        safe = safe_name(name)
        if safe is None:
            raise OutputFolderError(f"not a plain relative folder name: {name!r}")
        parts = safe.split("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            p = self.out / sub
            if p.is_symlink() or (p.exists() and not p.is_dir()):
                raise OutputFolderError(f"{p} is in the way: it is not a folder zscir made; move it away")
            if not p.exists():
                p.mkdir()
                self._line(["d", sub])
                self._ours.add(sub)
        self._check_parent(safe + "/x")
        return self.out / safe

    def check(self, name: str) -> Path:
        """The path of ``name``, refusing a link or a file not recorded as zscir's (nothing is recorded)."""
        safe = safe_name(name)
        if safe is None:
            raise OutputFolderError(f"not a plain relative file name: {name!r}")
        self._check_parent(safe)
        p = self.out / safe
        if p.is_symlink() or (p.exists() and (safe not in self._ours or not p.is_file())):
            raise OutputFolderError(f"{p} is in the way: zscir did not write it (a file of yours?); "
                                    "move it away or choose a new output folder")
        return p

    def claim(self, name: str) -> Path:
        """Record that ``name`` is about to be written and return its path (see `check` for refusals)."""
        p = self.check(name)
        safe = safe_name(name)
        self._line(["+", safe])
        self._ours.add(safe)
        return p

    def done(self, name: str, data: bytes | None = None, same_as: str | None = None) -> None:
        """Record ``name`` as written: size and hash of ``data``, of the file ``same_as`` this run wrote (a hard
        link or copy of it), or of the file as it is now."""
        safe = safe_name(name)
        if data is not None:
            rec = len(data), _digest(data)
        elif same_as is not None:
            rec = self._written[safe_name(same_as)]
        else:
            rec = _file_digest(self.out / safe)
        self._written[safe] = rec
        self._line(["=", safe, *rec])

    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.claim(name)
        p.write_bytes(data)
        self.done(name, data)
        return p

    def close(self) -> None:
        self._f.close()

    def finish(self, record: dict, **json_kw) -> None:
        """Close the journal and replace the marker by the run's final ``record``."""
        self.close()
        write_marker(self.out, self.marker, record, **json_kw)


def start_marker(out: Path, marker: str, created_by: str, dirs: Sequence[str],
                 files: Sequence[str] = ()) -> Recorder:
    """Write an (incomplete) marker, create and record ``dirs`` and claim the ``files`` about to be written
    (call `Recorder.done` after writing each), before any data file is written; returns the run's `Recorder`."""
    write_marker(out, marker, {"created_by": created_by, "complete": False, "dirs": list(dirs),
                               "files": list(files)})
    rec = Recorder(out, marker)
    for d in dirs:
        rec.mkdir(d)
    for f in files:
        rec.check(f)  # all checked before the first is recorded
    for f in files:
        rec.claim(f)
    return rec
