"""Scene graph of the CIR world: objects on a 3x3 grid over a plain background.

A :class:`Scene` is the single source of truth for an image: pixels are rendered from it, captions
are generated from it, and edits are applied to it.  Because of that, equality of scenes decides
equality of images, which is what makes ground truths exact (CIRR-style targets, complete CIRCO
ground-truth lists, the ``correct`` flag of mined triplets).  Objects are stored sorted by cell so
that two scenes with the same content always compare (and hash, via :meth:`Scene.key`) equal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any, Iterable

from .vocab import BACKGROUNDS, CELLS, COLORS, SHAPES, SIZES, TEXTURES, allowed_colors

Combo = tuple[str, str]
"""A (shape, colour) pair, the unit used for held-out compositions."""


@dataclass(frozen=True, order=True)
class Obj:
    """One object: attributes plus the grid cell (row, col) it occupies."""

    shape: str
    color: str
    size: str
    row: int
    col: int
    texture: str = "plain"

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)

    @property
    def combo(self) -> Combo:
        return (self.shape, self.color)

    def attrs(self) -> tuple[str, str, str, str]:
        """Appearance without position; objects with equal attrs look identical."""
        return (self.shape, self.color, self.size, self.texture)

    def moved(self, row: int, col: int) -> "Obj":
        return replace(self, row=row, col=col)

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "size": self.size,
                "row": self.row, "col": self.col, "texture": self.texture}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Obj":
        return cls(shape=d["shape"], color=d["color"], size=d["size"], row=int(d["row"]),
                   col=int(d["col"]), texture=d.get("texture", "plain"))

    def key(self) -> str:
        return f"{self.shape}.{self.color}.{self.size}.{self.texture}@{self.row}{self.col}"


@dataclass(frozen=True)
class Scene:
    """Objects (at most one per cell, kept sorted by cell) on a named background."""

    objects: tuple[Obj, ...]
    background: str

    def __post_init__(self) -> None:
        objs = tuple(sorted(self.objects, key=lambda o: o.cell))
        cells = [o.cell for o in objs]
        if len(set(cells)) != len(cells):
            raise ValueError(f"two objects share a cell: {cells}")
        if any(o.color == self.background for o in objs):
            raise ValueError("an object has the background colour")
        object.__setattr__(self, "objects", objs)

    # -- queries ---------------------------------------------------------------------------------
    def key(self) -> str:
        """Canonical string; equal keys <=> equal scenes <=> identical renders."""
        return self.background + "|" + ";".join(o.key() for o in self.objects)

    def free_cells(self) -> list[tuple[int, int]]:
        used = {o.cell for o in self.objects}
        return [c for c in CELLS if c not in used]

    def combos(self) -> set[Combo]:
        return {o.combo for o in self.objects}

    def has_combo(self, combos: Iterable[Combo]) -> bool:
        return bool(self.combos() & set(combos))

    def at(self, row: int, col: int) -> Obj | None:
        for o in self.objects:
            if o.cell == (row, col):
                return o
        return None

    # -- functional updates ------------------------------------------------------------------------
    def replace_obj(self, old: Obj, new: Obj) -> "Scene":
        return Scene(tuple(new if o == old else o for o in self.objects), self.background)

    def without(self, obj: Obj) -> "Scene":
        return Scene(tuple(o for o in self.objects if o != obj), self.background)

    def with_obj(self, obj: Obj) -> "Scene":
        return Scene(self.objects + (obj,), self.background)

    def with_background(self, background: str) -> "Scene":
        return Scene(self.objects, background)

    # -- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background, "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scene":
        return cls(tuple(Obj.from_dict(o) for o in d["objects"]), d["background"])


def sample_obj(rng: random.Random, cell: tuple[int, int], background: str,
               exclude_combos: frozenset[Combo] = frozenset(), texture_prob: float = 0.3) -> Obj:
    """Sample one object for ``cell`` whose colour differs from the background and whose
    (shape, colour) is not excluded (rejection sampling: exclusions are a few combos out of ~80)."""
    colors = allowed_colors(background)
    while True:
        shape, color = rng.choice(SHAPES), rng.choice(colors)
        if (shape, color) not in exclude_combos:
            break
    size = rng.choice(tuple(SIZES))
    texture = rng.choice(TEXTURES[1:]) if rng.random() < texture_prob else "plain"
    return Obj(shape, color, size, cell[0], cell[1], texture)


def sample_scene(rng: random.Random, n_objects: int | None = None, min_objects: int = 1,
                 max_objects: int = 4, exclude_combos: Iterable[Combo] = (),
                 texture_prob: float = 0.3, background: str | None = None) -> Scene:
    """Sample a scene with ``n_objects`` (default: uniform in [min, max]) objects in distinct cells.

    ``exclude_combos`` keeps held-out (shape, colour) compositions out of training data.
    """
    excl = frozenset(exclude_combos)
    n = n_objects if n_objects is not None else rng.randint(min_objects, max_objects)
    bg = background if background is not None else rng.choice(tuple(BACKGROUNDS))
    cells = rng.sample(CELLS, n)
    return Scene(tuple(sample_obj(rng, c, bg, excl, texture_prob) for c in cells), bg)


def validate_scene(scene: Scene) -> None:
    """Raise ValueError if the scene uses words outside the vocabulary."""
    if scene.background not in BACKGROUNDS:
        raise ValueError(f"unknown background {scene.background!r}")
    for o in scene.objects:
        if (o.shape not in SHAPES or o.color not in COLORS or o.size not in SIZES
                or o.texture not in TEXTURES or o.cell not in CELLS):
            raise ValueError(f"invalid object {o}")
