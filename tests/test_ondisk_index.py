"""The on-disk IVF index (issue 24 section 3): parameter chooser, partitioned fill + on-disk merge, memory-mapped
serving, zscir index-folder integration, and hostile inputs (mismatched files, truncation, budgets, folders)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from zscir.index.store import EmbeddingStore, StoreError

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)

from zscir.index.ann import AnnConfig, AnnSearcher, build_ann, open_ann_searcher, remove_ann  # noqa: E402
from zscir.index.ondisk import (  # noqa: E402
    ADD_BLOCK,
    DEFAULT_MEMORY_BUDGET,
    MemoryBudgetError,
    build_ondisk,
    choose_plan,
    exact_topk_stream,
    open_ondisk,
    parse_size,
    train_empty,
    tune_nprobe,
)

KEY = "synthetic-gallery"
KINDS = ("ivfpq-ondisk", "ivfsq8-ondisk")


def clustered(n: int, d: int, seed: int, n_clusters: int = 30, noise: float = 0.6, centers=None):
    """Unit vectors around random centres (an IVF on isotropic noise has no structure to find)."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, d)).astype(np.float32) * noise / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centers


def blocks(x: np.ndarray, rows: int):
    return (x[s:s + rows] for s in range(0, len(x), rows))


def recall(a: np.ndarray, e: np.ndarray) -> float:
    return float(np.mean([len(set(r.tolist()) & set(t.tolist())) / len(t) for r, t in zip(a, e)]))


@pytest.fixture(scope="module")
def toy():
    g, c = clustered(3000, 32, seed=0)
    q, _ = clustered(100, 32, seed=1, centers=c)
    return g, q


def small_plan(n, d, kind, partition_rows=None, budget=64 * 2**20):
    from dataclasses import replace

    plan = choose_plan(n, d, kind, budget)
    return replace(plan, partition_rows=partition_rows) if partition_rows else plan


# ------------------------------------------------------------------------------------ the chooser
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [5_000, 100_000, 5_000_000, 100_000_000, 1_000_000_000])
@pytest.mark.parametrize("budget", [int(0.5 * 2**30), DEFAULT_MEMORY_BUDGET, 8 * 2**30])
def test_plan_respects_the_budget_and_the_cell_rules(kind, n, budget):
    d = 512
    p = choose_plan(n, d, kind, budget)
    assert p.nlist & (p.nlist - 1) == 0  # a power of two
    assert p.nlist <= 16 * math.sqrt(n) and p.n_train <= n
    assert p.n_train >= 39 * p.nlist  # k-means keeps >= 39 points per cell
    assert p.n_train * d * 4 <= budget  # the sample fits the budget (it is freed before the add phase)
    per = p.code_size + 8
    # one partition's lists (x2 for vector doubling) + one fp32 add block + the quantizer fit the budget
    block = min(n, ADD_BLOCK)
    block_cost = 3 * block * d * 4
    assert 2 * p.partition_rows * per + block_cost + p.nlist * d * 4 <= budget
    assert p.partitions * p.partition_rows >= n
    assert p.code_size == (64 if kind == "ivfpq-ondisk" else 512)
    assert p.disk_bytes >= n * per
    if budget >= DEFAULT_MEMORY_BUDGET and n <= 100_000_000:
        assert p.nlist >= math.sqrt(n)  # at most 4x coarser than the 4 sqrt(N) lower end
    if n == 100_000:
        assert p.nlist == 2 ** round(math.log2(4 * math.sqrt(n)))  # small N: exactly the rule


def test_plan_grows_with_n_and_budget():
    nl = [choose_plan(n, 256, "ivfpq-ondisk").nlist for n in (10_000, 100_000, 1_000_000, 10_000_000)]
    assert nl == sorted(nl) and nl[0] < nl[-1]
    small, big = (choose_plan(10_000_000, 512, "ivfsq8-ondisk", b) for b in (2**29, 4 * 2**30))
    assert small.partition_rows < big.partition_rows and small.n_train <= big.n_train
    assert choose_plan(10_000, 100, "ivfpq-ondisk").factory.endswith(",PQ10x8")  # d/8 rounded to a divisor


