"""Per-benchmark evaluation: load, check images, embed, rank, score — and record how.

`run_benchmark` does the work and returns a `BenchmarkRun`: the JSON-serialisable result (metrics,
every protocol flag, method description, zscir version) plus the per-query rankings that test-server
submissions are written from. `evaluate_benchmark` is the public entry point of ``zscir eval`` and returns
just the result dict.

Protocols (see docs/BENCHMARKS.md for sources):

* CIRR — gallery = every image of the split; each query's reference is excluded from its ranking
  (``exact_topk(exclude=...)``, equivalent to SEARLE's deletion from the full argsort); R@1/5/10/50;
  Recall_subset@1/2/3 over ``img_set.members`` minus the reference, ordered by the same query-gallery
  scores as the full ranking; Avg = (R@5 + Recall_subset@1) / 2 as in the CIRR paper.
* FashionIQ — per category, gallery = that category's split list, reference *not* removed; R@10/R@50 per
  category, their mean over categories, and the overall average of those two.
* CIRCO — gallery = COCO 2017 unlabeled (or the image folder), nothing removed; mAP@5/10/25/50 over all
  ground truths, Recall@K of ``target_img_id``, mAP@10 per ``semantic_aspects`` value.

``limit`` is a smoke-test mode: only the first ``limit`` queries (per category for FashionIQ) are used and
the gallery is reduced to the images those queries mention, so numbers are *not* comparable with
published ones; the result says so (``protocol.gallery``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...data.fashioniq_captions import compose_fashioniq_texts
from ...methods.base import Composer
from ..metrics import map_at_k, recall_at_k, recall_subset_at_k
from .circo import CIRCO_SPLITS, SEMANTIC_ASPECTS, CircoData, load_circo
from .cirr import CirrData, load_cirr, normalize_cirr_split
from .fashioniq import FIQ_SPLITS, FashionIQCategory, FashionIQData, load_fashioniq
from .features import GalleryFeatures, encode_gallery, encode_queries
from .layout import DirectoryListing, GalleryImage, check_images_exist
from .protocol import BENCHMARK_NAMES, CircoProtocol, CirrProtocol, FashionIQProtocol, Protocol, make_protocol

logger = logging.getLogger(__name__)

__all__ = ["BenchmarkRun", "RunOptions", "run_benchmark", "evaluate_benchmark"]

#: ranking depth kept per query (submissions need 50; all metrics use K <= 50)
RANK_DEPTH = 50
_RANKING = "exact inner product of L2-normalised features (cosine); ties broken by gallery order"


@dataclass(frozen=True)
class RunOptions:
    """Execution options: they change speed, never numbers (so they are not protocol flags)."""

    batch_size: int = 64
    num_workers: int = 0
    limit: int | None = None
    cache_dir: Path | None = None
    use_cache: bool = True
    device: str = "cpu"
    progress: bool = True


@dataclass
class BenchmarkRun:
    """A finished run: ``result`` (JSON) and ``rankings`` (per-query ranked ids, for submissions).

    ``rankings`` maps a ranking name to ``{query key: ranked ids}``: CIRR has ``"recall"`` (50 names,
    reference removed) and ``"recall_subset"`` (the 5 subset candidates in order), keyed by pairid; CIRCO
    has ``"ranking"`` keyed by query id; FashionIQ has one per category keyed by query position.
    """

    result: dict[str, Any]
    rankings: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- helpers
def _limited(images: Sequence[GalleryImage], keep: set[Any]) -> list[GalleryImage]:
    """The gallery images whose id is in ``keep``, in gallery order."""
    return [im for im in images if im.id in keep]


def _rank(query_feats: torch.Tensor, gallery: GalleryFeatures, k: int, device: str,
          exclude: np.ndarray | None = None) -> np.ndarray:
    from ...index.search import exact_topk

    _, idx = exact_topk(query_feats, gallery.features, k, exclude=exclude, device=device)
    return idx


def _ids(idx_rows: np.ndarray, images: Sequence[GalleryImage]) -> list[list[Any]]:
    ids = [im.id for im in images]
    return [[ids[i] for i in row if i >= 0] for row in idx_rows.tolist()]


def _feature_info(gal: GalleryFeatures, query_seconds: float) -> dict[str, Any]:
    return {
        "gallery_cache_hit": gal.cache_hit,
        "gallery_cache_digest": gal.cache_key.digest() if gal.cache_key else None,
        "gallery_seconds": round(gal.seconds, 3),
        "query_seconds": round(query_seconds, 3),
        "dim": int(gal.features.shape[1]) if gal.features.ndim == 2 else 0,
    }


def _gallery(composer: Composer, images: Sequence[GalleryImage], proto: Protocol, opts: RunOptions,
             desc: str, info: dict[str, Any]) -> GalleryFeatures:
    return encode_gallery(composer, images, proto.image_preprocessing, batch_size=opts.batch_size,
                          num_workers=opts.num_workers, cache_dir=opts.cache_dir, use_cache=opts.use_cache,
                          progress=opts.progress, desc=desc, info=info)


def _queries(composer: Composer, refs: Sequence[Path], texts: Sequence[Sequence[str]], proto: Protocol,
             opts: RunOptions, desc: str) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    feats = encode_queries(composer, refs, texts, proto.image_preprocessing, batch_size=opts.batch_size,
                           num_workers=opts.num_workers, progress=opts.progress, desc=desc)
    return feats, time.perf_counter() - t0


def _gallery_note(opts: RunOptions, full: str) -> str:
    if opts.limit is None:
        return full
    return (f"LIMITED: first {opts.limit} queries and only the images they mention; "
            "not comparable with published numbers")


# ----------------------------------------------------------------------------------------- CIRR
#: queries ranked over the full gallery at once for Recall_subset (bounds the Q x N score/index block)
_FULL_RANK_BLOCK = 512


def _rank_with_subsets(qfeat: torch.Tensor, gal: GalleryFeatures, gallery: Sequence[GalleryImage],
                       queries: Sequence[Any], device: str,
                       exclude: np.ndarray | None) -> tuple[list[list[Any]], list[list[Any]]]:
    """The R@K rankings (top `RANK_DEPTH`) and the Recall_subset rankings from *one* full-gallery ranking.

    The official CIRR evaluator masks the full ranking with ``img_set.members`` minus the reference.
    Re-scoring the members with a separate product rounds differently in the last bits, so near-duplicate
    members could come out in another order than in the ranking R@K is computed from; here both come from
    the same `exact_topk` call (same scores, same tie rule), queries in blocks of `_FULL_RANK_BLOCK`.
    """
    from ...index.search import exact_topk

    ids = [im.id for im in gallery]
    index = {im_id: i for i, im_id in enumerate(ids)}
    n = len(ids)
    ranked: list[list[Any]] = []
    subsets: list[list[Any]] = []
    for q0 in range(0, len(queries), _FULL_RANK_BLOCK):
        q1 = min(len(queries), q0 + _FULL_RANK_BLOCK)
        ex = exclude[q0:q1] if exclude is not None else None
        _, idx = exact_topk(qfeat[q0:q1], gal.features, n, exclude=ex, device=device)
        for row, q in zip(idx, queries[q0:q1]):
            row = row[row >= 0]
            ranked.append([ids[i] for i in row[:RANK_DEPTH]])
            wanted = np.zeros(n, dtype=bool)
            wanted[[index[m] for m in q.members if m != q.reference]] = True
            subsets.append([ids[i] for i in row[wanted[row]]])
    return ranked, subsets


def _run_cirr(data: CirrData, composer: Composer, proto: CirrProtocol, opts: RunOptions) -> BenchmarkRun:
    queries = data.queries[: opts.limit] if opts.limit is not None else data.queries
    gallery = data.gallery
    if opts.limit is not None:
        keep = {n for q in queries for n in (q.reference, q.target, *q.members) if n is not None}
        gallery = _limited(gallery, keep)
    index = {im.id: i for i, im in enumerate(gallery)}
    check_images_exist(gallery, what=f"the images named by image_splits/split.rc2.{data.split}.json "
                                     f"(relative to {data.root})")

    gal = _gallery(composer, gallery, proto, opts, f"CIRR {data.split} gallery",
                   {"benchmark": "cirr", "split": data.split, "data_root": str(data.root)})
    refs = [gallery[index[q.reference]].path for q in queries]
    qfeat, q_sec = _queries(composer, refs, [[q.caption] for q in queries], proto, opts, f"CIRR {data.split} queries")

    ref_idx = np.array([index[q.reference] for q in queries], dtype=np.int64)
    ranked, subset_ranked = _rank_with_subsets(qfeat, gal, gallery, queries, opts.device,
                                               ref_idx if proto.remove_reference else None)

    keys = [str(q.pairid) for q in queries]
    rankings = {"recall": dict(zip(keys, ranked)), "recall_subset": dict(zip(keys, subset_ranked))}
    metrics: dict[str, float] = {}
    if data.has_targets:
        targets = [q.target for q in queries]
        for k in proto.ks:
            metrics[f"R@{k}"] = recall_at_k(ranked, targets, k)
        members = [q.members for q in queries]
        references = [q.reference for q in queries]
        for k in proto.subset_ks:
            metrics[f"Rsubset@{k}"] = recall_subset_at_k(subset_ranked, targets, members, references, k)
        if "R@5" in metrics and "Rsubset@1" in metrics:
            metrics["Avg"] = (metrics["R@5"] + metrics["Rsubset@1"]) / 2
    protocol = {
        **proto.as_dict(),
        "gallery": _gallery_note(opts, f"every image of split.rc2.{data.split}.json"),
        "subset": "the full ranking masked with img_set.members minus the reference (official evaluator)",
        "ranking": _RANKING,
    }
    return BenchmarkRun(
        {"n_queries": len(queries), "n_gallery": len(gallery), "metrics": metrics, "protocol": protocol,
         "features": _feature_info(gal, q_sec)},
        rankings,
    )


# ----------------------------------------------------------------------------------------- FashionIQ
def _run_fiq_category(cat: FashionIQCategory, split: str, composer: Composer, proto: FashionIQProtocol,
                      opts: RunOptions, listing: DirectoryListing) -> tuple[dict[str, float], dict[str, list], dict]:
    queries = cat.queries[: opts.limit] if opts.limit is not None else cat.queries
    gallery = cat.gallery
    if opts.limit is not None:
        keep = {n for q in queries for n in (q.candidate, q.target) if n is not None}
        gallery = _limited(gallery, keep)
    refs = [cat.image(q.candidate) for q in queries]
    what = f"images/<asin>.png or .jpg for every name in image_splits/split.{cat.category}.{split}.json"
    check_images_exist(list(gallery) + refs, what=what, listing=listing)

    gal = _gallery(composer, gallery, proto, opts, f"FashionIQ {cat.category} gallery",
                   {"benchmark": "fashioniq", "category": cat.category, "split": split})
    texts = [compose_fashioniq_texts(q.captions, proto.caption_mode, strip=proto.strip_captions) for q in queries]
    qfeat, q_sec = _queries(composer, [r.path for r in refs], texts, proto, opts, f"FashionIQ {cat.category} queries")
    ranked = _ids(_rank(qfeat, gal, RANK_DEPTH, opts.device), gallery)
    metrics: dict[str, float] = {}
    if all(q.target is not None for q in queries):
        targets = [q.target for q in queries]
        for k in proto.ks:
            metrics[f"{cat.category}/R@{k}"] = recall_at_k(ranked, targets, k)
    info = {"n_queries": len(queries), "n_gallery": len(gallery), **_feature_info(gal, q_sec)}
    return metrics, {str(i): r for i, r in enumerate(ranked)}, info


def _run_fiq(data: FashionIQData, composer: Composer, proto: FashionIQProtocol, opts: RunOptions) -> BenchmarkRun:
    metrics: dict[str, float] = {}
    rankings: dict[str, dict[str, list]] = {}
    per_cat: dict[str, Any] = {}
    listing = DirectoryListing()
    for name in proto.categories:
        m, r, info = _run_fiq_category(data.categories[name], data.split, composer, proto, opts, listing)
        metrics.update(m)
        rankings[name] = r
        per_cat[name] = info
    if metrics:
        for k in proto.ks:
            metrics[f"avg/R@{k}"] = float(np.mean([metrics[f"{c}/R@{k}"] for c in proto.categories]))
        metrics["avg"] = float(np.mean([metrics[f"avg/R@{k}"] for k in proto.ks]))
    protocol = {
        **proto.as_dict(),
        "gallery": _gallery_note(opts, f"per category: every image of image_splits/split.<category>.{data.split}.json"),
        "reference_removed": False,
        "ranking": _RANKING,
    }
    return BenchmarkRun(
        {"n_queries": sum(v["n_queries"] for v in per_cat.values()),
         "n_gallery": sum(v["n_gallery"] for v in per_cat.values()),
         "metrics": metrics, "protocol": protocol, "features": per_cat},
        rankings,
    )


# ----------------------------------------------------------------------------------------- CIRCO
def _run_circo(data: CircoData, composer: Composer, proto: CircoProtocol, opts: RunOptions) -> BenchmarkRun:
    queries = data.queries[: opts.limit] if opts.limit is not None else data.queries
    gallery = data.gallery
    if opts.limit is not None:
        keep = {i for q in queries for i in (q.reference, *q.gt)}
        gallery = _limited(gallery, keep)
    what = ("the COCO 2017 unlabeled images listed by image_info_unlabeled2017.json" if data.gallery_source ==
            "coco_info" else "the gallery images found in the image folder")
    check_images_exist(gallery, what=what)
    index = {im.id: i for i, im in enumerate(gallery)}

    gal = _gallery(composer, gallery, proto, opts, f"CIRCO {data.split} gallery",
                   {"benchmark": "circo", "split": data.split, "data_root": str(data.root)})
    refs = [gallery[index[q.reference]].path for q in queries]
    texts = [[proto.query_text(q.caption, q.shared_concept)] for q in queries]
    qfeat, q_sec = _queries(composer, refs, texts, proto, opts, f"CIRCO {data.split} queries")
    ranked = _ids(_rank(qfeat, gal, RANK_DEPTH, opts.device), gallery)

    metrics: dict[str, float] = {}
    if data.has_targets:
        gts = [q.gt for q in queries]
        for k in proto.ks:
            metrics[f"mAP@{k}"] = map_at_k(ranked, gts, k)
        for k in proto.ks:
            metrics[f"R@{k}"] = recall_at_k(ranked, [q.target for q in queries], k)
        present = {a for q in queries for a in q.semantic_aspects}
        for aspect in [a for a in SEMANTIC_ASPECTS if a in present] + sorted(present - set(SEMANTIC_ASPECTS)):
            sel = [i for i, q in enumerate(queries) if aspect in q.semantic_aspects]
            metrics[f"semantic_mAP@10/{aspect}"] = map_at_k([ranked[i] for i in sel], [gts[i] for i in sel], 10)
    protocol = {
        **proto.as_dict(),
        "gallery": _gallery_note(opts, f"COCO 2017 unlabeled ({data.gallery_source})"),
        "reference_removed": False,
        "ranking": _RANKING,
    }
    return BenchmarkRun(
        {"n_queries": len(queries), "n_gallery": len(gallery), "metrics": metrics, "protocol": protocol,
         "features": _feature_info(gal, q_sec)},
        {"ranking": {str(q.id): r for q, r in zip(queries, ranked)}},
    )


# ----------------------------------------------------------------------------------------- entry points
_TEST_SPLITS = ("test1", "test")


def _method_preset(composer: Composer, name: str, flags: dict[str, Any]) -> dict[str, Any]:
    """The method's own protocol flags for ``name`` that the caller did not set (recorded in the result)."""
    preset_fn = getattr(composer, "protocol_preset", None)
    preset = dict(preset_fn(name)) if callable(preset_fn) else {}
    return {k: v for k, v in preset.items() if flags.get(k) is None}


