"""The benchmark suite (issue 7) at tiny sizes: it runs, writes JSON + markdown, and its numbers are sane."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import ann, common, search
from benchmarks.suite import SuiteConfig, run_suite
from zscir.index.search import exact_topk


def test_peer_loop_matches_exact_topk():
    g = search.random_unit(3000, 32, seed=0)
    q = search.random_unit(7, 32, seed=1)
    peer = search.peer_topk(q, g, 10)
    _, ours = exact_topk(q, g, 10, chunk_size=700)
    assert peer.shape == (7, 10)
    np.testing.assert_array_equal(peer, ours)


def test_random_unit_is_normalised_and_dtype():
    x = search.random_unit(100, 16, seed=3, dtype="float16")
    assert x.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(x.astype(np.float32), axis=1), 1.0, atol=2e-3)


def test_recall_at_k_counts_overlap():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 9], [5, 6, 7, 8]])
    assert ann.recall_at_k(approx, exact) == pytest.approx((2 / 4 + 4 / 4) / 2)


def test_clustered_queries_share_the_gallery_centres():
    g, c = ann.clustered(500, 16, 5, 0.2, seed=0)
    q, c2 = ann.clustered(20, 16, 5, 0.2, seed=1, centers=c)
    assert c2 is c
    # low noise: every query is far closer to some gallery item than random unit vectors are (~0)
    assert (q @ g.T).max(axis=1).min() > 0.8


def test_markdown_table_and_fmt():
    md = common.markdown_table([{"a": 1234567, "b": 0.123456}, {"a": 2}], ["a", "b"])
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b |" and lines[2] == "| 1,234,567 | 0.123 |" and lines[3] == "| 2 | – |"
    assert common.time_it(lambda: None, repeats=4, warmup=0).as_dict()["repeats"] == 4


def test_faiss_tiny_ivf_flat_reaches_full_recall_with_all_lists():
    pytest.importorskip("faiss")
    cfg = ann.AnnBenchConfig(n=3000, d=16, n_queries=30, nlist=16, nprobes=[1, 16], indexes=["ivf-flat"],
                             repeats=1, train_sample=3000)
    res = ann.run_ann_bench(cfg)
    by = {r["param"]: r for r in res["rows"]}
    assert by["nprobe=16"]["recall@10"] == pytest.approx(1.0)  # probing every list is exact
    assert by["nprobe=1"]["recall@10"] <= by["nprobe=16"]["recall@10"]
    assert res["defaults"]["ivf-flat"] is not None


def test_suite_tiny_writes_results(tmp_path):
    cfg = SuiteConfig(items=["search", "memory", "pipeline", "latency"], out_dir=tmp_path, tiny=True, repeats=1,
                      command="pytest")
    out = run_suite(cfg)
    rows = out["search"]["rows"]
    assert {r["storage"] for r in rows} == {"float32", "float16"}
    assert all(r["same_topk_as_peer"] for r in rows)
    assert all(r["zscir_qps"] > 0 and r["peer_qps"] > 0 for r in rows)
    assert out["search"]["roofline"]["matmul"]["gflops_median"] > 0.1
    mem = out["memory"]
    assert mem["data_bytes"] == 20_000 * 64 * 2 and mem["search_peak_rss_bytes"] >= mem["RssAnon"] > 0
    pipe = out["pipeline"]["rows"]
    assert pipe[0]["ratio_vs_raw"] == 1.0 and 0 < pipe[1]["ratio_vs_raw"] < 5
    lat = {(r["method"], r.get("batch")) for r in out["latency"]["rows"] if "skipped" not in r}
    assert ("image", 1) in lat and ("sum", 4) in lat
    for item in cfg.items:
        payload = json.loads((tmp_path / f"{item}.json").read_text())
        assert payload["machine"]["nproc"] >= 1
        assert "| " in (tmp_path / f"{item}.md").read_text()
    assert "Exact search" in (tmp_path / "report.md").read_text()


def test_suite_tiny_single_query_item(tmp_path):
    """Item `single` (issue 15 §1) at tiny sizes: every kernel timed, zscir's answers within the stated tolerance."""
    out = run_suite(SuiteConfig(items=["single"], out_dir=tmp_path, tiny=True, repeats=1, command="pytest"))
    rows = out["single"]["rows"]
    kernels = {(r["storage"], r["kernel"]) for r in rows}
    assert {("float32", "zscir fast"), ("float16", "zscir fast"), ("bfloat16", "zscir fast"),
            ("float16", "zscir plain")} <= kernels
    if out["machine"]["faiss"]:
        assert ("float32", "faiss flat") in kernels and ("float16", "faiss sq-fp16") in kernels
    for r in rows:
        assert r["ms_median"] > 0 and r["stream_ms"] > 0
        assert r["x_stream"] == pytest.approx(r["ms_median"] / r["stream_ms"])
        if r["kernel"] == "zscir fast":
            assert r["within_tol"], r
    assert out["single"]["machine"]["cpu_model"] and "Machine: " in (tmp_path / "single.md").read_text()


