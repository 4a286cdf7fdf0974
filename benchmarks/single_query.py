"""Item ``single``: one query at a time against the memory-bandwidth roof (issue 15 §1, issue 21 §0).

One query against ``N x d`` gallery rows is a matrix-vector product, so its best possible time is reading
the gallery once: ``N d b / bandwidth`` (``b`` = bytes per stored value, the bandwidth = the suite's
streaming-copy measurement, :mod:`benchmarks.roofline`). Rows per (N, d, storage):

* ``zscir fast``: ``ExactSearcher(single_query="fast")`` (:mod:`zscir.index.single_query`: FAISS flat scan
  for fp32, the fp16 / bf16 scalar quantizer for half precision; what serving uses);
* ``zscir plain``: :func:`~zscir.index.search.exact_topk` with one query (the evaluation path, and the
  single-query path when faiss is not installed);
* ``faiss flat`` / ``faiss sq-fp16`` / ``faiss sq-bf16``: the raw FAISS indexes on the same (stored)
  values, one query per ``search`` call, without zscir around them; ``stream_ms`` uses their own bytes per
  value (4 and 2).

``same_as_plain``: the ids of every timed query equal ``exact_topk``'s; ``within_tol`` (zscir fast): the
tolerance contract of :mod:`zscir.index.single_query` holds for every timed query (scores within
``score_tolerance`` rank by rank, ids different only where their float64 scores are within twice that).
Every table names the CPU (``/proc/cpuinfo`` model name, L3 size and the SIMD flags that matter here).
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
from zscir.index.single_query import score_tolerance

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


def within_tolerance(gallery: Any, query: np.ndarray, got: tuple[np.ndarray, np.ndarray],
                     plain: tuple[np.ndarray, np.ndarray], max_norm: float) -> bool:
    """The contract of :mod:`zscir.index.single_query` for one query (float64 scores of the few ids that differ)."""
    (s1, i1), (s0, i0) = got, plain
    if not np.array_equal(i1 < 0, i0 < 0):
        return False
    tol = score_tolerance(query.shape[1], float(np.linalg.norm(query.astype(np.float64))), max_norm)
    ok = i1[0] >= 0
    if not bool(np.all(np.abs(s1[0][ok] - s0[0][ok]) <= tol)):
        return False
    differ = np.flatnonzero(ok & (i1[0] != i0[0]))
    if differ.size == 0:
        return True
    pick = np.concatenate([i1[0][differ], i0[0][differ]])
    rows = (gallery[torch.from_numpy(pick)].double().numpy() if isinstance(gallery, torch.Tensor)
            else np.asarray(gallery[pick], np.float64))
    e = rows @ query[0].astype(np.float64)
    return bool(np.all(np.abs(e[:differ.size] - e[differ.size:]) <= 2 * tol))


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
        fast.search(queries[:1], cfg.k)  # first call: makes the FAISS index (encodes a half-precision gallery)
        setup_s = time.perf_counter() - t0
        got = [fast.search(queries[i:i + 1], cfg.k) for i in range(cfg.n_queries)]
        max_norm = float(torch.linalg.vector_norm(torch.as_tensor(_fp32_values(gallery)), dim=1).max())
        index = fast._single
        rows.append(row("zscir fast", _per_query_ms(lambda q: fast.search(q, cfg.k), queries, cfg.repeats),
                        BYTES[st], same_as_plain=all(np.array_equal(g[1], p[1]) for g, p in zip(got, plain)),
                        within_tol=all(within_tolerance(gallery, queries[i:i + 1], got[i], plain[i], max_norm)
                                       for i in range(cfg.n_queries)),
                        setup_s=setup_s, index=index.kind if index else "batched torch (no faiss index)",
                        index_bytes=index.nbytes if index else 0))
        del fast, index
        t_plain = _per_query_ms(lambda q: exact_topk(q, gallery, cfg.k), queries[:cfg.plain_queries], cfg.repeats)
        rows.append(row("zscir plain", t_plain, BYTES[st], same_as_plain=True))
        if cfg.faiss:
            rows.extend(_faiss_rows(gallery, st, queries, plain, cfg, row))
        del gallery
    return rows


def _faiss_rows(gallery: Any, storage: str, queries: np.ndarray, plain: list, cfg: SingleQueryBenchConfig,
                row: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        logger.warning("faiss not installed: no FAISS rows")
        return []
    faiss.omp_set_num_threads(torch.get_num_threads())
    values = _fp32_values(gallery)
    d = values.shape[1]
    sq = faiss.ScalarQuantizer
    kinds: list[tuple[str, Callable[[], Any], int]] = []
    if storage != "bfloat16":  # the fp32 / fp16 rows hold the same values as the stored gallery
        kinds += [("faiss flat", lambda: faiss.IndexFlatIP(d), 4),
                  ("faiss sq-fp16", lambda: faiss.IndexScalarQuantizer(d, sq.QT_fp16, faiss.METRIC_INNER_PRODUCT), 2)]
    elif hasattr(sq, "QT_bf16"):
        kinds.append(("faiss sq-bf16", lambda: faiss.IndexScalarQuantizer(d, sq.QT_bf16, faiss.METRIC_INNER_PRODUCT), 2))
    out = []
    for name, make, nbytes in kinds:
        index = make()  # one index at a time: at 1M x 768 the flat one alone is 3 GB
        index.add(values)
        res = [index.search(queries[i:i + 1], cfg.k) for i in range(len(queries))]
        same = all(np.array_equal(r[1], p[1]) for r, p in zip(res, plain))
        out.append(row(name, _per_query_ms(lambda q: index.search(q, cfg.k), queries, cfg.repeats), nbytes,
                       same_as_plain=same))
        del index
    return out


SINGLE_COLUMNS = ["N", "d", "storage", "kernel", "ms_median", "ms_min", "stream_ms", "x_stream", "same_as_plain",
                  "within_tol"]