@pytest.mark.parametrize("budget", [1, 1000, 2**20, 10 * 2**20, 300 * 2**20])
def test_budget_too_small_is_one_line(budget):
    with pytest.raises(MemoryBudgetError) as ei:
        choose_plan(1_000_000, 512, "ivfsq8-ondisk", budget)
    assert "\n" not in str(ei.value) and "too small" in str(ei.value)


@pytest.mark.parametrize("text,want", [("1.5GB", int(1.5 * 2**30)), ("800M", 800 * 2**20), ("64 kib", 65536),
                                       (4096, 4096), ("2g", 2 * 2**30), ("10", 10)])
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("bad", ["", "GB", "-1GB", "1.5XB", "0", "1e9", "1,5GB", True, "inf", "nan", "0.0001b"])
def test_parse_size_refuses(bad):
    with pytest.raises(ValueError, match="memory budget"):
        parse_size(bad)


@pytest.mark.parametrize("args", [(0, 512), (10, 0), (-5, 8), (10.5, 8), (True, 8)])
def test_plan_refuses_bad_shapes(args):
    with pytest.raises(ValueError):
        choose_plan(*args)


def test_plan_refuses_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        choose_plan(1000, 8, "hnsw-ondisk")


# ------------------------------------------------------------------------------ build and search
@pytest.mark.parametrize("kind", KINDS)
def test_ondisk_equals_in_memory_and_partitions_equal_one_shot(tmp_path, toy, kind):
    g, q = toy
    n, d = g.shape
    one = small_plan(n, d, kind)
    many = small_plan(n, d, kind, partition_rows=700)  # 5 partitions, not aligned with the 512-row blocks
    assert one.partitions == 1 and many.partitions == 5
    trained = train_empty(g[:2000], one)
    ref = faiss.clone_index(trained)
    ref.add(g)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    from zscir.index.ondisk import fill_partitions, merge_partitions, ondisk_file_names

    results = []
    for plan, sub in ((one, "a"), (many, "b")):
        idx_name, data_name, parts = ondisk_file_names("t", plan.partitions)
        written = fill_partitions(trained, blocks(g, 512), plan, tmp_path / sub, parts)
        assert written == parts
        merge_partitions(trained, tmp_path / sub, written, idx_name, data_name)
        entry = {"file": idx_name, "ivfdata": data_name, "ivfdata_bytes": (tmp_path / sub / data_name).stat().st_size}
        results.append(open_ondisk(tmp_path / sub, entry, count=n, dim=d))
    for nprobe in (1, 4, 16):
        faiss.extract_index_ivf(ref).nprobe = nprobe
        want_d, want_i = ref.search(q, 10)
        for ix in results:
            faiss.extract_index_ivf(ix).nprobe = nprobe
            got_d, got_i = ix.search(q, 10)
            np.testing.assert_array_equal(got_i, want_i)
            np.testing.assert_allclose(got_d, want_d, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_build_mmap_relocate_and_recall(tmp_path, toy, kind):
    g, q = toy
    n, d = g.shape
    plan = small_plan(n, d, kind, partition_rows=1000)
    (tmp_path / "x").mkdir()
    timings = {}
    entry = build_ondisk(g[:2000], blocks(g, 333), plan, tmp_path / "x", "ix", timings=timings)
    assert set(timings) == {"train_s", "add_s", "merge_s"} and entry["partitions"] == 3
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["ix.faiss", "ix.ivfdata"]  # partitions gone
    assert entry["ivfdata_bytes"] == (tmp_path / "x" / "ix.ivfdata").stat().st_size >= n * (plan.code_size + 8)
    shutil.move(tmp_path / "x", tmp_path / "moved")  # the .ivfdata is found next to the index file
    ix = open_ondisk(tmp_path / "moved", entry, count=n, dim=d)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(ix).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    _, truth = exact_topk_stream(q, blocks(g, 1000), 10)
    _, direct = exact_topk_stream(q, [g], 10)
    np.testing.assert_array_equal(truth, direct)
    nprobe, curve = tune_nprobe(ix, q, g[truth], target=0.95)
    assert curve[nprobe] >= 0.95 and all(v < 0.95 for p, v in curve.items() if p < nprobe)
    assert list(curve.values()) == sorted(curve.values())
    searcher = AnnSearcher(ix, g, nprobe=nprobe, k_factor=8, rerank="store")
    r = recall(searcher.search(q, 10)[1], truth)
    assert r >= 0.9, r
    # a broken fill (ids shifted by one partition) would fail here
    assert recall(searcher.search(q, 10)[1] + 1, truth) < 0.5


def test_fill_refuses_wrong_row_counts_and_shapes(tmp_path, toy):
    from zscir.index.ondisk import fill_partitions

    g, _ = toy
    plan = small_plan(1000, 32, "ivfsq8-ondisk")
    trained = train_empty(g[:1000], plan)
    with pytest.raises(ValueError, match="more than the 1000 rows"):
        fill_partitions(trained, blocks(g[:1500], 500), plan, tmp_path, ["p0", "p1"])
    with pytest.raises(ValueError, match="999 rows given"):
        fill_partitions(trained, blocks(g[:999], 500), plan, tmp_path, ["p0", "p1"])
    with pytest.raises(ValueError, match="expected blocks of shape"):
        fill_partitions(trained, [g[:10, :16]], plan, tmp_path, ["p0"])
    bad = g[:1000].copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        fill_partitions(trained, [bad], plan, tmp_path, ["p0"])
    with pytest.raises(ValueError, match="training sample"):
        train_empty(g[:100, :8], plan)


# ------------------------------------------------------------------------------ hostile files
@pytest.fixture()
def built(tmp_path, toy):
    g, _ = toy
    plan = small_plan(len(g), g.shape[1], "ivfsq8-ondisk")  # SQ8 trains in milliseconds, PQ in seconds
    (tmp_path / "b").mkdir()
    entry = build_ondisk(g[:2000], blocks(g, 1000), plan, tmp_path / "b", "ix")
    return tmp_path / "b", entry, g


@pytest.mark.parametrize("count,dim,what", [(2999, 32, "ntotal"), (3001, 32, "ntotal"), (3000, 64, "d 32"),
                                            (3000, 16, "d 32"), (0, 32, "ntotal")])
def test_open_refuses_mismatch(built, count, dim, what):
    folder, entry, _ = built
    with pytest.raises(StoreError, match=what) as ei:
        open_ondisk(folder, entry, count=count, dim=dim)
    assert "\n" not in str(ei.value)


def test_open_refuses_l2_metric(tmp_path, toy):
    g, _ = toy
    plan = small_plan(len(g), 32, "ivfsq8-ondisk")
    from zscir.index.ondisk import fill_partitions, merge_partitions

    l2 = faiss.index_factory(32, plan.factory, faiss.METRIC_L2)
    l2.train(g[:2000])
    parts = fill_partitions(l2, [g], plan, tmp_path, ["p0.faiss"])
    merge_partitions(l2, tmp_path, parts, "l2.faiss", "l2.ivfdata")
    with pytest.raises(StoreError, match="metric"):
        open_ondisk(tmp_path, {"file": "l2.faiss", "ivfdata": "l2.ivfdata"}, count=len(g), dim=32)


@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -1])
@pytest.mark.parametrize("recorded", [True, False])
def test_open_refuses_truncated_ivfdata(built, keep, recorded):
    folder, entry, g = built
    path = folder / entry["ivfdata"]
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * keep) if isinstance(keep, float) else (size - 1 if keep == -1 else keep))
    e = dict(entry) if recorded else {k: v for k, v in entry.items() if k != "ivfdata_bytes"}
    with pytest.raises(StoreError, match="truncated") as ei:  # never a SIGBUS on the first search
        open_ondisk(folder, e, count=len(g), dim=g.shape[1])
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("damage", ["missing-data", "garbage-index", "empty-index", "data-path-escape",
                                    "in-memory-index"])
