"""Configuration of a generated world, and its version tag.

Every output (pairs, triplets, benchmark files) is a pure function of a :class:`WorldConfig`, so
the config (plus :data:`WORLD_VERSION`) is the cache key written into every manifest.  Bump
``WORLD_VERSION`` whenever a change to the generator would change any output for a fixed config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .scene import Combo

WORLD_VERSION = "world-v1"

DEFAULT_HELDOUT: tuple[Combo, ...] = (
    ("circle", "purple"),
    ("star", "green"),
    ("triangle", "orange"),
    ("hexagon", "red"),
    ("cross", "blue"),
)
"""(shape, colour) compositions that never occur in training pairs or triplets but do occur in
benchmark targets: they measure compositional generalisation (each word is seen, the pair is not)."""


@dataclass(frozen=True)
class WorldConfig:
    """All knobs of the generator.  Sizes default to what the lead trains/evaluates on."""

    seed: int = 0
    image_size: int = 64
    n_pairs: int = 30000
    n_triplets: int = 20000
    n_cirr_sets: int = 300
    queries_per_set: int = 2
    n_circo_queries: int = 200
    n_circo_distractors: int = 1500
    heldout_combos: tuple[Combo, ...] = DEFAULT_HELDOUT
    max_objects: int = 4
    texture_prob: float = 0.3
    caption_variants: int = 4
    heldout_share: float = 0.3
    """Fraction of benchmark queries whose target is forced to contain a held-out combo."""
    max_circo_gts: int = 8
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Free-form notes stored in manifests; not part of the cache key."""

    def __post_init__(self) -> None:
        if not 1 <= self.queries_per_set <= 5:
            raise ValueError("queries_per_set must be in [1, 5] (an img_set has 6 members)")
        object.__setattr__(self, "heldout_combos",
                           tuple(tuple(c) for c in self.heldout_combos))  # JSON gives lists

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heldout_combos"] = [list(c) for c in self.heldout_combos]
        return d

    def cache_key(self) -> dict[str, Any]:
        """What must match for a written world to be reused."""
        d = self.to_dict()
        d.pop("extra", None)
        d["world_version"] = WORLD_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorldConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "heldout_combos" in known:
            known["heldout_combos"] = tuple(tuple(c) for c in known["heldout_combos"])
        return cls(**known)


def stream(cfg: WorldConfig, name: str) -> str:
    """Seed string of an independent random stream.  Separate streams keep e.g. the benchmark
    unchanged when ``n_pairs`` changes, and ``random.Random(str)`` is stable across processes
    (it does not depend on PYTHONHASHSEED)."""
    return f"{WORLD_VERSION}/{cfg.seed}/{name}"
