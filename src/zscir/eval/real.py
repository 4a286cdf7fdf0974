"""The real-picture benchmark (`zscir.data.real.benchmark`) through the CIRR and CIRCO protocol code.

Like the world benchmark, it is written in the official annotation formats and built on first use into
the zscir cache root (``$ZSCIR_CACHE/real/<version>-seed<seed>``), so ``zscir eval --benchmark real`` runs
the very same loaders, rankings and metrics as ``--benchmark cirr`` / ``circo``: the CIRR part (one exact
target) gives R@K with the reference removed and Recall_subset@K within the edited attribute's values; the
CIRCO part (several valid targets) gives mAP@K. ``split`` is ``test`` (report) or ``val`` (choose weights).

Each R@K of the CIRR part comes with a 95 % percentile-bootstrap interval that resamples concept *families*
(`zscir.eval.bootstrap`: queries of one family are correlated), and the per-query hits are kept in the
result (``per_query``) so that `paired_table` can compare methods on the same queries.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from zscir.data.real.sources import RealSources
from zscir.eval.bootstrap import DEFAULT_SAMPLES, Interval, bootstrap_recall, paired_difference
from zscir.methods.base import Composer

logger = logging.getLogger(__name__)

REAL_METRICS = (
    ("cirr", "R@1"), ("cirr", "R@5"), ("cirr", "R@10"), ("cirr", "R@50"),
    ("cirr", "Rsubset@1"), ("cirr", "Rsubset@2"),
    ("circo", "mAP@5"), ("circo", "mAP@10"), ("circo", "mAP@25"),
)
#: the CIRR-part metrics that get a bootstrap interval (their per-query hits are kept in the result)
INTERVAL_METRICS = ("R@1", "R@5", "R@10", "R@50")
#: what the bootstrap resamples by default: whole concept families (their queries are correlated)
RESAMPLE_UNITS = ("family", "query")


def ensure_real_benchmark(root: str | Path | None = None, seed: int = 0, progress: bool = True,
                          sources: RealSources | None = None, check_only: bool = False,
                          cfg: Any = None) -> Path:
    """Build (once) the real benchmark and return its root; raises `BenchmarkBuildError` without packages.

    ``sources``: where the packages' files are (default: Debian's paths and the npm folder); ``cfg``: a
    `RealBenchmarkConfig` (default: every style, ``seed``; the cache folder is versioned, real-v3). An explicit ``root`` that
    already holds a complete build (of any configuration, e.g. a small one made with
    `RealBenchmarkConfig.families`) is used as it is. ``check_only``: build nothing, only raise now (before
    a model loads) when a build is needed and the packages are missing.
    """
    from zscir.data.real.benchmark import (BENCHMARK_VERSION, RealBenchmarkConfig, build_benchmark, gallery_items,
                                           is_built, is_complete)
    from zscir.eval.world import default_cache_dir

    if root is not None and cfg is None and is_complete(Path(root)):
        return Path(root)
    cfg = cfg or RealBenchmarkConfig(seed=seed)
    root = Path(root) if root else default_cache_dir() / "real" / f"{BENCHMARK_VERSION}-seed{seed}"
    if check_only:
        if not is_built(root, cfg, sources):
            gallery_items(sources, warn=False, names=cfg.sources)  # lists the packages' files (no rendering): raises when none is there
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
                  sources: RealSources | None = None, bootstrap: int = DEFAULT_SAMPLES, resample: str = "family",
                  bootstrap_seed: int = 0) -> dict[str, Any]:
    """Evaluate ``composer`` on one split (``test`` or ``val``) of the real benchmark (built from the package
    files ``sources`` on first use).

    ``bootstrap``: redraws of the intervals of `INTERVAL_METRICS` (0: no intervals); ``resample``: ``family``
    (default, see the module docstring) or ``query``; ``bootstrap_seed`` fixes the redraws.
    """
    from zscir.eval.benchmarks import run_benchmark

    if split not in ("test", "val"):
        raise ValueError(f"the real benchmark has splits test and val, got {split!r}")
    check_bootstrap(bootstrap, resample)
    base = ensure_real_benchmark(root, seed, progress, sources) / split
    common = dict(batch_size=batch_size, cache_dir=cache_dir, progress=progress, limit=limit, label="real")
    runs = {p: run_benchmark(p, base, "val", composer, **common) for p in parts}
    results = {p: r.result for p, r in runs.items()}
    metrics = {name: results[p]["metrics"][name] for p, name in REAL_METRICS
               if p in results and name in results[p]["metrics"]}
    meta = json.loads((base / "meta.json").read_text())
    breakdown: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if "cirr" in runs:
        caps = json.loads((base / "captions" / "cap.rc2.val.json").read_text())
        target = {str(c["pairid"]): c["target_hard"] for c in caps}
        recall = runs["cirr"].rankings.get("recall", {})
        breakdown = kind_breakdown(recall, target, meta["cirr"])
        extra["per_query"] = per_query_hits(recall, target, meta["cirr"],
                                            [n for n in INTERVAL_METRICS if n in metrics])
        if bootstrap:
            extra["intervals"] = result_intervals(extra["per_query"], bootstrap, resample, bootstrap_seed)
    return {"benchmark": "real", "split": split, "seed": seed, "metrics": metrics, "breakdown": breakdown,
            "parts": {k: {kk: vv for kk, vv in v.items() if kk != "rankings"} for k, v in results.items()},
            "method": composer.describe(), "n_queries": {p: results[p].get("n_queries") for p in results}, **extra}


def check_bootstrap(samples: int, resample: str) -> None:
    """One ``ValueError`` line for a negative redraw count or an unknown resampling unit (before any work)."""
    if isinstance(samples, bool) or int(samples) != samples or samples < 0:
        raise ValueError(f"bootstrap redraws must be an integer >= 0 (0: no intervals), got {samples!r}")
    if resample not in RESAMPLE_UNITS:
        raise ValueError(f"resample must be one of {', '.join(RESAMPLE_UNITS)}, got {resample!r}")


def per_query_hits(rankings: dict[Any, list[Any]], target: dict[str, str], meta: dict[str, dict],
                   names: list[str]) -> dict[str, Any]:
    """The CIRR part per query, in ranking order: its pairid, its family and a 0/1 hit per metric ``R@K``.

    The hits are `zscir.eval.metrics.hits_at_k` of the very rankings the metrics were computed from, so their
    mean is the reported R@K exactly.
    """
    from zscir.eval.metrics import hits_at_k

    keys = [str(k) for k in rankings]
    ranked = [list(v) for v in rankings.values()]
    targets = [target[k] for k in keys]
    hits = {n: hits_at_k(ranked, targets, int(n.split("@")[1])).astype(int).tolist() for n in names}
    return {"keys": keys, "family": [meta[k]["family"] for k in keys], "hits": hits}


def result_intervals(per_query: dict[str, Any], samples: int = DEFAULT_SAMPLES, resample: str = "family",
                     seed: int = 0) -> dict[str, dict[str, Any]]:
    """`bootstrap_recall` of every metric in ``per_query`` (as JSON-ready dicts)."""
    clusters = per_query["family"] if resample == "family" else None
    return {n: bootstrap_recall(h, clusters, samples, seed).as_dict() for n, h in per_query["hits"].items()}


def mean_result(results: list[dict[str, Any]], samples: int = DEFAULT_SAMPLES, resample: str = "family",
                seed: int = 0) -> dict[str, Any]:
    """The mean of several runs of one method (seeds) on the same queries, as one result.

    Its metrics are the means of theirs; its per-query "hits" are the mean hit of each query over the runs
    (0, 1/n, ..., 1), so its interval and its paired differences resample the same families for every run,
    and the mean of the hits is the mean R@K.
    """
    if len(results) < 2:
        raise ValueError("a mean of seeds needs at least two results")
    labels = [_label(r) for r in results]
    first = results[0]
    metrics = {k: sum(r["metrics"][k] for r in results) / len(results)
               for k in first["metrics"] if all(k in r["metrics"] for r in results)}
    out: dict[str, Any] = {"benchmark": "real", "split": first.get("split"), "metrics": metrics, "breakdown": {},
                           "label": f"mean({', '.join(labels)})", "method": {"method": "mean", "of": labels}}
    pq = [r.get("per_query") for r in results]
    if all(pq):
        if any(p["keys"] != pq[0]["keys"] for p in pq):
            raise ValueError(f"{', '.join(labels)} were evaluated on different queries; their mean needs the "
                             "same split and --limit")
        names = [n for n in pq[0]["hits"] if all(n in p["hits"] for p in pq)]
        hits = {n: [sum(col) / len(pq) for col in zip(*(p["hits"][n] for p in pq))] for n in names}
        out["per_query"] = {"keys": pq[0]["keys"], "family": pq[0]["family"], "hits": hits}
        if samples:
            out["intervals"] = result_intervals(out["per_query"], samples, resample, seed)
    return out


def paired_table(results: list[dict[str, Any]], baseline: str | None = None, metric: str = "R@1",
                 samples: int = DEFAULT_SAMPLES, resample: str = "family", seed: int = 0
                 ) -> list[dict[str, Any]]:
    """Paired differences ``method - baseline`` of ``metric`` on the same queries, one row per other method.

    ``baseline``: a result's label (its ``-m`` text) or, for a method tuned on val, its group (``sum``);
    default the first result. Results of other queries (a different split or ``--limit``) cannot be paired
    and raise ``ValueError``.
    """
    usable = [r for r in results if metric in r.get("per_query", {}).get("hits", {})]
    if len(usable) < 2:
        return []
    names = [{_label(r), r.get("tuned_on", {}).get("group")} for r in usable]
    found = [i for i, n in enumerate(names) if baseline in n]
    if baseline is not None and not found:
        raise ValueError(f"--baseline {baseline!r} is not one of the evaluated methods: "
                         f"{', '.join(_label(r) for r in usable)}")
    base = usable[found[0]] if baseline is not None else usable[0]
    rows = []
    for r in usable:
        if r is base:
            continue
        if r["per_query"]["keys"] != base["per_query"]["keys"]:
            raise ValueError(f"{_label(r)} and {_label(base)} were evaluated on different queries; a paired "
                             "difference needs the same split and --limit")
        d = paired_difference(r["per_query"]["hits"][metric], base["per_query"]["hits"][metric],
                              base["per_query"]["family"] if resample == "family" else None, samples, seed)
        rows.append({"method": _label(r), "baseline": _label(base), "metric": metric, **d.as_dict()})
    return rows


def _label(r: dict[str, Any]) -> str:
    return r.get("label") or r["method"].get("method", "?")


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


def format_real_table(results: list[dict[str, Any]], paired: list[dict[str, Any]] | None = None) -> str:
    """The metric table (`zscir.eval.world.metric_table`), R@1 with its interval, the ``paired`` differences
    (`paired_table`) and R@1 per edit kind."""
    from zscir.eval.world import metric_table

    lines = [metric_table(results, [n for _, n in REAL_METRICS], label_width=26)]
    width = max([26] + [len(_label(r)) + 2 for r in results])
    with_ci = [r for r in results if "R@1" in r.get("intervals", {})]
    if with_ci:
        iv = with_ci[0]["intervals"]["R@1"]
        lines.append(f"R@1 with its {100 * iv['level']:.0f} % bootstrap interval ({iv['samples']} redraws of "
                     f"{'concept families' if iv['resample'] == 'family' else 'queries'}, seed {iv['seed']}):")
        for r in with_ci:
            lines.append(f"{_label(r):<{width}}{Interval.from_dict(r['intervals']['R@1'])}")
    if paired:
        lines.append(f"paired difference of {paired[0]['metric']} against {paired[0]['baseline']} "
                     "(same redraws for both; * = interval excludes 0):")
        for d in paired:
            lines.append(f"{d['method']:<{width}}{d['estimate']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"
                         f"{' *' if d['excludes_zero'] else ''}")
    kinds = sorted({k for r in results for k in r.get("breakdown", {})})
    if kinds:
        lines.append("R@1 per edit kind (CIRR part): " + ", ".join(kinds))
        for r in results:
            label = r.get("label") or r["method"].get("method", "?")
            b = r.get("breakdown", {})
            if b:
                lines.append(f"{label:<26}" + "".join(f"{k}={b[k]['R@1']:.1f} (n={b[k]['n']}) " for k in kinds
                                                      if k in b))
    return "\n".join(lines)
