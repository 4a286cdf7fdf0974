"""Recognising a query's reference image among the indexed items, so that it is not returned as its own match.

A composed query's reference is, in the user's eyes, never a result: ``zscir search IDX --image
~/Pictures/beach.jpg`` must not answer "beach.jpg, score 1.0". The reference can reach the retriever in
three forms, and each is recognised here (one implementation for the CLI, the Python API and the server):

* an item id (``--image beach.jpg`` with the path relative to the indexed folder) — looked up directly;
* a file path — matched against the items' recorded paths (as given and with symlinks resolved) and,
  through every shard's recorded source root, against the item ids;
* image bytes or a file anywhere else (an upload, a copy of an indexed photo) — matched by content: the
  SHA-256 of the bytes against the digest an index built with ``--hash`` records, or, for indexes that
  record size + mtime only (every older index), against the files of same-size items, hashed lazily and
  only while a file is unchanged since it was indexed. Nothing is added to the index folder, so existing
  indexes work as they are.

The rows excluded are the recognised item plus every item with byte-identical content (a backup copy of the
same photo is no better an answer than the photo itself). A PIL image carries no bytes or path and is
never recognised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zscir.index.names import escape_name, item_path

logger = logging.getLogger(__name__)

__all__ = ["IndexedReference", "ReferenceFinder"]


@dataclass(frozen=True)
class IndexedReference:
    """Index rows that are the query's reference: the recognised item first, then identical copies."""

    rows: tuple[int, ...]
    ids: tuple[str, ...]
    matched_by: str  # "id", "path" or "content"

    @property
    def id(self) -> str:
        return self.ids[0]

    def describe(self) -> str:
        """One line for people: ``reference is indexed item beach.jpg: excluded``."""
        copies = self.ids[1:]
        more = ""
        if copies:
            shown = ", ".join(copies[:3]) + (", ..." if len(copies) > 3 else "")
            more = f" (and {len(copies)} identical cop{'y' if len(copies) == 1 else 'ies'}: {shown})"
        how = {"id": "", "path": "", "content": " (same content)"}.get(self.matched_by, "")
        return f"reference is indexed item {self.id}{how}{more}: excluded"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "matched_by": self.matched_by, "excluded": list(self.ids)}


def _prefix64(hexdigest: str) -> int:
    return int(hexdigest[:16], 16) or 1  # 0 marks "no digest"


def _same_file(recorded: str, path: str) -> bool:
    """Whether an item's recorded path and ``path`` are one file (also through symlinks)."""
    try:
        return os.path.samefile(recorded, path)
    except OSError:
        return os.path.normcase(os.path.abspath(recorded)) == path


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


