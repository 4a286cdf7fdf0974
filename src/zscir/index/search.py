"""Exact top-k inner-product search over a gallery, and the :class:`Searcher` interface.

FAISS-based searchers (in-memory ``FaissSearcher`` and the persistent IVF-PQ ``AnnSearcher``) live in
:mod:`zscir.index.faiss_search` (building the IVF-PQ index: :mod:`zscir.index.ann`), the search over
several shard indexes in :mod:`zscir.index.shards`; all implement :class:`Searcher` with the
conventions documented here.

Why chunked top-k
-----------------
The naive way to rank a gallery is ``scores = Q @ G.T`` followed by a full
``argsort`` of every row.  For Q=1000 queries and N=1M gallery items that is a
4 GB fp32 score matrix and a Q * N log N sort, although a retrieval metric
only ever needs the best ``k`` (<= 100) items.  :func:`exact_topk` instead
walks the gallery in chunks of ``chunk_size`` rows (and the queries in blocks),
computes one ``(Qb, chunk)`` score block at a time, keeps the ``k`` best of that
block with :func:`torch.topk` and merges them into a running ``(Qb, k)``
candidate list.  Memory is ``O(Qb * chunk + Q * k)`` whatever ``N`` is, and the
run time is dominated by the matrix product, which is unavoidable for exact
search.  Half-precision galleries (``float16`` on disk, memory-mapped) are
upcast to fp32 one chunk at a time, never as a whole.

Results are *exactly* those of a stable descending argsort of the full score
matrix, including tie-breaking: equal scores are ordered by lower gallery index
first.  This makes evaluation numbers reproducible across chunk sizes, devices
and backends.

Exclusion
---------
CIRR requires the reference image to be removed from the ranking of its own
query.  ``exclude`` gives, per query, gallery indices that must never appear in
the result.  Their scores are set to ``-inf`` before selection, and the search
over-fetches by the number of excluded items so that exactly the top
``k' = min(k, N)`` *remaining* items are returned.  When a query has fewer than
``k'`` non-excluded items left (i.e. ``k > N - n_excluded``), its trailing
result slots are padded with index ``-1`` and score ``-inf`` (the convention
FAISS uses for "no result"), so the output always has shape ``(Q, min(k, N))``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import numpy as np
import torch

from zscir.index.searcher import (  # noqa: F401 - ArrayLike ... COPY_CHUNK_BYTES: re-exported (they lived here)
    COPY_CHUNK_BYTES,
    SCORE_BLOCK_BYTES,
    ArrayLike,
    ExcludeLike,
    Searcher,
    as_tensor,
    drop_excluded,
    normalize_exclude,
    release_pages,
)

logger = logging.getLogger(__name__)

__all__ = [
    "exact_topk",
    "Searcher",
    "ExactSearcher",
    "make_searcher",
    "list_search_backends",
    "register_search_backend",
]


# --------------------------------------------------------------------------- #
# exact search
# --------------------------------------------------------------------------- #
def _chunk_topk(s: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``m`` of each row of ``s`` with ties at the cut broken by lower column.

    Returned columns are sorted by *position* (ascending), not by score, which
    is what the stable merge in :func:`exact_topk` needs.  NaN scores count as
    ``-inf`` (``s`` may be modified in place).

    ``torch.topk`` does not specify which of several equal values it keeps at
    the cut, so we fetch ``m + 1`` values: if the ``m``-th and ``(m+1)``-th are
    equal the row has a tie at the cut and is redone with a stable full sort
    (rare on real data, but correct on degenerate data such as constant
    embeddings).  This avoids any extra full pass over the score block.
    """
    n_cols = s.shape[1]
    m1 = min(m + 1, n_cols)
    vals, pos = torch.topk(s, m1, dim=1, largest=True, sorted=True)
    if vals.isnan().any():  # topk ranks NaN above everything, so any NaN shows up here
        torch.nan_to_num_(s, nan=float("-inf"))
        vals, pos = torch.topk(s, m1, dim=1, largest=True, sorted=True)
    if m1 > m:
        bad = torch.nonzero(vals[:, m - 1] == vals[:, m]).flatten()
        vals, pos = vals[:, :m], pos[:, :m]
        if bad.numel():
            sub_vals, sub_pos = torch.sort(s[bad], dim=1, descending=True, stable=True)
            vals[bad] = sub_vals[:, :m]
            pos[bad] = sub_pos[:, :m]
    pos, order = torch.sort(pos, dim=1)
    vals = torch.gather(vals, 1, order)
    return vals, pos


