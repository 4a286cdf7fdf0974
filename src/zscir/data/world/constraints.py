"""Constraints that decide which scenes are valid targets of an edit.

A fully specified edit ("make the circle blue") has exactly one valid target scene.  An
under-specified one ("add a star", "give the circle another colour") has many, and a CIRCO-style
benchmark must list *all* of them that occur in the gallery.  Representing the edit's meaning as
a small, checkable constraint (rather than as the one target we happened to sample) is what makes
the ground-truth lists complete: the benchmark builder checks every gallery scene against it.

The form is deliberately simple: a target must (i) have one of the allowed backgrounds, (ii)
contain every ``keep`` object exactly (attributes *and* cell), and (iii) contain exactly one more
object matching ``new`` (or none, if ``new`` is None).  A disjunction of such constraints covers
"remove one of the circles".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from .scene import Obj, Scene


def _fs(values: Iterable[Any] | None) -> frozenset | None:
    return None if values is None else frozenset(values)


@dataclass(frozen=True)
class ObjPattern:
    """Allowed values per attribute; ``None`` means "any"."""

    shapes: frozenset[str] | None = None
    colors: frozenset[str] | None = None
    sizes: frozenset[str] | None = None
    textures: frozenset[str] | None = None
    cells: frozenset[tuple[int, int]] | None = None

    def matches(self, o: Obj) -> bool:
        return ((self.shapes is None or o.shape in self.shapes)
                and (self.colors is None or o.color in self.colors)
                and (self.sizes is None or o.size in self.sizes)
                and (self.textures is None or o.texture in self.textures)
                and (self.cells is None or o.cell in self.cells))

    def to_dict(self) -> dict[str, Any]:
        def enc(v: frozenset | None) -> list | None:
            return None if v is None else sorted(list(x) if isinstance(x, tuple) else x for x in v)
        return {"shapes": enc(self.shapes), "colors": enc(self.colors), "sizes": enc(self.sizes),
                "textures": enc(self.textures), "cells": enc(self.cells)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ObjPattern":
        cells = d.get("cells")
        return cls(_fs(d.get("shapes")), _fs(d.get("colors")), _fs(d.get("sizes")),
                   _fs(d.get("textures")), None if cells is None else frozenset(tuple(c) for c in cells))


@dataclass(frozen=True)
class Constraint:
    """Scenes with a background in ``backgrounds``, all of ``keep``, and exactly one extra object
    matching ``new`` (no extra object when ``new`` is None)."""

    backgrounds: frozenset[str]
    keep: tuple[Obj, ...]
    new: ObjPattern | None = None

    def satisfied_by(self, scene: Scene) -> bool:
        if scene.background not in self.backgrounds:
            return False
        n_extra = 0 if self.new is None else 1
        if len(scene.objects) != len(self.keep) + n_extra:
            return False
        objs = set(scene.objects)
        if not all(k in objs for k in self.keep):
            return False
        if self.new is None:
            return True
        rest = objs.difference(self.keep)
        return len(rest) == 1 and self.new.matches(next(iter(rest)))

    def to_dict(self) -> dict[str, Any]:
        return {"backgrounds": sorted(self.backgrounds), "keep": [o.to_dict() for o in self.keep],
                "new": None if self.new is None else self.new.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Constraint":
        return cls(frozenset(d["backgrounds"]), tuple(Obj.from_dict(o) for o in d["keep"]),
                   None if d["new"] is None else ObjPattern.from_dict(d["new"]))


Constraints = tuple[Constraint, ...]
"""A disjunction: a scene is a valid target if it satisfies any member."""


def exact(target: Scene) -> Constraints:
    """The constraint of a fully specified edit: the target scene itself."""
    return (Constraint(frozenset([target.background]), target.objects, None),)


def satisfies(scene: Scene, constraints: Constraints) -> bool:
    """True if ``scene`` is a valid target under ``constraints``."""
    return any(c.satisfied_by(scene) for c in constraints)
