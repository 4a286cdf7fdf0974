"""Row-streaming readers for manifest tables (CSV, TSV, JSONL, parquet) and column mapping.

Rows are read lazily (``csv`` module, line by line JSON, pyarrow record batches), so a manifest of
millions of rows is never held in memory. Tables are opened as regular files only (a FIFO named
``train.jsonl`` is refused, not waited on); CSV and JSON may start with a UTF-8 byte-order mark; every
JSON row must be an object; text that is not UTF-8, JSON nested too deeply and non-object rows are a
`DataError` naming the file and line. Column names are matched case-insensitively; when a needed
column is absent the error names the columns found and the ones expected, instead of the
``KeyError: 'filepath'`` users of Pic2Word's loader meet.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Iterator, Sequence

from zscir.data.cells import parse_json
from zscir.data.files import check_regular, open_regular
from zscir.data.records import DataError

__all__ = ["read_header", "iter_rows", "pick_column", "IMAGE_COLUMNS", "TEXT_COLUMNS"]

#: recognised without options: open_clip/Pic2Word (``filepath`` + ``title``), HF ImageFolder
#: (``file_name`` + ``text``), and common variants
IMAGE_COLUMNS = ("filepath", "file_name", "image", "image_path", "path", "filename", "img")
TEXT_COLUMNS = ("title", "text", "caption", "captions", "txt", "sentence")

csv.field_size_limit(2**31 - 1)


def _open(path: Path):
    """The table as text: a regular file only (a FIFO is refused, not waited on), UTF-8 with or without
    the byte-order mark spreadsheet programs write."""
    return open_regular(path, "manifest", text=True, newline="")


def _not_utf8(path: Path, e: UnicodeDecodeError, where: str = "") -> DataError:
    return DataError(f"{path}{where}: not UTF-8 text ({e.reason}); save the manifest as UTF-8")


def _delimiter(path: Path) -> str:
    """Tab for ``.tsv`` and for ``.csv`` files whose header has tabs (open_clip's default separator)."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    try:
        with _open(path) as f:
            head = f.readline(1 << 20)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e, ":1") from None
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


#: the first pyarrow that does not unpickle ``PyExtensionType`` metadata from the files it reads
SAFE_PYARROW = (14, 0, 1)


def version_tuple(text: str) -> tuple[int, ...]:
    """``"14.0.1"`` -> ``(14, 0, 1)``; a development suffix is ignored (``"15.0.0.dev1"`` -> ``(15, 0, 0)``)."""
    parts = []
    for p in text.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, p))
        parts.append(int(digits or 0))
    return tuple(parts)


def unsafe_pyarrow_message(version: str) -> str | None:
    """Why this pyarrow may not read a user's parquet file, or None. CVE-2023-47248: pyarrow < 14.0.1
    unpickles extension-type metadata stored in the file, so opening a parquet file could run code."""
    if version_tuple(version) < SAFE_PYARROW:
        return (f"pyarrow {version} can run code stored in a parquet file; parquet files need "
                f"pyarrow >= {'.'.join(map(str, SAFE_PYARROW))}")
    return None


def _parquet(path: Path):
    try:
        import pyarrow
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        from zscir.extras import install_hint

        raise DataError(f"{path}: parquet manifests need pyarrow: {install_hint('data')}") from None
    unsafe = unsafe_pyarrow_message(pyarrow.__version__)
    if unsafe:
        raise DataError(f"{path}: {unsafe}")
    check_regular(path, "manifest")
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a readable parquet file ({str(e).splitlines()[0][:200]})") from None


def read_header(path: Path) -> list[str]:
    """Column names of a manifest (for JSONL: the keys of the first row)."""
    kind = _kind(path)
    if kind == "csv":
        delimiter = _delimiter(path)
        try:
            with _open(path) as f:
                return next(csv.reader(f, delimiter=delimiter), [])
        except UnicodeDecodeError as e:
            raise _not_utf8(path, e, ":1") from None
    if kind == "parquet":
        return list(_parquet(path).schema_arrow.names)
    for row in iter_rows(path):
        return list(row)
    return []


def _object(row, path: Path, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{path}{where}: a row must be a JSON object ({{\"column\": value, ...}}), "
                        f"not {type(row).__name__}")
    return row


def _json_rows(path: Path) -> Iterator[dict]:
    with _open(path) as f:
        first = ""
        while not first or first.isspace():  # the first non-blank character decides the layout
            first = f.read(1)
            if not first:
                return
        f.seek(0)
        if first == "[":  # a JSON array (CIRR / FashionIQ / LaSCo annotation files)
            try:
                items = parse_json(f.read())
            except ValueError as e:
                raise DataError(f"{path}: not a JSON array ({e})") from None
            if not isinstance(items, list):
                raise DataError(f"{path}: not a JSON array of row objects")
            for i, row in enumerate(items):
                yield _object(row, path, f" item {i + 1}")
            return
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = parse_json(line)
                except ValueError as e:
                    raise DataError(f"{path}:{n}: not a JSON line ({e})") from None
                yield _object(row, path, f":{n}")


def iter_rows(path: Path) -> Iterator[dict]:
    """The rows of a manifest as dicts, streamed. A JSON line that does not parse, a row that is not an
    object and text that is not UTF-8 raise `DataError` naming the file (and line)."""
    kind = _kind(path)
    if kind == "parquet":
        for batch in _parquet(path).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
        return
    n = 0
    try:
        if kind == "csv":
            delimiter = _delimiter(path)
            with _open(path) as f:
                for n, row in enumerate(csv.DictReader(f, delimiter=delimiter), 2):
                    yield row
        else:
            yield from _json_rows(path)
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e, f" (after row {n})" if n else "") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV ({e})") from None


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
