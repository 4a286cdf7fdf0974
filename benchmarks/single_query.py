"""Item ``single``: one query at a time against the memory-bandwidth roof (issue 15 §1).

One query against ``N x d`` gallery rows is a matrix-vector product, so its best possible time is reading
the gallery once: ``N d b / bandwidth`` (``b`` = bytes per stored value, the bandwidth = the suite's
streaming-copy measurement, :mod:`benchmarks.roofline`). Rows per (N, d, storage):

* ``zscir fast``: ``ExactSearcher(single_query="fast")`` (:mod:`zscir.index.single_query`; what serving uses);
* ``zscir plain``: :func:`~zscir.index.search.exact_topk` with one query (the evaluation path);
* ``faiss flat`` / ``faiss sq-fp16``: FAISS ``IndexFlatIP`` and ``IndexScalarQuantizer(d, QT_fp16, IP)``
  on the same (stored) values, one query per ``search`` call; ``stream_ms`` uses their own bytes per value
  (4 and 2).

``same_as_plain``: ids and scores of every timed query identical to ``exact_topk`` (bit for bit for zscir;
ids only for FAISS, whose summation order differs); ``certified``: share of queries the half-precision
pre-filter certified (the others were answered by the plain path inside the fast searcher).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.search import random_unit
from zscir.index.search import ExactSearcher, exact_topk

logger = logging.getLogger(__name__)

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class SingleQueryBenchConfig:
    """Grid and sizes; ``plain_queries`` are fewer because the plain fp16 path is the slow one measured."""

    sizes: list[int] = field(default_factory=lambda: [100_000])
    dims: list[int] = field(default_factory=lambda: [512, 768])
    storages: list[str] = field(default_factory=lambda: ["float32", "float16", "bfloat16"])
    n_queries: int = 20
    plain_queries: int = 5
    repeats: int = 3
    k: int = 10
    faiss: bool = True
    seed: int = 0


def _gallery(n: int, d: int, storage: str, seed: int) -> Any:
    g = random_unit(n, d, seed, "float32")
    if storage == "bfloat16":
        return torch.from_numpy(g).bfloat16()
    return g if storage == "float32" else g.astype(storage)


def _fp32_values(gallery: Any) -> np.ndarray:
    return gallery.float().numpy() if isinstance(gallery, torch.Tensor) else np.asarray(gallery, np.float32)


def _per_query_ms(fn: Callable[[np.ndarray], Any], queries: np.ndarray, repeats: int) -> list[float]:
    """Wall-clock milliseconds of ``fn(one query)`` for every query, ``repeats`` times (after a warm-up)."""
    fn(queries[:1])
    out = []
    for _ in range(repeats):
        for i in range(len(queries)):
            t0 = time.perf_counter()
            fn(queries[i:i + 1])
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def run_single_query_bench(cfg: SingleQueryBenchConfig, roofline: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (N, d, storage, kernel)."""
    bw = roofline["bandwidth"]["gbs_median"] * 1e9
    rows: list[dict[str, Any]] = []
    grid = [(n, d, st) for n in cfg.sizes for d in cfg.dims for st in cfg.storages]
    for n, d, st in tqdm(grid, desc="single query", unit="cfg"):
        gallery = _gallery(n, d, st, cfg.seed)
        queries = random_unit(cfg.n_queries, d, cfg.seed + 1)
        plain = [exact_topk(queries[i:i + 1], gallery, cfg.k) for i in range(cfg.n_queries)]

        def row(kernel: str, times: list[float], nbytes: int, **extra: Any) -> dict[str, Any]:
            stream_ms = n * d * nbytes / bw * 1e3
            med = float(np.median(times))
            return {"N": n, "d": d, "storage": st, "kernel": kernel, "ms_median": med, "ms_min": float(min(times)),
                    "ms_max": float(max(times)), "stream_ms": stream_ms, "x_stream": med / stream_ms,
                    "timed_queries": len(times), **extra}

        fast = ExactSearcher(gallery, single_query="fast")
        t0 = time.perf_counter()
        fast.search(queries[:1], cfg.k)  # first call: prepares the kernel (the bf16 copy for fp16 galleries)
        setup_s = time.perf_counter() - t0
        same = all(_identical(fast.search(queries[i:i + 1], cfg.k), plain[i], scores=True)
                   for i in range(cfg.n_queries))
        kern = fast._single
        cert = (float(np.mean([kern.topk(queries[i:i + 1], cfg.k, np.zeros(0, np.int64)) is not None
                               for i in range(cfg.n_queries)])) if kern is not None and kern.bf16 is not None
                else None)  # fp32: the plain path's own products, nothing to certify
        rows.append(row("zscir fast", _per_query_ms(lambda q: fast.search(q, cfg.k), queries, cfg.repeats),
                        BYTES[st], same_as_plain=same, certified=cert, setup_s=setup_s))
        del fast, kern
        t_plain = _per_query_ms(lambda q: exact_topk(q, gallery, cfg.k), queries[:cfg.plain_queries], cfg.repeats)
        rows.append(row("zscir plain", t_plain, BYTES[st], same_as_plain=True))
        if cfg.faiss and st != "bfloat16":  # FAISS has no bf16 input; the fp32 / fp16 rows use the same values
            rows.extend(_faiss_rows(gallery, queries, plain, cfg, row))
        del gallery
    return rows


def _identical(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], scores: bool) -> bool:
    same_ids = bool(np.array_equal(a[1], b[1]))
    return same_ids and (not scores or bool(np.array_equal(a[0].view(np.int32), b[0].view(np.int32))))


def _faiss_rows(gallery: Any, queries: np.ndarray, plain: list, cfg: SingleQueryBenchConfig,
                row: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        logger.warning("faiss not installed: no FAISS rows")
        return []
    faiss.omp_set_num_threads(torch.get_num_threads())
    values = _fp32_values(gallery)
    d = values.shape[1]
    out = []
    for name, make, nbytes in (
            ("faiss flat", lambda: faiss.IndexFlatIP(d), 4),
            ("faiss sq-fp16", lambda: faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16,
                                                                 faiss.METRIC_INNER_PRODUCT), 2)):
        index = make()  # one index at a time: at 1M x 768 the flat one alone is 3 GB
        index.add(values)
        res = [index.search(queries[i:i + 1], cfg.k) for i in range(len(queries))]
        same = all(np.array_equal(r[1], p[1]) for r, p in zip(res, plain))
        out.append(row(name, _per_query_ms(lambda q: index.search(q, cfg.k), queries, cfg.repeats), nbytes,
                       same_as_plain=same))
        del index
    return out


SINGLE_COLUMNS = ["N", "d", "storage", "kernel", "ms_median", "ms_min", "stream_ms", "x_stream", "same_as_plain",
                  "certified"]
