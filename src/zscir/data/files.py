"""Opening the files a user names as data (shards, manifests, split files): regular files only.

A FIFO, a device or a socket named ``x.tar`` or ``train.jsonl`` would block a plain ``open()`` forever
(or stream without end), so every data file is opened *non-blocking* and checked with ``fstat`` on the
opened descriptor before a byte is read — the same rule as the image loader's
(`zscir.data.imageio.read_file_bytes`, which opens through `open_regular_fd` too), for the files that are
not images. A path with ``~user`` of a
user this machine does not know stays as typed (``Path.expanduser`` raises ``RuntimeError`` for it), so it
is reported as a missing file under the name the user wrote instead of ending in a traceback.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

from zscir.data.records import DataError

__all__ = ["expand_user", "file_kind", "check_regular", "open_regular", "open_regular_fd", "NotARegularFile"]


def expand_user(path: str | os.PathLike) -> Path:
    """``Path(path).expanduser()``, except that an unknown ``~user`` (or no home folder) leaves it as typed."""
    p = Path(path)
    try:
        return p.expanduser()
    except RuntimeError:  # "Could not determine home directory"
        return p


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (for the error message)."""
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


class NotARegularFile(Exception):
    """`open_regular_fd` found a FIFO, a device, a socket or a folder (``kind`` says which, in words)."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


def open_regular_fd(path: str | os.PathLike) -> tuple[int, os.stat_result]:
    """(descriptor, its ``fstat``) of ``path`` opened read-only and non-blocking, if it is a regular file.

    The one way zscir opens a file it reads as data: a FIFO cannot block the open, and the type comes from
    the opened descriptor, so a file swapped between a check and the read cannot slip through. Raises
    `OSError` when it cannot be opened and `NotARegularFile` (descriptor closed) when it is no regular file;
    the caller owns the descriptor otherwise (it is still non-blocking).
    """
    fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(file_kind(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def check_regular(path: str | os.PathLike, what: str = "file") -> None:
    """`DataError` unless ``path`` is an existing regular file (symlinks followed); never opens it."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read this {what} ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: {file_kind(st.st_mode)}, not a regular file; a {what} must be a file")


def open_regular(path: str | os.PathLike, what: str = "file", *, text: bool = False,
                 encoding: str = "utf-8-sig", newline: str | None = None) -> IO:
    """Open a regular file for reading without ever blocking on a FIFO; `DataError` for anything else.

    ``text`` opens it as text (default encoding ``utf-8-sig``: a byte-order mark, as spreadsheet programs
    write it, is dropped). The type comes from ``fstat`` of the opened descriptor, so a file swapped for a
    FIFO between a check and the read cannot slip through.
    """
    try:
        fd, _ = open_regular_fd(path)
    except NotARegularFile as e:
        raise DataError(f"{path}: {e.kind}, not a regular file; a {what} must be a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read this {what} ({e.strerror or e})") from None
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        f = os.fdopen(fd, "r" if text else "rb", encoding=encoding if text else None,
                      newline=newline if text else None)
    except BaseException:
        os.close(fd)
        raise
    return f
