"""Row-streaming readers for manifest tables (CSV, TSV, JSONL, parquet) and column mapping.

Rows are read lazily (``csv`` module, line by line JSON, pyarrow record batches), so a manifest of
millions of rows is never held in memory. Column names are matched case-insensitively; when a needed
column is absent the error names the columns found and the ones expected, instead of the
``KeyError: 'filepath'`` users of Pic2Word's loader meet.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator, Sequence

from zscir.data.records import DataError

__all__ = ["read_header", "iter_rows", "pick_column", "IMAGE_COLUMNS", "TEXT_COLUMNS"]

#: recognised without options: open_clip/Pic2Word (``filepath`` + ``title``), HF ImageFolder
#: (``file_name`` + ``text``), and common variants
IMAGE_COLUMNS = ("filepath", "file_name", "image", "image_path", "path", "filename", "img")
TEXT_COLUMNS = ("title", "text", "caption", "captions", "txt", "sentence")

csv.field_size_limit(2**31 - 1)


def _delimiter(path: Path) -> str:
    """Tab for ``.tsv`` and for ``.csv`` files whose header has tabs (open_clip's default separator)."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    with open(path, newline="", encoding="utf-8") as f:
        head = f.readline()
    return "\t" if head.count("\t") > head.count(",") else ","


def _kind(path: Path) -> str:
    s = path.suffix.lower()
    if s in (".csv", ".tsv"):
        return "csv"
    if s in (".jsonl", ".json"):
        return "jsonl"
    if s == ".parquet":
        return "parquet"
    raise DataError(f"{path}: unknown manifest type {s!r} (expected .csv, .tsv, .jsonl or .parquet)")


def _parquet(path: Path):
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        from zscir.extras import install_hint

        raise DataError(f"{path}: parquet manifests need pyarrow: {install_hint('data')}") from None
    return pq.ParquetFile(path)


def read_header(path: Path) -> list[str]:
    """Column names of a manifest (for JSONL: the keys of the first row)."""
    kind = _kind(path)
    if kind == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f, delimiter=_delimiter(path)), [])
    if kind == "parquet":
        return list(_parquet(path).schema_arrow.names)
    for row in iter_rows(path):
        return list(row)
    return []


def iter_rows(path: Path) -> Iterator[dict]:
    """The rows of a manifest as dicts, streamed. A JSON line that does not parse raises `DataError`."""
    kind = _kind(path)
    if kind == "csv":
        with open(path, newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f, delimiter=_delimiter(path))
    elif kind == "parquet":
        for batch in _parquet(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    else:
        with open(path, encoding="utf-8") as f:
            first = f.read(1)
            f.seek(0)
            if first == "[":  # a JSON array (CIRR / FashionIQ / LaSCo annotation files)
                yield from json.load(f)
                return
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as e:
                        raise DataError(f"{path}:{n}: not a JSON line ({e})") from None


def pick_column(found: Sequence[str], wanted: str | None, defaults: Sequence[str], what: str,
                where: str, option: str) -> str:
    """The column to read ``what`` from: ``wanted`` if given, else the first recognised default."""
    lower = {c.lower(): c for c in found}
    if wanted:
        if wanted in found:
            return wanted
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise DataError(f"{where}: no column {wanted!r} for the {what}; columns found: {', '.join(found) or 'none'}")
    for d in defaults:
        if d in lower:
            return lower[d]
    raise DataError(f"{where}: no {what} column; columns found: {', '.join(found) or 'none'}; expected one of "
                    f"{', '.join(defaults)} (or name it with {option})")
