"""Many queries in one call: read a query file (JSONL or CSV) and answer every row with one retriever.

Why: a search's cold start (importing torch, creating the model: 8–20 s) dwarfs the query itself (tens of
milliseconds), so scripting `zscir search` once per query pays it every time. ``zscir search IDX --queries
FILE`` loads the model once and writes one JSON line per query.

The file is data, read defensively: each row is an image (a file path or an indexed item id), a text, or
both. A bad row (not JSON, not an object, an unknown key, a value that is not a string, nothing to search
by, an image that cannot be read) becomes an error record with its line number and the other rows are
still answered. Only a file that cannot be read as a whole (unknown extension, a CSV without an
``image``/``text`` header, not UTF-8 CSV, no query at all) is refused, before the model is loaded
(`load_queries`).

* ``.jsonl`` / ``.ndjson``: one object per line, ``{"image": "beach.jpg", "text": "at night"}``; either
  key may be missing or null; blank lines are skipped.
* ``.csv``: a header row naming ``image`` and/or ``text`` columns (any order, any case), then one query per
  row; an empty cell is a missing side.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from zscir.data.imageio import ImageRejected
from zscir.index.query import MissingQueryInput

__all__ = ["QUERY_KEYS", "QueryFileError", "QueryRow", "RowError", "load_queries", "answer_queries"]

#: the fields of a query row
QUERY_KEYS = ("image", "text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_SUFFIXES = (".csv",)


class QueryFileError(ValueError):
    """The query file cannot be used at all (no row is answered)."""


@dataclass(frozen=True)
class QueryRow:
    """One query of the file: its line number (1-based), image (path or item id) and text, each maybe None."""

    line: int
    image: str | None
    text: str | None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "text": self.text}


@dataclass(frozen=True)
class RowError:
    """A row that is not a query, with why."""

    line: int
    message: str


# ------------------------------------------------------------------------------------------------ reading
def load_queries(path: str | Path) -> list[QueryRow | RowError]:
    """Every row of the query file ``path``, parsed; raises `QueryFileError` (or `OSError`) for the file."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in JSONL_SUFFIXES + CSV_SUFFIXES:
        raise QueryFileError(f"{p}: expected a .jsonl or .csv query file (one query per line), got {suffix or 'no'} "
                             f"extension")
    if p.is_dir():
        raise QueryFileError(f"{p}: is a folder; expected a .jsonl or .csv query file")
    data = p.read_bytes()  # OSError (missing, unreadable) names the file
    rows = list(_jsonl_rows(data) if suffix in JSONL_SUFFIXES else _csv_rows(p, data))
    if not rows:
        raise QueryFileError(f"{p}: no queries in the file")
    return rows


def _row(line: int, image: Any, text: Any) -> QueryRow | RowError:
    for key, value in (("image", image), ("text", text)):
        if value is not None and not isinstance(value, str):
            what = "a file path or an indexed item id" if key == "image" else "the text"
            return RowError(line, f"{key} must be a string ({what}), got {type(value).__name__}")
    image = image if image else None  # an empty image is no image
    if image is None and (text is None or not text.strip()):
        return RowError(line, "nothing to search by: give an image, a text, or both")
    if image is not None and "\0" in image:
        return RowError(line, "the image contains a NUL character")
    return QueryRow(line, image, text)


def _jsonl_rows(data: bytes) -> Iterator[QueryRow | RowError]:
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8-sig"))  # a leading BOM (Windows editors) is no error
        except UnicodeDecodeError:
            yield RowError(n, "not UTF-8 text")
            continue
        except (ValueError, RecursionError) as e:
            yield RowError(n, f"not JSON ({str(e)[:120] if isinstance(e, ValueError) else 'nested too deeply'})")
            continue
        if not isinstance(obj, dict):
            yield RowError(n, f'expected a JSON object like {{"image": "a.jpg", "text": "in red"}}, got '
                              f"{type(obj).__name__}")
            continue
        unknown = sorted(str(k) for k in obj if k not in QUERY_KEYS)
        if unknown:
            yield RowError(n, f"unknown key(s) {', '.join(repr(k[:40]) for k in unknown[:5])} "
                              f"(expected {' and '.join(QUERY_KEYS)})")
            continue
        yield _row(n, obj.get("image"), obj.get("text"))


def _csv_rows(path: Path, data: bytes) -> Iterator[QueryRow | RowError]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise QueryFileError(f"{path}: line {line} is not UTF-8 text (save the CSV as UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    last = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if reader.line_num == last:  # no progress: the reader cannot go on
                raise QueryFileError(f"{path}: line {last}: {e}") from None
            last = reader.line_num
            yield RowError(reader.line_num, f"not a CSV row ({e})")
            continue
        last = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip().lower() for c in cells]
            bad = [c for c in header if c not in QUERY_KEYS]
            if bad or len(set(header)) != len(header):
                raise QueryFileError(f"{path}: the first row must name the columns, `image` and/or `text` (each "
                                     f"once), e.g. `image,text`; got {','.join(cells)[:120]!r}")
            continue
        if len(cells) > len(header):
            yield RowError(reader.line_num, f"{len(cells)} values for {len(header)} column(s) ({','.join(header)}); "
                                            f"quote a value that contains a comma")
            continue
        values = dict(zip(header, cells))
        yield _row(reader.line_num, values.get("image") or None, values.get("text") or None)


# ---------------------------------------------------------------------------------------------- answering
def answer_queries(retriever: Any, rows: Iterable[QueryRow | RowError], k: int = 10,
                   method: str | None = None) -> Iterator[dict[str, Any]]:
    """One record per row: ``{"line", "query", "method", "mode", "note", "reference", "hits"}`` for an
    answered query (hits as `zscir search --json`: rank from 1, id, path, score), ``{"line", ["query"],
    "error"}`` for a row that could not be answered.

    The query rule is the single search's (:mod:`zscir.index.query`), and so is the reference exclusion.
    Errors that concern every row alike (the index or the method cannot answer: `StoreError`,
    `MethodUnavailable`) are raised, not repeated per row.
    """
    from zscir.index.retriever import MethodUnavailable, hit_records
    from zscir.index.store import StoreError

    for row in rows:
        if isinstance(row, RowError):
            yield {"line": row.line, "error": row.message}
            continue
        try:
            plan = retriever.plan(row.image is not None, row.text, method)
            img, ref = retriever.resolve_reference(row.image) if row.image is not None else (None, None)
            hits = retriever.search_image(img, row.text, k, method=method, exclude=ref.rows if ref else None)
        except (StoreError, MethodUnavailable):
            raise
        except (MissingQueryInput, ImageRejected, OSError, ValueError) as e:
            yield {"line": row.line, "query": row.to_json(), "error": str(e) or type(e).__name__}
            continue
        note = "; ".join(n for n in (plan.note, retriever.search_note(plan.method)) if n) or None
        yield {"line": row.line, "query": row.to_json(), "method": plan.method, "mode": plan.mode, "note": note,
               "reference": ref.to_json() if ref else None, "hits": hit_records(hits)}
