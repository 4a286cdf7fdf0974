"""Crash-safe file writes.

Why: an index folder is written once and then memory-mapped or served for a
long time.  A process killed half-way through ``np.save`` would otherwise
leave a truncated ``embeddings.npy`` that loads "fine" until a read hits the
missing tail.  Every writer here goes to a temporary file *in the same
directory* (so the final rename never crosses file systems), flushes and
``fsync``-s it, then ``os.replace``-s it over the target, which POSIX and
Windows both perform atomically: readers see either the old file or the new
one, never a mix.  The directory is fsync-ed afterwards (best effort) so the
rename itself survives a power loss.  On any error the temporary file is
removed, so no ``*.tmp`` litter is left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Union

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "fsync_dir"]

TMP_SUFFIX = ".tmp"


def fsync_dir(directory: PathLike) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", *, fsync: bool = True,
                encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; publish it on success.

    Use as ``with atomic_open(p, "wb") as f: np.save(f, arr)``.  When the
    ``with`` block exits normally the data is flushed, fsync-ed and renamed
    over ``path``; if it raises, ``path`` is untouched and the temporary file
    is deleted.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open supports write modes 'w'/'wt'/'wb' only, got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TMP_SUFFIX)
    try:
        if "b" in mode:
            f: IO[Any] = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync:
        fsync_dir(target.parent)
    logger.debug("atomically wrote %s", target)


def atomic_write_bytes(path: PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_open(path, "wb", fsync=fsync) as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> None:
    """Atomically replace ``path`` with ``text``."""
    atomic_write_bytes(path, text.encode(encoding), fsync=fsync)


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False,
                      fsync: bool = True) -> None:
    """Atomically write ``obj`` as UTF-8 JSON (trailing newline).

    Serialisation happens before the temporary file is created, so an
    unserialisable object raises ``TypeError`` without touching the disk.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    atomic_write_text(path, text, fsync=fsync)
