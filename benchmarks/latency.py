"""Item 3: per-query latency of every registered method on the embedded default model.

Encoding and search are timed separately because they scale differently: encoding depends on the method
(one CLIP pass for the baselines, DDIM sampling for Fusion-Diff), search only on the gallery size and
dimension. Trained methods are timed with the checkpoint given in ``checkpoints`` or, when a method builds
without one, with its untrained initialisation (same architecture, so the same cost); a method that cannot
be built is reported as skipped with the error, never silently dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from benchmarks.common import time_it
from benchmarks.search import random_unit
from zscir.index.search import exact_topk

logger = logging.getLogger(__name__)


@dataclass
class LatencyBenchConfig:
    """``methods`` empty = every registered method; ``fusiondiff_steps`` sweeps DDIM steps for fusiondiff*."""

    model: str = "world-clip"
    methods: list[str] = field(default_factory=list)
    checkpoints: dict[str, str] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    gallery_n: int = 10_000
    k: int = 50
    repeats: int = 5
    fusiondiff_steps: list[int] = field(default_factory=lambda: [1, 5, 10, 25])
    seed: int = 0


def _world_queries(n: int, seed: int) -> tuple[list, list[str]]:
    """``n`` (reference image, modification text) pairs from the synthetic CIR world."""
    from PIL import Image

    from zscir.data.world import WorldConfig, generate_triplets, render_batch

    trips = generate_triplets(WorldConfig(seed=seed), quality="hq", n=n)
    pix = render_batch([t.reference.scene for t in trips], 64)
    return [Image.fromarray(p) for p in pix], [t.text for t in trips]


def run_latency_bench(cfg: LatencyBenchConfig) -> list[dict[str, Any]]:
    """One row per (method, options, batch size): encode ms/query, search ms/query, share of encoding."""
    from zscir.backbones import create_backbone
    from zscir.methods.registry import create_composer, list_methods

    names = cfg.methods or [m if isinstance(m, str) else m.name for m in list_methods()]
    backbone = create_backbone(cfg.model, device="cpu")
    images, texts = _world_queries(max(cfg.batch_sizes), cfg.seed)
    variants: list[tuple[str, dict[str, Any]]] = []
    for m in names:
        if m.startswith("fusiondiff"):
            variants += [(m, {"steps": s}) for s in cfg.fusiondiff_steps]
        else:
            variants.append((m, {}))
    rows: list[dict[str, Any]] = []
    galleries: dict[int, np.ndarray] = {}
    for m, opts in tqdm(variants, desc="latency", unit="method"):
        row_base = {"method": m, "options": ",".join(f"{k}={v}" for k, v in opts.items()) or "-"}
        try:
            comp = create_composer(m, backbone=backbone, checkpoint=cfg.checkpoints.get(m), **opts)
            dim = int(comp.encode_queries(images[:1], texts[:1]).shape[1])
        except Exception as e:  # noqa: BLE001 - report and go on with the other methods
            logger.warning("latency: %s %s skipped: %s", m, opts, e)
            rows.append({**row_base, "skipped": f"{type(e).__name__}: {e}"[:200]})
            continue
        gal = galleries.setdefault(dim, random_unit(cfg.gallery_n, dim, cfg.seed, "float32"))
        for b in cfg.batch_sizes:
            q = comp.encode_queries(images[:b], texts[:b]).detach().float().numpy()
            t_enc = time_it(lambda: comp.encode_queries(images[:b], texts[:b]), cfg.repeats)
            t_s = time_it(lambda: exact_topk(q, gal, cfg.k), cfg.repeats)
            enc_ms, s_ms = t_enc.median * 1e3 / b, t_s.median * 1e3 / b
            rows.append({**row_base, "batch": b, "trained_checkpoint": bool(cfg.checkpoints.get(m)),
                         "encode_ms_per_query": enc_ms, "search_ms_per_query": s_ms,
                         "total_ms_per_query": enc_ms + s_ms, "encode_share": enc_ms / (enc_ms + s_ms),
                         "gallery_n": cfg.gallery_n, "dim": dim})
    return rows


LATENCY_COLUMNS = ["method", "options", "batch", "encode_ms_per_query", "search_ms_per_query",
                   "total_ms_per_query", "encode_share", "skipped"]
