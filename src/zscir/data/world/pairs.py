"""Image-caption pairs: the world's CLIP pre-training data.

Pairs are generated sequentially from one seeded stream, so ``generate_pairs(cfg, n=100)`` is a
prefix of ``generate_pairs(cfg)``: a quick experiment on a small n sees the same data as the full
run.  Training pairs exclude the held-out (shape, colour) combos.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from .captions import caption_variants
from .config import WorldConfig, stream
from .scene import Scene, sample_scene

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """One image (given by its scene; render it with :func:`render`) and its captions.

    ``caption`` is one sampled variant (what a web alt-text would be); ``captions`` holds all the
    variants, the first being the full form."""

    id: str
    scene: Scene
    caption: str
    captions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "scene": self.scene.to_dict(), "caption": self.caption,
                "captions": list(self.captions)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Pair":
        return cls(d["id"], Scene.from_dict(d["scene"]), d["caption"], tuple(d["captions"]))


def generate_pairs(cfg: WorldConfig, n: int | None = None, split: str = "train") -> list[Pair]:
    """Generate ``n`` (default ``cfg.n_pairs``) pairs for ``split``.

    ``split="train"`` avoids ``cfg.heldout_combos``; any other split name is an independent stream
    that may contain them (e.g. ``"val"`` for caption-retrieval validation).
    """
    n = cfg.n_pairs if n is None else n
    rng = random.Random(stream(cfg, f"pairs/{split}"))
    exclude = cfg.heldout_combos if split == "train" else ()
    pairs: list[Pair] = []
    for i in range(n):
        scene = sample_scene(rng, max_objects=cfg.max_objects, exclude_combos=exclude,
                             texture_prob=cfg.texture_prob)
        caps = caption_variants(scene, rng, cfg.caption_variants)
        pairs.append(Pair(f"world-{split}-{i:06d}", scene, rng.choice(caps), caps))
    logger.debug("generated %d %s pairs (seed %d)", n, split, cfg.seed)
    return pairs
