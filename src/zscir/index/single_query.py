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
BLAS ``sgemm`` of one query row computes gallery rows four at a time with one summation order and the
remainder columns of a call (its last ``n mod 4`` rows; with several threads, the end of each thread's
share) with another. :func:`chunk_layout` learns which rows of a chunk are remainders, and a candidate
is re-scored with the four-column kernel or together with exactly its remainder run. That this
reproduces the plain path's scores is a property of the BLAS build, so it is **checked once per
process** (:func:`fast_path_holds`: every row of a random gallery, the current thread count) together
with the bf16 error bound; where either check fails the fast path switches itself off and every query
takes the plain path. The tests compare both paths on random, fp16, bf16,
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


def _group_scores(q32: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Scores of ``rows`` (a multiple of :data:`SGEMM_GROUP` fp32 rows) with the four-column kernel only.

    One product when BLAS runs single-threaded; one product per four rows otherwise, because a threaded
    product splits its columns among threads and each part may end in remainder columns.
    """
    if torch.get_num_threads() == 1:
        return torch.mm(q32, rows.T)[0]
    return torch.cat([torch.mm(q32, rows[i:i + SGEMM_GROUP].T)[0] for i in range(0, rows.shape[0], SGEMM_GROUP)])


def _plain_chunk(q32: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """One chunk scored exactly as :func:`exact_topk` does (into a slice of a reused ``(1, chunk)`` buffer)."""
    buf = torch.empty((1, rows.shape[0]), dtype=torch.float32)
    return torch.mm(q32, rows.T, out=buf[:1, :rows.shape[0]])[0]


@functools.lru_cache(maxsize=None)
def chunk_layout(dim: int, length: int, threads: int) -> tuple[tuple[int, int], ...] | None:
    """Runs ``[a, b)`` of a ``length``-row chunk whose plain-path scores come from BLAS remainder code.

    Learned once per (d, chunk length, thread count) on random data: rows whose plain score differs from
    the four-column kernel's for any of 8 queries form the runs (one run of ``length mod 4`` rows at the
    end single-threaded; one per thread's share with several threads). The layout is then verified on
    every row with 4 fresh queries, re-scoring each run alone; ``None`` if that does not reproduce the
    plain path (the fast path is then off for such galleries).
    """
    g = torch.Generator().manual_seed(1000 + length)
    gal = torch.randn(length, dim, generator=g).half().float()
    pad = (-length) % SGEMM_GROUP
    padded = torch.cat([gal, gal[:pad]]) if pad else gal
    qs = torch.randn(12, 1, dim, generator=g)
    differ = torch.zeros(length, dtype=torch.bool)
    for q in qs[:8]:
        differ |= _plain_chunk(q, gal) != _group_scores(q, padded)[:length]
    pos = torch.nonzero(differ).flatten().tolist()
    runs: list[tuple[int, int]] = []
    for p in pos:
        if runs and runs[-1][1] == p:
            runs[-1] = (runs[-1][0], p + 1)
        else:
            runs.append((p, p + 1))
    for q in qs[8:]:
        emu = _group_scores(q, padded)[:length]
        for a, b in runs:
            emu[a:b] = torch.mm(q, gal[a:b].T)[0]
        if not torch.equal(emu, _plain_chunk(q, gal)):
            return None
    return tuple(runs)


def reference_scores(q32: torch.Tensor, g_t: torch.Tensor, idx: torch.Tensor, ref_chunk: int) -> torch.Tensor | None:
    """fp32 scores of gallery rows ``idx`` equal bit for bit to those of :func:`exact_topk`'s chunked products.

    ``q32``: ``(1, d)`` fp32 query; ``ref_chunk``: rows per product of the plain path
    (:func:`~zscir.index.search.score_chunk_rows`). A row in a remainder run of its chunk
    (:func:`chunk_layout`) is re-scored with exactly that run, any other row with the four-column
    kernel. ``None`` when the layout of a chunk cannot be reproduced.
    """
    n, dim = g_t.shape
    threads = torch.get_num_threads()
    out = torch.empty(idx.shape[0], dtype=torch.float32)
    body: list[int] = []
    runs_needed: dict[tuple[int, int], list[int]] = {}
    for i, j in enumerate(idx.tolist()):
        c0 = j - j % ref_chunk
        layout = chunk_layout(dim, min(ref_chunk, n - c0), threads)
        if layout is None:
            return None
        run = next(((c0 + a, c0 + b) for a, b in layout if a <= j - c0 < b), None)
        if run is None:
            body.append(i)
        else:
            runs_needed.setdefault(run, []).append(i)
    if body:
        sel = idx[body]
        pad = (-len(body)) % SGEMM_GROUP
        rows = g_t[torch.cat([sel, sel[:1].expand(pad)]) if pad else sel].float()
        out[body] = _group_scores(q32, rows)[:len(body)]
    for (a, b), members in runs_needed.items():
        s = torch.mm(q32, g_t[a:b].float().T)[0]
        out[members] = s[idx[members] - a]
    return out


def _plain_scores(q32: torch.Tensor, g_t: torch.Tensor, ref_chunk: int) -> torch.Tensor:
    """All ``N`` fp32 scores computed exactly as the plain path does (the self-check's reference)."""
    n = g_t.shape[0]
    return torch.cat([_plain_chunk(q32, g_t[c0:c0 + ref_chunk].float()) for c0 in range(0, n, ref_chunk)])


@functools.lru_cache(maxsize=None)
def fast_path_holds(dim: int, ref_chunk: int, threads: int) -> bool:
    """Whether, on this platform, :func:`reference_scores` reproduces the plain path and bf16 scores obey the bound.

    Checked on a random fp16 gallery of two chunks plus a remainder of 3 rows (every row compared, and
    small re-score calls as in real use), with ``threads`` torch threads (the cache key).
    """
    g = torch.Generator().manual_seed(0)
    n = 2 * ref_chunk + 3
    gal = torch.randn(n, dim, generator=g).half()
    q = torch.randn(1, dim, generator=g)
    ref = _plain_scores(q, gal, ref_chunk)
    emu = reference_scores(q, gal, torch.arange(n), ref_chunk)
    same = emu is not None and torch.equal(ref, emu)
    for size in (1, 7, DEFAULT_MARGIN + 10):  # small calls, as in real use (k + margin candidates)
        idx = torch.cat([torch.randperm(n, generator=g)[:size], torch.tensor([n - 1])])
        got = reference_scores(q, gal, idx, ref_chunk) if same else None
        same = got is not None and torch.equal(got, ref[idx])
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
        eps = error_factor(self.dim) * float(torch.linalg.vector_norm(q32)) * self.max_norm
        # more candidates when the certificate fails (many items within 2 eps of the cut): the bf16 scores
        # are reused, only the exact re-score grows; the plain path is the last resort
        for margin in (self.margin, 8 * self.margin, 64 * self.margin):
            m = min(self.n, k_fetch + margin)
            a_vals, cand = torch.topk(approx, m)  # NaN and +inf rank first, so they show up here
            if not (np.isfinite(eps) and bool(torch.isfinite(a_vals[:1]).all() or a_vals[0] < 0)):
                return None  # inf / NaN in the data: leave it to the plain path's conventions
            exact = reference_scores(q32, self.g_t, cand, self.ref_chunk)
            if exact is None:
                return None  # the last chunk's layout could not be reproduced: the plain path answers
            exact = torch.nan_to_num(exact, nan=float("-inf"))
            exact[torch.isin(cand, ex)] = float("-inf")
            cand, by_idx = torch.sort(cand)
            exact = exact[by_idx]
            order = torch.sort(exact, descending=True, stable=True).indices[:k_fetch]
            vals, pos = exact[order], cand[order]
            # every item left out scores <= (its bf16 score) + eps <= a + eps; certified if that is below T
            a, t = float(a_vals[-1]), float(vals[-1])
            if m == self.n or (np.isfinite(t) and a + eps < t):
                return vals.numpy(), pos.numpy()
            if not np.isfinite(t):
                return None
        return None
