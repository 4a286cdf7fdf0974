"""The life cycle of an index folder: claim, lock, record, commit, collect. The one owner of writes and deletes.

Why one owner
-------------
An index folder is named by the user (``zscir index PHOTOS --out X``), so X may be anything: a new path, an
empty folder, an index written earlier, or a folder full of the user's own files. The indexer
(:mod:`zscir.index.build`), the shard merge (:mod:`zscir.index.merge`) and the ANN builder
(:mod:`zscir.index.ann`) all write into such folders and delete what they no longer need. Earlier each of
them cleaned up by *file-name pattern* (``segments/*``, ``embeddings.npy``, ``*-g<N>.*``, ``.*.tmp``), which
deleted a user's files whenever X was not an index. Everything that touches the folder therefore goes
through :class:`IndexFolder`, which enforces three rules:

* **Claim**: it writes only into a new folder, an empty one (a stray ``.lock`` is allowed) or one that carries
  a ``zscir-index`` manifest. Anything else is refused before a single byte is written.
* **Record, then write**: every file name is added to the manifest's ``owned`` list, and that manifest is
  committed, *before* the file is created (:meth:`IndexFolder.record`). A kill at any moment therefore leaves
  only recorded files (or atomic-write temp files ``.<recorded name>.<random>.tmp`` next to them).
* **Collect only what was recorded**: :meth:`IndexFolder.collect` deletes recorded files that the committed
  manifest no longer references, and their temp files, and nothing else. A file the user put into an index
  folder is never deleted, whatever its name.

A manifest written before the ``owned`` record existed counts the files it references as recorded (zscir
wrote them), so old indexes upgrade cleanly; orphans such older versions left behind are kept.

The folder lock (``.lock``, an advisory ``flock``) serialises writers: the indexer, ``merge`` and
``zscir index ann`` on the same folder never interleave commits. Readers need no lock: the manifest is
replaced by one atomic rename. A writer that ends without having committed a manifest (it failed before
writing anything) removes its ``.lock`` and the folders it created, so it leaves no trace that a later
command could mistake for an interrupted index.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from zscir.index.atomic import TMP_SUFFIX, atomic_write_json, fsync_dir
from zscir.index.store import FORMAT, MANIFEST_FILE, StoreError

logger = logging.getLogger(__name__)

__all__ = ["IndexFolder", "IndexLockedError", "LOCK_FILE", "SEGMENT_DIR", "index_lock", "live_files", "now",
           "open_index_folder", "read_manifest", "check_claimable", "check_creatable"]

LOCK_FILE = ".lock"
SEGMENT_DIR = "segments"
#: a temp file of `atomic_open`: ``.<target name>.<mkstemp random part>.tmp``
_TEMP = re.compile(r"^\.(.+)\.[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX) + "$")


class IndexLockedError(RuntimeError):
    """Another process is writing the same index folder."""


def now() -> str:
    """UTC time stamp (seconds) used in manifests."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The raw manifest, or None when the folder has none; a foreign/corrupt one raises `StoreError`."""
    mpath = Path(folder) / MANIFEST_FILE
    if not mpath.is_file():
        return None
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"{mpath}: unreadable manifest ({e}); remove the folder to rebuild") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{mpath}: not a {FORMAT} manifest; refusing to overwrite it")
    return m


def _inside(name: Any) -> bool:
    """A name zscir itself would create: a plain file name in the folder or in its ``segments/``.

    Why: the manifest is data. A doctored one (``"recorded": ["../../photo.jpg"]``, or an absolute
    ``embeddings_file``) must never make the collector delete outside the folder.
    """
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or os.path.isabs(name):
        return False
    return len(parts) == 1 or (len(parts) == 2 and parts[0] == SEGMENT_DIR)


def live_files(manifest: Mapping[str, Any] | None) -> set[str]:
    """Paths (relative to the folder) the manifest references: they must never be collected."""
    if not manifest:
        return set()
    live = {MANIFEST_FILE, manifest.get("embeddings_file", "embeddings.npy"), manifest.get("items_file", "items.jsonl")}
    live |= {g.get("file") for g in (manifest.get("galleries") or {}).values() if isinstance(g, Mapping)}
    live |= {a.get("file") for a in (manifest.get("ann") or {}).values() if isinstance(a, Mapping)}
    live |= {a.get("ivfdata") for a in (manifest.get("ann") or {}).values() if isinstance(a, Mapping)}
    live |= {f"{SEGMENT_DIR}/{s}" for s in (manifest.get("build") or {}).get("segments", [])}
    return {f for f in live if isinstance(f, str) and f}


