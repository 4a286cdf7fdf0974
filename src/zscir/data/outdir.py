"""Output folders that zscir owns: created new (or empty), recorded by a marker file, rebuilt safely.

Generators that write many files into a folder the user names (`zscir data make-triplets`,
``scripts/build_real_corpus.py``) must never delete a user's files. The rule: the folder must be new,
empty, or carry the generator's marker file. The marker is written *before* anything else and lists the
sub-folders the generator created; rebuilding deletes only the files and those folders the marker lists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

__all__ = ["OutputFolderError", "check_out", "prepare_out", "start_marker"]


class OutputFolderError(ValueError):
    """The output path is not a folder this generator may write into (a user mistake: ``error: ...``)."""


def check_out(out: Path, marker: str, what: str) -> None:
    """Refuse a file, or a non-empty folder without ``marker`` (``what`` names the generator in messages)."""
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / marker).exists():
        raise OutputFolderError(f"{out} is not empty and was not created by {what} (no {marker}); "
                                "choose a new or empty folder")


def prepare_out(out: Path, marker: str, what: str) -> None:
    """Create ``out``, or clear what an earlier run of the same generator recorded in its marker."""
    check_out(out, marker, what)
    m = out / marker
    if m.exists():
        try:
            record = json.loads(m.read_text())
            listed, dirs = list(record["files"]), list(record.get("dirs", []))
        except (ValueError, KeyError, TypeError) as e:
            raise OutputFolderError(f"{m} is unreadable ({e}); remove the folder yourself") from None
        root = out.resolve()
        for rel in listed:
            p = (out / rel).resolve()
            if root in p.parents and p.is_file():
                p.unlink()
        for rel in dirs:  # folders the generator created: everything in them is its own (even after a crash)
            d = out / rel
            if root in d.resolve().parents and d.is_dir() and not d.is_symlink():
                shutil.rmtree(d)
        m.unlink()
    out.mkdir(parents=True, exist_ok=True)


def start_marker(out: Path, marker: str, created_by: str, dirs: Sequence[str], files: Sequence[str] = ()) -> None:
    """Create ``dirs`` and record them, and the top-level ``files`` about to be written, in an (incomplete)
    marker before any data file is written."""
    for d in dirs:
        (out / d).mkdir()
    (out / marker).write_text(json.dumps({"created_by": created_by, "complete": False, "dirs": list(dirs),
                                          "files": list(files)}))
