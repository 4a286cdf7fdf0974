"""Index source ``table``: a parquet or CSV/TSV file of image paths or URLs, one row per picture.

Spec: ``table.parquet``, ``table.csv``, ``table.tsv`` — a local path, a ``file://`` URL, or (with
``allow_remote``) any fsspec URL (``s3://bucket/t.parquet``); ``table:LOCATION`` names a table whose name does
not end so (``table:https://host/t.csv?sig=...``). A table spec is never a command: ``pipe:`` is refused.

Columns: the image path/URL column is ``image_column`` or the first of `PATH_COLUMNS` present (matched
case-insensitively); the caption column is ``caption_column`` or the first of
`zscir.data.tables.TEXT_COLUMNS` present (none is fine); a ``url`` column next to a path column fills the
``url`` metadata. A column that is not there is a `SourceError` naming the columns found.

Partitions: contiguous row ranges, ``rows * i // n`` up to ``rows * (i + 1) // n``, so a partition is fixed by
the row count. Parquet: the row count is in the footer, and a partition reads only the row groups that
overlap its range, in record batches of `BATCH_ROWS` rows and only the needed columns, so memory per
partition is bounded whatever the table's size. CSV: rows are counted once per process (a streaming pass
that also checks the whole file: UTF-8, no row over `MAX_ROW_CHARS` characters) and each partition streams
to its range; for 100M rows prefer parquet.

Rows: the record id is the path/URL cell as given (escaped like file names); a relative path resolves
against the table's folder. Each row's picture is read under `zscir.index.source_rules` (local files by the
image loader's regular-file and byte-cap checks; URLs through fsspec only with ``allow_remote`` and only for
`ROW_URL_SCHEMES`; a ``pipe:`` cell is data and never run). An empty, non-text, over-long, repeated,
refused or unreadable cell is an error record (``<row N>`` or the path as id, with a reason), not a crash.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import posixpath
from typing import Any, Iterator
from urllib.parse import urlparse

from zscir.data.cells import BadCell, text_of
from zscir.data.files import open_regular
from zscir.data.imageio import ImageRejected
from zscir.data.records import DataError
from zscir.data.tables import TEXT_COLUMNS, pick_column, unsafe_pyarrow_message
from zscir.index.names import escape_name
from zscir.index.source_rules import (DEFAULT_MAX_BYTES, MAX_DEFAULT_PARTITIONS, ROW_URL_SCHEMES, check_partition,
                                      check_protocol, error_record, local_path, open_url, read_local_bytes,
                                      read_url_bytes, refuse_options, value_scheme)
from zscir.index.sources import SourceError, SourceRecord, register_source

__all__ = ["TableIndexSource", "is_table_spec", "PATH_COLUMNS", "MAX_ROW_CHARS", "MAX_PATH_CHARS",
           "ROWS_PER_PARTITION", "BATCH_ROWS"]

logger = logging.getLogger(__name__)

#: image path/URL columns recognised without ``image_column`` (clip-retrieval, img2dataset, open_clip, HF)
PATH_COLUMNS = ("image_path", "url", "filepath", "file_name", "path", "filename")
#: a CSV row longer than this (all its lines) stops the read with a `SourceError`: not a table of paths
MAX_ROW_CHARS = 1 << 20
#: a path/URL cell longer than this is an error record
MAX_PATH_CHARS = 4096
#: rows per partition that `default_partitions` aims at
ROWS_PER_PARTITION = 100_000
#: parquet rows decoded at a time
BATCH_ROWS = 4096
_FORMATS = {".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
_OPTIONS = ("image_column", "caption_column", "allow_remote", "max_bytes", "allow_pipe")


def _suffix(location: str) -> str:
    path = urlparse(location).path if value_scheme(location) else location
    return os.path.splitext(path)[1].lower()



def is_table_spec(spec: str) -> bool:
    """``table:...`` or a name ending in ``.parquet`` / ``.csv`` / ``.tsv``."""
    s = spec.strip()
    return s[:6].lower() == "table:" or _suffix(s) in _FORMATS


class _Lines:
    """The lines of a text stream for `csv.reader`, with a cap on the characters of one row."""

    def __init__(self, text: io.TextIOBase, where: str):
        self.text, self.where, self.line, self.row_chars = text, where, 0, 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_ROW_CHARS + 1)
        if not line:
            raise StopIteration
        self.line += 1
        self.row_chars += len(line)
        if self.row_chars > MAX_ROW_CHARS:
            raise SourceError(f"{self.where}: line {self.line}: a row of more than {MAX_ROW_CHARS:,} characters; "
                              "not a table of image paths")
        return line


class TableIndexSource:
    """The rows of a parquet/CSV table of image paths or URLs, partitioned by row ranges."""

    kind = "table"

    def __init__(self, spec: str, *, image_column: str | None = None, caption_column: str | None = None,
                 allow_remote: bool = False, max_bytes: int = DEFAULT_MAX_BYTES, allow_pipe: bool = False):
        # allow_pipe is accepted (the CLI passes it to every kind) and changes nothing: a table runs no command
        self.spec = spec
        location = spec.strip()
        location = location[6:] if location[:6].lower() == "table:" else location
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise SourceError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        scheme = value_scheme(location)
        if scheme == "pipe":
            raise SourceError(f"{spec}: a table is a file, never a command ('pipe:' is not run)")
        self.remote = scheme not in ("", "file")
        if self.remote:
            if not allow_remote:
                raise SourceError(f"{spec}: a URL; zscir fetches URLs only when you allow it with --allow-remote "
                                  "(allow_remote=True), see docs/DATA.md")
            check_protocol(location)
            self.location = location
            self.base = location.split("?", 1)[0].rsplit("/", 1)[0]
        else:
            self.location = local_path(location)
            self.base = os.path.dirname(os.path.abspath(self.location))
        self.format = _FORMATS.get(_suffix(self.location))
        if self.format is None:
            raise SourceError(f"{spec}: not a table zscir reads (expected .parquet, .csv or .tsv)")
        self.allow_remote = bool(allow_remote)
        self.max_bytes = max_bytes
        self._rows: int | None = None
        header = self._header()
        try:
            self.image_column = pick_column(header, image_column, PATH_COLUMNS, "image path", spec, "--image-column")
            if caption_column:
                self.caption_column: str | None = pick_column(header, caption_column, (), "caption", spec,
                                                              "--caption-column")
            else:
                lower = {c.lower(): c for c in header}
                self.caption_column = next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
        except DataError as e:
            raise SourceError(str(e)) from None
        url = {c.lower(): c for c in header}.get("url")
        self.url_column = url if url and url != self.image_column else None
        self.header = header

    # -- the file ----------------------------------------------------------------------------------------

    def _open(self):
        """A fresh binary file object of the table (a local table: regular files only)."""
        if self.remote:
            try:
                return open_url(self.location)
            except Exception as e:  # noqa: BLE001 - fsspec drivers raise many types
                raise SourceError(f"{self.spec}: cannot open ({type(e).__name__}: {str(e)[:200]})") from None
        try:
            return open_regular(self.location, "table")
        except DataError as e:
            raise SourceError(str(e)) from None

    def _parquet(self, f):
        try:
            import pyarrow
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            from zscir.extras import install_hint

            raise SourceError(f"{self.spec}: parquet tables need pyarrow: {install_hint('data')}") from None
        unsafe = unsafe_pyarrow_message(pyarrow.__version__)
        if unsafe:
            raise SourceError(f"{self.spec}: {unsafe}")
        try:
            return pq.ParquetFile(f)
        except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
            raise SourceError(f"{self.spec}: not a readable parquet file ({str(e).splitlines()[0][:200]})") from None

    def _csv_rows(self) -> Iterator[list[str]]:
        """Every CSV row, header first, streamed; bad text is a `SourceError` naming the table."""
        import csv

        with self._open() as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            lines = _Lines(text, self.spec)
            try:
                first = next(lines, None)
                if first is None:
                    return
                delimiter = "\t" if self.format == "tsv" or first.count("\t") > first.count(",") else ","
                for row in csv.reader(itertools.chain([first], lines), delimiter=delimiter):
                    lines.row_chars = 0
                    yield row
            except UnicodeDecodeError as e:
                # (no line number: text is decoded a block at a time, ahead of the rows)
                raise SourceError(f"{self.spec}: not UTF-8 text ({e.reason}); save the table as UTF-8") from None
            except csv.Error as e:
                raise SourceError(f"{self.spec}: line {lines.line}: not a readable CSV ({e})") from None

    def _header(self) -> list[str]:
        if self.format == "parquet":
            with self._open() as f:
                pf = self._parquet(f)
                self._rows = pf.metadata.num_rows
                return list(pf.schema_arrow.names)
        with contextlib.closing(self._csv_rows()) as rows:
            header = next(rows, None)
        if not header:
            raise SourceError(f"{self.spec}: an empty table (no header row)")
        return header

    # -- IndexSource -------------------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Data rows of the table (a CSV is counted on first use: one streaming pass)."""
        if self._rows is None:
            count = -1  # the header
            for _ in self._csv_rows():
                count += 1
            self._rows = max(count, 0)
        return self._rows

    def describe(self) -> dict[str, Any]:
        out = {"kind": self.kind, "spec": self.spec, "format": self.format, "image_column": self.image_column,
               "caption_column": self.caption_column}
        if self._rows is not None:
            out["rows"] = self._rows
        return out

    def default_partitions(self) -> int:
        return max(1, min(-(-self.rows // ROWS_PER_PARTITION), MAX_DEFAULT_PARTITIONS))

    def partition_rows(self, i: int, n: int) -> range:
        """The data rows (0-based) of partition ``i`` of ``n``."""
        check_partition(i, n)
        total = self.rows
        return range(total * i // n, total * (i + 1) // n)

    def iter_partition(self, i: int, n: int) -> Iterator[SourceRecord]:
        rows = self.partition_rows(i, n)
        seen: dict[str, int] = {}  # id -> row number where it was first read
        for k, cells in self._cells(rows.start, rows.stop):
            rec = self._record(k + 1, *cells)
            first = seen.get(rec.id) if not rec.id.startswith("<row ") else None
            if first is not None:
                yield error_record(f"<row {k + 1}>", "duplicate_path", f"{rec.id!r} again (first in row {first})",
                                   image_path=rec.meta.get("image_path"))
                continue
            seen.setdefault(rec.id, k + 1)
            yield rec

    # -- rows --------------------------------------------------------------------------------------------

    def _cells(self, start: int, stop: int) -> Iterator[tuple[int, tuple[Any, Any, Any]]]:
        """(row index, (path, caption, url)) for the rows ``start <= k < stop``."""
        if start >= stop:
            return
        cols = [self.image_column, self.caption_column, self.url_column]
        if self.format != "parquet":
            index = [self.header.index(c) if c else None for c in cols]
            with contextlib.closing(self._csv_rows()) as rows:  # closes the file when the range ends early
                for k, row in enumerate(itertools.islice(rows, 1, stop + 1)):
                    if k >= start:
                        yield k, tuple(row[x] if x is not None and x < len(row) else None for x in index)
            return
        wanted = list(dict.fromkeys(c for c in cols if c))
        with self._open() as f:
            pf = self._parquet(f)
            offset = 0
            for g in range(pf.metadata.num_row_groups):
                size = pf.metadata.row_group(g).num_rows
                if offset + size <= start or offset >= stop:
                    offset += size
                    continue
                pos = offset
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[g], columns=wanted):
                    lo, hi = max(start - pos, 0), min(stop - pos, batch.num_rows)
                    if lo < hi:
                        part = batch.slice(lo, hi - lo)
                        values = [part.column(wanted.index(c)).to_pylist() if c else [None] * part.num_rows
                                  for c in cols]
                        for x in range(part.num_rows):
                            yield pos + lo + x, (values[0][x], values[1][x], values[2][x])
                    pos += batch.num_rows
                    if pos >= stop:
                        return
                offset += size

    def _record(self, row: int, value: Any, caption: Any, url: Any) -> SourceRecord:
        meta: dict[str, Any] = {}
        try:
            text = text_of(caption, "caption")
        except BadCell:
            text = None
        if text:
            meta["caption"] = text
        if isinstance(url, str) and url:
            meta["url"] = url
        where = f"<row {row}>"
        if value is None or (isinstance(value, str) and not value.strip()):
            return error_record(where, "no_path", f"empty {self.image_column!r} cell", **meta)
        if not isinstance(value, str):
            return error_record(where, "bad_path", f"the {self.image_column!r} cell is {type(value).__name__}, "
                                "not text", **meta)
        if len(value) > MAX_PATH_CHARS:
            return error_record(where, "bad_path", f"a path of {len(value):,} characters (at most "
                                f"{MAX_PATH_CHARS:,})", **meta)
        rid = escape_name(value)
        meta["image_path"] = value
        scheme = value_scheme(value)
        try:
            if scheme == "pipe":
                return error_record(rid, "pipe_refused", "a 'pipe:' command in a table row is data and is never "
                                    "run", **meta)
            if scheme and scheme != "file":
                meta.setdefault("url", value)
                if scheme not in ROW_URL_SCHEMES:
                    return error_record(rid, "unsupported_url", f"{scheme}:// is not read from table rows (only "
                                        f"{', '.join(sorted(ROW_URL_SCHEMES))})", **meta)
                if not self.allow_remote:
                    return error_record(rid, "remote_refused", "a URL; fetched only with --allow-remote "
                                        "(allow_remote=True)", **meta)
                data = read_url_bytes(value, self.max_bytes)
            else:
                path = local_path(value)
                if self.remote and not os.path.isabs(path):  # relative to a remote table: a URL beside it
                    data = read_url_bytes(posixpath.join(self.base, path), self.max_bytes)
                else:
                    data = read_local_bytes(os.path.join(self.base, path), self.max_bytes)
        except ImageRejected as e:
            return error_record(rid, e.code, str(e), **meta)
        return SourceRecord(id=rid, data=data, meta=meta)


def _open_source(spec: str, **options: Any) -> TableIndexSource:
    return TableIndexSource(spec, **refuse_options("table", options, _OPTIONS))


register_source("table", is_table_spec, _open_source)
