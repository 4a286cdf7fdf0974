"""A folder of pictures as a partitioned :class:`~zscir.index.sources.IndexSource` (kind ``folder``).

Why partition by :func:`zscir.index.shards.shard_of` of the relative path: it is the rule ``zscir index
--shard i/n`` already uses, so partition ``i`` of ``n`` and ``--shard i/n`` are the same set of pictures,
and a picture keeps its partition when others are added (each machine can list the folder on its own).

The folder is listed once per source object (:func:`zscir.index.scan.scan_images`: loop-safe, total over
hostile names); the files the scan refuses (unreadable, unsupported formats) are yielded as records with
an ``error``, so the engines list them as skipped exactly like today's folder indexer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator

from zscir.data.imageio import ImageLimits, ImageRejected, read_file_bytes
from zscir.index.names import storable_path
from zscir.index.scan import FileEntry, check_image_folder, scan_images
from zscir.index.shards import shard_of
from zscir.index.sources import SourceError, SourceRecord, register_source

logger = logging.getLogger(__name__)

__all__ = ["FolderSource", "ITEMS_PER_PARTITION"]

#: the default partition size when the user gives no ``--partitions`` (a few minutes of work on a GPU)
ITEMS_PER_PARTITION = 10_000


class FolderSource:
    """The images under ``root`` (recursive), partitioned by a hash of their relative path."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike, *, limits: ImageLimits | None = None,
                 exclude: tuple[str | os.PathLike, ...] = ()):
        try:
            check_image_folder(root)
        except NotADirectoryError as e:
            raise SourceError(str(e)) from None
        self.root = Path(root).resolve()
        self.limits = limits or ImageLimits()
        self.exclude = tuple(exclude)
        self._scan: tuple[list[FileEntry], list[dict]] | None = None

    def scan(self) -> tuple[list[FileEntry], list[dict]]:
        """The readable-looking files and the refused ones (listed once, then cached)."""
        if self._scan is None:
            self._scan = scan_images(self.root, exclude=self.exclude)
        return self._scan

    def describe(self) -> dict[str, Any]:
        entries, bad = self.scan()
        return {"kind": self.kind, "root": storable_path(self.root)["path"], "files": len(entries),
                "refused_by_scan": len(bad)}

    def default_partitions(self) -> int:
        entries, bad = self.scan()
        return max(1, -(-(len(entries) + len(bad)) // ITEMS_PER_PARTITION))

    def iter_partition(self, i: int, n: int) -> Iterator[SourceRecord]:
        """Files of partition ``i`` of ``n`` in id order; unreadable ones carry ``error`` (and ``meta["code"]``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"partitions: expected a positive number, got {n!r}")
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
            raise ValueError(f"partition {i!r} of {n}: expected 0 <= i < {n}")
        entries, bad = self.scan()
        for b in bad:
            if shard_of(str(b["id"]), n) == i:
                meta = {k: v for k, v in b.items() if k not in ("id", "reason")}
                yield SourceRecord(str(b["id"]), None, error=str(b["reason"]), meta=meta)
        for e in entries:
            if shard_of(e.id, n) != i:
                continue
            meta = {**e.path_record(), "size": e.size, "mtime_ns": e.mtime_ns}
            try:
                data = read_file_bytes(e.path, self.limits.max_bytes)
            except ImageRejected as err:
                yield SourceRecord(e.id, None, error=str(err), meta={**meta, "code": err.code})
                continue
            yield SourceRecord(e.id, data, meta=meta)


def _matches(spec: str) -> bool:
    return os.path.isdir(spec)


def open_folder_source(spec: str, **options: Any) -> FolderSource:
    """The `FolderSource` of a folder path (options: ``limits``, ``exclude``)."""
    return FolderSource(spec, **{k: v for k, v in options.items() if k in ("limits", "exclude")})


register_source("folder", _matches, open_folder_source)
