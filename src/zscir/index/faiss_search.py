"""FAISS searchers behind the :class:`~zscir.index.search.Searcher` interface (optional ``[faiss]`` extra).

* :class:`FaissSearcher` builds a FAISS index in memory from a gallery (``"flat"``: exact ``IndexFlatIP``);
  it is the ``faiss`` backend of :func:`~zscir.index.search.make_searcher`.
* :class:`AnnSearcher` serves a persistent IVF-PQ index built by :func:`zscir.index.ann.build_ann`
  (``zscir index ann``) and re-ranks its shortlist exactly from the store's memory-mapped vectors; see
  :mod:`zscir.index.ann` for why.

Both follow :func:`~zscir.index.search.exact_topk`'s conventions: ``(Q, min(k, N))`` results, best first,
ties by lower index, ``-1`` / ``-inf`` padding, exact ``exclude`` handling (by over-fetching).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import numpy as np
import torch

from zscir.index.searcher import ArrayLike, ExcludeLike, Searcher, drop_excluded, normalize_exclude

logger = logging.getLogger(__name__)

__all__ = ["FaissSearcher", "AnnSearcher", "RERANK_MODES", "check_finite_rows", "check_nprobe", "make_faiss_index"]

#: ``store``: exact re-rank from the stored vectors (default); ``none``: PQ scores as they are
RERANK_MODES = ("store", "none")


def import_faiss() -> Any:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError as e:  # pragma: no cover - depends on environment
        from zscir.extras import install_hint

        raise ImportError(
            "The 'faiss' search backend needs the faiss library. "
            f"Install it with: {install_hint('faiss')} (or pip install faiss-cpu)") from e
    return faiss


def _to_numpy_f32(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def check_finite_rows(x: np.ndarray, what: str, row_ids: np.ndarray | int = 0) -> None:
    """Refuse NaN / infinite values before faiss sees them: its k-means training aborts with a C++
    ``RuntimeError`` (a traceback naming no row), and such a vector added to an index ranks arbitrarily.
    ``row_ids``: the gallery row of each row of ``x`` (an array), or the gallery row of its first row."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
        first = int(row_ids[rows[0]]) if isinstance(row_ids, np.ndarray) else int(rows[0]) + int(row_ids)
        raise ValueError(f"{what}: row {first} (and {len(rows) - 1} more) has NaN or infinite values; faiss "
                         f"cannot train on or index them (re-embed those items or leave them out)")


def check_nprobe(nprobe: Any) -> int:
    """``nprobe`` as a positive int: faiss aborts every search of an IVF index visiting 0 cells."""
    if isinstance(nprobe, bool) or not isinstance(nprobe, (int, np.integer)) or nprobe < 1:
        raise ValueError(f"nprobe must be a positive integer (inverted lists visited per query), got {nprobe!r}")
    return int(nprobe)


