"""One cell of a data table: captions, modification texts, image payloads, JSON — checked, never ``str()``-ed.

Every source (WebDataset, manifests, HF datasets, triplet adapters) reads its text and image cells through
these functions, so the rules are the same everywhere:

* a caption or modification text is a **string** (or, for captions, a list of strings / a JSON list of
  strings: the caption variants). ``None``, an empty string and a float NaN (pandas' "missing") are
  *missing*; anything else — a number, ``True``, a dict, a list holding non-strings — is a `BadCell`
  (code ``bad_caption`` / ``bad_modification``): the item is counted as a problem and skipped, never
  turned into training text such as ``"{'a': 1}"`` or ``"nan"``.
* a text longer than `MAX_TEXT_CHARS` characters is a `BadCell` (``caption_too_long``, ...). CLIP reads 77
  tokens (about 300 characters); a longer cell is scraped page text, and multi-megabyte cells made the
  caption-mining of ``make-triplets`` quadratic in their length.
* JSON read from a cell or a line (`parse_json`) that nests too deeply raises ``ValueError`` like any other
  bad JSON (CPython's decoder raises ``RecursionError``).
* an image cell may hold a path, bytes, or the ``{"bytes": ..., "path": ...}`` struct that HF ``datasets``
  (and parquet files exported from the hub) store images as (`image_payload`).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_TEXT_CHARS", "BadCell", "parse_json", "text_of", "caption_variants", "image_payload", "shorten"]

#: the longest caption / modification text accepted, in characters (longer cells are skipped as problems)
MAX_TEXT_CHARS = 1000


class BadCell(ValueError):
    """A cell that cannot be used; ``code`` is the `zscir.data.records.Problem` code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def parse_json(text: str | bytes) -> Any:
    """``json.loads``; nesting deeper than the interpreter can decode is a ``ValueError`` too."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def text_of(value: Any, what: str = "text") -> str | None:
    """A stripped text cell, None when missing/empty; `BadCell` for a non-string or an over-long text."""
    if _missing(value):
        return None
    if isinstance(value, (bytes, bytearray)):  # WebDataset .txt members
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        raise BadCell(f"bad_{what}", f"the {what} is {type(value).__name__}, not text")
    if len(value) > MAX_TEXT_CHARS and len(value.strip()) > MAX_TEXT_CHARS:
        raise BadCell(f"{what}_too_long", f"the {what} has {len(value.strip())} characters; at most "
                                          f"{MAX_TEXT_CHARS} are accepted")
    return value.strip() or None


def caption_variants(value: Any, what: str = "caption") -> tuple[str, ...]:
    """Caption variants of a cell: a list of strings, a JSON list of strings in a string, or one string.

    Empty tuple when missing; `BadCell` when the cell (or a list item) is not text or is too long.
    """
    if isinstance(value, (list, tuple)):
        items = value
    else:
        text = text_of(value, what)
        if text is None:
            return ()
        if not (text.startswith("[") and text.endswith("]")):
            return (text,)
        try:
            items = parse_json(text)
        except ValueError:
            return (text,)  # a caption that merely looks like a list ("[sic] ...]")
        if not isinstance(items, list):
            return (text,)
    out = []
    for v in items:
        if _missing(v):
            continue
        if not isinstance(v, str):
            raise BadCell(f"bad_{what}", f"a {what} variant is {type(v).__name__}, not text")
        t = text_of(v, what)
        if t:
            out.append(t)
    return tuple(out)


def image_payload(value: Any) -> Any:
    """What the hardened image loader takes from an image cell: bytes, a path, or a PIL image.

    HF ``datasets`` (and parquet exported from the hub) store an image as ``{"bytes": ..., "path": ...}``:
    the bytes win (the path is then only the original file name); a struct without bytes gives its path.
    """
    if isinstance(value, dict):
        data = value.get("bytes")
        return data if data else value.get("path")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def shorten(text: Any, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for printing (``... (N characters)`` says how long it was)."""
    s = text if isinstance(text, str) else repr(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... ({len(s)} characters)"
