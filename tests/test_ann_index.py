"""The FAISS IVF-PQ ANN index of an index folder (issue 7): recall, staleness, indexer integration, CLI."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.test_indexer import cfg, make_photos  # noqa: F401 - shared helpers
from zscir.index.search import exact_topk
from zscir.index.store import EmbeddingStore, StoreError
from zscir.methods import create_composer

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)

from zscir.index.ann import (  # noqa: E402 - after the faiss skip
    AnnConfig,
    AnnSearcher,
    ann_status,
    build_ann,
    default_factory,
    open_ann_searcher,
    remove_ann,
    stale_reason,
    training_plan,
)
from zscir.index.build import build_index  # noqa: E402
from zscir.index.retriever import Retriever, RetrieverConfig  # noqa: E402

MODEL = "tiny-clip-test"
KEY = "synthetic-gallery"


def clustered(n: int, d: int, n_clusters: int, noise: float, seed: int, centers=None):
    """Unit vectors around random centres (real image embeddings are clustered; uniform noise is not)."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, d)).astype(np.float32) * noise / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centers


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(e.tolist())) / e.shape[0] for a, e in zip(approx, exact)]))


def synthetic_store(folder, emb: np.ndarray, dtype=np.float16) -> EmbeddingStore:
    items = [{"id": f"img{i:05d}.jpg", "path": f"/nowhere/img{i:05d}.jpg"} for i in range(len(emb))]
    return EmbeddingStore.save(folder, emb.astype(dtype), items, {"gallery_key": KEY, "generation": 1}, model=MODEL)


@pytest.fixture(scope="module")
def data():
    g, centers = clustered(4000, 64, 40, 1.0, seed=0)
    q, _ = clustered(200, 64, 40, 1.0, seed=1, centers=centers)
    return g, q


@pytest.fixture(scope="module")
def composer():
    torch.manual_seed(0)
    return create_composer("sum", model=MODEL)


def test_default_factory_follows_the_documented_formula():
    assert default_factory(100_000, 512, 16_384) == "IVF512,PQ64x4fs"  # PERFORMANCE.md section 2
    # training sample: max(16384, 40 x nlist) so that k-means keeps ~40 points per cell at any N
    assert training_plan(AnnConfig(), 100_000, 512) == ("IVF512,PQ64x4fs", 20_480)
    assert training_plan(AnnConfig(), 100_000_000, 512) == ("IVF16384,PQ64x4fs", 655_360)
    assert training_plan(AnnConfig(train_sample=1000, factory="IVF64,Flat"), 500, 8) == ("IVF64,Flat", 500)
    assert default_factory(4000, 64, 4000) == "IVF128,PQ8x4fs"
    assert default_factory(70, 24, 64) == "IVF8,PQ3x4fs"  # nlist capped at 1/8 of the training sample
    assert default_factory(10_000, 100) == "IVF256,PQ10x4fs"  # d/8 rounded to a divisor of d
    with pytest.raises(ValueError, match="rerank"):
        AnnConfig(rerank="rflat")
    assert AnnConfig.merged({"factory": "IVF16,PQ8x4fs", "nprobe": 8}, {"nprobe": 4, "k_factor": None}) == \
        AnnConfig(factory="IVF16,PQ8x4fs", nprobe=4)