def test_open_refuses_damaged_files(built, damage):
    folder, entry, g = built
    e = dict(entry)
    if damage == "missing-data":
        (folder / entry["ivfdata"]).unlink()
    elif damage == "garbage-index":
        (folder / entry["file"]).write_bytes(b"not a faiss index" * 10)
    elif damage == "empty-index":
        (folder / entry["file"]).write_bytes(b"")
    elif damage == "data-path-escape":
        e["ivfdata"] = "../b/" + entry["ivfdata"]
    else:  # a plain in-memory IVF index (the lists not on disk) under the recorded name
        ix = train_empty(g[:2000], small_plan(len(g), 32, "ivfsq8-ondisk"))
        ix.add(g)
        faiss.write_index(ix, str(folder / entry["file"]))
    with pytest.raises(StoreError) as ei:
        open_ondisk(folder, e, count=len(g), dim=g.shape[1])
    assert "\n" not in str(ei.value)


def test_corrupt_ids_are_refused_at_search(built):
    folder, entry, g = built
    ix = open_ondisk(folder, entry, count=len(g), dim=g.shape[1])
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(ix).invlists)
    assert lists.read_only
    # overwrite one list's ids in the file with a row number past N (a bit flip in a 2 TB file)
    data = bytearray((folder / entry["ivfdata"]).read_bytes())
    li = next(lists.lists.at(i) for i in range(lists.nlist) if lists.lists.at(i).size > 0)
    id_at = int(li.offset) + int(li.capacity) * int(lists.code_size)
    data[id_at:id_at + 8] = np.int64(10**9).tobytes()
    del ix, lists
    (folder / entry["ivfdata"]).write_bytes(bytes(data))
    ix = open_ondisk(folder, entry, count=len(g), dim=g.shape[1])
    searcher = AnnSearcher(ix, g, nprobe=faiss.extract_index_ivf(ix).nlist, k_factor=1000)
    with pytest.raises(ValueError, match="corrupt"):
        searcher.search(g[:5], 10)