def _normalize_split(name: str, split: str) -> str:
    """The benchmark's spelling of ``split``; a split the benchmark does not have is a ``ValueError``."""
    if name == "cirr":
        return normalize_cirr_split(split)
    known = {"fashioniq": FIQ_SPLITS, "circo": CIRCO_SPLITS}.get(name)
    if known is not None and split.lower() not in known:
        raise ValueError(f"unknown {'FashionIQ' if name == 'fashioniq' else 'CIRCO'} split {split!r}; expected one "
                         f"of {', '.join(known)}")
    return split.lower()


def run_benchmark(
    name: str,
    data_root: Path | str,
    split: str,
    composer: Composer,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    cache_dir: Path | str | None = None,
    device: str = "cpu",
    progress: bool = True,
    num_workers: int = 0,
    use_cache: bool = True,
    label: str | None = None,
    **protocol_flags: Any,
) -> BenchmarkRun:
    """Evaluate ``composer`` on a benchmark split; returns the result and the per-query rankings.

    Works on splits without ground truth too (then ``metrics`` is empty): that is how submissions are made.
    ``label`` replaces the benchmark name in the result (e.g. "world" for the procedural benchmark read
    through the CIRR / CIRCO loaders); the layout actually read is always recorded as ``protocol.format``.
    """
    from ... import __version__

    name = name.lower()
    if name not in BENCHMARK_NAMES:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARK_NAMES)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of queries, got {limit}")
    preset = _method_preset(composer, name, protocol_flags)
    proto = make_protocol(name, **{**protocol_flags, **preset})
    opts = RunOptions(batch_size, num_workers, limit, Path(cache_dir).expanduser() if cache_dir else None,
                      use_cache, device, progress)
    split = _normalize_split(name, split)
    t0 = time.perf_counter()
    if name == "cirr":
        run = _run_cirr(load_cirr(data_root, split), composer, proto, opts)  # type: ignore[arg-type]
    elif name == "fashioniq":
        assert isinstance(proto, FashionIQProtocol)
        run = _run_fiq(load_fashioniq(data_root, split, proto.categories), composer, proto, opts)
    else:
        run = _run_circo(load_circo(data_root, split), composer, proto, opts)  # type: ignore[arg-type]
    run.result = {
        "benchmark": label or name,
        "split": split,
        **run.result,
        "method": composer.describe(),
        "zscir_version": __version__,
        "data_root": str(Path(data_root).expanduser().resolve()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    run.result["protocol"] = {"format": name, "limit": limit, **run.result["protocol"], "method_preset": preset}
    logger.info("%s %s: %s", name, split, run.result["metrics"])
    return run


def evaluate_benchmark(
    name: str,
    data_root: Path | str,
    split: str,
    composer: Composer,
    *,
    batch_size: int = 64,
    limit: int | None = None,
    cache_dir: Path | str | None = None,
    device: str = "cpu",
    progress: bool = True,
    **protocol_flags: Any,
) -> dict[str, Any]:
    """Evaluate ``composer`` and return the result dict (metrics, protocol, method, version).

    Keys: ``benchmark, split, n_queries, n_gallery, metrics, protocol, features, method, zscir_version,
    data_root, seconds``. Extra keyword arguments are protocol flags (see `zscir.eval.benchmarks.protocol`)
    or the execution options ``num_workers``, ``use_cache`` and ``label`` of `run_benchmark`. Splits without
    public ground truth (CIRR test1, CIRCO test, FashionIQ test) raise ``ValueError``: use
    `write_submission` for those.
    """
    if name.lower() in BENCHMARK_NAMES and _normalize_split(name.lower(), split) in _TEST_SPLITS:
        raise ValueError(f"{name} split {split!r} has no public ground truth; evaluate on 'val' or write a "
                         "test-server submission (zscir submit)")
    run = run_benchmark(name, data_root, split, composer, batch_size=batch_size, limit=limit, cache_dir=cache_dir,
                        device=device, progress=progress, **protocol_flags)
    return run.result