def _left_by_a_claim(name: str) -> bool:
    """What a claim killed before its first manifest commit leaves: the lock, a temp file of the manifest."""
    m = _TEMP.match(name)
    return name == LOCK_FILE or (m is not None and m.group(1) == MANIFEST_FILE)


def check_claimable(folder: str | os.PathLike) -> None:
    """Raise `StoreError` unless zscir may write into ``folder``: new, empty (but a ``.lock``) or an index."""
    d = Path(folder)
    if not d.exists():
        if d.is_symlink():
            raise StoreError(f"{d}: a dangling symbolic link; give a new or empty folder for the index")
        check_creatable(d)
        return
    if not d.is_dir():
        raise StoreError(f"{d}: exists and is not a folder; give a new or empty folder for the index")
    if read_manifest(d) is not None:  # raises on a foreign manifest.json
        return
    try:
        names = sorted(n for n in os.listdir(d) if not _left_by_a_claim(n))
    except OSError as e:
        raise StoreError(f"{d}: cannot list the folder ({e.strerror})") from None
    if names:
        raise StoreError(f"{d}: the folder is not empty and holds no zscir index ({len(names)} entries, e.g. "
                         f"{names[0]!r}); zscir writes only into a new or empty folder or an existing index. "
                         f"Choose another --out")


def check_creatable(folder: str | os.PathLike) -> None:
    """Raise `StoreError` unless the new folder ``folder`` can be created: its nearest existing ancestor is a
    writable folder (checked before any work, so a typo does not cost a model load)."""
    d = Path(folder)
    parent = d.absolute().parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise StoreError(f"{d}: cannot create the index folder: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{d}: cannot create the index folder: {parent} is not writable")


def _make_folder(out: Path) -> list[Path]:
    """Create ``out`` (and missing parents); returns the folders created, outermost first."""
    missing = []
    p = out.absolute()
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"{out}: cannot create the index folder ({e.strerror})") from None
    return missing[::-1]


def _lock_file(out: Path) -> Any:
    """The open ``.lock`` of ``out``, exclusively locked; `IndexLockedError` when another writer holds it."""
    for _ in range(3):
        try:
            f = open(out / LOCK_FILE, "a+")
        except OSError as e:
            raise StoreError(f"{out}: cannot write into the index folder ({e.strerror})") from None
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory locking
            return f
        except OSError:
            f.close()
            raise IndexLockedError(f"{out} is being written by another `zscir index` process") from None
        try:  # a writer that wrote nothing removes its lock file: ours must still be the one at the path
            if os.fstat(f.fileno()).st_ino == os.stat(out / LOCK_FILE).st_ino:
                return f
        except OSError:
            pass
        f.close()
    raise IndexLockedError(f"{out} is being written by another `zscir index` process")


@contextlib.contextmanager
def index_lock(out_dir: str | os.PathLike) -> Iterator[None]:
    """Exclusive advisory lock on ``out_dir/.lock`` so two writers never interleave commits.

    Only call this on a folder that passed :func:`check_claimable` (it creates the folder and ``.lock``).
    When the holder ends and the folder has no manifest (nothing was committed: the run failed before
    writing), the ``.lock`` and the folders created here are removed again.
    """
    out = Path(out_dir)
    created = _make_folder(out)
    f = _lock_file(out)
    try:
        yield
    finally:
        try:
            if not (out / MANIFEST_FILE).exists():  # nothing written: leave nothing behind (still locked)
                with contextlib.suppress(OSError):
                    (out / LOCK_FILE).unlink()
                for d in reversed(created):
                    with contextlib.suppress(OSError):
                        d.rmdir()  # only when empty
        finally:
            f.close()


