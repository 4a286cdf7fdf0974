"""Gallery embedding index: exact chunked top-k search and an on-disk store.

Search
------
:func:`exact_topk` ranks a gallery by inner product without ever building the
full ``(Q, N)`` score matrix or sorting ``N`` items per query.  It walks the
gallery in chunks (and the queries in blocks), keeps the ``k`` best of each
``(Q_block, chunk)`` score block with ``torch.topk`` and merges them into a
running ``(Q, k)`` candidate list.  Memory is ``O(Q_block * chunk + Q * k)``
regardless of the gallery size; time is dominated by the matrix product,
which exact search cannot avoid, instead of an ``O(N log N)`` sort per query.
fp16 galleries (e.g. memory-mapped from disk) are upcast one chunk at a time.
The result equals a stable descending argsort (ties: lower index first), and
``exclude`` removes per-query items (CIRR's reference image) exactly; rows
with too few remaining items are padded with index ``-1`` / score ``-inf``.

:class:`Searcher` is the interface evaluation and serving code program
against; :class:`ExactSearcher` wraps :func:`exact_topk`, :class:`FaissSearcher`
uses ``faiss.IndexFlatIP`` (optional ``[faiss]`` extra).  Use
:func:`make_searcher` / :func:`list_search_backends` to pick one by name.
:class:`AnnSearcher` serves a persistent IVF-PQ index built by
:func:`zscir.index.ann.build_ann` (``zscir index ann``), and
:class:`zscir.index.shards.ShardSet` searches several shard indexes as one.

Store format (``zscir-index`` v1)
---------------------------------
A folder with ``embeddings.npy`` (float32/float16, row ``i`` <-> item ``i``),
``items.jsonl`` (one ``{"id", "path", ...}`` object per line) and
``manifest.json`` (``format``, ``format_version``, ``count``, ``dim``,
``dtype``, ``model``, ``method``, ``preprocessing``, ``created`` + free
fields).  Files are written atomically and the manifest last, so a folder
without a manifest is an incomplete store; :meth:`EmbeddingStore.load`
validates everything against the manifest.  :mod:`zscir.index.atomic` holds the
reusable atomic-write helpers.
"""

import importlib

#: public name -> the submodule that owns it. Resolved on first use (PEP 562), so importing a light
#: submodule such as ``zscir.index.names`` (CLI error lines) does not pull in torch through this package.
_EXPORTS = {
    "exact_topk": "search", "Searcher": "search", "ExactSearcher": "search",
    "list_search_backends": "search", "make_searcher": "search", "register_search_backend": "search",
    "FaissSearcher": "faiss_search", "AnnSearcher": "faiss_search", "AnnConfig": "ann",
    "EmbeddingStore": "store", "SearchHit": "store", "StoreError": "store", "FORMAT": "store",
    "FORMAT_VERSION": "store",
    "atomic_open": "atomic", "atomic_write_bytes": "atomic", "atomic_write_text": "atomic",
    "atomic_write_json": "atomic",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"zscir.index.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zscir.index' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