def test_suite_tiny_photos_item(tmp_path):
    """Item `photos` (issue 15 §2) at tiny sizes: pipeline rows plus a per-stage split that sums to 1."""
    out = run_suite(SuiteConfig(items=["photos"], out_dir=tmp_path, tiny=True, repeats=2, command="pytest"))
    rows = out["photos"]["rows"]
    assert rows[0]["ratio_vs_raw"] == 1.0 and any(r["variant"].startswith("zscir index") for r in rows)
    stages = [r for r in rows if r["variant"].startswith("stage:")]
    assert len(stages) == 3 and sum(r["share"] for r in stages) == pytest.approx(1.0)
    assert "JPEG photos" in (tmp_path / "photos.md").read_text()
    index = next(r for r in rows if r["variant"].startswith("zscir index"))
    assert index["cpu_s"] >= index["main_cpu_s"] > 0 and index["ratio_main_cpu"] > 0
    # timed in rounds with the raw forward: one per-round ratio per repeat, summarised by median and worst
    paired = index["paired_ratios"]
    assert len(paired) == 2 and rows[0]["repeats"] == 2 and all(r > 0 for r in paired)
    assert index["ratio_paired"] == pytest.approx(float(np.median(paired)))
    assert index["ratio_paired_min"] == min(paired)
    general = next(r for r in rows if r["variant"].startswith("read + decode at the general"))
    assert 0.99 < general["cos_min"] <= 1.0 + 1e-6  # decoding at the model's side changes embeddings little


@pytest.mark.slow
def test_suite_tiny_serve_item(tmp_path):
    """Item `serve` (issue 15 §3) with a tiny model: a real uvicorn process, a sane latency split (~40 s)."""
    out = run_suite(SuiteConfig(items=["serve"], out_dir=tmp_path, tiny=True, repeats=1, command="pytest"))
    serve = {r["reference"]: r for r in out["serve"]["rows"]}
    assert set(serve) == {"upload JPEG", "item id"}
    for r in serve.values():
        assert r["p99_ms"] >= r["p50_ms"] > 0 and r["encode_ms"] > 0 and r["decode_ms"] > 0 and r["search_ms"] > 0
        assert 0 <= r["http_share"] < 1
    assert "Server-Timing" in (tmp_path / "serve.md").read_text()


def test_cli_bench_rejects_unknown_item_and_runs_memory(tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app

    r = CliRunner().invoke(app, ["bench", "nope", "--tiny", "--out", str(tmp_path)])
    assert r.exit_code != 0
    r = CliRunner().invoke(app, ["bench", "memory", "--tiny", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "memory.json").read_text())["n"] == 20_000


def test_eval_memory_item_measures_each_run_in_a_fresh_process():
    from benchmarks import eval_memory

    cfg = eval_memory.EvalMemoryConfig(methods=["image"], model="tiny-clip-test", limit=5, rank_n=30_000, rank_d=64,
                                       rank_queries=64, rank_k=10)
    res = eval_memory.run_eval_memory_bench(cfg)
    (row,) = res["eval_rows"]
    assert row["method"] == "image" and row["n_queries"] == 5
    assert row["peak_rss_bytes"] > row["startup_peak_rss_bytes"] > 50e6  # python + torch alone exceed 50 MB
    zs, peer = res["rank_rows"]
    assert zs["ranking"] == "zscir" and peer["ranking"] == "peer" and zs["same_top3_as_peer"]
    if peer["ranking_extra_bytes"] is not None:  # VmHWM reset available (Linux)
        # the peer loop materialises the (Q, N) fp32 score matrix and argsort's int64 indices
        assert peer["ranking_extra_bytes"] >= 64 * 30_000 * 4