def score_chunk_rows(n_gallery: int, dim: int, needs_copy: bool, device_type: str, chunk_size: int = 65536) -> int:
    """Gallery rows :func:`exact_topk` scores per matrix product.

    Upcast chunks (half-precision storage, or another device) stay below glibc's largest mmap threshold
    (32 MB) on CPU: bigger temporaries are mmap-ed and page-faulted afresh on every chunk, which made fp16
    search ~2x slower than fp32. The top-k does not depend on the chunk size.
    """
    chunk = int(max(1, min(chunk_size, n_gallery)))
    if needs_copy and device_type == "cpu":
        chunk = max(1, min(chunk, COPY_CHUNK_BYTES // (4 * dim)))
    return chunk


# --------------------------------------------------------------------------- #
# exact top-k
# --------------------------------------------------------------------------- #
def exact_topk(
    queries: ArrayLike,
    gallery: ArrayLike,
    k: int,
    *,
    chunk_size: int = 65536,
    exclude: ExcludeLike = None,
    device: Union[str, torch.device, None] = None,
    prefilter: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product, chunked over gallery and queries.

    Args:
        queries: ``(Q, D)`` numpy array or torch tensor (fp32/fp16/fp64).
        gallery: ``(N, D)`` numpy array (may be a memmap) or torch tensor.
            Each chunk is upcast to fp32 on the compute device separately.
        k: number of results per query (``k >= 1``); ``k' = min(k, N)``.
        chunk_size: gallery rows scored at once.  Any positive value gives the
            same result; larger is faster up to cache/memory limits.
        exclude: ``None``; a length-Q int array/tensor (one gallery index per
            query, ``-1`` = none); or a length-Q sequence of index collections
            (``None``/empty = none).  Excluded items never appear in the output.
        device: compute device; default: the gallery tensor's device (CPU for
            numpy input).
        prefilter: ``None`` (default) or ``"bf16"``: score in bfloat16 first and
            re-rank a certified candidate set in fp32 (:mod:`zscir.index.prefilter`;
            faster batched on CPUs with bf16 instructions, same top-k, scores
            may differ from the default path in the last bit); or a
            :class:`~zscir.index.prefilter.Bf16Gallery` of this gallery (the bf16
            copy made once). Used for batches of at least 16 queries; smaller
            ones take the default path.

    Returns:
        ``(scores, indices)``: float32 and int64 numpy arrays of shape
        ``(Q, min(k, N))``, each row sorted by descending score, ties by lower
        index (identical to a stable argsort of ``-(queries @ gallery.T)``).
        Rows with fewer than ``k'`` non-excluded items are padded with
        index ``-1`` / score ``-inf``.  NaN scores are treated as ``-inf``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    q_t = as_tensor(queries, "queries")
    g_t = as_tensor(gallery, "gallery")
    n_q, dim = q_t.shape
    n_g = g_t.shape[0]
    if g_t.shape[1] != dim:
        raise ValueError(f"dimension mismatch: queries have dim {dim}, gallery has dim {g_t.shape[1]}")
    k = int(k)
    k_out = min(k, n_g)
    if n_q == 0 or n_g == 0:
        return np.zeros((n_q, k_out), np.float32), np.zeros((n_q, k_out), np.int64)

    dev = torch.device(device) if device is not None else g_t.device
    if exclude is not None:
        ex_rows, ex_cols = normalize_exclude(exclude, n_q, n_g)
    else:
        ex_rows = ex_cols = np.zeros(0, np.int64)
    n_ex_max = int(np.bincount(ex_rows, minlength=1).max()) if ex_rows.size else 0
    k_fetch = min(n_g, k + n_ex_max)  # over-fetch so removal of excluded items stays exact

    if prefilter is not None:
        from zscir.index import prefilter as pf

        cached = prefilter if isinstance(prefilter, pf.Bf16Gallery) else None
        if prefilter != "bf16" and cached is None:
            raise ValueError(f"prefilter must be None, 'bf16' or a Bf16Gallery, got {prefilter!r}")
        if cached is not None and (len(cached) != n_g or cached.data.device != dev):
            raise ValueError("prefilter: the Bf16Gallery was made from another gallery or lives on another device")
        if n_q >= pf.MIN_QUERIES and pf.bf16_bound_holds(dim, dev.type):
            return pf.prefiltered_topk(q_t, g_t, gallery, k, k_out, k_fetch, int(min(chunk_size, n_g)), dev,
                                       ex_rows, ex_cols, cached, fallback=exact_topk)

    needs_copy = g_t.dtype != torch.float32 or g_t.device != dev
    chunk = score_chunk_rows(n_g, dim, needs_copy, dev.type, chunk_size)
    q_block = int(max(1, min(n_q, SCORE_BLOCK_BYTES // (4 * chunk))))
    logger.debug("exact_topk: Q=%d N=%d D=%d k=%d chunk=%d q_block=%d device=%s",
                 n_q, n_g, dim, k, chunk, q_block, dev)

    out_s = np.empty((n_q, k_out), np.float32)
    out_i = np.empty((n_q, k_out), np.int64)
    neg_inf = float("-inf")
    s_buf: torch.Tensor | None = None
    with torch.no_grad():
        for q0 in range(0, n_q, q_block):
            q1 = min(n_q, q0 + q_block)
            qb = q_t[q0:q1].to(device=dev, dtype=torch.float32)
            if ex_rows.size:
                lo_r, hi_r = np.searchsorted(ex_rows, [q0, q1])
                b_rows, b_cols = ex_rows[lo_r:hi_r] - q0, ex_cols[lo_r:hi_r]
                by_col = np.argsort(b_cols, kind="stable")
                b_rows, b_cols = b_rows[by_col], b_cols[by_col]
            run_s = torch.empty((q1 - q0, 0), dtype=torch.float32, device=dev)
            run_i = torch.empty((q1 - q0, 0), dtype=torch.int64, device=dev)
            if s_buf is None or s_buf.shape[0] < q1 - q0:
                s_buf = torch.empty((q1 - q0, chunk), dtype=torch.float32, device=dev)
            for g0 in range(0, n_g, chunk):
                g1 = min(n_g, g0 + chunk)
                gc = g_t[g0:g1]
                if needs_copy:
                    gc = gc.to(device=dev, dtype=torch.float32)
                    release_pages(gallery, g0, g1)
                # the score block goes into one reused buffer: a fresh (Qb, chunk) tensor per chunk is
                # a fresh mmap + page faults for every chunk on CPU (see docs/PERFORMANCE.md)
                s = torch.mm(qb, gc.T, out=s_buf[:q1 - q0, :g1 - g0])
                if ex_rows.size:
                    c0, c1 = np.searchsorted(b_cols, [g0, g1])
                    if c1 > c0:
                        r = torch.from_numpy(b_rows[c0:c1]).to(dev)
                        c = torch.from_numpy(b_cols[c0:c1] - g0).to(dev)
                        s[r, c] = neg_inf
                m = min(k_fetch, g1 - g0)
                vals, pos = _chunk_topk(s, m)
                # Running candidates come from earlier chunks (lower indices) and are
                # ordered by (score desc, index asc); new ones are ordered by index.
                # A stable descending sort of the concatenation therefore orders
                # ties by lower index, exactly like a global stable argsort.
                cat_s = torch.cat([run_s, vals], dim=1)
                cat_i = torch.cat([run_i, pos + g0], dim=1)
                srt_s, order = torch.sort(cat_s, dim=1, descending=True, stable=True)
                run_s = srt_s[:, :k_fetch]
                run_i = torch.gather(cat_i, 1, order[:, :k_fetch])
            bs, bi = drop_excluded(run_s.cpu().numpy(), run_i.cpu().numpy(), ex_rows, ex_cols, q0, n_g, k_out)
            out_s[q0:q1] = bs
            out_i[q0:q1] = bi
    return out_s, out_i


class ExactSearcher(Searcher):
    """Brute-force exact search: a thin wrapper around :func:`exact_topk`.

    Keeps the embeddings as given (e.g. an fp16 memmap) so memory stays at the
    on-disk size; chunks are upcast on the fly.
    """

    name = "exact"

    def __init__(self, embeddings: ArrayLike, chunk_size: int = 65536,
                 device: Union[str, torch.device, None] = None, prefilter: str | None = None,
                 cache: bool = False, single_query: str = "exact") -> None:
        """``prefilter="bf16"``: see :func:`exact_topk`; ``cache=True`` keeps the bf16 copy of the gallery
        (made on the first batched search) instead of converting it on every search.

        ``single_query="fast"`` answers one-query searches on CPU through FAISS
        (:mod:`zscir.index.single_query`: an index made once, on the first single query; the ids of the
        default ``"exact"`` path except where scores tie within float rounding, scores within
        :func:`~zscir.index.single_query.score_tolerance`). Without faiss it is the ``"exact"`` path.
        Serving uses it; evaluation keeps the default.
        """
        if single_query not in ("exact", "fast"):
            raise ValueError(f"single_query must be 'exact' or 'fast', got {single_query!r}")
        self._emb = embeddings
        t = as_tensor(embeddings, "embeddings")
        self._n, self._dim = int(t.shape[0]), int(t.shape[1])
        self.chunk_size = int(chunk_size)
        self.device = device
        self.prefilter = prefilter
        self.cache = bool(cache)
        self.single_query = single_query
        self._bf16: Any = None
        self._single: Any = None  # None: not made yet; False: no FAISS index for this gallery
        self._single_lock = threading.Lock()

    def _fast_single(self, queries: ArrayLike, k: int, exclude: ExcludeLike) -> tuple[np.ndarray, np.ndarray] | None:
        """One query through :mod:`zscir.index.single_query` (FAISS); None: the batched path answers."""
        with self._single_lock:  # serving threads: one index per gallery, made once
            if self._single is None:
                from zscir.index.single_query import make_single_query_index

                self._single = make_single_query_index(self._emb, self.device) or False
        if self._single is False:
            return None
        q_t = as_tensor(queries, "queries")
        if q_t.shape[1] != self._dim:
            raise ValueError(f"dimension mismatch: queries have dim {q_t.shape[1]}, gallery has dim {self._dim}")
        ex_rows, ex_cols = (normalize_exclude(exclude, 1, self._n) if exclude is not None
                            else (np.zeros(0, np.int64), np.zeros(0, np.int64)))
        k_out = min(int(k), self._n)
        # the same query conversion as exact_topk's: to fp32 (on the CPU)
        q32 = q_t.detach().to(device="cpu", dtype=torch.float32).numpy()
        res = self._single.topk(q32, min(self._n, int(k) + ex_cols.size))
        if res is None:
            return None
        return drop_excluded(res[0][None], res[1][None], ex_rows, ex_cols, 0, self._n, k_out)

    def search(self, queries: ArrayLike, k: int, exclude: ExcludeLike = None) -> tuple[np.ndarray, np.ndarray]:
        if (self.single_query == "fast" and self.prefilter is None and len(queries) == 1 and self._n > 0
                and isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1):
            res = self._fast_single(queries, k, exclude)
            if res is not None:
                return res
        pf: Any = self.prefilter
        if pf == "bf16" and self.cache and len(queries) >= 16:
            if self._bf16 is None:
                from zscir.index.prefilter import Bf16Gallery

                dev = self.device or as_tensor(self._emb, "embeddings").device
                self._bf16 = Bf16Gallery(self._emb, device=dev)
            pf = self._bf16
        return exact_topk(queries, self._emb, k, chunk_size=self.chunk_size, exclude=exclude, device=self.device,
                          prefilter=pf)

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim


# --------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------- #
def _faiss_searcher(embeddings: ArrayLike, **kw: Any) -> Searcher:
    from zscir.index.faiss_search import FaissSearcher  # optional dependency: imported on use

    return FaissSearcher(embeddings, **kw)


_BACKENDS: dict[str, Callable[..., Searcher]] = {
    "exact": ExactSearcher,
    "faiss": _faiss_searcher,
}


def __getattr__(name: str) -> Any:
    """``FaissSearcher`` moved to :mod:`zscir.index.faiss_search`; keep ``zscir.index.search.FaissSearcher``."""
    if name == "FaissSearcher":
        from zscir.index.faiss_search import FaissSearcher

        return FaissSearcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_search_backend(name: str, factory: Callable[..., Searcher]) -> None:
    """Register a new backend ``factory(embeddings, **kw) -> Searcher`` under ``name``."""
    _BACKENDS[name] = factory


def list_search_backends(available_only: bool = False) -> list[str]:
    """Names accepted by :func:`make_searcher` (sorted).

    With ``available_only=True`` backends whose optional dependency is not
    installed (currently only ``"faiss"``) are left out.
    """
    names = sorted(_BACKENDS)
    if available_only:
        def ok(n: str) -> bool:
            if n != "faiss":
                return True
            from zscir.index.faiss_search import import_faiss

            try:
                import_faiss()
                return True
            except ImportError:
                return False
        names = [n for n in names if ok(n)]
    return names


def make_searcher(embeddings: ArrayLike, backend: str = "exact", **kw: Any) -> Searcher:
    """Build a :class:`Searcher` for ``embeddings`` with the named backend."""
    try:
        factory = _BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown search backend {backend!r}; available: {', '.join(sorted(_BACKENDS))}") from None
    return factory(embeddings, **kw)
