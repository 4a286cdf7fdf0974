"""The procedural CIR world as one data source among several (the default ``--data world``).

The trainers' world path reads the world only through this module, which keeps every world number as it
was before the data layer existed: the same pair and triplet sequences (`generate_pairs`,
`generate_triplets`), rendered by `render_batch` at the model's size. Spec ``world`` is the training split,
``world:val`` the independent validation stream.
"""

from __future__ import annotations

import random
from typing import Iterator, Sequence

from zscir.data.records import Problem
from zscir.data.source import PairSource, Partition, RawPair

__all__ = ["WorldPairSource", "world_triplets", "world_config", "render_scenes", "training_phrasings",
           "world_caption_bank", "scene_key"]


def world_config(seed: int = 0, image_size: int = 64):
    from zscir.data.world import WorldConfig

    return WorldConfig(seed=seed, image_size=image_size)


def render_scenes(scenes: Sequence, size: int, progress: bool = False, desc: str = "render world pictures"):
    """(N, size, size, 3) uint8 renders of world scenes; ``progress`` shows a bar with an ETA (30,000 scenes
    take about a minute). Each scene is rendered on its own, so rendering in chunks gives the same pixels."""
    from zscir.data.world import render_batch

    scenes = list(scenes)
    if not progress:
        return render_batch(scenes, size)
    import numpy as np
    from tqdm.auto import tqdm

    out = np.empty((len(scenes), size, size, 3), np.uint8)
    chunk = 500
    with tqdm(total=len(scenes), desc=desc, unit="img") as bar:
        for s in range(0, len(scenes), chunk):
            out[s:s + chunk] = render_batch(scenes[s:s + chunk], size)
            bar.update(len(scenes[s:s + chunk]))
    return out


def scene_key(scene) -> str:
    return scene.key()


class WorldPairSource(PairSource):
    """World image–caption pairs: ``pairs`` are the world's `Pair` objects (scene + caption variants)."""

    def __init__(self, seed: int = 0, split: str = "train", n: int | None = None, image_size: int = 64,
                 spec: str = "world"):
        from zscir.data.world import generate_pairs

        self.seed, self.split, self.image_size = seed, split, image_size
        self.spec = spec
        self.cfg = world_config(seed, image_size)
        self.pairs = generate_pairs(self.cfg, n=n, split=split)
        self.size = len(self.pairs)

    def fingerprint(self) -> str:
        from zscir.data.world import WORLD_VERSION

        return f"world-v{WORLD_VERSION}-s{self.seed}-{self.split}-n{self.size}"

    def iter_raw(self, partition: Partition = Partition(), epoch: int = 0, seed: int = 0,
                 shuffle: bool = False) -> Iterator[RawPair | Problem]:
        from PIL import Image

        order = list(range(len(self.pairs)))
        if shuffle:
            random.Random(f"{seed}/{epoch}").shuffle(order)
        for j, i in enumerate(order):
            if partition.takes(j):
                p = self.pairs[i]
                img = Image.fromarray(render_scenes([p.scene], self.image_size)[0])
                yield RawPair(p.id, img, (p.caption,) + tuple(c for c in p.captions if c != p.caption), {"scene": p.scene})


def world_triplets(seed: int = 0, quality: str = "hq", n: int | None = None, pairs=None, image_size: int = 64):
    """The world's training triplets (`zscir.data.world.Triplet`) and the pairs they were drawn from."""
    from zscir.data.world import generate_pairs, generate_triplets

    cfg = world_config(seed, image_size)
    pairs = generate_pairs(cfg) if pairs is None else pairs
    return generate_triplets(cfg, quality, n=n, pairs=pairs), pairs


def training_phrasings(scenes_pairs, seed: int) -> list[str]:
    """Modification texts in the world's *training* phrasing set (for a tokenizer corpus)."""
    from zscir.data.world.edits import random_edit
    from zscir.data.world.phrasing import phrase_edit

    rng = random.Random(seed)
    texts = []
    for p in scenes_pairs:
        res = random_edit(p.scene, rng)
        if res is not None:
            texts.append(phrase_edit(res[1], rng, "train"))
    return texts


def world_caption_bank(n_pairs: int, seed: int = 0) -> list[str]:
    """Distinct caption variants of the first ``n_pairs`` training pairs (deterministic, ~1 s)."""
    from zscir.data.world import WorldConfig, generate_pairs

    seen: dict[str, None] = {}
    for p in generate_pairs(WorldConfig(seed=seed), n=n_pairs, split="train"):
        for c in p.captions:
            seen.setdefault(c, None)
    return list(seen)
