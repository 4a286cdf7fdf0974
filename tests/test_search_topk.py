"""exact_topk / Searcher tests: results must equal a stable full argsort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zscir.index import (
    ExactSearcher,
    FaissSearcher,
    exact_topk,
    list_search_backends,
    make_searcher,
)
from zscir.index import search as search_mod


def brute(q, g, k, exclude_sets=None):
    """Reference: full fp32 score matrix + stable argsort, excluded items removed, -1/-inf padding."""
    q = np.asarray(q, dtype=np.float32)
    g = np.asarray(g, dtype=np.float32)
    s = q @ g.T
    n = g.shape[0]
    kk = min(k, n)
    out_s = np.full((q.shape[0], kk), -np.inf, np.float32)
    out_i = np.full((q.shape[0], kk), -1, np.int64)
    for r in range(q.shape[0]):
        order = np.argsort(-s[r], kind="stable")
        if exclude_sets is not None:
            order = np.array([i for i in order if i not in exclude_sets[r]], dtype=np.int64)
        order = order[:kk]
        out_i[r, : len(order)] = order
        out_s[r, : len(order)] = s[r, order]
    return out_s, out_i


def _data(q, n, d, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((q, d)).astype(dtype), rng.standard_normal((n, d)).astype(dtype)


@pytest.mark.parametrize(
    "Q,N,D,k,chunk",
    [
        (5, 100, 16, 10, 7),      # chunk does not divide N
        (3, 100, 8, 10, 100),     # single chunk
        (4, 50, 8, 10, 1000),     # N < chunk
        (4, 20, 8, 50, 6),        # k > N
        (1, 1, 4, 3, 1),          # N == 1
        (7, 257, 32, 1, 64),      # k == 1
        (6, 300, 12, 300, 37),    # k == N
        (2, 64, 8, 20, 1),        # chunk_size 1
    ],
)
def test_matches_stable_argsort_numpy(Q, N, D, k, chunk):
    q, g = _data(Q, N, D, seed=Q * 1000 + N)
    s, i = exact_topk(q, g, k, chunk_size=chunk)
    rs, ri = brute(q, g, k)
    assert s.dtype == np.float32 and i.dtype == np.int64
    assert s.shape == (Q, min(k, N)) == i.shape
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(s, axis=1) <= 0)


def test_torch_inputs_and_fp16_gallery():
    q, g = _data(9, 211, 24, seed=3)
    g16 = g.astype(np.float16)
    rs, ri = brute(q, g16.astype(np.float32), 15)
    for qq, gg in [(q, g16), (torch.from_numpy(q), torch.from_numpy(g16)),
                   (torch.from_numpy(q).half(), torch.from_numpy(g16))]:
        s, i = exact_topk(qq, gg, 15, chunk_size=50)
        rs2, ri2 = brute(np.asarray(qq, dtype=np.float32) if isinstance(qq, np.ndarray) else qq.float().numpy(),
                         g16.astype(np.float32), 15)
        np.testing.assert_array_equal(i, ri2)
        np.testing.assert_allclose(s, rs2, rtol=1e-4, atol=1e-4)
    # the fp32-query/fp16-gallery case equals the reference computed on the upcast gallery
    s, i = exact_topk(torch.from_numpy(q), torch.from_numpy(g16), 15, chunk_size=50)
    np.testing.assert_array_equal(i, ri)
    assert isinstance(s, np.ndarray) and isinstance(i, np.ndarray)


def test_fp16_gallery_is_not_upcast_whole(monkeypatch):
    """Only chunk-sized fp32 copies of the gallery are ever created."""
    q, g = _data(3, 1000, 8, seed=4)
    g16 = torch.from_numpy(g.astype(np.float16))
    seen = []
    orig = torch.Tensor.to

    def spy(self, *a, **kw):
        out = orig(self, *a, **kw)
        if self.dtype == torch.float16 and out.dtype == torch.float32:
            seen.append(out.shape[0])
        return out

    monkeypatch.setattr(torch.Tensor, "to", spy)
    exact_topk(q, g16, 5, chunk_size=128)
    assert seen and max(seen) <= 128


def test_ties_lower_index_first():
    # integer-valued embeddings -> many exact ties
    rng = np.random.default_rng(1)
    q = rng.integers(-1, 2, size=(20, 4)).astype(np.float32)
    g = rng.integers(-1, 2, size=(333, 4)).astype(np.float32)
    for chunk in (1, 5, 64, 333, 1000):
        for k in (1, 7, 50, 400):
            s, i = exact_topk(q, g, k, chunk_size=chunk)
            rs, ri = brute(q, g, k)
            np.testing.assert_array_equal(i, ri, err_msg=f"chunk={chunk} k={k}")
            np.testing.assert_array_equal(s, rs)


def test_all_equal_scores():
    q = np.ones((2, 3), np.float32)
    g = np.zeros((10, 3), np.float32)
    s, i = exact_topk(q, g, 4, chunk_size=3)
    np.testing.assert_array_equal(i, [[0, 1, 2, 3]] * 2)
    np.testing.assert_array_equal(s, np.zeros((2, 4)))


def test_query_blocking(monkeypatch):
    """Many query blocks (tiny score budget) give the same result."""
    monkeypatch.setattr(search_mod, "SCORE_BLOCK_BYTES", 4 * 16 * 3)  # 3 queries per block at chunk 16
    q, g = _data(10, 70, 8, seed=5)
    s, i = exact_topk(q, g, 9, chunk_size=16, exclude=[3, -1, 5, 0, -1, -1, 69, 2, 2, -1])
    rs, ri = brute(q, g, 9, [{3}, set(), {5}, {0}, set(), set(), {69}, {2}, {2}, set()])
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-5)


def test_exclude_per_query_index():
    q, g = _data(6, 40, 8, seed=6)
    s0, i0 = exact_topk(q, g, 5)
    ex = i0[:, 0].copy()  # exclude each query's current best
    ex[2] = -1
    s, i = exact_topk(q, g, 5, chunk_size=7, exclude=ex)
    rs, ri = brute(q, g, 5, [{int(e)} if e >= 0 else set() for e in ex])
    np.testing.assert_array_equal(i, ri)
    for r in range(6):
        if ex[r] >= 0:
            assert ex[r] not in i[r]
            np.testing.assert_array_equal(i[r], i0[r, 1:].tolist() + [ri[r, -1]])
    np.testing.assert_array_equal(i[2], i0[2])
    # torch tensor form behaves identically
    s2, i2 = exact_topk(q, g, 5, chunk_size=7, exclude=torch.from_numpy(ex))
    np.testing.assert_array_equal(i2, i)


def test_exclude_lists_and_padding():
    q, g = _data(4, 12, 6, seed=7)
    ex = [[0, 1, 2], None, list(range(12)), np.array([11, 5])]
    sets = [{0, 1, 2}, set(), set(range(12)), {11, 5}]
    for k in (3, 9, 10, 12, 50):
        for chunk in (1, 5, 100):
            s, i = exact_topk(q, g, k, chunk_size=chunk, exclude=ex)
            rs, ri = brute(q, g, k, sets)
            assert i.shape == (4, min(k, 12))
            np.testing.assert_array_equal(i, ri, err_msg=f"k={k} chunk={chunk}")
            np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-5)
            for r in range(4):
                assert not (set(i[r].tolist()) & sets[r])
            # padding: -1 index with -inf score, only at the tail
            assert np.all((i == -1) == np.isneginf(s))
    s, i = exact_topk(q, g, 12, exclude=ex)
    assert (i[2] == -1).all() and np.isneginf(s[2]).all()
    assert (i[0, -3:] == -1).all() and (i[0, :-3] >= 0).all()


def test_exclude_never_returned_with_neg_inf_scores():
    """Genuine -inf scores must not let excluded items through."""
    q = np.array([[1.0, 0.0]], np.float32)
    g = np.array([[-np.inf, 0], [-np.inf, 0], [1, 0], [-np.inf, 0]], np.float32)
    s, i = exact_topk(q, g, 4, chunk_size=2, exclude=[[0]])
    np.testing.assert_array_equal(i, [[2, 1, 3, -1]])
    s, i = exact_topk(q, g, 3, chunk_size=4, exclude=[[0]])
    np.testing.assert_array_equal(i, [[2, 1, 3]])
    assert s[0, 0] == 1.0 and np.isneginf(s[0, 1:]).all()


def test_invalid_arguments():
    q, g = _data(2, 10, 4)
    with pytest.raises(ValueError, match="k must be"):
        exact_topk(q, g, 0)
    with pytest.raises(ValueError, match="dimension mismatch"):
        exact_topk(q, g[:, :3], 2)
    with pytest.raises(ValueError, match="out of range"):
        exact_topk(q, g, 2, exclude=[10, -1])
    with pytest.raises(ValueError, match="length 2"):
        exact_topk(q, g, 2, exclude=[1])
    with pytest.raises(ValueError, match="2-D"):
        exact_topk(q[0], g, 2)


def test_empty_inputs():
    q, g = _data(3, 5, 4)
    s, i = exact_topk(q[:0], g, 2)
    assert s.shape == (0, 2) and i.shape == (0, 2)
    s, i = exact_topk(q, g[:0], 2)
    assert s.shape == (3, 0)


def test_exact_searcher_and_registry():
    q, g = _data(5, 90, 8, seed=8)
    srch = make_searcher(g, "exact", chunk_size=16)
    assert isinstance(srch, ExactSearcher) and len(srch) == 90 and srch.dim == 8
    s, i = srch.search(q, 6, exclude=[0, 1, 2, 3, 4])
    rs, ri = brute(q, g, 6, [{0}, {1}, {2}, {3}, {4}])
    np.testing.assert_array_equal(i, ri)
    assert {"exact", "faiss"} <= set(list_search_backends())
    with pytest.raises(ValueError, match="unknown search backend"):
        make_searcher(g, "nope")


def test_faiss_matches_exact():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(9)
    g = rng.standard_normal((2000, 64)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q = rng.standard_normal((30, 64)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ex = rng.integers(-1, 2000, size=30)
    fs = make_searcher(g, "faiss")
    assert isinstance(fs, FaissSearcher) and len(fs) == 2000 and fs.dim == 64
    es = ExactSearcher(g, chunk_size=300)
    for k, exc in [(10, None), (50, ex)]:
        s1, i1 = es.search(q, k, exclude=exc)
        s2, i2 = fs.search(q, k, exclude=exc)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    # k > N: full ranking; deep in the list near-ties may swap under different
    # float summation orders, so compare the head exactly and the rest as sets
    s1, i1 = es.search(q, 2500)
    s2, i2 = fs.search(q, 2500)
    assert i1.shape == i2.shape == (30, 2000)
    np.testing.assert_array_equal(i1[:, :100], i2[:, :100])
    np.testing.assert_array_equal(np.sort(i1, axis=1), np.sort(i2, axis=1))
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    # fp16 torch gallery is accepted too
    fs16 = FaissSearcher(torch.from_numpy(g).half())
    _, i3 = fs16.search(q, 5)
    _, i4 = exact_topk(q, torch.from_numpy(g).half(), 5)
    np.testing.assert_array_equal(i3, i4)


def test_faiss_missing_gives_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"-c constraints.txt -e \"\.\[faiss\]\""):
        FaissSearcher(np.zeros((3, 4), np.float32))
    assert "faiss" not in list_search_backends(available_only=True)


def test_nan_scores_rank_last():
    q, g = _data(3, 30, 4, seed=11)
    g[[2, 17]] = np.nan
    s, i = exact_topk(q, g, 30, chunk_size=8)
    ref = np.nan_to_num(q @ g.T, nan=-np.inf)
    ri = np.argsort(-ref, axis=1, kind="stable")
    np.testing.assert_array_equal(i, ri)
    assert set(i[:, -2:].ravel().tolist()) == {2, 17} and np.isneginf(s[:, -2:]).all()
    s, i = exact_topk(q, g, 5, chunk_size=8)
    np.testing.assert_array_equal(i, ri[:, :5])
