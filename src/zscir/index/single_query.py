"""Single-query exact search through FAISS (``ExactSearcher(single_query="fast")``, what serving uses).

Why
---
``zscir serve`` / ``zscir search`` answer one query at a time, and one query against ``N x d`` gallery
rows is a matrix-vector product: its cost is reading the gallery once. FAISS's scans do that at the
memory roof on the project's CPUs (docs/PERFORMANCE.md, table 1d: on an AMD EPYC with AVX512-BF16 and a
32 MiB L3, 100K x 512, 1 thread, ``IndexFlatIP`` answered in 0.99 x the stream time and the fp16 scalar
quantizer in 1.10 x, while the hand-written kernel this module used to hold took 2.1-4.3 x). That kernel
reproduced the batched path's scores bit for bit by learning one BLAS build's row grouping at run time,
which held on the CPU it was written on and not on others; it was retired. FAISS is kept
up by its own project; zscir only chooses the index and keeps the search API's conventions.

What answers
------------
* **fp32 storage**: ``faiss.knn`` with the inner-product metric (the scan behind ``IndexFlatIP.search``)
  straight on the stored array or memory map: no copy of the gallery.
* **fp16 / bf16 storage**: ``IndexScalarQuantizer`` with ``QT_fp16`` / ``QT_bf16`` (bf16 where the installed
  faiss has it). Encoding a value that is already fp16 / bf16 is exact (checked by the tests), and the scan
  decodes every code to fp32 and accumulates in fp32, so the scores are inner products of the *stored*
  values, like the batched path's. The index holds the codes (``N x d x 2`` bytes, the gallery's own
  size): the stored bits, copied in once per gallery, block by block, on the first single query (no fp32
  copy; :meth:`SingleQueryIndex._fill`).
* Anything else (faiss not installed, bf16 storage without ``QT_bf16``, fp64 storage, another device):
  no index; :class:`~zscir.index.search.ExactSearcher` answers with the batched torch path
  (:func:`~zscir.index.search.exact_topk`), which is exact but reads half-precision galleries more slowly.

Tolerance against the batched path
----------------------------------
Both paths compute fp32 inner products of the same fp32 query and the same stored values; only the
summation order differs. Each result is within ``gamma_d * sum_i |q_i g_i| <= gamma_d * ||q|| * ||g||`` of
the exact value (``gamma_d = d u / (1 - d u)``, ``u = 2^-24``), so with
``tol = score_tolerance(d, ||q||, max ||g||) = 2 gamma_d ||q|| max||g||``:

* at every rank r the two paths' scores differ by at most ``tol``;
* at every rank the ids are equal, except where the two ids' exact scores are within ``2 tol`` of each
  other (a tie within float rounding, which either order may break); an id returned by one path and not
  the other likewise scores within ``2 tol`` of the last returned score;
* exclusion, ``k > N`` and ``-1`` / ``-inf`` padding are those of the batched path (shared code). Equal
  computed scores are ordered by lower index. Non-finite scores (NaN / inf in the data or the query) are
  left to the batched path and its conventions (NaN ranks as ``-inf``).

``tests/test_single_query.py`` checks these properties against float64 scores on random galleries.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from zscir.index.searcher import as_tensor, release_pages

logger = logging.getLogger(__name__)

__all__ = ["SingleQueryIndex", "make_single_query_index", "score_tolerance", "UNIT_ROUNDOFF"]

#: unit roundoff of fp32 (round to nearest)
UNIT_ROUNDOFF = 2.0 ** -24
#: rows per block when a half-precision gallery is encoded (8 MB of fp32 at d=512) or its code layout checked
ENCODE_ROWS = 4096


def score_tolerance(dim: int, query_norm: float, gallery_norm: float) -> float:
    """Largest difference between the single-query and the batched scores of one item (module docstring).

    ``2 gamma_d ||q|| ||g||`` with ``gamma_d = d u / (1 - d u)``: each path's fp32 dot product is within
    ``gamma_d`` times the sum of ``|q_i g_i|`` of the exact value whatever its summation order.
    """
    du = dim * UNIT_ROUNDOFF
    return 2.0 * du / (1.0 - du) * float(query_norm) * float(gallery_norm)


class SingleQueryIndex:
    """One stored gallery prepared for one-query FAISS search (made once, by :func:`make_single_query_index`).

    ``kind``: ``"flat"`` (fp32 storage, scanned in place), ``"sq-fp16"`` or ``"sq-bf16"`` (a scalar-quantizer
    index holding the stored half-precision values). Thread-safe: searches only read the index.
    """

    def __init__(self, faiss: Any, gallery: Any, kind: str) -> None:
        self._faiss = faiss
        g_t = as_tensor(gallery, "gallery")
        self.n, self.dim = int(g_t.shape[0]), int(g_t.shape[1])
        self.kind = kind
        self._xb: np.ndarray | None = None
        self._index: Any = None
        self._copied = 0
        if kind == "flat":
            arr = gallery if isinstance(gallery, np.ndarray) else g_t.numpy()
            # the stored array itself (a memory map stays one); only a strided view is copied, once
            self._xb = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
            self._copied = 0 if self._xb is arr else int(self._xb.nbytes)
        elif kind in ("sq-fp16", "sq-bf16"):
            qt = faiss.ScalarQuantizer.QT_fp16 if kind == "sq-fp16" else faiss.ScalarQuantizer.QT_bf16
            self._index = faiss.IndexScalarQuantizer(self.dim, qt, faiss.METRIC_INNER_PRODUCT)
            self._fill(gallery, g_t)
        else:
            raise ValueError(f"SingleQueryIndex: unknown kind {kind!r}")

    def _fill(self, gallery: Any, g_t: torch.Tensor) -> None:
        """Put the stored half-precision rows into the scalar-quantizer index; never an fp32 copy of the gallery.

        A stored fp16 / bf16 value's bits are its ``QT_fp16`` / ``QT_bf16`` code, so the rows are handed over
        as codes (``add_sa_codes``: one copy, in one call for a contiguous gallery; 0.13-0.15 s at 100K x 512
        against 0.3 s in 4096-row blocks and 0.7-0.95 s encoding fp32 blocks, measured under load). That the
        codes decode to the stored values is checked on the first block; where it fails (a faiss build with
        another code layout) or ``add_sa_codes`` is missing, fp32 blocks are encoded instead, exact too.
        """
        head = g_t[:ENCODE_ROWS].contiguous()
        if hasattr(self._index, "add_sa_codes"):
            self._index.add_sa_codes(head.view(torch.int16).numpy().view(np.uint8))
            if np.array_equal(self._index.reconstruct_n(0, len(head)), head.float().numpy(), equal_nan=True):
                rest = g_t[len(head):]
                blocks = [rest] if rest.is_contiguous() else [rest[i:i + ENCODE_ROWS].contiguous()
                                                             for i in range(0, len(rest), ENCODE_ROWS)]
                for block in blocks:
                    if len(block):
                        self._index.add_sa_codes(block.view(torch.int16).numpy().view(np.uint8))
                release_pages(gallery, 0, self.n)
                return
            logger.info("faiss %s codes are not the stored bits here: encoding the gallery instead", self.kind)
            self._index.reset()
        for g0 in range(0, self.n, ENCODE_ROWS):
            g1 = min(self.n, g0 + ENCODE_ROWS)
            self._index.add(np.ascontiguousarray(g_t[g0:g1].float().numpy()))
            release_pages(gallery, g0, g1)

    @property
    def nbytes(self) -> int:
        """Memory this index holds beyond the stored gallery (the codes of a scalar-quantizer index)."""
        if self._index is not None:
            return int(self._index.code_size) * self.n
        return self._copied

    def topk(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``k`` (<= N) best items for one fp32 query ``(1, d)``: ``(scores, ids)``, best first, ties by lower id.

        ``None`` when FAISS returned a non-finite score or fewer than ``k`` items (NaN / inf in the data or
        the query): the caller then uses the batched path, whose conventions cover those.
        """
        faiss = self._faiss
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        # One query is scanned by one thread. The scalar-quantizer search still starts an OpenMP team of
        # omp_get_max_threads() threads for it, which was 4x slower on 2 shared cores (measured: 32-40 ms
        # vs 8 ms at 100K x 512); the setting is per calling thread and restored.
        prev = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            if self._xb is not None:
                dist, ids = faiss.knn(q, self._xb, k, faiss.METRIC_INNER_PRODUCT)
            else:
                dist, ids = self._index.search(q, k)
        finally:
            faiss.omp_set_num_threads(prev)
        dist, ids = dist[0].astype(np.float32, copy=False), ids[0].astype(np.int64, copy=False)
        if not bool(np.isfinite(dist).all()) or bool((ids < 0).any()):
            return None
        order = np.lexsort((ids, -dist))  # FAISS's heap order is by score only: ties by lower id, as exact_topk
        return dist[order], ids[order]


