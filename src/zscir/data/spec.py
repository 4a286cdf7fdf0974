"""Data specs: the one string a user types to name a dataset (``--data SPEC``).

=========================================  ==========================================================
spec                                       source
=========================================  ==========================================================
``world`` (default), ``world:val``          the procedural CIR world (docs/WORLD.md)
``wds:data/{00000..00331}.tar``, ``*.tar``  WebDataset shards as img2dataset writes them (brace lists)
``path/manifest.csv|tsv|jsonl|parquet``     a manifest table, image paths relative to ``--image-root``
``path/folder`` with ``metadata.jsonl``     an HF ImageFolder (``file_name`` + ``text``)
``path/folder`` with ``*.tar`` shards       every shard in the folder
``hf:name_or_saved_dir[:split]``            an HF ``datasets`` dataset (saved to disk, or the hub)
=========================================  ==========================================================

Like open_clip's ``--dataset-type``, the kind selects the pipeline; unlike it, the kind is read from the
spec itself (``kind:`` prefix or the path), so one ``--data`` option is enough.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import stat
from dataclasses import dataclass
from typing import Iterator

from zscir.data.files import expand_user, file_kind
from zscir.data.records import DataError

__all__ = ["DataSpec", "parse_spec", "expand_shards", "iter_shards", "count_braces", "MAX_SHARDS",
           "check_shard_commands", "MANIFEST_SUFFIXES", "KINDS"]

KINDS = ("world", "wds", "manifest", "hf")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class DataSpec:
    """A parsed spec: ``kind`` selects the pipeline, ``location`` is what it reads, ``split`` optional."""

    kind: str
    location: str = ""
    split: str | None = None
    text: str = ""  # the spec as typed (for messages and fingerprints)

    @property
    def is_world(self) -> bool:
        return self.kind == "world"


def _split_suffix(rest: str) -> tuple[str, str | None]:
    """``name:split`` → (name, split); a Windows drive letter or a bare path keeps its colon."""
    if ":" in rest and not os.path.exists(rest):
        name, split = rest.rsplit(":", 1)
        if split and "/" not in split:
            return name, split
    return rest, None


def parse_spec(spec: str | DataSpec | None) -> DataSpec:
    """Read a spec string (see the module docstring); raises `DataError` when it names nothing usable."""
    if isinstance(spec, DataSpec):
        return spec
    text = (spec or "world").strip()
    if text == "world" or text.startswith("world:"):
        return DataSpec("world", "", text.split(":", 1)[1] if ":" in text else None, text)
    if text.startswith("wds:"):
        return DataSpec("wds", text[4:], None, text)
    if text.startswith("hf:"):
        name, split = _split_suffix(text[3:])
        return DataSpec("hf", name, split, text)
    if text.startswith("manifest:"):
        return DataSpec("manifest", text[9:], None, text)
    if "{" in text or text.endswith(".tar") or text.endswith(".tar.gz"):
        return DataSpec("wds", text, None, text)
    path = expand_user(text)
    if path.is_dir():
        if (path / "metadata.jsonl").exists() or (path / "metadata.csv").exists():
            return DataSpec("manifest", str(path), None, text)
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return DataSpec("hf", str(path), None, text)
        if sorted(path.glob("*.tar")):
            return DataSpec("wds", str(path), None, text)
        raise DataError(f"{text}: a folder, but with no metadata.jsonl, no *.tar shards and no saved HF dataset")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        if not path.exists():
            raise DataError(f"{text}: no such manifest file")
        return DataSpec("manifest", str(path), None, text)
    raise DataError(f"cannot tell what {text!r} is: expected 'world', 'wds:SHARDS', a *.tar brace pattern, a "
                    f"manifest ({'/'.join(MANIFEST_SUFFIXES)}), a folder, or 'hf:NAME[:SPLIT]'")


#: more shards than this in one spec is refused before anything is expanded or opened: a typo such as
#: ``{0..9999999}`` used to expand (and ``stat``) ten million names, > 1.6 GB and minutes; a larger set is
#: split into several specs or folders
MAX_SHARDS = 100_000

_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")


def _count_sequence(expr: str) -> int | None:
    """Names a ``{a,b,...}`` body expands to (None: no top-level comma, so not a sequence)."""
    depth, start, parts = 0, 0, []
    pos = 0
    while pos < len(expr):
        c = expr[pos]
        if c == "\\":
            pos += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(expr[start:pos])
            start = pos + 1
        pos += 1
    if depth != 0 or not parts:
        return None
    parts.append(expr[start:])
    return sum(count_braces(x) for x in parts)


def _count_expression(expr: str) -> int | None:
    m = _INT_RANGE.match(expr)
    if m:
        a, b, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1) or 1
        return abs(b - a) // step + 1
    m = _CHAR_RANGE.match(expr)
    if m:
        import braceexpand

        step = int(m.group(3) or 1) or 1
        a, b = braceexpand.alphabet.index(m.group(1)), braceexpand.alphabet.index(m.group(2))
        return abs(b - a) // step + 1
    return _count_sequence(expr)


def count_braces(pattern: str) -> int:
    """How many names ``braceexpand(pattern)`` yields, computed from the pattern (nothing is expanded).

    Follows braceexpand's grammar: ``{0..9}`` / ``{a..z}`` ranges with an optional step, ``{x,y}`` lists,
    nesting, backslash escapes; a ``{...}`` that is neither range nor list is literal text.
    """
    total, depth, start, pos = 1, 0, 0, 0
    while pos < len(pattern):
        c = pattern[pos]
        if c == "\\":
            pos += 2
            continue
        if c == "{":
            if depth == 0:
                start = pos
            depth += 1
        elif c == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                body = pattern[start + 1:pos]
                n = _count_expression(body)
                total *= count_braces(body) if n is None else n
        elif c == "}":
            raise DataError(f"{pattern}: unbalanced braces")
        pos += 1
    if depth:
        raise DataError(f"{pattern}: unbalanced braces")
    return total


def _over(location: str, n: int | str) -> DataError:
    return DataError(f"{location}: names {n} shards; at most {MAX_SHARDS:,} are read from one spec "
                     f"(check the brace range, or split the set into several specs)")


def iter_shards(location: str) -> Iterator[str]:
    """Shard names of a WebDataset location, lazily: brace lists (``{000..009}``), globs, a folder,
    ``::``-joined lists. The brace count is computed first, and more than `MAX_SHARDS` names is a
    `DataError` before any is produced."""
    import braceexpand

    parts = location.split("::")
    try:
        total = sum(count_braces(part) for part in parts)
    except RecursionError:
        raise DataError(f"{location[:200]}: braces nested too deeply") from None
    if total > MAX_SHARDS:
        raise _over(location, f"{total:,}")
    n = 0
    for part in parts:
        if shard_scheme(part):  # pipe:CMD or a URL: kept as typed (a Path folds '//'), never globbed
            for name in braceexpand.braceexpand(part):
                n += 1
                yield name
            continue
        p = expand_user(part)
        if p.is_dir():
            names: Iterator[str] = (str(x) for x in sorted(itertools.islice(p.glob("*.tar"), MAX_SHARDS + 1)))
        else:
            names = braceexpand.braceexpand(str(p))
        for name in names:
            if any(c in name for c in "*?["):
                matches = sorted(itertools.islice(glob.iglob(name), MAX_SHARDS + 1))
            else:
                matches = [name]
            for m in matches:
                n += 1
                if n > MAX_SHARDS:
                    raise _over(location, f"more than {MAX_SHARDS:,}")
                yield m


def expand_shards(location: str) -> list[str]:
    """Shard paths of a WebDataset location (see `iter_shards`). Local shards must be regular files: a FIFO
    or a device named ``x.tar`` is a `DataError` here instead of a reader blocked forever."""
    out = list(iter_shards(location))
    if not out:
        raise DataError(f"{location}: names no shard")
    missing = 0
    for s in out:
        if shard_scheme(s):  # pipe:/URLs are not files
            continue
        try:
            st = os.stat(s)
        except OSError:
            missing += 1
            continue
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{s}: {file_kind(st.st_mode)}, not a regular file; a shard must be a tar file")
    if missing == len(out):
        raise DataError(f"{location}: none of the {len(out)} shards exists (first: {out[0]})")
    return out


def shard_scheme(shard: str) -> str:
    """The URL scheme webdataset dispatches ``shard`` on ('' for a local path)."""
    from urllib.parse import urlparse

    try:
        return urlparse(shard).scheme.lower()
    except ValueError:
        return ""


def check_shard_commands(shards: list[str], spec: str, allow_pipe: bool = False) -> None:
    """Refuse shards that make webdataset run a command, unless the user allowed it (``--allow-pipe``).

    webdataset opens ``pipe:CMD`` by running CMD through ``sh``, and every other URL scheme (``http(s)://``,
    ``gs://``, ``scp://``...) through a shell command line too (curl, gsutil, ...): a spec is then code, not
    data. Only a spec the user typed may do that, and only with the explicit flag (docs/DATA.md); checkpoints
    and configs never reach this with the flag set.
    """
    if allow_pipe:
        return
    for shard in shards:
        scheme = shard_scheme(shard)
        if scheme and scheme != "file":
            what = "runs the shell command after 'pipe:'" if scheme == "pipe" else \
                f"is a {scheme}: URL that webdataset fetches by running a shell command"
            raise DataError(f"{spec}: shard {shard!r} {what}; zscir runs commands from a data spec only when "
                            "you allow it with --allow-pipe (allow_pipe=True), see docs/DATA.md")
