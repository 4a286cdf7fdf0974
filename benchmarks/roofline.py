"""This machine's roofline, measured by the suite itself: matmul GFLOP/s and memory bandwidth.

Why measure instead of quoting a datasheet: on a shared VM the usable peak depends on the thread count,
the other tenants and the BLAS build, so the only honest reference for "how close to the hardware is the
search core" is a best-case kernel timed in the same process, right before the search is timed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.common import time_it

logger = logging.getLogger(__name__)


@dataclass
class RooflineConfig:
    """``matmul_n``: square fp32 matmul size; ``copy_mb``: size of the buffer streamed for bandwidth."""

    matmul_n: int = 1024
    copy_mb: int = 256
    repeats: int = 5


def measure_matmul_gflops(n: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Best-case fp32 GEMM rate (``2 n^3`` flops per ``n x n @ n x n``), median of ``repeats``."""
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    t = time_it(lambda: torch.mm(a, b, out=c), repeats=repeats)
    flops = 2.0 * n ** 3
    return {"n": n, "gflops_median": flops / t.median / 1e9, "gflops_best": flops / t.best / 1e9, **t.as_dict()}


def measure_bandwidth_gbs(mb: int = 256, repeats: int = 5) -> dict[str, Any]:
    """Streaming copy bandwidth: bytes read + bytes written per second (like STREAM's copy)."""
    n = mb * 1024 * 1024 // 4
    src = torch.ones(n)
    dst = torch.empty(n)
    t = time_it(lambda: dst.copy_(src), repeats=repeats)
    moved = 2.0 * n * 4
    return {"mb": mb, "gbs_median": moved / t.median / 1e9, "gbs_best": moved / t.best / 1e9, **t.as_dict()}


def measure_roofline(cfg: RooflineConfig | None = None) -> dict[str, Any]:
    """Both roofs; the search benchmark divides its achieved rates by these medians."""
    cfg = cfg or RooflineConfig()
    return {"matmul": measure_matmul_gflops(cfg.matmul_n, cfg.repeats),
            "bandwidth": measure_bandwidth_gbs(cfg.copy_mb, cfg.repeats)}
