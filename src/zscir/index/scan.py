"""Listing the images of a folder tree: iterative, loop-safe, and total over every name a file system allows.

Why it is written by hand and not with ``os.walk``
--------------------------------------------------
* ``os.walk`` recurses once per directory level, so a deep tree (1,000 levels) raised ``RecursionError``;
  this walk keeps an explicit stack.
* Directory symlinks are not followed, and every directory is entered at most once (by device and inode),
  so neither a symlink loop nor a bind-mount loop can make it run forever.
* Names that are not valid UTF-8, or that hold newlines or terminal escapes, become escaped item ids
  (:func:`zscir.index.names.escape_name`) instead of aborting the run or garbling its output.
* Files whose extension says "image" but whose format zscir cannot decode (SVG, HEIC, ...) are reported as
  skipped (``unsupported_format``) instead of vanishing silently.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from zscir.index.names import escape_name, storable_path

__all__ = ["FileEntry", "IMAGE_EXTENSIONS", "UNSUPPORTED_EXTENSIONS", "scan_images", "check_image_folder"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: image formats people keep in photo folders that zscir does not decode: reported, not silently ignored
UNSUPPORTED_EXTENSIONS = {".svg": "SVG", ".svgz": "SVG", ".heic": "HEIC", ".heif": "HEIF", ".avif": "AVIF",
                          ".jxl": "JPEG XL", ".psd": "Photoshop", ".ico": "ICO"}


@dataclass(frozen=True)
class FileEntry:
    id: str  # path relative to the root, POSIX separators, escaped (names.escape_name)
    path: str  # absolute path as the OS takes it (may hold surrogate-escaped bytes)
    size: int
    mtime_ns: int

    def path_record(self) -> dict[str, Any]:
        """``{"path": ...}`` (plus ``path_escaped``) for the item's JSON record."""
        return storable_path(self.path)


def _skip(rel: str, path: str, code: str, reason: str) -> dict[str, Any]:
    return {"id": escape_name(rel), **storable_path(path), "code": code, "reason": reason}


def check_image_folder(folder: str | Path) -> None:
    """Raise `NotADirectoryError` unless ``folder`` is an existing folder (checked before any model load)."""
    p = Path(folder)
    if not p.exists():
        raise NotADirectoryError(f"{folder}: no such folder (expected a folder of images)")
    if not p.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder (expected a folder of images)")


def scan_images(folder: str | Path, exclude: Sequence[str | Path] = ()) -> tuple[list[FileEntry], list[dict]]:
    """Files with an image extension under ``folder`` (recursive, sorted by id) and the ones that are skipped.

    Skipped: files that cannot be stat-ed (dangling links, link loops: ``unreadable``), directories that
    cannot be listed, and files of an image format zscir cannot decode (``unsupported_format``).
    Directory symlinks are not followed; file symlinks are. ``exclude`` folders (e.g. the index itself)
    are not entered.
    """
    root = Path(folder).resolve()
    check_image_folder(folder)
    skip: set[tuple[int, int]] = set()
    for p in exclude:
        try:
            st = os.stat(p)
            skip.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    st = root.stat()
    seen = {(st.st_dev, st.st_ino)}
    found: list[FileEntry] = []
    bad: list[dict] = []
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]  # (absolute dir, its path relative to the root)
    while stack:
        d, rel_d = stack.pop()
        try:
            with os.scandir(d) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError as e:
            bad.append(_skip(rel_d or ".", d, "unreadable", f"cannot list directory ({e.strerror})"))
            continue
        subdirs = []
        for ent in listing:
            rel = f"{rel_d}/{ent.name}" if rel_d else ent.name
            try:
                is_dir = ent.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    dst = ent.stat(follow_symlinks=False)
                except OSError as e:
                    bad.append(_skip(rel, ent.path, "unreadable", f"cannot stat directory ({e.strerror})"))
                    continue
                key = (dst.st_dev, dst.st_ino)
                if key not in skip and key not in seen:
                    seen.add(key)
                    subdirs.append((ent.path, rel))
                continue
            suffix = os.path.splitext(ent.name)[1].lower()
            if suffix in UNSUPPORTED_EXTENSIONS:
                bad.append(_skip(rel, ent.path, "unsupported_format",
                                 f"unsupported format ({UNSUPPORTED_EXTENSIONS[suffix]}); convert it to PNG or JPEG "
                                 f"to index it"))
                continue
            if suffix not in IMAGE_EXTENSIONS:
                continue
            try:
                fst = os.stat(ent.path)  # follows file symlinks; loops and dangling links raise
            except OSError as e:
                bad.append(_skip(rel, ent.path, "unreadable", f"cannot stat ({e.strerror})"))
                continue
            if stat.S_ISDIR(fst.st_mode):
                continue  # a symlink to a directory named like an image: not followed, like other dir links
            found.append(FileEntry(escape_name(rel), ent.path, int(fst.st_size), int(fst.st_mtime_ns)))
        stack.extend(reversed(subdirs))
    found.sort(key=lambda f: f.id)
    return found, bad
