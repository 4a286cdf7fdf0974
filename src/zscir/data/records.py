"""The records every data source yields, and the problem log that bad data goes into.

A *pair* is an image with one or more captions (CLIP-style pre-training, TSCIR Stage I, the Fusion-Diff
prior); a *triplet* is (reference image, modification text, target image and/or target caption), the
training unit of TSCIR Stage II and the Fusion-Diff Control-Adapter. Sources differ in layout only, so
they all produce these two types and the trainers never see a source-specific object.

Bad data does not stop a run: a missing or corrupt image, a decompression bomb, a truncated shard is a
`Problem` (code, where, message) counted and listed in a `Problems` log, and the record is skipped. A
*user* mistake (a spec that names nothing, a manifest without the needed columns) is a `DataError`,
which the CLI prints as one ``error: ...`` line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from PIL import Image

__all__ = ["PairRecord", "TripletRecord", "Problem", "Problems", "DataError", "QUALITIES"]

#: triplet quality tiers (the papers' HQ = generated/rendered targets, LQ = mined targets)
QUALITIES = ("hq", "lq")


class DataError(ValueError):
    """A user mistake in a data spec or a file's layout (printed as ``error: ...``, exit 2)."""


@dataclass
class PairRecord:
    """One image and its caption. ``captions`` holds every caption variant (``caption`` is the first)."""

    key: str
    image: Image.Image | None
    caption: str
    captions: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.captions:
            self.captions = (self.caption,)


@dataclass
class TripletRecord:
    """One training triplet. ``target_image`` may be None when only ``target_caption`` is known
    (a text-target triplet); ``reference_image``/``target_image`` are None until loaded."""

    reference_id: str
    modification: str
    target_id: str | None = None
    reference_image: Image.Image | None = None
    target_image: Image.Image | None = None
    reference_caption: str | None = None
    target_caption: str | None = None
    quality: str | None = None
    source: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_target_image(self) -> bool:
        return self.target_id is not None or self.target_image is not None


@dataclass(frozen=True)
class Problem:
    """One skipped item: ``code`` is machine-readable (``missing``, ``corrupt``, ``too_many_pixels``,
    ``truncated_shard``, ``no_caption``, ...), ``where`` names the item (shard/key, file, row)."""

    code: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.code} ({self.message})"


class Problems:
    """Counts every problem and keeps the first ``keep`` of them for the report."""

    def __init__(self, keep: int = 200) -> None:
        self.counts: Counter[str] = Counter()
        self.items: list[Problem] = []
        self.keep = keep

    def add(self, problem: Problem) -> None:
        self.counts[problem.code] += 1
        if len(self.items) < self.keep:
            self.items.append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.add(p)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "no problems"
        return ", ".join(f"{n} {code}" for code, n in sorted(self.counts.items()))

    def __len__(self) -> int:
        return self.total
