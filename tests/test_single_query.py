"""Single queries through FAISS (``ExactSearcher(single_query="fast")``) against the batched path.

Properties only (no BLAS or FAISS internals): with ``tol = score_tolerance(d, ||q||, max ||g||)``
(zscir.index.single_query), at every rank the two paths' scores differ by at most ``tol``, and their ids
are equal except where the two ids' float64 scores are within ``2 tol`` (a tie within float rounding);
exclusion, ``k`` handling and padding are the batched path's; thread count does not change the ids.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from zscir.index import single_query as sq
from zscir.index.prefilter import error_factor
from zscir.index.search import ExactSearcher, exact_topk
from zscir.index.single_query import score_tolerance

DTYPES = ["float32", "float16", "bfloat16"]


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _store(g: np.ndarray, dtype: str):
    """``g`` in the given storage: numpy fp32 / fp16, or a torch bf16 tensor (numpy has no bf16)."""
    return torch.from_numpy(g).bfloat16() if dtype == "bfloat16" else np.ascontiguousarray(g.astype(dtype))


def _values64(gal) -> np.ndarray:
    """The stored values in float64 (what both paths multiply)."""
    t = gal if isinstance(gal, torch.Tensor) else torch.from_numpy(np.asarray(gal))
    return t.double().numpy()


def _ex_set(exclude) -> set[int]:
    if exclude is None:
        return set()
    item = exclude[0]
    if isinstance(item, torch.Tensor):
        item = item.tolist()
    return {int(x) for x in np.atleast_1d(np.asarray(item if item is not None else [], dtype=np.int64)) if x >= 0}


def _check(gal, q, k, exclude=None, searcher=None, strict_when_no_near_ties=True):
    """Single-query search vs exact_topk: the tolerance contract of zscir.index.single_query, asserted."""
    searcher = searcher or ExactSearcher(gal, single_query="fast")
    s1, i1 = searcher.search(q, k, exclude=exclude)
    s0, i0 = exact_topk(q, gal, k, exclude=exclude)
    assert s1.shape == s0.shape == i1.shape and s1.dtype == np.float32 and i1.dtype == np.int64
    np.testing.assert_array_equal(i1 < 0, i0 < 0)  # same padding
    np.testing.assert_array_equal(s1[i1 < 0], s0[i0 < 0])
    valid = i1[0] >= 0
    a, b = i1[0][valid], i0[0][valid]
    assert len(set(a.tolist())) == len(a) and not (set(a.tolist()) & _ex_set(exclude))
    g64 = _values64(gal)
    q64 = torch.as_tensor(np.asarray(q)).double().numpy().reshape(-1)
    q64 = q64.astype(np.float32).astype(np.float64)  # both paths take the query in fp32
    exact = g64 @ q64
    tol = score_tolerance(g64.shape[1], np.linalg.norm(q64), np.linalg.norm(g64, axis=1).max())
    assert np.all(np.abs(s1[0][valid] - s0[0][valid]) <= tol)  # rank-wise scores
    assert np.all(np.abs(s1[0][valid] - exact[a]) <= tol / 2)  # each path within its half
    differ = a != b
    assert np.all(np.abs(exact[a[differ]] - exact[b[differ]]) <= 2 * tol), (a, b)
    assert np.all(np.diff(s1[0][valid]) <= 0)  # best first
    if strict_when_no_near_ties:
        # not vacuous: where no two of the best k'+1 remaining items are within 2 tol, the ids are identical
        keep = np.setdiff1d(np.arange(len(exact)), np.fromiter(_ex_set(exclude), np.int64))
        best = np.sort(exact[keep])[::-1][:len(a) + 1]
        if len(best) < 2 or np.min(-np.diff(best)) > 2 * tol:
            np.testing.assert_array_equal(i1, i0)
    return searcher


# --------------------------------------------------------------------------- random galleries, every storage
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [64, 96, 512, 768])
@pytest.mark.parametrize("exclusion", ["none", "list", "array", "tensor", "minus_one"])
def test_matches_batched_path(dtype, d, exclusion):
    g = _unit(2003, d, d)
    gal = _store(g, dtype)
    searcher = ExactSearcher(gal, single_query="fast")
    for seed in range(3):
        q = _unit(1, d, 100 + seed) + 0.3 * g[7 * seed:7 * seed + 1]
        top = exact_topk(q, gal, 3)[1][0]
        exclude = {"none": None, "list": [list(top[:2])], "array": np.array([top[0]]),
                   "tensor": torch.tensor([int(top[1])]), "minus_one": np.array([-1])}[exclusion]
        _check(gal, q, 10, exclude, searcher)
    assert searcher._single is not False and searcher._single.kind == {
        "float32": "flat", "float16": "sq-fp16", "bfloat16": "sq-bf16"}[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1e-3, 30.0, "mixed"])
def test_unnormalised_rows_and_queries(dtype, scale):
    rng = np.random.default_rng(3)
    s = rng.uniform(0.1, 30.0, (1501, 1)) if scale == "mixed" else scale
    gal = _store((_unit(1501, 128, 4) * s).astype(np.float32), dtype)
    _check(gal, _unit(1, 128, 5) * 7.0, 10)
    _check(gal, _unit(1, 128, 6) * 1e-2, 25)


# --------------------------------------------------------------------------- ties and near-ties
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["duplicates", "constant", "near_duplicates", "two_values"])
@pytest.mark.parametrize("k", [1, 20, 150])
def test_ties(dtype, case, k):
    base = _unit(10, 32, 6)
    if case == "duplicates":
        g = np.repeat(base, 300, axis=0)
    elif case == "constant":
        g = np.ones((1000, 32), np.float32) / np.sqrt(32)
    elif case == "near_duplicates":
        g = np.repeat(base, 300, axis=0)
        g[::7] += 1e-4 * _unit(len(g[::7]), 32, 7)
    else:  # only two distinct scores: ties at every cut
        g = np.where(np.arange(2000)[:, None] % 3 == 0, base[0], base[1]).astype(np.float32)
    gal = _store(g, dtype)
    q = base[3:4] + 0.01 * _unit(1, 32, 8)
    s1, i1 = _check(gal, q, k).search(q, k)
    _check(gal, q, k, exclude=[[0, 1, 2, 900]])
    # equal computed scores come lowest id first
    for r in range(s1.shape[1] - 1):
        if s1[0, r] == s1[0, r + 1]:
            assert i1[0, r] < i1[0, r + 1]


# --------------------------------------------------------------------------- k, exclusion and padding
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,excluded", [(1, 0), (49, 0), (50, 0), (55, 0), (10, 45), (10, 50), (50, 3), (7, 49)])
def test_k_and_padding(dtype, k, excluded):
    """k >= N, k > N - excluded (padding with -1 / -inf), everything excluded."""
    g = _unit(50, 16, 9)
    gal = _store(g, dtype)
    q = _unit(1, 16, 10)
    exclude = [list(range(excluded))] if excluded else None
    s1, i1 = _check(gal, q, k, exclude=exclude).search(q, k, exclude=exclude)
    assert i1.shape == (1, min(k, 50))
    assert int((i1 >= 0).sum()) == min(k, 50 - excluded)


# --------------------------------------------------------------------------- threads
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,d", [(30_000, 96), (4099, 768)])
def test_thread_count_does_not_change_ids(dtype, n, d):
    """1 and 2 torch / faiss threads give the same ids (the old kernel's test asserted a BLAS layout here)."""
    faiss = pytest.importorskip("faiss")
    g = _unit(n, d, 16)
    gal = _store(g, dtype)
    qs = [g[a:a + 1] + 0.01 * _unit(1, d, 17 + a) for a in (0, n // 2, n - 1)]
    old_t, old_f = torch.get_num_threads(), faiss.omp_get_max_threads()
    out = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            searcher = ExactSearcher(gal, single_query="fast")
            out[threads] = [searcher.search(q, 10)[1] for q in qs]
            assert faiss.omp_get_max_threads() == threads  # the caller's setting is restored
    finally:
        torch.set_num_threads(old_t)
        faiss.omp_set_num_threads(old_f)
    for a, b in zip(out[1], out[2]):
        np.testing.assert_array_equal(a, b)
    assert [int(i[0, 0]) for i in out[1]] == [0, n // 2, n - 1]


def test_concurrent_first_queries_build_one_index(monkeypatch):
    pytest.importorskip("faiss")
    calls = []
    real = sq.make_single_query_index

    def counting(*a, **kw):
        calls.append(threading.get_ident())
        return real(*a, **kw)

    monkeypatch.setattr(sq, "make_single_query_index", counting)
    g = _unit(3000, 64, 18).astype(np.float16)
    searcher = ExactSearcher(g, single_query="fast")
    qs = _unit(16, 64, 19)
    with ThreadPoolExecutor(8) as pool:
        res = list(pool.map(lambda i: searcher.search(qs[i:i + 1], 5), range(16)))
    assert len(calls) == 1
    for i, (s, ids) in enumerate(res):
        np.testing.assert_array_equal(ids, exact_topk(qs[i:i + 1], g, 5)[1])


# --------------------------------------------------------------------------- storage, memory, inputs
def test_fp16_memmap_no_fp32_copy(tmp_path):
    """fp16 storage: the index holds fp16 codes (N x d x 2 bytes), built once; fp32: scanned in place."""
    pytest.importorskip("faiss")
    g16 = _unit(2501, 48, 20).astype(np.float16)
    np.save(tmp_path / "e16.npy", g16)
    mm16 = np.load(tmp_path / "e16.npy", mmap_mode="r")
    s16 = _check(mm16, _unit(1, 48, 21), 7)
    index = s16._single
    assert index.kind == "sq-fp16" and index.nbytes == 2501 * 48 * 2
    _check(mm16, _unit(1, 48, 22), 7, searcher=s16)
    assert s16._single is index  # made once per gallery, not per query
    np.save(tmp_path / "e32.npy", _unit(2501, 48, 23))
    mm32 = np.load(tmp_path / "e32.npy", mmap_mode="r")
    s32 = _check(mm32, _unit(1, 48, 24), 7)
    assert s32._single.kind == "flat" and s32._single.nbytes == 0


@pytest.mark.parametrize("dtype,values", [
    ("float16", [65504.0, -65504.0, 6e-8, -6e-8, 1e-5, 0.0, 1.0 + 2 ** -10]),
    ("bfloat16", [3.0e38, -3.0e38, 1e-38, 1.0 + 2 ** -7, 0.0, -2.5, 1e20]),
])
def test_half_precision_codes_are_the_stored_values(dtype, values):
    """The scalar quantizer stores fp16 / bf16 values exactly (extremes and subnormals included)."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(25)
    g = rng.choice(np.asarray(values, np.float32), size=(64, 8))
    gal = _store(g, dtype)
    index = sq.make_single_query_index(gal)
    want = _values64(gal).astype(np.float32)
    np.testing.assert_array_equal(index._index.reconstruct_n(0, 64), want)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["codes", "other_layout", "no_add_sa_codes"])
@pytest.mark.parametrize("strided", [False, True])
def test_half_precision_fill_paths_agree(dtype, layout, strided, monkeypatch, caplog):
    """The stored bits handed over as codes, or (another code layout / an older faiss) encoded: same index."""
    faiss = pytest.importorskip("faiss")
    g = _unit(2 * sq.ENCODE_ROWS + 77, 24, 37)
    g[6] = np.nan  # a NaN row in the block the code layout is checked on does not count as a mismatch
    gal = _store(g, dtype)[::2] if strided else _store(g, dtype)
    cls = faiss.IndexScalarQuantizer
    if layout == "other_layout":  # a build whose codes are not the stored bits: zeros decode to 0.0
        monkeypatch.setattr(cls, "add_sa_codes", lambda self, codes: cls.add(self, np.zeros((len(codes), self.d),
                                                                                           np.float32)), raising=False)
    elif layout == "no_add_sa_codes":
        monkeypatch.setattr(sq, "hasattr", lambda obj, name: False if name == "add_sa_codes" else hasattr(obj, name),
                            raising=False)
    with caplog.at_level(logging.INFO, logger="zscir.index.single_query"):
        index = sq.make_single_query_index(gal)
    assert index._index.ntotal == len(gal)
    np.testing.assert_array_equal(index._index.reconstruct_n(0, len(gal)), _values64(gal).astype(np.float32))
    assert ("encoding the gallery instead" in caplog.text) == (layout == "other_layout")


@pytest.mark.parametrize("query_kind", ["numpy64", "numpy16", "torch32", "torch16", "torch_1x_view"])
@pytest.mark.parametrize("gallery_kind", ["torch32", "torch_strided", "torch16", "numpy_strided16"])
def test_input_types(query_kind, gallery_kind):
    g = _unit(1200, 40, 26)
    gal = {"torch32": torch.from_numpy(g), "torch_strided": torch.from_numpy(np.asfortranarray(g)),
           "torch16": torch.from_numpy(g).half(), "numpy_strided16": g.astype(np.float16)[::2]}[gallery_kind]
    q = _unit(2, 40, 27)[1:] + 0.2 * g[5:6]
    q = {"numpy64": q.astype(np.float64), "numpy16": q.astype(np.float16), "torch32": torch.from_numpy(q),
         "torch16": torch.from_numpy(q).half(), "torch_1x_view": torch.from_numpy(np.repeat(q, 3, 0))[1:2]}[query_kind]
    _check(gal, q, 9, exclude=[[5]])


def test_fp64_storage_and_batches_take_the_batched_path():
    g = _unit(900, 24, 28).astype(np.float64)
    q = _unit(3, 24, 29)
    searcher = ExactSearcher(g, single_query="fast")
    for qs in (q[:1], q):
        s1, i1 = searcher.search(qs, 5)
        s0, i0 = exact_topk(qs, g, 5)
        np.testing.assert_array_equal(i1, i0)
        np.testing.assert_array_equal(s1, s0)
    assert searcher._single is False


# --------------------------------------------------------------------------- non-finite data, no faiss, errors
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["nan_row", "inf_row", "neg_inf_row", "nan_query", "inf_query", "all_nan"])
def test_non_finite_falls_back_to_the_batched_conventions(dtype, case):
    """NaN / inf in the data or the query: the batched path answers, so its conventions hold bit for bit."""
    g = _unit(301, 16, 30)
    q = _unit(1, 16, 31)
    if case == "nan_row":
        g[5] = np.nan
    elif case == "inf_row":
        g[7, 3] = np.inf
    elif case == "neg_inf_row":
        g[7, 3] = -np.inf
    elif case == "all_nan":
        g[:] = np.nan
    elif case == "nan_query":
        q[0, 2] = np.nan
    else:
        q[0, 2] = np.inf
    gal = _store(g, dtype)
    for k in (10, 301):
        s1, i1 = ExactSearcher(gal, single_query="fast").search(q, k)
        s0, i0 = exact_topk(q, gal, k)
        np.testing.assert_array_equal(i1, i0)
        np.testing.assert_array_equal(np.isfinite(s1), np.isfinite(s0))
        np.testing.assert_array_equal(s1[~np.isfinite(s1)], s0[~np.isfinite(s0)])
        np.testing.assert_allclose(s1[np.isfinite(s1)], s0[np.isfinite(s0)], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_without_faiss_the_batched_path_answers(dtype, monkeypatch, caplog):
    def no_faiss():
        raise ImportError("no faiss here")

    monkeypatch.setattr(sq, "_import_faiss", no_faiss)
    g = _unit(700, 32, 32)
    gal = _store(g, dtype)
    q = _unit(1, 32, 33)
    with caplog.at_level(logging.INFO, logger="zscir.index.single_query"):
        searcher = ExactSearcher(gal, single_query="fast")
        s1, i1 = searcher.search(q, 10, exclude=[[3]])
    s0, i0 = exact_topk(q, gal, 10, exclude=[[3]])
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(s1, s0)
    assert searcher._single is False and "faiss is not installed" in caplog.text


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", ["dim", "k0", "kbool", "kfloat", "ex_range", "ex_len", "ex_float"])
def test_errors_are_the_batched_paths(dtype, bad):
    gal = _store(_unit(100, 16, 34), dtype)
    searcher = ExactSearcher(gal, single_query="fast")
    q = _unit(1, 16, 35)
    args = {"dim": (_unit(1, 17, 35), 5, None), "k0": (q, 0, None), "kbool": (q, True, None),
            "kfloat": (q, 2.5, None), "ex_range": (q, 5, [[100]]), "ex_len": (q, 5, [[1], [2]]),
            "ex_float": (q, 5, [[1.5]])}[bad]
    with pytest.raises(ValueError) as fast_err:
        searcher.search(*args[:2], exclude=args[2])
    with pytest.raises(ValueError) as plain_err:
        exact_topk(args[0], gal, args[1], exclude=args[2])
    assert str(fast_err.value) == str(plain_err.value)


def test_single_query_option_is_validated():
    with pytest.raises(ValueError, match="single_query"):
        ExactSearcher(_unit(10, 8, 36), single_query="quick")


def test_score_tolerance_formula():
    """2 gamma_d ||q|| ||g||, gamma_d = d u / (1 - d u): bounds each fp32 dot product's rounding twice over."""
    d = 512
    gamma = d * 2.0 ** -24 / (1 - d * 2.0 ** -24)
    assert score_tolerance(d, 2.0, 3.0) == pytest.approx(2 * gamma * 6.0, rel=1e-12)
    # a constructed worst-ish case stays inside: summing d equal products in fp32 one by one
    x = np.full(d, 1 + 2.0 ** -12, np.float32)
    acc = np.float32(0)
    for v in x * x:
        acc = np.float32(acc + v)
    assert abs(float(acc) - float(np.dot(x.astype(np.float64), x.astype(np.float64)))) <= score_tolerance(
        d, np.linalg.norm(x.astype(np.float64)), np.linalg.norm(x.astype(np.float64))) / 2


# --------------------------------------------------------------------------- bf16 pre-filter bound (prefilter.py)
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
