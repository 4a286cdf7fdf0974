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

from zscir.index.atomic import atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text
from zscir.index.ann import AnnConfig
from zscir.index.faiss_search import AnnSearcher, FaissSearcher
from zscir.index.search import (
    ExactSearcher,
    Searcher,
    exact_topk,
    list_search_backends,
    make_searcher,
    register_search_backend,
)
from zscir.index.store import FORMAT, FORMAT_VERSION, EmbeddingStore, SearchHit, StoreError

__all__ = [
    "exact_topk",
    "Searcher",
    "ExactSearcher",
    "FaissSearcher",
    "AnnSearcher",
    "AnnConfig",
    "make_searcher",
    "list_search_backends",
    "register_search_backend",
    "EmbeddingStore",
    "SearchHit",
    "StoreError",
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
]