class IndexFolder:
    """An index folder held under its lock: the committed manifest, the record of zscir's files, the collector.

    Obtain one with :func:`open_index_folder`. ``manifest`` is the last committed manifest (None for a new
    folder). Writers call :meth:`record` with the names they are about to create, write them (atomically),
    :meth:`commit` the manifest that references them, then :meth:`collect`.

    On disk the manifest's ``recorded`` list holds the files zscir created that the manifest does *not*
    reference: files about to be written, and garbage not yet collected. Together with the referenced files
    (:func:`live_files`) they are everything zscir may ever delete in the folder.
    """

    def __init__(self, path: Path, manifest: dict[str, Any] | None):
        self.path = path
        self.manifest = manifest
        recorded = (manifest or {}).get("recorded")
        # a manifest older than the record: the files it references are the ones zscir is known to own
        owned = live_files(manifest) | (set(recorded) if isinstance(recorded, list) else set())
        self.owned: set[str] = {n for n in owned if _inside(n)}
        self._pending: set[str] = set()

    def commit(self, manifest: dict[str, Any], *, indent: int | None = 2) -> dict[str, Any]:
        """Atomically replace the manifest, keeping the record up to date; returns what was written.

        Recorded files that the new manifest no longer references stay recorded while they exist (garbage
        for :meth:`collect`) or are about to be written in this session.
        """
        live = {n for n in live_files(manifest) if _inside(n)}
        extra = {n for n in self.owned - live if n in self._pending or (self.path / n).exists()}
        self.owned = live | extra
        new = {**manifest, "recorded": sorted(extra)}
        atomic_write_json(self.path / MANIFEST_FILE, new, indent=indent)
        self.manifest = new
        return new

    def record(self, names: Iterable[str], manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write-ahead: record ``names`` (paths relative to the folder) as zscir's before creating them.

        Commits ``manifest`` (default: the committed one) unless it is None and every name is already
        recorded. A folder without a manifest yet gets a placeholder that
        :meth:`~zscir.index.store.EmbeddingStore.load` rejects as an unfinished index.
        """
        names = set(names)
        if not all(_inside(n) for n in names):
            raise ValueError(f"not a file name inside an index folder: {sorted(n for n in names if not _inside(n))}")
        self._pending |= names
        if manifest is None and names <= self.owned and self.manifest is not None:
            return self.manifest
        self.owned |= names
        base = manifest if manifest is not None else self.manifest
        if base is None:
            base = {"format": FORMAT, "format_version": 1, "count": 0, "dim": 1, "dtype": "float32",
                    "embeddings_file": "embeddings-g0.npy", "items_file": "items-g0.jsonl", "generation": 0, "build": {"segments": []},
                    "created": now()}
        return self.commit(base, indent=None)

    def finish_writes(self) -> None:
        """Nothing recorded ahead is still to be written: the next commit keeps only files that exist."""
        self._pending.clear()

    def collect(self) -> int:
        """Delete recorded files the committed manifest does not reference, and temp files of recorded names.

        Returns how many files were deleted. A file zscir did not record is never touched, whatever its name.
        """
        live = live_files(self.manifest)
        owned = self.owned | {MANIFEST_FILE}
        removed = 0
        seg_link = (self.path / SEGMENT_DIR).is_symlink()  # never delete through a link out of the folder
        for name in sorted(owned - live - self._pending):
            p = self.path / name
            if not _inside(name) or (seg_link and "/" in name):
                continue
            if p.is_file() and not p.is_symlink():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed += 1
        by_dir: dict[str, set[str]] = {}
        for name in owned:
            parent, _, base = name.rpartition("/")
            by_dir.setdefault(parent, set()).add(base)
        for parent, bases in by_dir.items():
            if parent and seg_link:
                continue
            d = self.path / parent if parent else self.path
            with contextlib.suppress(OSError):
                for p in d.iterdir():  # temp files of recorded names: `.<name>.<random>.tmp` (atomic_open)
                    m = _TEMP.match(p.name)
                    if m and m.group(1) in bases and p.is_file() and not p.is_symlink():
                        with contextlib.suppress(OSError):
                            p.unlink()
                            removed += 1
        seg_dir = self.path / SEGMENT_DIR
        if seg_dir.is_dir() and not any(n.startswith(SEGMENT_DIR + "/") for n in live):
            with contextlib.suppress(OSError):
                seg_dir.rmdir()  # only when empty: a file that is not zscir's keeps it
        if removed:
            logger.debug("collected %d files in %s", removed, self.path)
        fsync_dir(self.path)
        if self.manifest is not None and any(n not in self._pending and not (self.path / n).exists()
                                             for n in self.manifest.get("recorded", [])):
            self.commit(self.manifest)  # the record names only files that may still exist
        return removed


@contextlib.contextmanager
def open_index_folder(out_dir: str | os.PathLike, *, existing: bool = False) -> Iterator[IndexFolder]:
    """Claim (see :func:`check_claimable`) and lock ``out_dir``; yields its :class:`IndexFolder`.

    The claim is checked before anything is created and again under the lock (another process may have
    written the folder in between). ``existing=True``: the folder must already hold an index manifest
    (``zscir index ann``); nothing is created otherwise.
    """
    out = Path(out_dir)
    if existing and read_manifest(out) is None:
        raise StoreError(f"{out}: no manifest.json (not a zscir index folder, or its first run did not finish)")
    check_claimable(out)
    with index_lock(out):
        check_claimable(out)
        yield IndexFolder(out, read_manifest(out))
