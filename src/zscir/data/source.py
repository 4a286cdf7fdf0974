"""What every pair source implements: a partitioned, optionally shuffled stream of raw items.

A source yields `RawPair` items (the image still encoded: bytes, a path, or a PIL image) and `Problem`s for
what it had to skip; decoding, resizing, shuffling and batching happen downstream (`zscir.data.loader`),
once for every source. ``partition`` is (index, count) over all DataLoader workers of all ranks, so the
same source code splits by rank under torchrun and by worker inside a rank.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from PIL import Image

from zscir.data.records import Problem

__all__ = ["Partition", "RawPair", "PairSource", "file_fingerprint"]


@dataclass(frozen=True)
class Partition:
    """This reader's share: items ``i`` with ``i % count == index`` (or whole shards, for tar sources)."""

    index: int = 0
    count: int = 1

    def takes(self, i: int) -> bool:
        return i % self.count == self.index


@dataclass
class RawPair:
    key: str
    image: bytes | str | Path | Image.Image
    captions: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)


class PairSource(ABC):
    """A pair dataset. ``size`` is the number of items when known without reading everything (else None)."""

    spec: str = ""
    size: int | None = None

    @abstractmethod
    def iter_raw(self, partition: Partition = Partition(), epoch: int = 0, seed: int = 0,
                 shuffle: bool = False) -> Iterator[RawPair | Problem]:
        """Yield this partition's items (shard order shuffled by (seed, epoch) when ``shuffle``)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the data may have changed (keys feature caches)."""

    def describe(self) -> str:
        return self.spec


def file_fingerprint(paths: list[str | Path], extra: str = "") -> str:
    """Hash of paths, sizes and modification times (cheap: never reads the files)."""
    h = hashlib.sha1(extra.encode())
    for p in paths:
        try:
            st = Path(p).stat()
            h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:16]