def _import_faiss() -> Any:
    from zscir.index.faiss_search import import_faiss  # optional dependency: imported on use

    return import_faiss()


def make_single_query_index(gallery: Any, device: Any = None) -> SingleQueryIndex | None:
    """The FAISS index that answers single queries over ``gallery``, or ``None`` (the batched path answers).

    ``None`` when faiss is not installed, the gallery is not on the CPU (or ``device`` is not the CPU), or
    its storage has no exact FAISS counterpart (fp64; bf16 without ``QT_bf16``). The reason is logged once
    per gallery at INFO.
    """
    g_t = as_tensor(gallery, "gallery")
    if g_t.device.type != "cpu" or (device is not None and torch.device(device).type != "cpu"):
        return None
    try:
        faiss = _import_faiss()
    except ImportError:
        from zscir.extras import install_hint

        logger.info("faiss is not installed: single queries use the batched torch path (%s for the faster one)",
                    install_hint("faiss"))
        return None
    kind = {torch.float32: "flat", torch.float16: "sq-fp16", torch.bfloat16: "sq-bf16"}.get(g_t.dtype)
    if kind == "sq-bf16" and not hasattr(faiss.ScalarQuantizer, "QT_bf16"):
        logger.info("this faiss has no bf16 scalar quantizer: single queries over a bf16 gallery use the "
                    "batched torch path")
        return None
    if kind is None:
        logger.info("no exact FAISS index for %s storage: single queries use the batched torch path", g_t.dtype)
        return None
    return SingleQueryIndex(faiss, gallery, kind)
