"""Pairs from a manifest table: one row per image, a path column and a caption column.

Recognised without options: open_clip / Pic2Word CSVs (``filepath`` + ``title``, tab-separated even when
named ``.csv``) and HF ImageFolder folders (``metadata.jsonl`` with ``file_name`` + ``text``, paths
relative to the folder). Relative paths resolve against ``image_root`` (default: the manifest's folder).
A caption cell may hold a JSON list of captions (variants): the first is the caption.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from zscir.data.records import DataError, Problem
from zscir.data.source import PairSource, Partition, RawPair, file_fingerprint
from zscir.data.tables import IMAGE_COLUMNS, TEXT_COLUMNS, iter_rows, pick_column, read_header

__all__ = ["ManifestSource", "manifest_path", "captions_of"]


def manifest_path(location: str | Path) -> Path:
    """The table file of a manifest spec (a folder means its ``metadata.jsonl`` / ``metadata.csv``)."""
    p = Path(location).expanduser()
    if p.is_dir():
        for name in ("metadata.jsonl", "metadata.csv", "metadata.parquet"):
            if (p / name).exists():
                return p / name
        raise DataError(f"{p}: no metadata.jsonl / metadata.csv in this folder")
    if not p.exists():
        raise DataError(f"{p}: no such manifest")
    return p


def captions_of(value) -> tuple[str, ...]:
    """Caption variants of a cell: a list, a JSON list in a string, or one string."""
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            items = json.loads(text)
            if isinstance(items, list):
                return tuple(str(v).strip() for v in items if str(v).strip())
        except ValueError:
            pass
    return (text,) if text else ()


class ManifestSource(PairSource):
    """Pairs from a CSV/TSV/JSONL/parquet manifest (see the module docstring)."""

    def __init__(self, location: str, spec: str = "", image_root: str | Path | None = None,
                 image_column: str | None = None, text_column: str | None = None):
        self.path = manifest_path(location)
        self.spec = spec or str(location)
        self.image_root = Path(image_root).expanduser() if image_root else self.path.parent
        header = read_header(self.path)
        where = str(self.path)
        self.image_column = pick_column(header, image_column, IMAGE_COLUMNS, "image path", where, "--image-column")
        self.text_column = pick_column(header, text_column, TEXT_COLUMNS, "caption", where, "--text-column")
        self.size = None

    def fingerprint(self) -> str:
        return file_fingerprint([self.path], f"manifest|{self.image_root}|{self.image_column}|{self.text_column}")

    def describe(self) -> str:
        return f"{self.path} (image: {self.image_column!r}, caption: {self.text_column!r}, root {self.image_root})"

    def resolve(self, name: str) -> Path:
        p = Path(name).expanduser()
        return p if p.is_absolute() else self.image_root / p

    def iter_raw(self, partition: Partition = Partition(), epoch: int = 0, seed: int = 0,
                 shuffle: bool = False) -> Iterator[RawPair | Problem]:
        for i, row in enumerate(iter_rows(self.path)):
            if not partition.takes(i):
                continue
            where = f"{self.path.name}:{i + 1}"
            name = row.get(self.image_column)
            caps = captions_of(row.get(self.text_column))
            if not name:
                yield Problem("no_image", where, f"empty {self.image_column!r}")
                continue
            if not caps:
                yield Problem("no_caption", where, f"empty {self.text_column!r}")
                continue
            yield RawPair(str(name), self.resolve(str(name)), caps, {"row": i})
