"""Single-query exact top-k at the memory-bandwidth limit (``ExactSearcher(single_query="fast")``).

Why
---
``zscir serve`` / ``zscir search`` answer one query at a time, and one query against ``N x d`` gallery
rows is a matrix-vector product: its cost is reading the gallery once. The batched path of
:func:`~zscir.index.search.exact_topk` upcasts half-precision chunks to fp32 before its matrix product,
so an fp16 gallery cost *more* than an fp32 one (it reads half the bytes, then writes and reads an fp32
copy; docs/PERFORMANCE.md, table 1d). This module answers one query with the same result as that path,
reading each gallery byte once:

* **fp32 storage**: the very same matrix products as :func:`exact_topk` (same chunks, same BLAS calls, so
  the same scores bit for bit) written into one ``(N,)`` score vector, and one stable top-k selection at
  the end instead of a top-k + merge + sort per chunk.
* **half-precision storage** (fp16 / bf16): the gallery is scored by a bf16 matrix-vector product with
  fp32 accumulation, which reads 2 bytes per value and runs at the bandwidth limit on CPUs with bf16
  instructions (fp16 has no such fast kernel in torch on CPU: an fp16 gallery keeps a bf16 copy, made
  once, like an ANN index keeps its codes). Those scores are only approximate, so they are a
  **certified pre-filter**: keep the ``k' + margin`` best, re-score them exactly and accept the answer
  only if no item left out can beat the k'-th exact score (the bound of
  :func:`zscir.index.prefilter.error_factor`); otherwise the caller runs the plain path.

Exactness: identical ids *and* scores
-------------------------------------
The re-score reproduces the fp32 scores of :func:`exact_topk` bit for bit, not merely to rounding: the
BLAS ``sgemm`` of one query row computes gallery rows in groups of four with one summation order and
the remainder of a call (its last ``n mod 4`` rows) with another, so a candidate is re-scored together
with the same group of four rows it had in the plain path's chunk (or with the same remainder rows).
That this reproduces the plain path's scores is a property of the BLAS build, so it is **checked once
per process** (:func:`fast_path_holds`: every row of a random gallery, both chunk kinds, the current
thread count) together with the bf16 error bound; where either check fails the fast path switches
itself off and every query takes the plain path. The tests compare both paths on random, fp16, bf16,
unnormalised, excluded-id, tied and near-duplicate data.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np
import torch

from zscir.index.prefilter import error_factor
from zscir.index.searcher import as_tensor

logger = logging.getLogger(__name__)

#: candidates kept beyond k' (more = fewer uncertified queries, negligible cost at one query)
DEFAULT_MARGIN = 64
#: rows the fp32 ``sgemm`` of one query row computes with one summation order (see the module docstring)
SGEMM_GROUP = 4
#: rows per block when making the bf16 copy of a gallery (8 MB of fp32 at d = 512)
COPY_ROWS = 4096


def reference_scores(q32: torch.Tensor, g_t: torch.Tensor, idx: torch.Tensor, ref_chunk: int) -> torch.Tensor:
    """fp32 scores of gallery rows ``idx`` equal bit for bit to those of :func:`exact_topk`'s chunked products.

    ``q32``: ``(1, d)`` fp32 query; ``ref_chunk``: rows per product of the plain path
    (:func:`~zscir.index.search.score_chunk_rows`). Each row is scored in a product over the same group
    of :data:`SGEMM_GROUP` rows it belongs to in its chunk, or over its chunk's remainder rows.
    """
    n = g_t.shape[0]
    j = idx.to(torch.int64)
    c0 = j - j % ref_chunk
    c1 = torch.clamp(c0 + ref_chunk, max=n)
    body_end = c0 + (c1 - c0) // SGEMM_GROUP * SGEMM_GROUP
    out = torch.empty(j.shape[0], dtype=torch.float32)
    in_body = j < body_end
    if bool(in_body.any()):
        jb = j[in_body]
        starts = torch.unique(c0[in_body] + (jb - c0[in_body]) // SGEMM_GROUP * SGEMM_GROUP)
        rows = (starts[:, None] + torch.arange(SGEMM_GROUP)[None, :]).reshape(-1)
        s = torch.mm(q32, g_t[rows].float().T)[0]
        pos = torch.searchsorted(starts, jb - (jb - c0[in_body]) % SGEMM_GROUP) * SGEMM_GROUP
        out[in_body] = s[pos + (jb - c0[in_body]) % SGEMM_GROUP]
    tail = ~in_body
    for b in torch.unique(body_end[tail]).tolist():  # remainder rows of a chunk (at most 3 per chunk)
        sel = tail & (body_end == b)
        s = torch.mm(q32, g_t[b:int(c1[sel][0])].float().T)[0]
        out[sel] = s[j[sel] - b]
    return out


def _plain_scores(q32: torch.Tensor, g_t: torch.Tensor, ref_chunk: int) -> torch.Tensor:
    """All ``N`` fp32 scores computed exactly as the plain path does (the self-check's reference)."""
    n = g_t.shape[0]
    out = torch.empty(n, dtype=torch.float32)
    buf = torch.empty((1, min(ref_chunk, n)), dtype=torch.float32)
    for c0 in range(0, n, ref_chunk):
        c1 = min(n, c0 + ref_chunk)
        out[c0:c1] = torch.mm(q32, g_t[c0:c1].float().T, out=buf[:1, :c1 - c0])[0]
    return out


@functools.lru_cache(maxsize=None)
def fast_path_holds(dim: int, ref_chunk: int, threads: int) -> bool:
    """Whether, on this platform, :func:`reference_scores` reproduces the plain path and bf16 scores obey the bound.

    Checked on a random fp16 gallery of two chunks plus a remainder of 3 rows (every row compared), with
    ``threads`` torch threads (the cache key: BLAS may split work differently with more threads).
    """
    g = torch.Generator().manual_seed(0)
    n = 2 * ref_chunk + 3
    gal = torch.randn(n, dim, generator=g).half()
    q = torch.randn(1, dim, generator=g)
    ref = _plain_scores(q, gal, ref_chunk)
    emu = reference_scores(q, gal, torch.arange(n), ref_chunk)
    same = torch.equal(ref, emu)
    for size in (1, 7, DEFAULT_MARGIN + 10):  # small calls, as in real use (k + margin candidates)
        idx = torch.cat([torch.randperm(n, generator=g)[:size], torch.tensor([n - 1])])
        same = same and torch.equal(reference_scores(q, gal, idx, ref_chunk), ref[idx])
    approx = torch.mv(gal.bfloat16(), q[0].bfloat16()).float()
    norms = torch.linalg.vector_norm(gal.float(), dim=1)
    bound = 0.5 * error_factor(dim) * float(torch.linalg.vector_norm(q)) * norms
    in_bound = bool(((approx - ref).abs() <= bound).all())
    if not (same and in_bound):
        logger.warning("single-query fast path off at d=%d (exact re-score reproduces the plain path: %s; "
                       "bf16 scores within the bound: %s)", dim, same, in_bound)
    return same and in_bound


def stable_topk(scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``m`` best of a 1-D score vector, best first, ties by lower index (NaN counts as ``-inf``)."""
    n = scores.shape[0]
    m1 = min(m + 1, n)
    vals, pos = torch.topk(scores, m1)
    if bool(vals.isnan().any()):
        scores = torch.nan_to_num(scores, nan=float("-inf"))
        vals, pos = torch.topk(scores, m1)
    if m1 > m and bool(vals[m - 1] == vals[m]):  # a tie at the cut: take every tied item, then cut
        pos = torch.nonzero(scores >= vals[m - 1]).flatten()
    pos = torch.sort(pos).values
    v = scores[pos]
    order = torch.sort(v, descending=True, stable=True).indices[:m]
    return v[order], pos[order]


class SingleQueryKernel:
    """One gallery prepared for single-query search (the bf16 copy and the largest row norm, made once).

    ``gallery``: ``(N, d)`` fp32 / fp16 numpy array (memory maps included) or fp32 / fp16 / bf16 tensor on
    CPU; ``ref_chunk``: rows per product of the plain path for this gallery
    (:func:`~zscir.index.search.score_chunk_rows`). Memory: none for fp32 and bf16 galleries, ``N x d x 2``
    bytes (the bf16 copy) for fp16 ones.
    """

    def __init__(self, gallery: Any, ref_chunk: int, margin: int = DEFAULT_MARGIN):
        self.g_t = as_tensor(gallery, "gallery")
        if self.g_t.ndim != 2 or self.g_t.device.type != "cpu":
            raise ValueError("SingleQueryKernel: expected a 2-D CPU gallery")
        self.n, self.dim = int(self.g_t.shape[0]), int(self.g_t.shape[1])
        self.ref_chunk = int(ref_chunk)
        self.margin = int(margin)
        self.dtype = self.g_t.dtype
        self.bf16: torch.Tensor | None = None
        self.max_norm = 0.0
        if self.dtype in (torch.float16, torch.bfloat16):
            self.bf16 = self.g_t.contiguous() if self.dtype == torch.bfloat16 else torch.empty(
                (self.n, self.dim), dtype=torch.bfloat16)
            for i in range(0, self.n, COPY_ROWS):
                src = self.g_t[i:i + COPY_ROWS]
                if self.dtype == torch.float16:
                    self.bf16[i:i + len(src)].copy_(src)
                # the bound needs the norm of the stored rows, in fp32
                self.max_norm = max(self.max_norm, float(torch.linalg.vector_norm(src.float(), dim=1).max()))
        elif self.dtype != torch.float32:
            raise ValueError(f"SingleQueryKernel: unsupported gallery dtype {self.dtype}")

    @property
    def available(self) -> bool:
        """False where the platform check failed (the caller then uses the plain path)."""
        if self.bf16 is None:
            return True  # fp32: the plain path's own products, nothing to check
        return fast_path_holds(self.dim, self.ref_chunk, torch.get_num_threads())

    def topk(self, query: Any, k_fetch: int, ex_cols: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``k_fetch`` best items for one query, as the plain path ranks them before dropping ``ex_cols``.

        Returns ``(scores float32, indices int64)`` of length ``k_fetch`` (excluded items score ``-inf``),
        or ``None`` when the half-precision pre-filter could not certify the answer.
        """
        q32 = as_tensor(query, "query").reshape(1, -1).to(torch.float32)
        ex = torch.from_numpy(np.asarray(ex_cols, dtype=np.int64))
        with torch.no_grad():
            if self.bf16 is None:
                return self._fp32_topk(q32, k_fetch, ex)
            return self._certified_topk(q32, k_fetch, ex)

    def _fp32_topk(self, q32: torch.Tensor, k_fetch: int, ex: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        scores = torch.empty(self.n, dtype=torch.float32)
        for c0 in range(0, self.n, self.ref_chunk):
            c1 = min(self.n, c0 + self.ref_chunk)
            torch.mm(q32, self.g_t[c0:c1].T, out=scores[c0:c1].view(1, -1))
        scores[ex] = float("-inf")
        vals, pos = stable_topk(scores, k_fetch)
        return vals.numpy(), pos.numpy()

    def _certified_topk(self, q32: torch.Tensor, k_fetch: int,
                        ex: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
        assert self.bf16 is not None
        approx = torch.mv(self.bf16, q32[0].bfloat16()).float()
        approx[ex] = float("-inf")
        m = min(self.n, k_fetch + self.margin)
        a_vals, cand = torch.topk(approx, m)  # NaN and +inf rank first, so they show up here
        if not (np.isfinite(self.max_norm) and bool(torch.isfinite(a_vals[:1]).all() or a_vals[0] < 0)):
            return None  # inf / NaN in the data: leave it to the plain path's conventions
        exact = reference_scores(q32, self.g_t, cand, self.ref_chunk)
        exact = torch.nan_to_num(exact, nan=float("-inf"))
        exact[torch.isin(cand, ex)] = float("-inf")
        cand, by_idx = torch.sort(cand)
        exact = exact[by_idx]
        order = torch.sort(exact, descending=True, stable=True).indices[:k_fetch]
        vals, pos = exact[order], cand[order]
        if m < self.n:
            # every item left out scores <= (its bf16 score) + eps <= a + eps; certified if that is below T
            eps = error_factor(self.dim) * float(torch.linalg.vector_norm(q32)) * self.max_norm
            a, t = float(a_vals[-1]), float(vals[-1])
            if not (np.isfinite(eps) and np.isfinite(t) and a + eps < t):
                return None
        return vals.numpy(), pos.numpy()
