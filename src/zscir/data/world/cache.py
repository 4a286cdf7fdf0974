"""The world benchmarks in zscir's cache: rendered once per seed and configuration, then reused.

Everything that needs the held-out world on disk (the world benchmark of `zscir eval`, the demo, the
server's built-in gallery, Fusion-Diff's oracle captioner, the visualisations) asks `ensure_world_benchmark`
for its root; it lives with the world generator, on the lowest floor that uses it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ensure_world_benchmark"]


def ensure_world_benchmark(world_seed: int = 0, root: str | Path | None = None, progress: bool = False,
                           **overrides: Any) -> Path:
    """Write (once) the world benchmark for ``world_seed`` and return its root folder.

    ``overrides`` change `WorldConfig` fields (e.g. a smaller benchmark for tests); such benchmarks are
    cached in a folder of their own. The writer is idempotent: when ``root/world.json`` matches the
    configuration nothing is regenerated. ``progress``: say so on stderr and show the writing's bar.
    """
    import hashlib

    from zscir.cache import cache_root
    from zscir.data import world

    cfg = world.WorldConfig(seed=world_seed, **overrides)
    tag = "" if not overrides else "-" + hashlib.sha1(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
    root = Path(root) if root else cache_root() / "world" / f"{world.WORLD_VERSION}-seed{world_seed}{tag}"
    if world.is_cached(cfg, root):
        return root
    logger.info("writing the world benchmark (seed %d) to %s", world_seed, root)
    if progress:
        import sys

        print(f"generating the world benchmark (seed {world_seed}, first run only) into {root}", file=sys.stderr,
              flush=True)
    world.write_benchmark(world.generate_benchmark(cfg), root, progress=progress)
    return root
