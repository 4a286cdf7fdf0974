"""The held-out benchmark: a CIRR-style part and a CIRCO-style part.

What makes it a *held-out* benchmark rather than more training data:

* no benchmark scene occurs in training (checked by scene key against every training pair and
  every HQ triplet target), so retrieval cannot be solved by memorised images;
* modification texts use the disjoint *test* phrasing templates;
* a share (``cfg.heldout_share``) of targets contains a held-out (shape, colour) combo that no
  training image ever shows, measuring compositional generalisation.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

from .circo import CircoQuery, build_circo
from .cirr import CirrQuery, CirrSet, build_cirr
from .config import WorldConfig, stream
from .pairs import Pair, generate_pairs
from .scene import Scene
from .triplets import edit_sequence

logger = logging.getLogger(__name__)


@dataclass
class WorldBenchmark:
    """Everything needed to write the benchmark files; images are identified by scene.

    ``cirr_names`` maps scene key -> "world-dev-NNNNN"; ``circo_ids`` maps scene key -> int id
    (the file is the id zero-padded to 12 digits, like COCO).
    """

    config: WorldConfig
    cirr_sets: list[CirrSet]
    cirr_queries: list[CirrQuery]
    cirr_names: dict[str, str]
    circo_scenes: list[Scene]
    circo_queries: list[CircoQuery]
    circo_ids: dict[str, int]
    stats: dict[str, float] = field(default_factory=dict)

    def cirr_images(self) -> dict[str, Scene]:
        """name -> scene for every image of the CIRR-style gallery."""
        out: dict[str, Scene] = {}
        for s in self.cirr_sets:
            for m in s.members:
                out[self.cirr_names[m.key()]] = m
        return out

    def circo_images(self) -> dict[int, Scene]:
        """id -> scene for every image of the CIRCO-style gallery."""
        return {self.circo_ids[s.key()]: s for s in self.circo_scenes}


def training_keys(cfg: WorldConfig, pairs: list[Pair] | None = None) -> set[str]:
    """Scene keys of every image a model trained on this world can have seen."""
    pairs = generate_pairs(cfg) if pairs is None else pairs
    keys = {p.scene.key() for p in pairs}
    keys.update(t.key() for _, t, _, _ in edit_sequence(cfg, pairs, cfg.n_triplets))
    return keys


def generate_benchmark(cfg: WorldConfig, pairs: list[Pair] | None = None) -> WorldBenchmark:
    """Build both benchmark parts for ``cfg`` (deterministic in ``cfg``)."""
    t0 = time.perf_counter()
    seen = training_keys(cfg, pairs)
    rng = random.Random(stream(cfg, "benchmark/cirr"))
    sets, queries = build_cirr(cfg, rng, seen)
    crng = random.Random(stream(cfg, "benchmark/circo"))
    circo_scenes, circo_queries = build_circo(cfg, crng, seen)

    # Names/ids are assigned in a shuffled order so they leak nothing (e.g. "the reference
    # always has the smallest id").
    nrng = random.Random(stream(cfg, "benchmark/names"))
    keys = list(dict.fromkeys(m.key() for s in sets for m in s.members))
    nrng.shuffle(keys)
    names = {k: f"world-dev-{i:05d}" for i, k in enumerate(keys)}
    ids = nrng.sample(range(100000, 1000000), len(circo_scenes))
    circo_ids = {s.key(): i for s, i in zip(circo_scenes, ids)}
    bench = WorldBenchmark(cfg, sets, queries, names, circo_scenes, circo_queries, circo_ids)
    bench.stats = {"seconds": round(time.perf_counter() - t0, 2),
                   "n_training_keys": len(seen)}
    logger.info("generated world benchmark in %.1fs", bench.stats["seconds"])
    return bench
