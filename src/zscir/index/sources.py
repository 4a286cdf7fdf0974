"""What an index is built from, partition by partition: the one interface between sources and engines.

Why partitions: at 100M pictures a collection is not a folder but WebDataset shards or tables of paths
and URLs, and the work is scheduled by an engine (Ray Data, a Slurm array, several local processes). The
unit every engine shares is an *output partition* with a fixed id, as in clip-retrieval: partition ``i``
of ``n`` is a deterministic, disjoint part of the source, the union of all ``n`` is the whole source, and
the same ``(i, n)`` always names the same items. A partition is then embedded and written atomically with
a done marker, so a re-run embeds only what is missing, whoever ran it.

A source only lists and reads; it never decodes pixels (the index's hardened decoder does that, from the
raw bytes), so every source kind goes through the same image limits and rejections.

Implementations register themselves in :data:`SOURCE_KINDS`; :func:`open_index_source` picks one from a
spec string (a folder path, ``wds:``/``*.tar`` shard specs, ``*.parquet`` / ``*.csv`` tables, local or
through fsspec).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

__all__ = ["SourceRecord", "IndexSource", "SourceError", "SOURCE_KINDS", "register_source",
           "open_index_source"]


class SourceError(ValueError):
    """A source that cannot be opened or listed (bad spec, missing file, refused scheme): one error line."""


@dataclass(frozen=True)
class SourceRecord:
    """One picture of a partition: its stable id and raw bytes, or why it could not be read.

    ``id`` is what the index stores and search returns (a path relative to the folder, a WebDataset key,
    a table's path/URL column); it is unique within the source. ``meta`` carries the clip-retrieval
    metadata columns where known: ``image_path``, ``caption``, ``url``, ``key``.
    """

    id: str
    data: bytes | None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class IndexSource(Protocol):
    """A collection split into fixed partitions."""

    kind: str  #: "folder", "webdataset", "table", ...

    def describe(self) -> dict[str, Any]:
        """JSON-able description recorded in the index manifest (kind, spec, sizes where cheap)."""

    def default_partitions(self) -> int:
        """A sensible partition count when the user gives none (e.g. one per shard file)."""

    def iter_partition(self, i: int, n: int) -> Iterator[SourceRecord]:
        """The records of partition ``i`` of ``n`` in a deterministic order (same every call)."""


#: kind name -> (matches(spec) -> bool, opener(spec, **options) -> IndexSource); first match wins
SOURCE_KINDS: dict[str, tuple[Callable[[str], bool], Callable[..., IndexSource]]] = {}


def register_source(kind: str, matches: Callable[[str], bool], opener: Callable[..., IndexSource]) -> None:
    """Register a source kind (modules call this at import; :func:`open_index_source` imports them)."""
    SOURCE_KINDS[kind] = (matches, opener)


#: modules that register source kinds, imported on first use (each appends itself here)
SOURCE_MODULES: tuple[str, ...] = (
    "zscir.index.wds_index_source",
    "zscir.index.table_source",
    "zscir.index.folder_source",  # last: a folder matches any existing directory
)


def open_index_source(spec: str, **options: Any) -> IndexSource:
    """The source a spec names (first registered kind that matches); `SourceError` when none does."""
    import importlib

    for module in SOURCE_MODULES:
        importlib.import_module(module)
    # in SOURCE_MODULES order, whatever order the modules were first imported in (a folder named like a
    # table or a shard must be judged by the table/shard kind first); kinds from elsewhere come last
    rank = {m: i for i, m in enumerate(SOURCE_MODULES)}
    ordered = sorted(SOURCE_KINDS.items(), key=lambda kv: rank.get(kv[1][1].__module__, len(rank)))
    for kind, (matches, opener) in ordered:
        if matches(spec):
            return opener(spec, **options)
    raise SourceError(f"{spec}: not a source zscir can index (known kinds: {', '.join(SOURCE_KINDS) or 'none'})")