def make_faiss_index(faiss: Any, dim: int, factory: str) -> Any:
    """``faiss.index_factory`` with the inner-product metric; a string faiss cannot parse (or not for this
    dimension) is a ``ValueError`` naming it, not faiss' C++ ``RuntimeError``."""
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"faiss index factory must be a non-empty string such as 'IVF1024,Flat', got {factory!r}")
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        reason = (str(e).strip().splitlines() or ["?"])[-1]
        reason = re.sub(r"^Error in .*? at \S+:\d+: ", "", reason)  # faiss' C++ function and source line
        raise ValueError(f"faiss cannot build factory {factory!r} for {dim}-d vectors: {reason}") from None


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _exclusions(exclude: ExcludeLike, n_q: int, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    if exclude is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    rows, cols = normalize_exclude(exclude, n_q, n)
    return rows, cols, int(np.bincount(rows, minlength=1).max()) if rows.size else 0


def _prepare(queries: ArrayLike, k: Any, exclude: ExcludeLike, dim: int, n: int
             ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray, int]:
    """What every FAISS searcher checks first: (fp32 queries, k' = min(k, N), exclusion pairs, max per query)."""
    k = _check_k(k)
    q = _to_numpy_f32(queries)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries: expected shape (Q, {dim}), got {q.shape}")
    ex_rows, ex_cols, n_ex_max = _exclusions(exclude, q.shape[0], n)
    return q, min(k, n), ex_rows, ex_cols, n_ex_max


def _sort_best_first(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows by descending score, ties by lower index, ``-1`` padding last (exact_topk's convention)."""
    scores = np.where(idx < 0, np.float32(-np.inf), scores).astype(np.float32)
    tie_key = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((tie_key, -scores), axis=-1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(idx, order, axis=1)


# --------------------------------------------------------------------------------------- flat faiss
class FaissSearcher(Searcher):
    """FAISS-backed inner-product search built in memory, behind the :class:`Searcher` interface.

    ``index="flat"`` builds an exact ``IndexFlatIP`` (same results as
    :class:`~zscir.index.search.ExactSearcher` up to float rounding, usually faster on CPU thanks
    to FAISS' BLAS kernels).  Any other string is passed to
    ``faiss.index_factory`` with the inner-product metric (e.g. ``"IVF1024,Flat"``
    for approximate search on very large galleries); trainable indexes are
    trained on the gallery itself.  FAISS needs an fp32 copy of the gallery.
    For a persistent ANN index trained on a sample see :func:`zscir.index.ann.build_ann` and :class:`AnnSearcher`.
    """

    name = "faiss"

    def __init__(self, embeddings: ArrayLike, index: str = "flat", nprobe: int | None = None) -> None:
        faiss = import_faiss()
        emb = _to_numpy_f32(embeddings)
        if emb.ndim != 2:
            raise ValueError(f"embeddings: expected a 2-D array, got shape {emb.shape}")
        self._n, self._dim = int(emb.shape[0]), int(emb.shape[1])
        self.index_spec = index
        if nprobe is not None:
            nprobe = check_nprobe(nprobe)
        if isinstance(index, str) and index.strip().lower() == "flat":
            self._index = faiss.IndexFlatIP(self._dim)
        else:
            self._index = make_faiss_index(faiss, self._dim, index)
            if not self._index.is_trained:
                check_finite_rows(emb, "embeddings")
                logger.info("training faiss index %r on %d vectors", index, self._n)
                self._index.train(emb)
            if nprobe is not None:
                faiss.ParameterSpace().set_index_parameter(self._index, "nprobe", nprobe)
        if self._n:
            self._index.add(emb)

    def search(self, queries: ArrayLike, k: int, exclude: ExcludeLike = None) -> tuple[np.ndarray, np.ndarray]:
        q, k_out, ex_rows, ex_cols, n_ex_max = _prepare(queries, k, exclude, self._dim, self._n)
        n_q = q.shape[0]
        k_fetch = min(self._n, k + n_ex_max)
        if n_q == 0 or k_out == 0:
            return np.zeros((n_q, k_out), np.float32), np.zeros((n_q, k_out), np.int64)
        dist, idx = self._index.search(q, k_fetch)
        dist, idx = _sort_best_first(dist, idx.astype(np.int64))
        return drop_excluded(dist, idx, ex_rows, ex_cols, 0, self._n, k_out)

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim


# ------------------------------------------------------------------------------------------ IVF-PQ
def ivf_of(index: Any) -> Any:
    faiss = import_faiss()
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:  # not an IVF index (e.g. HNSW from a custom factory)
        return None


class AnnSearcher(Searcher):
    """A trained faiss index (from :func:`zscir.index.ann.build_ann`) + exact re-rank from the stored vectors.

    ``search`` asks faiss for ``k_factor × k`` candidates (PQ scores), fetches their rows from
    ``embeddings`` (the store's memory map) and returns the best ``k`` by exact inner product, ordered
    like :func:`~zscir.index.search.exact_topk` (ties by lower index, ``-1``/``-inf`` padding); with
    ``rerank="none"`` the PQ scores are returned as they are. ``exclude`` works as for exact search.
    Thread-safe: faiss searches of a built index only read it.
    """

    name = "ann"

    def __init__(self, index: Any, embeddings: ArrayLike | None = None, *, nprobe: int = 64, k_factor: int = 16,
                 rerank: str = "store") -> None:
        faiss = import_faiss()
        if isinstance(index, (str, os.PathLike)):
            index = faiss.read_index(os.fspath(index))
        if rerank not in RERANK_MODES:
            raise ValueError(f"rerank must be one of {RERANK_MODES}, got {rerank!r}")
        self._index = index
        self._n, self._dim = int(index.ntotal), int(index.d)
        self.rerank, self.k_factor = rerank, max(1, int(k_factor))
        self._emb = embeddings
        if rerank == "store":
            if embeddings is None or tuple(embeddings.shape) != (self._n, self._dim):
                raise ValueError(f"rerank='store' needs the ({self._n}, {self._dim}) gallery the index was built "
                                 f"from, got {None if embeddings is None else tuple(embeddings.shape)}")
            if isinstance(embeddings, torch.Tensor):
                self._emb = embeddings.detach().cpu().numpy()
        ivf = ivf_of(index)
        self.nprobe = min(check_nprobe(nprobe), int(ivf.nlist)) if ivf is not None else None
        if ivf is not None:
            ivf.nprobe = self.nprobe
        if "Refine" in type(index).__name__:  # a custom factory with faiss' own in-RAM refine (",RFlat")
            faiss.ParameterSpace().set_index_parameter(index, "k_factor_rf", float(self.k_factor))

    def search(self, queries: ArrayLike, k: int, exclude: ExcludeLike = None) -> tuple[np.ndarray, np.ndarray]:
        q, k_out, ex_rows, ex_cols, n_ex_max = _prepare(queries, k, exclude, self._dim, self._n)
        n_q = q.shape[0]
        if n_q == 0 or k_out == 0:
            return np.zeros((n_q, k_out), np.float32), np.zeros((n_q, k_out), np.int64)
        k_want = min(self._n, k + n_ex_max)
        k_short = min(self._n, k_want * self.k_factor) if self.rerank == "store" else k_want
        dist, idx = self._index.search(q, k_short)
        idx = idx.astype(np.int64)
        if idx.size and int(idx.max()) >= self._n:  # ids come from a file: a corrupt one must not index past N
            raise ValueError(f"the ANN index returned row {int(idx.max())} of a {self._n}-item gallery (its "
                             f"file is corrupt); rebuild it with `zscir index ann --rebuild`")
        if self.rerank == "store":
            dist = self._exact_scores(q, idx)
        dist, idx = _sort_best_first(dist, idx)
        return drop_excluded(dist, idx, ex_rows, ex_cols, 0, self._n, k_out)

    def _exact_scores(self, q: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Exact inner products of each query with its candidate rows, read from the stored gallery.

        One query at a time (measured fastest: a batched gather + einsum/bmm over all shortlists was 2-4x
        slower), rows read in ascending order so a memory map on disk is read forwards; fp16 rows are
        upcast by torch, whose conversion is ~5x faster than numpy's.
        """
        out = np.full(idx.shape, -np.inf, np.float32)
        half = self._emb.dtype != np.float32
        qt = torch.from_numpy(q)
        for i in range(idx.shape[0]):
            ok = idx[i] >= 0
            rows = idx[i][ok]
            if rows.size == 0:
                continue
            order = np.argsort(rows, kind="stable")
            g = self._emb[rows[order]]
            if half:
                s = (torch.from_numpy(np.ascontiguousarray(g)).float() @ qt[i]).numpy()
            else:
                s = np.asarray(g, dtype=np.float32) @ q[i]
            sc = np.empty_like(s)
            sc[order] = s
            out[i, ok] = sc
        return out

    def __len__(self) -> int:
        return self._n

    @property
    def dim(self) -> int:
        return self._dim

    def __repr__(self) -> str:
        return (f"AnnSearcher(n={self._n}, dim={self._dim}, nprobe={self.nprobe}, k_factor={self.k_factor}, "
                f"rerank={self.rerank!r})")
