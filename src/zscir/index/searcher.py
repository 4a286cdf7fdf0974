"""The :class:`Searcher` interface and the building blocks every searcher shares.

Why a module of its own: exact search (:mod:`zscir.index.search`), its bf16 pre-filter
(:mod:`zscir.index.prefilter`), the FAISS searchers (:mod:`zscir.index.faiss_search`) and the shard merge
(:mod:`zscir.index.shards`) all need the same input types, exclusion handling and page release. Kept in
:mod:`zscir.index.search` they made those modules import each other in a circle; here they have one owner
that imports none of them. See :mod:`zscir.index.search` for the conventions (shapes, ties, padding).
"""

from __future__ import annotations

import abc
import warnings
from typing import Any, Sequence, Union

import numpy as np
import torch

__all__ = ["ArrayLike", "ExcludeLike", "SCORE_BLOCK_BYTES", "COPY_CHUNK_BYTES", "Searcher", "as_tensor",
           "normalize_exclude", "drop_excluded", "release_pages"]

ArrayLike = Union[np.ndarray, torch.Tensor]
ExcludeLike = Union[None, np.ndarray, torch.Tensor, Sequence[Any]]

#: Upper bound (bytes) for one fp32 ``(query_block, chunk)`` score block; the
#: query block size is derived from it so ``Q x chunk`` never blows memory.
SCORE_BLOCK_BYTES = 256 * 1024 * 1024

#: Largest fp32 upcast of a half-precision gallery chunk on CPU (see :func:`exact_topk`).
COPY_CHUNK_BYTES = 8 * 1024 * 1024


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """View ``x`` as a torch tensor without copying or changing dtype."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype not in (np.float32, np.float16, np.float64):
            raise TypeError(f"{name}: expected a float array, got dtype {x.dtype}")
        with warnings.catch_warnings():
            # read-only memmaps: we never write through this view
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(x)
    else:
        raise TypeError(f"{name}: expected numpy.ndarray or torch.Tensor, got {type(x).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows, dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating point tensor, got {t.dtype}")
    return t


def normalize_exclude(exclude: ExcludeLike, n_queries: int, n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn ``exclude`` into sorted, de-duplicated ``(rows, cols)`` int64 pair arrays.

    Accepts a length-Q integer array (one index per query, ``-1`` = none) or a
    length-Q sequence whose elements are ``None``, an int, or a collection of
    ints.  ``-1`` entries are ignored; other out-of-range indices raise.
    """
    if isinstance(exclude, torch.Tensor):
        exclude = exclude.detach().cpu().numpy()
    if isinstance(exclude, np.ndarray) and exclude.dtype != object:
        if exclude.ndim != 1 or not np.issubdtype(exclude.dtype, np.integer):
            raise ValueError(
                f"exclude: expected a 1-D integer array of length {n_queries}, "
                f"got shape {exclude.shape} dtype {exclude.dtype}")
        if len(exclude) != n_queries:
            raise ValueError(f"exclude: expected length {n_queries} (one entry per query), got {len(exclude)}")
        rows = np.arange(n_queries, dtype=np.int64)
        cols = exclude.astype(np.int64)
    else:
        if len(exclude) != n_queries:  # type: ignore[arg-type]
            raise ValueError(f"exclude: expected length {n_queries} (one entry per query), got {len(exclude)}")  # type: ignore[arg-type]
        r_list: list[np.ndarray] = []
        c_list: list[np.ndarray] = []
        for q, item in enumerate(exclude):  # type: ignore[arg-type]
            if item is None:
                continue
            if isinstance(item, torch.Tensor):
                item = item.detach().cpu().numpy()
            arr = np.asarray(item if not np.isscalar(item) else [item]).reshape(-1)
            if arr.size == 0:
                continue
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"exclude[{q}]: expected integer gallery indices, got dtype {arr.dtype}")
            c_list.append(arr.astype(np.int64))
            r_list.append(np.full(arr.size, q, dtype=np.int64))
        rows = np.concatenate(r_list) if r_list else np.zeros(0, np.int64)
        cols = np.concatenate(c_list) if c_list else np.zeros(0, np.int64)
    keep = cols != -1
    rows, cols = rows[keep], cols[keep]
    bad = (cols < 0) | (cols >= n_gallery)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"exclude: gallery index {int(cols[i])} for query {int(rows[i])} is out of range "
            f"[0, {n_gallery}) (use -1 for 'nothing to exclude')")
    keys = np.unique(rows * max(n_gallery, 1) + cols)  # sorted by (row, col), deduplicated
    return keys // max(n_gallery, 1), keys % max(n_gallery, 1)


