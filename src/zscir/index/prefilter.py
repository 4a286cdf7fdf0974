"""Exact top-k with a bfloat16 pre-filter and a certified exact re-rank (``exact_topk(..., prefilter="bf16")``).

Why
---
Batched exact search is one big fp32 GEMM (docs/PERFORMANCE.md, table 1). On CPUs with bf16 dot-product
instructions (AVX512-BF16, AMX) a bf16 GEMM runs 4-5x faster than fp32 (measured on this project's
machine: 48 vs 253 ms for 256 x 65,536 x 512). bf16 keeps only 8 mantissa bits, so its scores cannot
rank a gallery by themselves, but their error has a hard bound, which makes them an *exact* pre-filter:

* with both operands rounded to bf16 (8 significant bits: relative error <= u = 2^-8 each), products
  and fp32 accumulation over ``d`` terms, and the result rounded to nearest bf16 (<= 2^-8 again; torch
  and oneDNN round to nearest even), every approximate score obeys
  ``|s~ - s| <= eps = c(d) * ||q|| * ||g||``, ``c(d) = 1.25 * (3 * 2^-8 + d * 2^-24 + 2^-16)``
  (25 % slack for the second-order terms; 0.0147 for d = 512 and unit vectors). An earlier version took
  u = 2^-9 (0.0098), which a constructed input exceeds (``tests/test_single_query.py``);
* keep the ``m = k' + margin`` best items per query by approximate score, re-score them exactly in fp32,
  and let ``T`` be the k'-th best exact score among them and ``a`` the lowest approximate score kept.
  Every item left out has ``s <= s~ + eps <= a + eps``; if ``a + eps < T`` none of them can enter the
  top k' — the result is the exact top-k' (**certified**). Queries whose certificate fails (many items
  within ``2 eps`` of the cut, e.g. near-duplicates) are searched again with the plain fp32 path, so the
  answer is always exact.

What "exact" means here: the returned *set and order* are those of the fp32 scores computed by the
re-rank (a small batched dot product). Its summation order differs from the big GEMM's, so scores can
differ from the plain path in the last bit and two items whose fp32 scores tie to within ~1e-7 may come
out in the other order. That is why the plain path (bit-reproducible, the one evaluation uses) stays the
default and this one is opt-in (``zscir.index.search.exact_topk(..., prefilter="bf16")``,
``ExactSearcher(prefilter="bf16", cache=True)``, which keeps a :class:`Bf16Gallery` copy instead of
converting the gallery on every search).

The bound is checked once per process on random data (:func:`bf16_bound_holds`); where the platform's
bf16 GEMM does not meet it (e.g. an implementation accumulating in bf16), the pre-filter switches itself
off with a warning and the plain path is used.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import numpy as np
import torch

from zscir.index.searcher import COPY_CHUNK_BYTES, SCORE_BLOCK_BYTES, as_tensor, drop_excluded, release_pages

logger = logging.getLogger(__name__)

#: candidates kept per query beyond k' (the certificate fails more often with fewer)
DEFAULT_MARGIN = 32
#: below this many queries the GEMM is memory-bound and bf16 does not pay (the fp32 path is used)
MIN_QUERIES = 16


def error_factor(dim: int) -> float:
    """``c(d)``: the bound on ``|bf16 score - fp32 score|`` per unit of ``||q|| * ||g||``."""
    return 1.25 * (3 * 2.0 ** -8 + dim * 2.0 ** -24 + 2.0 ** -16)


@functools.lru_cache(maxsize=None)
def bf16_bound_holds(dim: int, device: str = "cpu") -> bool:
    """Whether this platform's bf16 GEMM stays within half of :func:`error_factor` on random unit data."""
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(64, dim, generator=g), dim=1).to(device)
    x = torch.nn.functional.normalize(torch.randn(4096, dim, generator=g), dim=1).to(device)
    exact = q @ x.T
    approx = (q.bfloat16() @ x.bfloat16().T).float()
    err = float((approx - exact).abs().max())
    ok = err <= 0.5 * error_factor(dim)
    if not ok:
        logger.warning("bf16 GEMM error %.3g exceeds the bound %.3g at d=%d: the bf16 pre-filter is off",
                       err, 0.5 * error_factor(dim), dim)
    return ok


