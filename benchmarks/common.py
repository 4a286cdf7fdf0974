"""Shared helpers of the benchmark suite: timing (median of repeats), machine facts, result tables.

Why medians of repeats: the machines this runs on are shared, so a single timing can be inflated by
another process at any moment; the median of a few repeats is robust to such outliers, and reporting
min/max beside it shows how noisy the run was.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)


@dataclass
class Timing:
    """Wall-clock seconds of ``repeats`` runs of one callable (after ``warmup`` untimed runs)."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def worst(self) -> float:
        return max(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "min_s": self.best, "max_s": self.worst, "repeats": len(self.times)}


#: Source of ``_status()`` for the memory benchmarks' child interpreters: VmHWM / VmRSS / RssAnon /
#: RssFile in bytes from ``/proc/self/status`` (the child's own process image, unlike ``ru_maxrss``).
PROC_STATUS_SRC = r"""
def _status():
    out = {}
    for line in open('/proc/self/status'):
        k, _, v = line.partition(':')
        if k in ('VmHWM', 'VmRSS', 'RssAnon', 'RssFile'):
            out[k] = int(v.split()[0]) * 1024
    return out
"""


def time_it(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> Timing:
    """Median-able timings of ``fn``; warm-up runs fault in pages and fill allocator caches first."""
    for _ in range(max(0, warmup)):
        fn()
    t = Timing()
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        t.times.append(time.perf_counter() - t0)
    return t


def machine_info() -> dict[str, Any]:
    """Facts that make a number interpretable: CPU model, cores, load, library versions, threads."""
    import numpy as np
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux
        load = (float("nan"),) * 3
    info: dict[str, Any] = {
        "cpu_model": cpu, **_cpu_details(), "nproc": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load],
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
    }
    try:
        import faiss  # type: ignore[import-not-found]

        info["faiss"] = getattr(faiss, "__version__", "?")
    except ImportError:
        info["faiss"] = None
    return info


#: CPU flags that change which kernels run fast here (bf16 / fp16 dot products, vector width)
CPU_FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "asimd", "sve")


def _cpu_details() -> dict[str, Any]:
    """L3 size (sysfs) and the flags of :data:`CPU_FLAGS_OF_NOTE` (``/proc/cpuinfo``); empty where unknown.

    Why: a model string such as "AMD EPYC" (what a VM may report) does not say which CPU a number was
    measured on; the cache size and the SIMD flags narrow it down and explain kernel differences.
    """
    out: dict[str, Any] = {"cpu_l3": None, "cpu_flags": []}
    try:
        for idx in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            if (idx / "level").read_text().strip() == "3":
                out["cpu_l3"] = (idx / "size").read_text().strip()
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                out["cpu_flags"] = [f for f in CPU_FLAGS_OF_NOTE if f in have]
                break
    except OSError:
        pass
    return out


def cpu_description(info: dict[str, Any]) -> str:
    """``"AMD EPYC (L3 32768K; avx2 avx512f avx512_bf16)"``: the CPU line every table of the suite carries."""
    extra = [f"L3 {info['cpu_l3']}"] if info.get("cpu_l3") else []
    if info.get("cpu_flags"):
        extra.append(" ".join(info["cpu_flags"]))
    model = info.get("cpu_model") or "CPU model not recorded"
    return f"{model} ({'; '.join(extra)})" if extra else model


def fmt(x: Any, digits: int = 3) -> str:
    """Compact number formatting for markdown tables (3 significant digits, thousands kept readable)."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:
            return "nan"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns`` (missing cells shown as –)."""
    if not rows:
        return "_(no rows)_\n"
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(out) + "\n"


def write_results(out_dir: Path, name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``out_dir`` (created if needed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jp, mp = out_dir / f"{name}.json", out_dir / f"{name}.md"
    jp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    mp.write_text(markdown, encoding="utf-8")
    return jp, mp
