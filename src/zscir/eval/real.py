"""The real-picture benchmark (`zscir.data.real.benchmark`) through the CIRR and CIRCO protocol code.

Like the world benchmark, it is written in the official annotation formats and built on first use into
the zscir cache root (``$ZSCIR_CACHE/real/<version>-seed<seed>``), so ``zscir eval --benchmark real`` runs
the very same loaders, rankings and metrics as ``--benchmark cirr`` / ``circo``: the CIRR part (one exact
target) gives R@K with the reference removed and Recall_subset@K within the edited attribute's values; the
CIRCO part (several valid targets) gives mAP@K. ``split`` is ``test`` (report) or ``val`` (choose weights).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from zscir.data.real.sources import RealSources
from zscir.methods.base import Composer

logger = logging.getLogger(__name__)

REAL_METRICS = (
    ("cirr", "R@1"), ("cirr", "R@5"), ("cirr", "R@10"), ("cirr", "R@50"),
    ("cirr", "Rsubset@1"), ("cirr", "Rsubset@2"),
    ("circo", "mAP@5"), ("circo", "mAP@10"), ("circo", "mAP@25"),
)


def ensure_real_benchmark(root: str | Path | None = None, seed: int = 0, progress: bool = True,
                          sources: RealSources | None = None, check_only: bool = False) -> Path:
    """Build (once) the real benchmark and return its root; raises `BenchmarkBuildError` without packages.

    ``sources``: where the Debian packages' files are (default: Debian's paths). An explicit ``root`` that
    already holds a complete build (of any configuration, e.g. a small one made with
    `RealBenchmarkConfig.families`) is used as it is. ``check_only``: build nothing, only raise now (before
    a model loads) when a build is needed and the packages are missing.
    """
    from zscir.data.real.benchmark import (BENCHMARK_VERSION, RealBenchmarkConfig, build_benchmark, gallery_items,
                                           is_built, is_complete)
    from zscir.eval.world import default_cache_dir

    if root is not None and is_complete(Path(root)):
        return Path(root)
    cfg = RealBenchmarkConfig(seed=seed)
    root = Path(root) if root else default_cache_dir() / "real" / f"{BENCHMARK_VERSION}-seed{seed}"
    if check_only:
        if not is_built(root, cfg, sources):
            gallery_items(sources, warn=False)  # lists the packages' files (no rendering): raises when none is there
        return root
    if not is_built(root, cfg, sources):
        logger.info("building the real benchmark (seed %d) in %s", seed, root)
        if progress:
            print(f"building the real benchmark in {root} (first run only; the bar shows its ETA)",
                  file=sys.stderr, flush=True)
        build_benchmark(root, cfg, progress=progress, sources=sources)
    return root


def evaluate_real(composer: Composer, split: str = "test", seed: int = 0, root: str | Path | None = None,
                  batch_size: int = 128, cache_dir: str | Path | None = None, progress: bool = True,
                  limit: int | None = None, parts: tuple[str, ...] = ("cirr", "circo"),
                  sources: RealSources | None = None) -> dict[str, Any]:
    """Evaluate ``composer`` on one split (``test`` or ``val``) of the real benchmark (built from the package
    files ``sources`` on first use)."""
    from zscir.eval.benchmarks import run_benchmark

    if split not in ("test", "val"):
        raise ValueError(f"the real benchmark has splits test and val, got {split!r}")
    base = ensure_real_benchmark(root, seed, progress, sources) / split
    common = dict(batch_size=batch_size, cache_dir=cache_dir, progress=progress, limit=limit, label="real")
    runs = {p: run_benchmark(p, base, "val", composer, **common) for p in parts}
    results = {p: r.result for p, r in runs.items()}
    metrics = {name: results[p]["metrics"][name] for p, name in REAL_METRICS
               if p in results and name in results[p]["metrics"]}
    meta = json.loads((base / "meta.json").read_text())
    breakdown = {}
    if "cirr" in runs:
        caps = json.loads((base / "captions" / "cap.rc2.val.json").read_text())
        target = {str(c["pairid"]): c["target_hard"] for c in caps}
        breakdown = kind_breakdown(runs["cirr"].rankings.get("recall", {}), target, meta["cirr"])
    return {"benchmark": "real", "split": split, "seed": seed, "metrics": metrics, "breakdown": breakdown,
            "parts": {k: {kk: vv for kk, vv in v.items() if kk != "rankings"} for k, v in results.items()},
            "method": composer.describe(), "n_queries": {p: results[p].get("n_queries") for p in results}}


def kind_breakdown(rankings: dict[Any, list[Any]], target: dict[str, str], meta: dict[str, dict]
                   ) -> dict[str, dict[str, float]]:
    """R@1 / R@5 of the exact (CIRR) part per edit kind (tone, gender, hair, colour, tint)."""
    groups: dict[str, list[int]] = {}
    for pid, ranked in rankings.items():
        t = target[str(pid)]
        rank = list(ranked).index(t) if t in ranked else 10**6
        groups.setdefault(meta[str(pid)]["kind"], []).append(rank)
    return {g: {"n": len(r), "R@1": 100.0 * sum(x < 1 for x in r) / len(r),
                "R@5": 100.0 * sum(x < 5 for x in r) / len(r)} for g, r in sorted(groups.items())}


def format_real_table(results: list[dict[str, Any]]) -> str:
    """The metric table (`zscir.eval.world.metric_table`) and, below it, R@1 per edit kind."""
    from zscir.eval.world import metric_table

    lines = [metric_table(results, [n for _, n in REAL_METRICS], label_width=26)]
    kinds = sorted({k for r in results for k in r.get("breakdown", {})})
    if kinds:
        lines.append("R@1 per edit kind (CIRR part): " + ", ".join(kinds))
        for r in results:
            label = r.get("label") or r["method"].get("method", "?")
            b = r["breakdown"]
            lines.append(f"{label:<26}" + "".join(f"{k}={b[k]['R@1']:.1f} (n={b[k]['n']}) " for k in kinds if k in b))
    return "\n".join(lines)
