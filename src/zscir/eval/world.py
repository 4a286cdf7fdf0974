"""The world benchmark: the held-out CIR-world split, evaluated with the real CIRR and CIRCO protocols.

The world generator writes its benchmark in exactly the official annotation formats (a CIRR-layout root
and a CIRCO-layout root), so `zscir eval --benchmark world` runs the very same loaders, rankings and
metrics as `--benchmark cirr` / `--benchmark circo` on real data: the CIRR part gives R@K (reference
removed) and Recall_subset@K, the CIRCO part (under-specified edits, several ground truths) gives mAP@K.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from zscir.methods.base import Composer

logger = logging.getLogger(__name__)

#: metrics of the world table, in print order: (source part, metric name)
WORLD_METRICS = (
    ("cirr", "R@1"), ("cirr", "R@5"), ("cirr", "R@10"), ("cirr", "R@50"),
    ("cirr", "Rsubset@1"), ("cirr", "Rsubset@2"), ("cirr", "Rsubset@3"),
    ("circo", "mAP@5"), ("circo", "mAP@10"), ("circo", "mAP@25"), ("circo", "mAP@50"),
)


def default_cache_dir() -> Path:
    """The zscir cache root (``$ZSCIR_CACHE``); see `zscir.cache`."""
    from zscir.cache import cache_root

    return cache_root()


def evaluate_world(
    composer: Composer,
    world_seed: int = 0,
    root: str | Path | None = None,
    batch_size: int = 128,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    limit: int | None = None,
    world_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``composer`` on the world benchmark; returns metrics, per-part results and configuration."""
    from zscir.data.world.cache import ensure_world_benchmark
    from zscir.eval.benchmarks import run_benchmark

    root = ensure_world_benchmark(world_seed, root, progress=progress, **(world_overrides or {}))
    common = dict(batch_size=batch_size, cache_dir=cache_dir, progress=progress, limit=limit, label="world")
    cirr_run = run_benchmark("cirr", root / "cirr", "val", composer, **common)
    cirr = cirr_run.result
    circo = run_benchmark("circo", root / "circo", "val", composer, **common).result
    parts = {"cirr": cirr, "circo": circo}
    metrics = {name: parts[part]["metrics"][name] for part, name in WORLD_METRICS if name in parts[part]["metrics"]}
    info = json.loads((root / "world.json").read_text())
    return {
        "breakdown": _breakdown(root, info, cirr_run.rankings.get("recall", {})),
        "benchmark": "world",
        "world_version": info.get("world_version"),
        "world_seed": world_seed,
        "metrics": metrics,
        "parts": {k: {kk: vv for kk, vv in v.items() if kk != "rankings"} for k, v in parts.items()},
        "method": composer.describe(),
        "n_queries": {"cirr": cirr.get("n_queries"), "circo": circo.get("n_queries")},
    }


def _breakdown(root: Path, info: dict[str, Any], rankings: dict[Any, list[Any]]) -> dict[str, dict[str, float]]:
    """CIRR-part R@1 / R@5 per edit kind and for held-out vs seen attribute combinations.

    This is where a method's strengths and failures show: e.g. text-only retrieval can solve "background"
    edits but not "move" edits, which need the reference.
    """
    caps = json.loads((root / "cirr" / "captions" / "cap.rc2.val.json").read_text())
    target = {str(c["pairid"]): c["target_hard"] for c in caps}
    groups: dict[str, list[int]] = {}
    for pid, ranked in rankings.items():
        meta = info.get("cirr", {}).get(str(pid), {})
        rank = list(ranked).index(target[str(pid)]) if target[str(pid)] in ranked else 10**6
        for g in (f"kind:{meta.get('kind', '?')}", "heldout" if meta.get("heldout") else "seen-combos"):
            groups.setdefault(g, []).append(rank)
    return {g: {"n": len(r), "R@1": 100.0 * sum(x < 1 for x in r) / len(r), "R@5": 100.0 * sum(x < 5 for x in r) / len(r)}
            for g, r in sorted(groups.items())}


def format_breakdown(result: dict[str, Any]) -> str:
    rows = [f"  {g:<22} n={v['n']:<4} R@1 {v['R@1']:6.2f}  R@5 {v['R@5']:6.2f}" for g, v in result["breakdown"].items()]
    return "\n".join([f"breakdown ({result.get('label') or result['method'].get('method')}, CIRR part):", *rows])


def format_world_table(results: list[dict[str, Any]]) -> str:
    """One row per result (method), one column per world metric."""
    return metric_table(results, [name for _, name in WORLD_METRICS])


def metric_table(results: list[dict[str, Any]], names: list[str], label_width: int = 22) -> str:
    """A text table: one row per result (its label or method name), one column per metric in ``names``."""
    head = f"{'method':<{label_width}}" + "".join(f"{n:>11}" for n in names)
    lines = [head, "-" * len(head)]
    for r in results:
        label = r.get("label") or r["method"].get("method", "?")
        lines.append(f"{label:<{label_width}}" + "".join(f"{r['metrics'].get(n, float('nan')):>11.2f}" for n in names))
    return "\n".join(lines)