# ------------------------------------------------------------------------------ zscir index folders
def synthetic_store(folder, emb):
    items = [{"id": f"img{i:05d}.jpg", "path": f"/nowhere/img{i:05d}.jpg"} for i in range(len(emb))]
    return EmbeddingStore.save(folder, emb.astype(np.float16), items, {"gallery_key": KEY, "generation": 1},
                               model="tiny-clip-test")


@pytest.mark.parametrize("kind", KINDS)
def test_index_folder_build_search_rebuild_remove(tmp_path, toy, kind):
    g, q = toy
    idx = tmp_path / "idx"
    synthetic_store(idx, g)
    status = build_ann(idx, AnnConfig(kind=kind, memory_budget=64 * 2**20), progress=False)
    assert status[KEY].startswith("built (IVF")
    st = EmbeddingStore.load(idx)
    entry = st.manifest["ann"][KEY]
    assert entry["kind"] == kind and entry["nprobe"] >= 1 and (idx / entry["ivfdata"]).is_file()
    assert not list(idx.glob("*.part*")) and not st.manifest.get("recorded")  # partitions collected
    ann = open_ann_searcher(st.path, st.manifest, KEY, st.embeddings)
    assert isinstance(ann, AnnSearcher) and ann.nprobe == entry["nprobe"]
    _, truth = exact_topk_stream(q, [np.asarray(st.embeddings, np.float32)], 10)
    assert recall(ann.search(q, 10)[1], truth) >= 0.9
    # the Retriever path (`zscir search`) picks it up like the in-memory kind
    assert build_ann(idx, progress=False)[KEY] == "up to date"
    old = {entry["file"], entry["ivfdata"]}
    build_ann(idx, rebuild=True, progress=False)
    new = EmbeddingStore.load(idx).manifest["ann"][KEY]
    assert not any((idx / f).exists() for f in old) and (idx / new["ivfdata"]).is_file()
    assert remove_ann(idx) == 1 and not list(idx.glob("*.ivfdata")) and not list(idx.glob("ann-*"))


def test_stale_ondisk_index_falls_back_with_a_warning(tmp_path, toy, caplog):
    g, _ = toy
    idx = tmp_path / "idx"
    synthetic_store(idx, g)
    build_ann(idx, AnnConfig(kind="ivfsq8-ondisk"), progress=False)
    st = EmbeddingStore.load(idx)
    entry = st.manifest["ann"][KEY]
    with open(idx / entry["ivfdata"], "r+b") as f:
        f.truncate(100)
    assert open_ann_searcher(st.path, st.manifest, KEY, st.embeddings) is None
    assert "truncated" in caplog.text
    with pytest.raises(StoreError, match="truncated"):
        open_ann_searcher(st.path, st.manifest, KEY, st.embeddings, required=True)
    (idx / entry["ivfdata"]).unlink()
    with pytest.raises(StoreError, match="list file .* is missing"):
        open_ann_searcher(st.path, st.manifest, KEY, st.embeddings, required=True)


