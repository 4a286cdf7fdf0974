"""The bf16 pre-filter of exact search: always the exact top-k, and the certificate really decides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zscir.index import prefilter as pf
from zscir.index.search import ExactSearcher, exact_topk


def _unit(n, d, seed, dtype=np.float32):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _reference(q, g, k):
    """Stable descending argsort of the fp64 scores: the ranking an exact search must return."""
    s = q.astype(np.float64) @ g.astype(np.float64).T
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("chunk", [700, 65536])
def test_same_topk_as_the_plain_path(dtype, chunk):
    g = _unit(6000, 48, 0, dtype)
    q = _unit(40, 48, 1)
    plain_s, plain_i = exact_topk(q, g, 10, chunk_size=chunk)
    s, i = exact_topk(q, g, 10, chunk_size=chunk, prefilter="bf16")
    np.testing.assert_array_equal(i, plain_i)
    np.testing.assert_array_equal(i, _reference(q, g, 10))
    np.testing.assert_allclose(s, plain_s, rtol=0, atol=1e-6)  # re-ranked in fp32: last-bit differences only


def test_exclusion_padding_and_unnormalised_rows():
    rng = np.random.default_rng(2)
    g = _unit(500, 16, 3) * rng.uniform(0.1, 10, (500, 1)).astype(np.float32)  # norms 0.1 .. 10
    q = _unit(30, 16, 4) * 3
    ex = [rng.choice(500, 5, replace=False) for _ in range(30)]
    plain = exact_topk(q, g, 20, exclude=ex)
    bf = exact_topk(q, g, 20, exclude=ex, prefilter="bf16")
    np.testing.assert_array_equal(bf[1], plain[1])
    assert not any(set(r) & set(e) for r, e in zip(bf[1].tolist(), ex))
    small = _unit(12, 16, 5)  # k > N: padded exactly like the plain path
    a, b = exact_topk(q, small, 15), exact_topk(q, small, 15, prefilter="bf16")
    np.testing.assert_array_equal(a[1], b[1])
    assert (b[1][:, 12:] == -1).all()


def test_near_duplicates_fail_the_certificate_and_are_redone_exactly():
    g = _unit(3000, 32, 6)
    base = g[0].copy()
    # 200 items within ~1e-4 of the same direction: far closer than bf16 can tell apart
    noise = np.random.default_rng(7).standard_normal((200, 32)).astype(np.float32) * 1e-4
    g[1000:1200] = (base + noise) / np.linalg.norm(base + noise, axis=1, keepdims=True)
    q = np.repeat(base[None], 20, 0) + np.random.default_rng(8).standard_normal((20, 32)).astype(np.float32) * 1e-3
    q = q.astype(np.float32)
    _, _, bad = pf.bf16_topk(torch.from_numpy(q), torch.from_numpy(g), g, 10, 3000, torch.device("cpu"),
                             np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert bad.all()  # 40 candidates cannot certify a cut inside 200 near-ties
    np.testing.assert_array_equal(exact_topk(q, g, 10, prefilter="bf16")[1], exact_topk(q, g, 10)[1])


def test_well_separated_queries_are_certified():
    g = _unit(5000, 64, 9)
    q = _unit(32, 64, 10)
    _, _, bad = pf.bf16_topk(torch.from_numpy(q), torch.from_numpy(g), g, 10, 5000, torch.device("cpu"),
                             np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert not bad.any()  # random data: the pre-filter alone decides, no fp32 redo


def test_error_bound_and_self_check():
    assert pf.error_factor(512) == pytest.approx(1.25 * (3 * 2 ** -8 + 512 * 2 ** -24 + 2 ** -16))
    assert pf.bf16_bound_holds(64)
    g = torch.from_numpy(_unit(2000, 256, 11))
    q = torch.from_numpy(_unit(64, 256, 12))
    err = ((q.bfloat16() @ g.bfloat16().T).float() - q @ g.T).abs().max()
    assert err <= pf.error_factor(256)  # unit vectors: ||q|| ||g|| = 1


def test_small_batches_and_searcher_option():
    g = _unit(2000, 16, 13)
    q = _unit(3, 16, 14)  # fewer than MIN_QUERIES: the plain path, bit-identical
    a, b = exact_topk(q, g, 5), exact_topk(q, g, 5, prefilter="bf16")
    np.testing.assert_array_equal(a[0], b[0])
    q2 = _unit(40, 16, 15)
    for searcher in (ExactSearcher(g, prefilter="bf16"), ExactSearcher(g.astype(np.float16), prefilter="bf16",
                                                                          cache=True)):
        for _ in range(2):  # the second search of the caching searcher reuses its bf16 copy
            np.testing.assert_array_equal(searcher.search(q2, 5)[1], exact_topk(q2, searcher._emb, 5)[1])
    cached = pf.Bf16Gallery(g)
    assert cached.data.dtype == torch.bfloat16 and cached.max_norm == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(exact_topk(q2, g, 5, prefilter=cached)[1], exact_topk(q2, g, 5)[1])
    with pytest.raises(ValueError, match="another gallery"):
        exact_topk(q2, g[:100], 5, prefilter=cached)
    with pytest.raises(ValueError, match="prefilter"):
        exact_topk(q, g, 5, prefilter="int8")
