"""File names as item ids: one escaped, printable, JSON-safe form for any name a file system allows.

Why
---
On POSIX a file name is a byte string. Python hands names that are not valid UTF-8 over as ``str`` with
lone surrogates (``'caf\\udce9.jpg'``, PEP 383), which every UTF-8 encoder refuses: one such name used to
abort ``zscir index`` (``surrogates not allowed``). Names may also hold newlines, tabs or terminal escape
sequences, which garble (or forge) what the indexer prints, and an id with a newline cannot be addressed in a
URL path. Item ids therefore use :func:`escape_name`, an injective escaping that leaves ordinary names alone:

====================================  ====================================================
in the name                           in the id
====================================  ====================================================
``\\`` (backslash)                     ``\\\\``
newline, carriage return, tab         ``\\n``, ``\\r``, ``\\t``
a byte that is not UTF-8 (``0xE9``)   ``\\xe9`` (two lower-case hex digits)
other control and invisible           ``\\u001b`` (ESC), ``\\u202e`` (right-to-left override), ...
format characters, line separators
====================================  ====================================================

:func:`unescape_name` inverts it exactly, so the real file can always be reopened. An item's ``path`` is
stored as is when it is valid Unicode (newlines and all: JSON escapes them); a path with undecodable bytes is
stored escaped with ``"path_escaped": true``, and :func:`item_path` returns the path to open in both cases.
"""

from __future__ import annotations

import os
import re
import unicodedata
from typing import Any, Mapping

__all__ = ["escape_name", "unescape_name", "printable", "storable_path", "item_path"]

_SIMPLE = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_UNSIMPLE = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
#: bidirectional controls (the "Trojan Source" characters): they reorder what a terminal shows
_BIDI = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]))
_ESCAPE = re.compile(r"\\(?:([\\nrt])|x([0-9a-f]{2})|u([0-9a-f]{4}))")


def _needs_escape(ch: str) -> bool:
    if ch in _SIMPLE or ch in _BIDI:
        return True
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cs", "Zl", "Zp")


def escape_name(name: str) -> str:
    """The printable, valid-Unicode, reversible form of a file name (see the module docstring)."""
    if name.isprintable() and "\\" not in name and not any(c in _BIDI for c in name):
        return name  # the common case, fast
    out = []
    for ch in name:
        if not _needs_escape(ch):
            out.append(ch)
        elif ch in _SIMPLE:
            out.append(_SIMPLE[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def unescape_name(escaped: str) -> str:
    """Inverse of :func:`escape_name`: the name as the file system APIs expect it (surrogateescape)."""
    if "\\" not in escaped:
        return escaped

    def repl(m: re.Match) -> str:
        if m.group(1):
            return _UNSIMPLE[m.group(1)]
        if m.group(2):
            return chr(0xDC00 + int(m.group(2), 16))
        return chr(int(m.group(3), 16))

    return _ESCAPE.sub(repl, escaped)


def printable(text: Any) -> str:
    """``text`` safe to print on a terminal: control, invisible and undecodable characters escaped.

    Unlike :func:`escape_name` it keeps backslashes as they are (it is for messages, not for ids).
    """
    s = str(text)
    if s.isprintable() and not any(c in _BIDI for c in s):
        return s
    return "".join(escape_name(c) if c != "\\" else c for c in s)


def storable_path(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path": ...}`` for an item record; escaped (and flagged) when the path is not valid Unicode."""
    p = os.fspath(path)
    try:
        p.encode("utf-8")
    except UnicodeEncodeError:
        return {"path": escape_name(p), "path_escaped": True}
    return {"path": p}


def item_path(item: Mapping[str, Any]) -> str:
    """The file-system path of an item record written by the indexer (undoes :func:`storable_path`)."""
    p = str(item["path"])
    return unescape_name(p) if item.get("path_escaped") else p