@pytest.mark.parametrize("cfg", [dict(kind="ivfpq-ondisk", factory="IVF16,Flat"), dict(kind="hnsw"),
                                 dict(kind="ivfsq8-ondisk", memory_budget=-1), dict(memory_budget="lots"),
                                 dict(memory_budget=True)])
def test_ann_config_refuses(cfg):
    with pytest.raises(ValueError):
        AnnConfig(**cfg)


# ------------------------------------------------------------------------------------------- CLI
def _cli(*args):
    from zscir.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize("args,msg", [
    (["--kind", "ivfsq8-ondisk", "--memory-budget", "16KB"], "too small"),
    (["--kind", "ivfsq8-ondisk", "--memory-budget", "lots"], "memory budget must be a size"),
    (["--kind", "annoy"], "ANN kind must be one of"),
    (["--kind", "ivfpq-ondisk", "--factory", "IVF8,Flat"], "--factory does not apply"),
])
def test_cli_refuses_with_one_line(tmp_path, toy, args, msg):
    g, _ = toy
    synthetic_store(tmp_path / "idx", g)
    r = _cli("index", "ann", str(tmp_path / "idx"), *args)
    assert r.exit_code != 0 and msg in r.output and "Traceback" not in r.output
    assert not list((tmp_path / "idx").glob("ann-*"))  # nothing written


@pytest.mark.parametrize("content", ["photo.jpg", "notes.txt"])
def test_cli_refuses_a_foreign_folder(tmp_path, content):
    d = tmp_path / "mine"
    d.mkdir()
    (d / content).write_bytes(b"user data")
    r = _cli("index", "ann", str(d), "--kind", "ivfpq-ondisk")
    assert r.exit_code != 0 and "error:" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in d.iterdir()) == [content]  # not a byte written


def test_cli_builds_the_ondisk_kind(tmp_path, toy):
    g, _ = toy
    synthetic_store(tmp_path / "idx", g)
    r = _cli("index", "ann", str(tmp_path / "idx"), "--kind", "ivfsq8-ondisk", "--memory-budget", "64MB")
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["ann_config"]["kind"] == "ivfsq8-ondisk" and m["ann_config"]["memory_budget"] == 64 * 2**20
    assert m["ann"][KEY]["factory"].endswith(",SQ8")


def test_open_prints_nothing_on_stdout(built, capfd):
    """faiss printf's "resizing ..." / "updating ondisk filename ..." would corrupt `zscir search --json`."""
    folder, entry, g = built
    capfd.readouterr()
    open_ondisk(folder, entry, count=len(g), dim=g.shape[1])
    out = capfd.readouterr().out
    assert "ondisk" not in out and "resizing" not in out


def test_cli_index_search_round_trip_with_the_ondisk_kind(tmp_path, capfd):
    from tests.test_indexer import make_photos
    from zscir.cli import app

    photos, idx = tmp_path / "photos", tmp_path / "idx"
    ids = make_photos(photos, n=70)
    run = CliRunner().invoke
    res = run(app, ["index", str(photos), "-o", str(idx), "--model", "tiny-clip-test", "--batch-size", "32",
                    "--ann", "ivfsq8-ondisk", "--min-items", "64"])
    assert res.exit_code == 0, res.output
    m = json.loads((idx / "manifest.json").read_text())
    (entry,) = m["ann"].values()
    assert entry["kind"] == "ivfsq8-ondisk" and (idx / entry["ivfdata"]).is_file()
    capfd.readouterr()

    def search(*extra):
        r = run(app, ["search", str(idx), "--image", ids[1], "--text", "darker", "-k", "5", "--json", *extra])
        assert r.exit_code == 0, r.output
        return [h["id"] for h in json.loads(r.output)]

    assert search("--ann") == search("--exact")  # one cell, exact re-rank: the same ranking
    assert "resizing" not in capfd.readouterr().out
    (idx / entry["ivfdata"]).write_bytes(b"")  # truncated: --ann refuses in one line, the default falls back
    r = run(app, ["search", str(idx), "--image", ids[1], "--text", "darker", "--ann"])
    assert r.exit_code == 2 and "truncated" in r.output and "Traceback" not in r.output