def drop_excluded(scores: np.ndarray, indices: np.ndarray, ex_rows: np.ndarray, ex_cols: np.ndarray,
                   row_offset: int, n_gallery: int, k_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove excluded (row, index) pairs from over-fetched results, compact, pad with -1/-inf.

    ``scores``/``indices`` are sorted best-first per row; removal keeps the
    relative order of the remaining entries, so the result is still exact.
    """
    qb, width = indices.shape
    if ex_rows.size:
        rows = np.arange(row_offset, row_offset + qb, dtype=np.int64)[:, None]
        keys = rows * max(n_gallery, 1) + np.where(indices < 0, 0, indices)
        is_ex = np.isin(keys, ex_rows * max(n_gallery, 1) + ex_cols) & (indices >= 0)
        if is_ex.any():
            order = np.argsort(is_ex, axis=1, kind="stable")  # kept entries first, order preserved
            scores = np.take_along_axis(scores, order, axis=1)
            indices = np.take_along_axis(indices, order, axis=1)
            n_keep = width - is_ex.sum(axis=1)
            pad = np.arange(width)[None, :] >= n_keep[:, None]
            scores = np.where(pad, np.float32(-np.inf), scores)
            indices = np.where(pad, np.int64(-1), indices)
    if width < k_out:  # not enough candidates at all (only when N is tiny)
        scores = np.concatenate([scores, np.full((qb, k_out - width), -np.inf, np.float32)], axis=1)
        indices = np.concatenate([indices, np.full((qb, k_out - width), -1, np.int64)], axis=1)
    return np.ascontiguousarray(scores[:, :k_out], dtype=np.float32), np.ascontiguousarray(indices[:, :k_out], dtype=np.int64)


def release_pages(gallery: Any, g0: int, g1: int) -> None:
    """Drop rows ``[g0, g1)`` of a memory-mapped gallery from this process's resident set.

    Why: a read-only ``np.memmap`` keeps every page it touched mapped, so one pass of exact search over a
    1M x 512 fp16 index leaves the whole 1 GB file resident (counted in RSS, though it is reclaimable page
    cache). ``MADV_DONTNEED`` on a shared read-only file mapping only unmaps the pages - the data stays in
    the page cache, so the next search is not slower - and keeps the peak RSS at one chunk. Only used on
    the copy path (fp16 / other device), where the chunk was already copied into the fp32 buffer.
    """
    mm = getattr(gallery, "_mmap", None)
    if (mm is None or not isinstance(gallery, np.memmap) or getattr(gallery, "mode", None) != "r"
            or not hasattr(mm, "madvise")):
        return  # only shared read-only maps: DONTNEED on a private (mode "c") map would drop edits
    import mmap

    try:
        # the view's byte offset in the mapping (``gallery.offset`` is stale for sliced memmaps)
        offset = gallery.ctypes.data - np.frombuffer(mm, np.uint8, count=1).ctypes.data
        base = offset + g0 * int(gallery.strides[0])
        end = offset + g1 * int(gallery.strides[0])
        start = base - base % mmap.PAGESIZE  # madvise needs a page-aligned start
        end -= end % mmap.PAGESIZE  # keep the partial last page (the next chunk uses it)
        if end > start and gallery.flags.c_contiguous:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
    except (OSError, ValueError, AttributeError):  # advisory only
        pass


# --------------------------------------------------------------------------- #
# searcher interface
# --------------------------------------------------------------------------- #
class Searcher(abc.ABC):
    """Common interface of gallery search backends.

    A searcher owns (a view of) the gallery embeddings and answers
    ``search(queries, k, exclude)`` with ``(scores, indices)`` numpy arrays with
    the same conventions as :func:`exact_topk` (shape ``(Q, min(k, N))``,
    best first, ``-1``/``-inf`` padding).  Evaluation and serving code depend
    only on this interface, so an approximate backend can be swapped in for
    very large galleries without touching them.
    """

    name: str = "abstract"

    @abc.abstractmethod
    def search(self, queries: ArrayLike, k: int, exclude: ExcludeLike = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores float32 (Q, k'), indices int64 (Q, k'))``."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of gallery items."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Embedding dimension."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, dim={self.dim})"