class ReferenceFinder:
    """Looks references up in a store's items (``items``, ``index_of``); tables are built on first use.

    ``roots`` are the source folders the items' ids are relative to (one per shard).
    """

    def __init__(self, items: Sequence[dict[str, Any]], index_of, roots: Sequence[str] = ()):
        self._items = items
        self._index_of = index_of
        self._roots = [os.path.normcase(os.path.realpath(r)) for r in dict.fromkeys(r for r in roots if r)]
        self._lock = threading.Lock()
        self._by_path: dict[str, int] | None = None  # only for stores without a recorded root
        # content tables, 16 bytes per item: the recorded size (-1: none) and the first 64 bits of a
        # recorded SHA-256 (0: none); candidates are then checked in full
        self._sizes: np.ndarray | None = None
        self._sha64: np.ndarray | None = None
        self._digests: dict[int, tuple[int, int, str]] = {}  # row -> (size, mtime_ns, sha256) of its file now

    # ------------------------------------------------------------------------------------------- tables
    def _content_tables(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if self._sizes is None:
                n = len(self._items)
                sizes, sha64 = np.full(n, -1, np.int64), np.zeros(n, np.uint64)
                for row, it in enumerate(self._items):
                    if isinstance(it.get("sha256"), str):
                        sha64[row] = _prefix64(it["sha256"])
                    elif isinstance(it.get("size"), int):
                        sizes[row] = it["size"]
                self._sizes, self._sha64 = sizes, sha64
            return self._sizes, self._sha64

    def _path_table(self) -> dict[str, int]:
        with self._lock:
            if self._by_path is None:
                self._by_path = {}
                for row, it in enumerate(self._items):
                    self._by_path.setdefault(os.path.normcase(os.path.abspath(item_path(it))), row)
            return self._by_path

    # ------------------------------------------------------------------------------------------ lookups
    def row_of_id(self, key: str) -> int | None:
        try:
            return int(self._index_of(key))
        except KeyError:
            return None

    def row_of_path(self, path: str | Path) -> int | None:
        """The item whose file ``path`` is: its id relative to a recorded source root, as given or with
        symlinks resolved (stores without a root: the recorded paths)."""
        p = os.fspath(Path(path).expanduser())
        cands = list(dict.fromkeys((os.path.normcase(os.path.abspath(p)), os.path.normcase(os.path.realpath(p)))))
        if not self._roots:
            table = self._path_table()
            return next((table[c] for c in cands if c in table), None)
        for cand in cands:
            for root in self._roots:
                if not cand.startswith(root.rstrip(os.sep) + os.sep):
                    continue
                row = self.row_of_id(escape_name(Path(os.path.relpath(cand, root)).as_posix()))  # ids are escaped
                if row is not None and _same_file(item_path(self._items[row]), cand):
                    return row
        return None

    def rows_with_content(self, digest: str, size: int, skip: int | None = None) -> list[int]:
        """Rows whose indexed content has SHA-256 ``digest`` (``size`` bytes), except ``skip``."""
        sizes, sha64 = self._content_tables()
        rows = [int(r) for r in np.flatnonzero(sha64 == np.uint64(_prefix64(digest)))
                if r != skip and self._items[r]["sha256"] == digest]
        rows += [int(r) for r in np.flatnonzero(sizes == size) if r != skip and self._current_digest(int(r)) == digest]
        return sorted(rows)

    def _current_digest(self, row: int) -> str | None:
        """SHA-256 of item ``row``'s file, or None when it changed since indexing or cannot be read."""
        it = self._items[row]
        path = item_path(it)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_size != it.get("size") or ("mtime_ns" in it and st.st_mtime_ns != it["mtime_ns"]):
            return None  # not the content that was indexed
        cached = self._digests.get(row)
        if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2]
        try:
            digest = sha256_file(path)
        except OSError:
            return None
        self._digests[row] = (st.st_size, st.st_mtime_ns, digest)
        return digest

    def _needs_content(self, size: int, skip: int | None) -> bool:
        """Whether any item could have this content (same size, or a recorded digest) besides ``skip``."""
        sizes, sha64 = self._content_tables()
        return bool(sha64.any()) or any(int(r) != skip for r in np.flatnonzero(sizes == size))

    # ---------------------------------------------------------------------------------------- the entry
    def find(self, image: str | Path | bytes, paths: bool = True) -> IndexedReference | None:
        """The indexed item(s) ``image`` is: an item id, a file path (``paths=True``) or encoded bytes.

        ``paths=False`` never touches the file system for a string (the server's client-sent item ids).
        """
        row, how, data, file = None, "content", None, None
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
        else:
            key = os.fspath(image)
            row = self.row_of_id(key)
            if row is not None:
                how, file = "id", item_path(self._items[row])
            elif paths:
                file = os.path.expanduser(key)
                row = self.row_of_path(file)
                how = "path" if row is not None else "content"
            if row is None and (file is None or not os.path.isfile(file)):
                return None
        try:
            size = len(data) if data is not None else os.stat(file).st_size
            copies: list[int] = []
            if self._needs_content(size, row):
                digest = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(file)
                copies = self.rows_with_content(digest, size, skip=row)
        except OSError as e:  # the reference itself cannot be read: its loader reports that
            logger.debug("reference content not compared: %s", e)
            copies = []
        rows = ([row] if row is not None else []) + copies
        if not rows:
            return None
        return IndexedReference(tuple(rows), tuple(str(self._items[r]["id"]) for r in rows), how)
