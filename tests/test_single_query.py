"""The single-query fast path (zscir.index.single_query) returns the plain exact path's ids AND scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zscir.index.prefilter import error_factor
from zscir.index.search import ExactSearcher, exact_topk, score_chunk_rows
from zscir.index.single_query import (SingleQueryKernel, chunk_layout, fast_path_holds, reference_scores,
                                      stable_topk)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _same(gallery, q, k, chunk_size, exclude=None):
    """Fast searcher vs plain exact_topk: identical ids and bit-identical scores."""
    fast = ExactSearcher(gallery, chunk_size=chunk_size, single_query="fast")
    s1, i1 = fast.search(q, k, exclude=exclude)
    s0, i0 = exact_topk(q, gallery, k, chunk_size=chunk_size, exclude=exclude)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1.view(np.int32), s0.view(np.int32))
    return fast


# chunk sizes that leave chunks with remainders of 1-3 rows (the BLAS computes those differently)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("n,d,chunk", [(5003, 64, 1001), (3001, 96, 65536), (2050, 768, 65536)])
def test_fast_single_query_identical(dtype, n, d, chunk):
    g = _unit(n, d, 0)
    gal = torch.from_numpy(g).bfloat16() if dtype == "bfloat16" else g.astype(dtype)
    for seed in range(4):
        q = _unit(1, d, 100 + seed) + 0.05 * np.asarray(gal[seed * 7:seed * 7 + 1], dtype=np.float32) \
            if dtype != "bfloat16" else _unit(1, d, 100 + seed)
        _same(gal, q, 10, chunk)
    _same(gal, _unit(1, d, 9), n + 5, chunk)  # k > N: everything, in order


def test_certified_path_is_taken_and_scores_equal_reference():
    """On random data the bf16 pre-filter certifies (no fallback), and re-scores equal the plain path's."""
    g = _unit(4099, 128, 1).astype(np.float16)
    ref_chunk = score_chunk_rows(len(g), 128, True, "cpu")
    assert fast_path_holds(128, ref_chunk, torch.get_num_threads())
    kern = SingleQueryKernel(g, ref_chunk)
    q = _unit(1, 128, 2)
    res = kern.topk(q, 10, np.zeros(0, np.int64))
    assert res is not None
    s0, i0 = exact_topk(q, g, 10)
    np.testing.assert_array_equal(res[1], i0[0])
    np.testing.assert_array_equal(res[0], s0[0])
    # every row, in any order, including the remainder rows of each chunk
    idx = torch.randperm(len(g))
    got = reference_scores(torch.from_numpy(q), torch.from_numpy(g), idx, ref_chunk)
    want = torch.from_numpy(q) @ torch.from_numpy(g).float().T  # not necessarily bit-equal: compare loosely
    assert torch.allclose(got, want[0, idx], atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_unnormalised_and_excluded(dtype):
    rng = np.random.default_rng(3)
    g = (_unit(3003, 64, 4) * rng.uniform(0.1, 30.0, (3003, 1))).astype(dtype)
    q = (_unit(1, 64, 5) * 7.0).astype(np.float32)
    s0, i0 = exact_topk(q, g, 5)
    # exclude the current best ones, a list per query, an int array, and nothing (-1)
    _same(g, q, 5, 1000, exclude=[list(i0[0, :3])])
    _same(g, q, 5, 1000, exclude=np.array([i0[0, 0]]))
    _same(g, q, 5, 1000, exclude=np.array([-1]))
    # almost everything excluded: padding with -1 / -inf as on the plain path
    _same(g[:6], q, 5, 1000, exclude=[[0, 1, 2, 3]])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_ties_and_near_duplicates(dtype):
    """Exact ties (duplicate rows) keep lower index first; near-duplicates defeat the certificate -> fallback."""
    base = _unit(10, 32, 6)
    g = np.repeat(base, 300, axis=0)  # 3000 rows, 300 copies of each (> k + margin): ties everywhere
    g[::7] += 1e-4 * _unit(len(g[::7]), 32, 7)  # near-duplicates within bf16 rounding of each other
    gal = torch.from_numpy(g).bfloat16() if dtype == "bfloat16" else g.astype(dtype)
    q = base[3:4] + 0.01 * _unit(1, 32, 8)
    _same(gal, q, 20, 333)
    _same(gal, q, 20, 333, exclude=[[900, 901, 902]])
    if dtype != "float32":
        # 5000 near-duplicates (more than the largest candidate set, k + 64 * 64): not certifiable, so the
        # kernel declines and the plain path answers; with 300 the larger candidate sets certify
        many = np.repeat(base[3:4], 5000, axis=0) + 1e-4 * _unit(5000, 32, 9)
        many_g = torch.from_numpy(many).bfloat16() if dtype == "bfloat16" else many.astype(dtype)
        kern = SingleQueryKernel(many_g, score_chunk_rows(5000, 32, True, "cpu", 333))
        assert kern.topk(q, 20, np.zeros(0, np.int64)) is None
        _same(many_g, q, 20, 333)
        kern = SingleQueryKernel(gal, score_chunk_rows(len(g), 32, True, "cpu", 333))
        assert kern.topk(q, 20, np.zeros(0, np.int64)) is not None


def test_memmap_fp16(tmp_path):
    g = _unit(2501, 48, 9).astype(np.float16)
    np.save(tmp_path / "e.npy", g)
    mm = np.load(tmp_path / "e.npy", mmap_mode="r")
    _same(mm, _unit(1, 48, 10), 7, 65536)


def test_constant_and_nan_rows_fall_back_or_agree():
    g = np.ones((1001, 16), np.float32)
    _same(g, _unit(1, 16, 11), 10, 65536)  # all scores tie: lowest indices first
    g16 = _unit(1001, 16, 12).astype(np.float16)
    g16[5] = np.nan
    _same(g16, _unit(1, 16, 13), 10, 65536)  # NaN: the fast path declines, the plain path answers


def test_stable_topk_ties_at_cut():
    s = torch.tensor([0.1, 0.5, 0.5, 0.3, 0.5, float("nan"), 0.5])
    v, p = stable_topk(s, 3)
    assert p.tolist() == [1, 2, 4] and v.tolist() == [0.5, 0.5, 0.5]


def test_batched_queries_unchanged():
    g = _unit(1000, 32, 14)
    q = _unit(3, 32, 15)
    fast = ExactSearcher(g, single_query="fast")
    np.testing.assert_array_equal(fast.search(q, 5)[1], exact_topk(q, g, 5)[1])
    with pytest.raises(ValueError):
        ExactSearcher(g, single_query="quick")


def test_error_factor_covers_worst_case_bf16_rounding():
    """Regression: inputs and the output each rounded to bf16 (unit roundoff 2^-8, not 2^-9) at worst.

    256 elements of 1 + 2^-8 - 2^-12 round down to 1 (error ~2^-7 per product); 16 elements of 0.25 are
    exact and make the accumulated sum 257, a tie between the bf16 neighbours 256 and 258 that rounds (to
    even) down to 256: 1.1 % of ||q|| ||g||, beyond the old factor 1.25 * (2^-8 + 2^-8 + d 2^-24 + 2^-16).
    """
    d = 272
    x = np.full(d, 1 + 2.0 ** -8 - 2.0 ** -12, np.float32)
    x[256:] = 0.25
    q = torch.from_numpy(x)[None]
    g = torch.from_numpy(x)[None]
    exact = float((q.double() @ g.double().T)[0, 0])
    approx = float((q.bfloat16() @ g.bfloat16().T).float()[0, 0])
    bound = error_factor(d) * float(q.norm()) * float(g.norm())
    old = 1.25 * (2.0 ** -7 + d * 2.0 ** -24 + 2.0 ** -16)
    assert approx == 256.0 and abs(approx - exact) > old * float(q.norm()) * float(g.norm())
    assert abs(approx - exact) <= bound


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_identical_with_two_threads(dtype):
    """With 2 threads BLAS splits a chunk between them (d=96: 21,845-row chunks, odd halves): still identical."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = _unit(30_000, 96, 16)
        gal = torch.from_numpy(g).bfloat16() if dtype == "bfloat16" else g.astype(dtype)
        ref_chunk = score_chunk_rows(len(g), 96, True, "cpu")
        assert ref_chunk % 8 != 0 and fast_path_holds(96, ref_chunk, 2)
        runs = chunk_layout(96, ref_chunk, 2)
        assert runs and len(runs) >= 2  # a remainder per thread's share
        for seed, (a, _) in enumerate(runs):  # queries whose best match is a remainder row
            q = g[a:a + 1] + 0.01 * _unit(1, 96, 17 + seed)
            s, i = _same(gal, q, 10, 65536).search(q, 10)
            assert i[0, 0] == a
    finally:
        torch.set_num_threads(old)