class Bf16Gallery:
    """A bf16 copy of a gallery and the largest row norm of the original, made once.

    Why: converting the gallery costs as much as the bf16 GEMM itself (fp16 → bf16 especially), so a
    searcher that answers many query batches (``ExactSearcher(prefilter="bf16", cache=True)``) keeps the
    copy, like an ANN index keeps its codes. Memory: ``N × d × 2`` bytes more (half of an fp32 gallery,
    as much as an fp16 one).
    """

    def __init__(self, gallery: Any, device: str | torch.device = "cpu", rows_per_copy: int = 4096):
        g_t = as_tensor(gallery, "gallery")
        self.data = torch.empty(g_t.shape, dtype=torch.bfloat16, device=device)
        norm = 0.0
        for i in range(0, g_t.shape[0], rows_per_copy):
            src = g_t[i:i + rows_per_copy].to(device)
            self.data[i:i + len(src)].copy_(src)
            norm = max(norm, float(torch.linalg.vector_norm(src.float(), dim=1).max()))
        self.max_norm = norm

    def __len__(self) -> int:
        return int(self.data.shape[0])


def bf16_topk(q_t: torch.Tensor, g_t: torch.Tensor, gallery: Any, k_fetch: int, chunk: int,
              dev: torch.device, ex_rows: np.ndarray, ex_cols: np.ndarray,
              margin: int = DEFAULT_MARGIN, cached: Bf16Gallery | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Candidates ``(scores, indices)`` of shape ``(Q, k_fetch)`` for every query, best first (ties by index),
    and a boolean mask of the queries whose certificate failed (their rows are to be recomputed).

    ``q_t``/``g_t``: tensors as :func:`~zscir.index.search.exact_topk` sees them (``gallery`` is the
    original object, for page release of memory maps); excluded (row, col) pairs never become candidates.
    """
    n_q, dim = q_t.shape
    n_g = g_t.shape[0]
    m = min(n_g, k_fetch + margin)
    eps_unit = error_factor(dim)
    q32 = q_t.to(device=dev, dtype=torch.float32)
    q_bf = q32.bfloat16()
    q_norm = torch.linalg.vector_norm(q32, dim=1)
    # bf16 pieces of <= 8 MB per copy, as in exact_topk (large temporaries are fresh mmaps on CPU)
    piece = max(1, COPY_CHUNK_BYTES // (4 * dim))
    g_buf = torch.empty((chunk if cached is None else 0, dim), dtype=torch.bfloat16, device=dev)
    s_buf = torch.empty((n_q, chunk), dtype=torch.bfloat16, device=dev)
    run_s = torch.empty((n_q, 0), dtype=torch.float32, device=dev)
    run_i = torch.empty((n_q, 0), dtype=torch.int64, device=dev)
    g_norm_max = 0.0
    neg_inf = float("-inf")
    with torch.no_grad():
        for g0 in range(0, n_g, chunk):
            g1 = min(n_g, g0 + chunk)
            if cached is not None:
                gb = cached.data[g0:g1]
                g_norm_max = cached.max_norm
            else:
                gb = g_buf[:g1 - g0]
                for p0 in range(g0, g1, piece):
                    p1 = min(g1, p0 + piece)
                    src = g_t[p0:p1].to(dev)
                    gb[p0 - g0:p1 - g0].copy_(src)
                    # ||g|| of the original rows, in fp32 (the bound needs the true norm)
                    g_norm_max = max(g_norm_max, float(torch.linalg.vector_norm(src.float(), dim=1).max()))
                release_pages(gallery, g0, g1)
            s = torch.mm(q_bf, gb.T, out=s_buf[:, :g1 - g0])
            if ex_rows.size:
                sel = (ex_cols >= g0) & (ex_cols < g1)
                if sel.any():
                    s[torch.from_numpy(ex_rows[sel]).to(dev), torch.from_numpy(ex_cols[sel] - g0).to(dev)] = neg_inf
            vals, pos = torch.topk(s, min(m, g1 - g0), dim=1)
            if vals.isnan().any():  # topk ranks NaN first, so any NaN shows up here
                torch.nan_to_num_(s, nan=neg_inf)
                vals, pos = torch.topk(s, min(m, g1 - g0), dim=1)
            cat_s = torch.cat([run_s, vals.float()], dim=1)
            cat_i = torch.cat([run_i, pos + g0], dim=1)
            top_s, order = torch.topk(cat_s, min(m, cat_s.shape[1]), dim=1)
            run_s, run_i = top_s, torch.gather(cat_i, 1, order)
        # exact fp32 re-rank of the candidates
        cand = run_i.clamp_min(0)
        rows = _gather_rows(g_t, gallery, cand.cpu().numpy()).to(dev)  # (Q, m, d) fp32
        exact = torch.einsum("qd,qmd->qm", q32, rows)
        exact = torch.where(torch.isinf(run_s) & (run_s < 0), torch.full_like(exact, neg_inf), exact)
        torch.nan_to_num_(exact, nan=neg_inf)
        # best first, ties by lower index: sort by index, then a stable descending sort by score
        by_idx, o1 = torch.sort(run_i, dim=1)
        ex_by_idx = torch.gather(exact, 1, o1)
        srt, o2 = torch.sort(ex_by_idx, dim=1, descending=True, stable=True)
        idx = torch.gather(by_idx, 1, o2)
        out_s, out_i = srt[:, :k_fetch], idx[:, :k_fetch]
        # certificate: everything left out scores <= a + eps < T (the k_fetch-th exact score kept)
        complete = run_s.shape[1] >= n_g  # every gallery item is a candidate
        a = run_s[:, -1]
        t = out_s[:, -1]
        eps = eps_unit * q_norm * g_norm_max
        ok = complete | torch.isinf(a) & (a < 0) | (a + eps < t)
    return out_s, out_i, (~ok).cpu().numpy()


def _gather_rows(g_t: torch.Tensor, gallery: Any, idx: np.ndarray) -> torch.Tensor:
    """``gallery[idx]`` as fp32 ``(Q, m, d)``; numpy fancy indexing reads only those rows of a memory map."""
    flat = idx.reshape(-1)
    if isinstance(gallery, np.ndarray):
        rows = torch.from_numpy(np.asarray(gallery[flat], dtype=np.float32))
    else:
        rows = g_t[torch.from_numpy(flat).to(g_t.device)].float()
    return rows.reshape(idx.shape[0], idx.shape[1], -1)


def prefiltered_topk(q_t: torch.Tensor, g_t: torch.Tensor, gallery: Any, k: int, k_out: int, k_fetch: int,
                     chunk: int, dev: torch.device, ex_rows: np.ndarray, ex_cols: np.ndarray,
                     cached: Any = None, *, fallback: Callable[..., tuple[np.ndarray, np.ndarray]]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~zscir.index.search.exact_topk` through the bf16 pre-filter; uncertified queries are redone by
    ``fallback`` (``exact_topk`` itself, passed in so that this module does not import it back)."""
    n_q = q_t.shape[0]
    q_block = int(max(1, min(n_q, SCORE_BLOCK_BYTES // (2 * chunk))))
    out_s = np.empty((n_q, k_out), np.float32)
    out_i = np.empty((n_q, k_out), np.int64)
    failed: list[np.ndarray] = []
    for q0 in range(0, n_q, q_block):
        q1 = min(n_q, q0 + q_block)
        lo, hi = np.searchsorted(ex_rows, [q0, q1])
        s, i, bad = bf16_topk(q_t[q0:q1], g_t, gallery, k_fetch, chunk, dev, ex_rows[lo:hi] - q0, ex_cols[lo:hi],
                              cached=cached)
        bs, bi = drop_excluded(s.cpu().numpy(), i.cpu().numpy(), ex_rows, ex_cols, q0, g_t.shape[0], k_out)
        out_s[q0:q1], out_i[q0:q1] = bs, bi
        failed.append(np.flatnonzero(bad) + q0)
    redo = np.concatenate(failed) if failed else np.zeros(0, np.int64)
    if redo.size:
        logger.debug("bf16 pre-filter: %d of %d queries not certified, redone in fp32", redo.size, n_q)
        ex = None
        if ex_rows.size:
            ex = [ex_cols[ex_rows == r] for r in redo]
        rs, ri = fallback(q_t[torch.from_numpy(redo)], gallery, k, chunk_size=chunk, exclude=ex, device=dev)
        out_s[redo], out_i[redo] = rs, ri
    return out_s, out_i