def test_ann_recall_and_exact_rerank_on_clustered_data(tmp_path, data):
    g, q = data
    store = synthetic_store(tmp_path / "idx", g)
    t0 = time.perf_counter()
    status = build_ann(tmp_path / "idx", progress=False)
    build_s = time.perf_counter() - t0
    assert status[KEY].startswith("built (IVF128,PQ8x4fs")
    store = EmbeddingStore.load(tmp_path / "idx")
    entry = store.manifest["ann"][KEY]
    assert (entry["source_file"], entry["count"], entry["nprobe"], entry["k_factor"], entry["rerank"]) == \
        ("embeddings.npy", 4000, 64, 16, "store")
    assert store.manifest["ann_config"]["train_sample"] == 0 and entry["train_sample"] == 4000  # auto, <= N
    assert (tmp_path / "idx" / entry["file"]).is_file()
    # PQ codes are d/16 bytes + an 8-byte id per vector: far smaller than the fp16 vectors (2d bytes)
    assert entry["bytes"] < 4000 * (64 // 16 + 8) + 64 * 128 * 4 + 200_000

    ann = open_ann_searcher(store.path, store.manifest, KEY, store.embeddings)
    assert isinstance(ann, AnnSearcher) and ann.nprobe == 64 and len(ann) == 4000 and ann.dim == 64
    t0 = time.perf_counter()
    s_ann, i_ann = ann.search(q, 10)
    ann_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    s_ex, i_ex = exact_topk(q, store.embeddings, 10)
    exact_s = time.perf_counter() - t0
    r = recall(i_ann, i_ex)
    logging.getLogger(__name__).info("N=4000 d=64: recall@10 %.3f, ANN %.1f ms / exact %.1f ms for 200 queries, "
                                     "build %.2f s", r, ann_s * 1e3, exact_s * 1e3, build_s)
    assert r >= 0.9
    # scores are exact inner products of the stored (fp16) rows, best first
    g16 = np.asarray(store.embeddings, dtype=np.float32)
    np.testing.assert_allclose(s_ann, np.einsum("qd,qkd->qk", q, g16[i_ann]), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(s_ann, axis=1) <= 1e-7)

    # exclusion: the exact best hit of every query is removed, nothing else goes missing
    s_x, i_x = ann.search(q, 10, exclude=i_ex[:, 0])
    assert not np.any(i_x == i_ex[:, :1]) and i_x.shape == (200, 10) and (i_x >= 0).all()
    # k > N pads like exact search; PQ scores only (rerank "none") are far worse: why "store" is the default
    s_all, i_all = ann.search(q[:2], 5000)
    assert i_all.shape == (2, 4000) and np.isneginf(s_all[i_all < 0]).all()
    pq_only = open_ann_searcher(store.path, store.manifest, KEY, store.embeddings, rerank="none")
    assert recall(pq_only.search(q, 10)[1], i_ex) < r
    # nprobe at search time: fewer lists, lower or equal recall
    few = open_ann_searcher(store.path, store.manifest, KEY, store.embeddings, nprobe=1)
    assert few.nprobe == 1 and recall(few.search(q, 10)[1], i_ex) <= r


def test_sharded_ann_search_keeps_recall(tmp_path, data):
    from zscir.index.shards import ShardedSearcher

    g, q = data
    searchers = []
    for i, part in enumerate((g[:2500], g[2500:])):
        synthetic_store(tmp_path / f"s{i}", part)
        build_ann(tmp_path / f"s{i}", AnnConfig(min_items=1000), progress=False)
        st = EmbeddingStore.load(tmp_path / f"s{i}")
        searchers.append(open_ann_searcher(st.path, st.manifest, KEY, st.embeddings))
    _, i_ex = exact_topk(q, g.astype(np.float16), 10)
    _, i_sh = ShardedSearcher(searchers).search(q, 10)
    assert recall(i_sh, i_ex) >= 0.9


def test_too_small_and_unusable_indexes(tmp_path, data, caplog):
    g, _ = data
    synthetic_store(tmp_path / "small", g[:500])
    assert build_ann(tmp_path / "small", progress=False)[KEY].startswith("skipped: 500 items < 1000")
    st = EmbeddingStore.load(tmp_path / "small")
    assert st.manifest["ann"] == {} and st.manifest["ann_config"]["min_items"] == 1000  # settings kept
    assert open_ann_searcher(st.path, st.manifest, KEY, st.embeddings) is None  # nothing built: no warning
    with pytest.raises(StoreError, match="no ANN index for gallery"):
        open_ann_searcher(st.path, st.manifest, KEY, st.embeddings, required=True)
    EmbeddingStore.save(tmp_path / "nokey", g[:100], [{"id": str(i), "path": str(i)} for i in range(100)])
    with pytest.raises(StoreError, match="no gallery key"):
        build_ann(tmp_path / "nokey")
    with pytest.raises(ValueError, match="cannot build factory"):
        build_ann(tmp_path / "small", AnnConfig(factory="IVF8,Nonsense", min_items=64), progress=False)


def test_ann_goes_stale_on_incremental_update_and_is_rebuilt(tmp_path, composer, caplog):
    photos, idx = tmp_path / "photos", tmp_path / "idx"
    ids = make_photos(photos, n=70)
    small = AnnConfig(min_items=64, train_sample=64)
    rep = build_index(photos, idx, composer, model=MODEL, config=cfg(batch_size=32, ann=small))
    key = composer.gallery_cache_key()
    assert rep.ann[key].startswith("built (IVF8,PQ3x4fs")
    first_file = json.loads((idx / "manifest.json").read_text())["ann"][key]["file"]

    r = Retriever.load(idx)
    hits = r.search(ids[3], "brighter", k=10)
    assert r.describe()["search"] == {key: "ann"} and ids[3] not in [h.id for h in hits]
    exact = Retriever.load(idx, config=RetrieverConfig(ann=False))
    # with 70 items nprobe covers every list and k_factor * k > N: the ANN ranking is the exact one
    assert [h.id for h in exact.search(ids[3], "brighter", k=10)] == [h.id for h in hits]
    assert exact.describe()["search"] == {key: "exact"}

    # an incremental change without refresh leaves the ANN index stale: never used, exact with a warning
    new = make_photos(photos, n=3, start=200)
    build_index(photos, idx, composer, model=MODEL, config=cfg(batch_size=32, refresh_ann=False))
    m = json.loads((idx / "manifest.json").read_text())
    assert "the index changed since" in stale_reason(idx, m, key) and ann_status(idx, m)[key].startswith("stale")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zscir.index.ann"):
        r2 = Retriever.load(idx)
        hits2 = r2.search(new[0], "brighter", k=10)
    assert r2.describe()["search"] == {key: "exact"} and "searching exactly" in caplog.text
    assert [h.id for h in hits2] == [h.id for h in Retriever.load(idx, config=RetrieverConfig(ann=False))
                                      .search(new[0], "brighter", k=10)]
    with pytest.raises(StoreError, match="not used.*changed since"):
        Retriever.load(idx, config=RetrieverConfig(ann=True)).search(new[0], "brighter", k=10)

    # the next run (nothing to encode) rebuilds it with the recorded settings; the old file is collected
    rep = build_index(photos, idx, composer, model=MODEL, config=cfg(batch_size=32))
    assert rep.up_to_date and rep.ann[key].startswith("built")
    m = json.loads((idx / "manifest.json").read_text())
    assert stale_reason(idx, m, key) is None and m["ann"][key]["count"] == 73
    assert not (idx / first_file).exists() and (idx / m["ann"][key]["file"]).exists()
    assert build_index(photos, idx, composer, model=MODEL, config=cfg()).ann == {key: "up to date"}
    # with refresh (the default) an update rebuilds right after the new generation
    (photos / ids[0]).unlink()
    rep = build_index(photos, idx, composer, model=MODEL, config=cfg(batch_size=32))
    assert rep.removed == 1 and rep.ann[key].startswith("built")
    assert Retriever.load(idx).search(ids[5], "x", k=3) and remove_ann(idx) == 1
    m = json.loads((idx / "manifest.json").read_text())
    assert "ann" not in m and not list(idx.glob("ann-*.faiss"))


def test_cli_ann_round_trip(tmp_path):
    from zscir.cli import app

    photos, idx = tmp_path / "photos", tmp_path / "idx"
    ids = make_photos(photos, n=70)
    run = CliRunner().invoke
    res = run(app, ["index", str(photos), "-o", str(idx), "--model", MODEL, "--batch-size", "32",
                    "--ann", "ivfpq", "--min-items", "64", "--train-sample", "64"])
    assert res.exit_code == 0, res.output
    assert "ANN image-embedding" in res.output and "built (IVF8,PQ3x4fs" in res.output

    def search(*extra):
        res = run(app, ["search", str(idx), "--image", ids[1], "--text", "darker", "-k", "5", "--json", *extra])
        assert res.exit_code == 0, res.output
        return [h["id"] for h in json.loads(res.output)]

    assert search() == search("--exact") == search("--ann", "--nprobe", "8")
    # search-time defaults change without a rebuild; build settings are kept
    before = json.loads((idx / "manifest.json").read_text())["ann"]
    res = run(app, ["index", "ann", str(idx), "--nprobe", "4"])
    assert res.exit_code == 0 and "up to date" in res.output, res.output
    after = json.loads((idx / "manifest.json").read_text())
    (key,) = after["ann"]
    assert after["ann"][key]["file"] == before[key]["file"] and after["ann"][key]["nprobe"] == 4
    assert after["ann_config"]["min_items"] == 64 and after["ann_config"]["nprobe"] == 4
    res = run(app, ["index", "ann", str(idx), "--rebuild"])
    assert res.exit_code == 0 and "built" in res.output
    res = run(app, ["index", "ann", str(idx), "--remove"])
    assert res.exit_code == 0 and "removed 1" in res.output
    res = run(app, ["search", str(idx), "--image", ids[1], "--text", "darker", "--ann"])
    assert res.exit_code == 2 and "no ANN index" in res.output
    res = run(app, ["index", str(photos), "-o", str(idx), "--ann", "hnsw"])
    assert res.exit_code == 2 and "only kind is `ivfpq`" in res.output
    res = run(app, ["index", "ann", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "no manifest.json" in res.output


def test_auto_nprobe_keeps_a_fixed_share_of_cells_on_large_galleries():
    from zscir.index.ann import auto_nprobe

    # 64 cells up to nlist 1024 (measured: 0.958 recall@10 at N = 100K, nlist 512), then nlist / 16
    # (N = 1M, nlist 2048: 64 cells gave 0.941, 128 gave 0.961); never more cells than exist
    assert [auto_nprobe(n) for n in (None, 16, 512, 1024, 2048, 16384)] == [64, 16, 64, 64, 128, 1024]
    assert AnnConfig().nprobe == 0  # 0 = auto, resolved when the index is built
