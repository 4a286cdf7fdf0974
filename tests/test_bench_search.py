"""The search-core optimisations of issue 7: reused fp32 buffers and page release on fp16 memmaps."""

from __future__ import annotations

import numpy as np

from zscir.index.search import exact_topk


def _rss_file_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    return -1


def test_fp16_memmap_results_match_in_memory_fp32(tmp_path):
    rng = np.random.default_rng(0)
    g = rng.standard_normal((5000, 48)).astype(np.float16)
    np.save(tmp_path / "g.npy", g)
    mm = np.load(tmp_path / "g.npy", mmap_mode="r")
    q = rng.standard_normal((9, 48)).astype(np.float32)
    ref_s, ref_i = exact_topk(q, g.astype(np.float32), 7, chunk_size=5000)
    for view, off in ((mm, 0), (mm[1234:], 1234)):  # a sliced memmap has a stale .offset attribute
        for chunk in (333, 4096):
            s, i = exact_topk(q, view, 7, chunk_size=chunk)
            r_s, r_i = exact_topk(q, g[off:].astype(np.float32), 7, chunk_size=chunk)
            np.testing.assert_array_equal(i, r_i)
            np.testing.assert_allclose(s, r_s, rtol=0, atol=0)
    s, i = exact_topk(q, mm, 7, chunk_size=1000)
    np.testing.assert_array_equal(i, ref_i)
    assert np.asarray(mm[0]).tolist() == g[0].tolist()  # the map is still readable after the release


def test_fp16_memmap_search_does_not_keep_the_file_resident(tmp_path):
    rng = np.random.default_rng(1)
    n, d = 40_000, 256  # 20 MB of fp16
    np.save(tmp_path / "g.npy", rng.standard_normal((n, d)).astype(np.float16))
    mm = np.load(tmp_path / "g.npy", mmap_mode="r")
    q = rng.standard_normal((2, d)).astype(np.float32)
    before = _rss_file_kb()
    exact_topk(q, mm, 5, chunk_size=4096)
    grown_mb = (_rss_file_kb() - before) / 1024
    assert grown_mb < 5, f"file-backed RSS grew by {grown_mb:.1f} MB for a 20 MB index"
    # the in-place fp32 path is unchanged: touching the map directly does make it resident
    np.asarray(mm).sum(dtype=np.float32)
    assert (_rss_file_kb() - before) / 1024 > 15
