"""Pairs from a manifest table: one row per image, a path column and a caption column.

Recognised without options: open_clip / Pic2Word CSVs (``filepath`` + ``title``, tab-separated even when
named ``.csv``) and HF ImageFolder folders (``metadata.jsonl`` with ``file_name`` + ``text``, paths
relative to the folder). Relative paths resolve against ``image_root`` (default: the manifest's folder).
An image cell may also hold the image itself: bytes, or the ``{"bytes", "path"}`` struct of a parquet
exported from an HF image dataset. A caption cell may hold a JSON list of captions (variants): the first
is the caption. Cells are read by `zscir.data.cells` (non-text and over-long captions are problems).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from zscir.data.cells import BadCell, caption_variants, image_payload
from zscir.data.files import expand_user
from zscir.data.records import DataError, Problem
from zscir.data.source import PairSource, Partition, RawPair, file_fingerprint
from zscir.data.tables import IMAGE_COLUMNS, TEXT_COLUMNS, iter_rows, pick_column, read_header

__all__ = ["ManifestSource", "manifest_path"]


def manifest_path(location: str | Path) -> Path:
    """The table file of a manifest spec (a folder means its ``metadata.jsonl`` / ``metadata.csv``)."""
    p = expand_user(location)
    if p.is_dir():
        for name in ("metadata.jsonl", "metadata.csv", "metadata.parquet"):
            if (p / name).exists():
                return p / name
        raise DataError(f"{p}: no metadata.jsonl / metadata.csv in this folder")
    if not p.exists():
        raise DataError(f"{p}: no such manifest")
    return p


class ManifestSource(PairSource):
    """Pairs from a CSV/TSV/JSONL/parquet manifest (see the module docstring)."""

    def __init__(self, location: str, spec: str = "", image_root: str | Path | None = None,
                 image_column: str | None = None, text_column: str | None = None):
        self.path = manifest_path(location)
        self.spec = spec or str(location)
        self.image_root = expand_user(image_root) if image_root else self.path.parent
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
        p = expand_user(name)
        return p if p.is_absolute() else self.image_root / p

    def _image(self, cell, where: str) -> tuple[str, object] | Problem:
        """(key, payload) of an image cell: a path (resolved against the image root), or the bytes of an
        HF-style ``{bytes, path}`` struct or a bytes cell (the usual parquet export of an image dataset)."""
        payload = image_payload(cell)
        if payload is None or payload in ("", b"") or (isinstance(payload, float) and payload != payload):
            return Problem("no_image", where, f"empty {self.image_column!r}")
        if isinstance(payload, bytes):
            name = cell.get("path") if isinstance(cell, dict) else None
            return (f"{where}:{name}" if isinstance(name, str) and name else where), payload  # rows may share a name
        if isinstance(payload, str):
            return payload, self.resolve(payload)
        return Problem("bad_image_cell", where, f"{self.image_column!r} holds {type(payload).__name__}, not a "
                                                "path or image bytes")

    def iter_raw(self, partition: Partition = Partition(), epoch: int = 0, seed: int = 0,
                 shuffle: bool = False) -> Iterator[RawPair | Problem]:
        for i, row in enumerate(iter_rows(self.path)):
            if not partition.takes(i):
                continue
            where = f"{self.path.name}:{i + 1}"
            image = self._image(row.get(self.image_column), where)
            if isinstance(image, Problem):
                yield image
                continue
            try:
                caps = caption_variants(row.get(self.text_column))
            except BadCell as e:
                yield Problem(e.code, where, str(e))
                continue
            if not caps:
                yield Problem("no_caption", where, f"empty {self.text_column!r}")
                continue
            yield RawPair(image[0], image[1], caps, {"row": i})
