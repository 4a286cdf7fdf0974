"""Run the items of the suite, write ``<out>/<item>.json`` + ``.md`` and a combined ``report.md``.

``large=True`` adds the 1M-row galleries (exact search at N=1M, FAISS at N=1M). Before each item a line
on stderr says which item runs and when the suite should end: `EXPECTED_S` holds each item's measured
duration at the default sizes (docs/PERFORMANCE.md), scaled by how fast the items so far ran against it.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import cpu_description, machine_info, markdown_table, write_results

logger = logging.getLogger(__name__)

ITEMS = ("search", "single", "serve", "faiss", "latency", "pipeline", "photos", "memory", "evalmem", "datawait",
         "busy")
#: wall seconds of each item at the default sizes, measured by one run of the whole default suite
#: (docs/PERFORMANCE.md, "How long the suite runs"); the progress lines' ETA starts from these
EXPECTED_S = {"search": 128, "single": 45, "serve": 94, "faiss": 64, "latency": 69, "pipeline": 29,
              "photos": 538, "memory": 16, "evalmem": 97, "datawait": 213, "busy": 40}


@dataclass
class SuiteConfig:
    """Which items to run and at which scale; ``tiny`` shrinks everything for tests (seconds)."""

    items: list[str] = field(default_factory=lambda: list(ITEMS))
    out_dir: Path = Path("runs/bench")
    large: bool = False
    tiny: bool = False
    threads: int = 1
    repeats: int = 3
    command: str = ""
    ann_noise: float = 1.0
    ann_indexes: list[str] | None = None  # None: ivf-flat, ivf-pq, hnsw (HNSW at 1M builds for ~10 min)


def _header(title: str, info: dict[str, Any], cfg: SuiteConfig, repeated: bool = True, how: str | None = None) -> str:
    how = how or (f"Medians of {cfg.repeats} repeats (after one warm-up run)." if repeated
                  else "One fresh process per row (peak memory is not averaged).")
    return (f"## {title}\n\nCommand: `{cfg.command}`  \nMachine: {cpu_description(info)}, nproc={info['nproc']}, "
            f"torch threads={info['torch_threads']}, load average at start {info['loadavg_1_5_15']}  \n"
            f"{how}\n\n")


def progress_line(cfg: SuiteConfig, n: int, item: str, elapsed: float, done_expected: float) -> str:
    """``[n/N] item (about X s; the suite ends in about Y min)``: the ETA scales the expected durations of
    the remaining items (`EXPECTED_S`) by how long the finished ones took against theirs (``elapsed`` /
    ``done_expected``). Tiny and ``--large`` runs have no measured durations: the line names the item only."""
    line = f"[{n}/{len(cfg.items)}] {item}"
    if not cfg.tiny and not cfg.large:
        left = sum(EXPECTED_S.get(i, 0) for i in cfg.items[n - 1:])
        pace = elapsed / done_expected if done_expected > 0 and elapsed > 0 else 1.0
        line += (f" (about {EXPECTED_S.get(item, 0) * pace:.0f} s; the suite ends in about "
                 f"{left * pace / 60:.1f} min)")
    return line


def _roof_config(cfg: SuiteConfig, repeats: int) -> Any:
    from benchmarks.roofline import RooflineConfig

    return RooflineConfig(matmul_n=256 if cfg.tiny else 1024, copy_mb=16 if cfg.tiny else 256, repeats=repeats)


def run_suite(cfg: SuiteConfig) -> dict[str, Any]:
    """Run ``cfg.items`` in order and return ``{item: payload}``; each item is also written to disk."""
    from benchmarks import ann, datawait, eval_memory, latency, memory, pipeline, roofline, search
    from benchmarks import serve_latency, single_query

    from zscir.threads import torch_default_threads

    torch_default_threads()  # torch's own count, before the suite's --threads (the busy item compares both)
    torch.set_num_threads(cfg.threads)
    info = machine_info()
    out: dict[str, Any] = {"machine": info}
    sections: list[str] = []
    r = cfg.repeats
    for item in cfg.items:
        if item not in ITEMS:
            raise ValueError(f"unknown item {item!r}; choose from {', '.join(ITEMS)}")
    started, done_expected = time.perf_counter(), 0.0
    for n_item, item in enumerate(cfg.items, 1):
        print(progress_line(cfg, n_item, item, time.perf_counter() - started, done_expected), file=sys.stderr,
              flush=True)
        done_expected += EXPECTED_S.get(item, 0)
        t0 = time.perf_counter()
        if item == "search":
            rcfg = _roof_config(cfg, max(r, 3))
            roof = roofline.measure_roofline(rcfg)
            scfg = search.SearchBenchConfig(repeats=r)
            if cfg.tiny:
                scfg.sizes, scfg.dims, scfg.n_queries = [2000], [64], 32
            elif cfg.large:
                scfg.sizes = [10_000, 100_000, 1_000_000]
            rows = search.run_search_bench(scfg, roof)
            # the roof again after the grid: on a shared machine it drifts; both are reported
            roof_after = roofline.measure_roofline(rcfg)
            payload = {"roofline": roof, "roofline_after": roof_after, "config": scfg.__dict__, "rows": rows}
            md = _header("Exact search vs peer-style loop vs roofline", info, cfg)
            md += (f"Roofline: fp32 GEMM {roof['matmul']['gflops_median']:.1f} GFLOP/s "
                   f"({roof['matmul']['n']}³), copy bandwidth {roof['bandwidth']['gbs_median']:.2f} GB/s "
                   f"(after the grid: {roof_after['matmul']['gflops_median']:.1f} GFLOP/s, "
                   f"{roof_after['bandwidth']['gbs_median']:.2f} GB/s; fractions use the first). "
                   f"Q={scfg.n_queries} batched queries, k={scfg.k}.\n\n")
            md += markdown_table(rows, search.SEARCH_COLUMNS)
            if scfg.bf16_prefilter:
                md += ("\nWith the opt-in bf16 pre-filter + certified exact re-rank (`exact_topk(..., "
                       "prefilter=\"bf16\")`); `bf16_same_topk_as_peer` checks 32 queries:\n\n")
                md += markdown_table(rows, search.BF16_COLUMNS)
        elif item == "single":
            rcfg = _roof_config(cfg, max(r, 5))
            roof = roofline.measure_roofline(rcfg)
            qcfg = single_query.SingleQueryBenchConfig(repeats=r)
            if cfg.tiny:
                qcfg.sizes, qcfg.dims, qcfg.n_queries, qcfg.plain_queries = [3001], [64], 4, 2
            elif cfg.large:
                qcfg.sizes = [100_000, 1_000_000]
            rows = single_query.run_single_query_bench(qcfg, roof)
            roof_after = roofline.measure_roofline(rcfg)
            payload = {"roofline": roof, "roofline_after": roof_after, "config": qcfg.__dict__, "rows": rows}
            md = _header("Single-query exact top-k vs the bandwidth roof", info, cfg)
            md += (f"Copy bandwidth {roof['bandwidth']['gbs_median']:.2f} GB/s before, "
                   f"{roof_after['bandwidth']['gbs_median']:.2f} GB/s after the grid (`stream_ms` uses the first); "
                   f"k={qcfg.k}, {qcfg.n_queries} queries ({qcfg.plain_queries} for the plain path) x {r} repeats, "
                   f"one query per call; `x_stream` = ms_median / stream_ms (goal <= 1.5).\n\n")
            md += markdown_table(rows, single_query.SINGLE_COLUMNS)
        elif item == "serve":
            vcfg = serve_latency.ServeLatencyConfig(threads=cfg.threads)
            if cfg.tiny:
                vcfg.model, vcfg.n_items, vcfg.requests, vcfg.warmup = "tiny-clip-test", 2000, 5, 1
                vcfg.image_size, vcfg.n_photos = (256, 192), 2
            payload = serve_latency.run_serve_latency_bench(vcfg)
            md = _header(f"`POST /search` latency: {vcfg.model}, {vcfg.n_items:,} items", info, cfg,
                         how="One server process (uvicorn, 127.0.0.1); requests one at a time.")
            md += (f"{vcfg.requests} requests per row after {vcfg.warmup} warm-up; upload "
                   f"{payload['upload_bytes']:,} bytes ({vcfg.image_size[0]}x{vcfg.image_size[1]} JPEG); parts are "
                   f"medians of the server's Server-Timing; http_overhead = client total - handler time.\n\n")
            md += markdown_table(payload["rows"], serve_latency.SERVE_COLUMNS)
        elif item == "faiss":
            acfg = ann.AnnBenchConfig(repeats=r, threads=cfg.threads, noise=cfg.ann_noise)
            if cfg.ann_indexes:
                acfg.indexes = list(cfg.ann_indexes)
            if cfg.tiny:
                acfg.n, acfg.d, acfg.n_queries, acfg.pq_m, acfg.train_sample = 4000, 32, 50, 8, 4000
                acfg.nprobes, acfg.ef_searches = [1, 8], [16, 64]
            elif cfg.large:
                # nlist = 2048 at 1M: probing 64 lists (3 %) is not enough there, so the grid goes further
                acfg.n, acfg.nprobes = 1_000_000, [8, 32, 64, 128, 256, 512]
            payload = ann.run_ann_bench(acfg)
            md = _header(f"FAISS vs exact at N={acfg.n:,}, d={acfg.d}, cluster noise {acfg.noise}", info, cfg)
            md += (f"Exact (zscir `exact_topk`): {payload['exact_qps']:.1f} queries/s; nlist={payload['nlist']}; "
                   f"suggested defaults (fastest with recall@10 >= {acfg.target_recall}): {payload['defaults']}.\n\n")
            md += markdown_table(payload["rows"], ann.ANN_COLUMNS)
            md += "\nBuild times (s): " + ", ".join(f"{k}: {v['build_s']:.1f}" for k, v in payload["builds"].items()) + "\n"
        elif item == "latency":
            lcfg = latency.LatencyBenchConfig(repeats=max(r, 3))
            if cfg.tiny:
                lcfg.model, lcfg.methods, lcfg.gallery_n = "tiny-clip-test", ["image", "sum"], 500
                lcfg.batch_sizes = [1, 4]
            else:
                lcfg.batch_sizes = [1, 32]
            rows = latency.run_latency_bench(lcfg)
            payload = {"config": lcfg.__dict__, "rows": rows}
            md = _header(f"Per-query latency on `{lcfg.model}` (gallery N={lcfg.gallery_n:,})", info, cfg)
            md += markdown_table(rows, latency.LATENCY_COLUMNS)
        elif item in ("pipeline", "photos"):
            pcfg = pipeline.PipelineBenchConfig(repeats=r)
            if item == "photos":  # issue 15 §2: ViT-B/32-sized model at 224 px, 1-12 MP JPEG photos
                pcfg.model, pcfg.photo_mp, pcfg.n_images, pcfg.batch_size = serve_latency.MODEL_NAME, (1.0, 12.0), 128, 16
                pcfg.workers = [0, 2]
            if cfg.tiny:
                pcfg.model, pcfg.n_images, pcfg.batch_size, pcfg.workers = "tiny-clip-test", 32, 16, [0]
                pcfg.index_workers = [None]
                if item == "photos":
                    pcfg.photo_mp, pcfg.n_images = (0.05, 0.2), 8
            rows = pipeline.run_pipeline_bench(pcfg)
            payload = {"config": pcfg.__dict__, "rows": rows}
            what = (f"{pcfg.n_images} JPEG photos of {pcfg.photo_mp[0]:g}-{pcfg.photo_mp[1]:g} MP, {pcfg.model}"
                    if pcfg.photo_mp else f"{pcfg.n_images} {pcfg.fmt} files")
            md = _header(f"Image-embedding pipeline vs raw forward ({what})", info, cfg)
            md += markdown_table(rows, pipeline.PIPELINE_COLUMNS)
        elif item == "datawait":
            dcfg = datawait.DataWaitBenchConfig(threads=cfg.threads)
            if cfg.tiny:
                dcfg.n_images, dcfg.per_shard, dcfg.batch_size, dcfg.steps, dcfg.workers = 48, 12, 8, 4, [0]
                dcfg.arch = dict(image_size=224, patch_size=32, vision_width=32, vision_layers=1, vision_heads=2,
                                 text_width=32, text_layers=1, text_heads=2, max_text_len=32, projection_dim=32,
                                 vocab_size=300)
            rows = datawait.run_datawait_bench(dcfg)
            payload = {"config": dcfg.__dict__, "rows": rows}
            md = _header("Streaming WebDataset input: share of train-clip step time spent waiting for data", info, cfg,
                         how="One training run per row; medians over its timed steps.")
            md += (f"{dcfg.n_images} JPEGs of {dcfg.file_size[0]}x{dcfg.file_size[1]} px in shards of {dcfg.per_shard}, "
                   f"decoded + resized to {dcfg.image_size} px; random CLIP {dcfg.arch}; first {dcfg.warmup_steps} "
                   f"steps not timed.\n\n")
            md += markdown_table(rows, datawait.DATAWAIT_COLUMNS)
        elif item == "busy":
            from benchmarks import busy

            bcfg = busy.BusyBenchConfig(repeats=r)
            if cfg.tiny:
                bcfg.model, bcfg.queries, bcfg.gallery, bcfg.train_steps = "tiny-clip-test", 3, 12, 1
                bcfg.train_batch, bcfg.index_images, bcfg.image_size, bcfg.repeats = 4, 4, 48, 1
                bcfg.modes = ["zscir"]  # torch's default beside spinning processes takes tens of seconds
            payload = busy.run_busy_bench(bcfg)
            md = _header(f"Beside {bcfg.spinners} spinning processes: busy / idle time of search, a training step, "
                         "indexing", info, cfg, how=f"{bcfg.repeats} rounds after one warm-up; each round times the "
                         f"job idle, then beside {bcfg.spinners} busy-loop processes the item starts and stops itself; "
                         "medians over the rounds (`ratio` = median of the rounds' busy/idle).")
            md += (f"`zscir` = the thread count zscir chooses (`zscir.threads`; chosen afresh in each phase, as a "
                   f"new command would), `torch` = torch's default ({payload['torch_default_threads']} threads); "
                   f"usable cores {payload['usable_cores']}; {bcfg.queries} single searches ({bcfg.gallery} "
                   f"pictures, {bcfg.model}), {bcfg.train_steps} world-CLIP training steps of batch "
                   f"{bcfg.train_batch}, indexing {bcfg.index_images} JPEGs; goal busy/idle <= 2 with "
                   f"`zscir` (met: {payload['goal_met']}); `fair_share_bound` = the smallest ratio a fair share "
                   f"of the cores allows"
                   + (f"; OMP_NUM_THREADS={payload['omp_num_threads_env']} was set, so both settings used it"
                      if payload["omp_num_threads_env"] else "") + ".\n\n")
            md += markdown_table(payload["rows"], busy.BUSY_COLUMNS)
        elif item == "evalmem":
            ecfg = eval_memory.EvalMemoryConfig(threads=cfg.threads)
            if cfg.tiny:
                ecfg.model, ecfg.methods, ecfg.limit = "tiny-clip-test", ["image", "sum"], 10
                ecfg.rank_n, ecfg.rank_d, ecfg.rank_queries = 20_000, 64, 40
            payload = eval_memory.run_eval_memory_bench(ecfg)
            md = _header("Peak RSS of evaluation", info, cfg, repeated=False)
            md += "End to end: `zscir eval -m METHOD` on the world benchmark.\n\n"
            md += markdown_table(payload["eval_rows"], eval_memory.EVAL_COLUMNS)
            md += (f"\nRanking step alone at real-benchmark scale (gallery {ecfg.rank_n:,} x {ecfg.rank_d} fp32, "
                   f"{ecfg.rank_queries} queries, k={ecfg.rank_k}); `ranking_extra_bytes` = peak above the RSS "
                   f"with the gallery loaded.\n\n")
            md += markdown_table(payload["rank_rows"], eval_memory.RANK_COLUMNS)
        else:
            mcfg = memory.MemoryBenchConfig(threads=cfg.threads)
            if cfg.tiny:
                mcfg.n, mcfg.d, mcfg.n_queries = 20_000, 64, 4
            payload = memory.run_memory_bench(mcfg)
            md = _header(f"Peak RSS: {mcfg.n:,} x {mcfg.d} fp16 index, exact search", info, cfg, repeated=False)
            cols = ["n", "d", "data_bytes", "search_peak_rss_bytes", "startup_peak_rss_bytes", "RssAnon", "RssFile",
                    "target_bytes", "target_met", "search_s"]
            md += markdown_table([payload], cols)
        payload["elapsed_s"] = time.perf_counter() - t0
        payload["machine"] = info
        write_results(cfg.out_dir, item, payload, md)
        out[item] = payload
        sections.append(md + f"\n_(item took {payload['elapsed_s']:.0f} s)_\n")
        logger.info("bench %s done in %.1f s", item, payload["elapsed_s"])
    (cfg.out_dir / "report.md").write_text("# zscir benchmark report\n\n" + "\n".join(sections), encoding="utf-8")
    return out
