"""The embedded world gallery: what `zscir serve` shows when no index is given.

Why: the server should work right after ``pip install`` without the user owning an image folder. The
world benchmark's CIRR-part images (rendered once by `ensure_world_benchmark`) are indexed once with the
default model into ``$ZSCIR_CACHE/serve/``; later starts re-use it (the incremental indexer finds it up to
date after a stat of each file) and re-encode only if the model changed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from zscir.index.build import IndexConfig, build_index
from zscir.methods.base import Composer

logger = logging.getLogger(__name__)


def world_gallery_dir(model: str, method: str, world_seed: int = 0, cache_dir: str | Path | None = None) -> Path:
    from zscir.eval.world import default_cache_dir

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{method}")
    return Path(cache_dir or default_cache_dir()) / "serve" / f"world-seed{world_seed}-{slug}"


def ensure_world_gallery(composer: Composer, model: str, world_seed: int = 0, cache_dir: str | Path | None = None,
                         progress: bool = True) -> Path:
    """Index (once) the world benchmark's gallery images with ``composer``; returns the index folder."""
    from zscir.data.world.cache import ensure_world_benchmark

    images = ensure_world_benchmark(world_seed) / "cirr" / "dev"
    out = world_gallery_dir(model, composer.name, world_seed, cache_dir)
    report = build_index(images, out, composer, model=model, config=IndexConfig(progress=progress))
    if not report.up_to_date:
        logger.info("world gallery indexed at %s (%d images)", out, report.indexed)
    return out
