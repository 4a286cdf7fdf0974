"""Edits: structured modifications of a scene (the "modification text" before it is phrased).

``apply_edit`` turns a reference scene into a target scene and an :class:`EditSpec` that records
exactly what changed (kind, the object referred to, old and new values, and the constraint that
defines all valid targets).  Text is produced separately by :mod:`.phrasing`, so the same edit can
be phrased with training or with held-out test templates.  Each kind is one attribute change,
mirroring the single-attribute modifications of CSS (Vo et al., 2019) and the semantic aspects of
CIRR/CIRCO (cardinality, addition, removal, spatial relations, background).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Iterable

from .captions import referring_expression
from .constraints import Constraint, Constraints, exact
from .scene import Combo, Obj, Scene, sample_obj
from .vocab import BACKGROUNDS, POSITION_NAMES, SHAPES, SIZES, allowed_colors

logger = logging.getLogger(__name__)

EDIT_KINDS: tuple[str, ...] = ("color", "size", "shape", "add", "remove", "move", "cardinality",
                               "background")

EditValue = str | tuple[int, int] | Obj | None


@dataclass(frozen=True)
class EditSpec:
    """What an edit did.

    ``ref_obj`` is the object of the reference the text refers to (None for add/background),
    ``new_obj`` the object it became / the object added (None for remove/background).  ``old``
    and ``new`` are the changed attribute values as words (position names for moves).
    ``ref_phrase`` is the referring expression ("the red circle") computed on the reference
    scene, so that phrasing needs no scene.  ``constraints`` define every valid target.
    """

    kind: str
    ref_obj: Obj | None
    new_obj: Obj | None
    old: str | None
    new: str | None
    ref_phrase: str | None
    constraints: Constraints = field(default=(), compare=False)
    underspecified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind,
                "ref_obj": None if self.ref_obj is None else self.ref_obj.to_dict(),
                "new_obj": None if self.new_obj is None else self.new_obj.to_dict(),
                "old": self.old, "new": self.new, "ref_phrase": self.ref_phrase,
                "underspecified": self.underspecified,
                "constraints": [c.to_dict() for c in self.constraints]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EditSpec":
        return cls(d["kind"], None if d["ref_obj"] is None else Obj.from_dict(d["ref_obj"]),
                   None if d["new_obj"] is None else Obj.from_dict(d["new_obj"]),
                   d["old"], d["new"], d["ref_phrase"],
                   tuple(Constraint.from_dict(c) for c in d.get("constraints", [])),
                   bool(d.get("underspecified", False)))


def _cell_name(cell: tuple[int, int]) -> str:
    return POSITION_NAMES[cell]


def unique_objects(scene: Scene) -> list[Obj]:
    """Objects whose appearance occurs once in the scene (candidates for "one -> two")."""
    attrs = [o.attrs() for o in scene.objects]
    return [o for o in scene.objects if attrs.count(o.attrs()) == 1]


def applicable_kinds(scene: Scene) -> list[str]:
    """Edit kinds that can be applied to ``scene``."""
    free = bool(scene.free_cells())
    kinds = ["color", "size", "shape"] if scene.objects else []
    if free:
        kinds.append("add")
    if len(scene.objects) >= 2:
        kinds.append("remove")
    if free and scene.objects:
        kinds.append("move")
        if unique_objects(scene):
            kinds.append("cardinality")
    if background_choices(scene):
        kinds.append("background")
    return [k for k in EDIT_KINDS if k in kinds]


def background_choices(scene: Scene) -> list[str]:
    """The backgrounds ``scene`` may change to: not its own, and no colour of one of its objects."""
    colors = {o.color for o in scene.objects}
    return [b for b in BACKGROUNDS if b != scene.background and b not in colors]


def _pick(rng: random.Random, options: list, value: EditValue) -> Any:
    if value is not None:
        return value if value in options else None
    return rng.choice(options) if options else None


def apply_edit(scene: Scene, kind: str, rng: random.Random, *, obj: Obj | None = None,
               value: EditValue = None, exclude_combos: Iterable[Combo] = ()
               ) -> tuple[Scene, EditSpec] | None:
    """Apply an edit of ``kind`` to ``scene``.

    ``obj`` (an object of ``scene``) and ``value`` (new colour/shape/size/background word, target
    cell for move/cardinality, or the :class:`Obj` to add) pin the edit down; otherwise they are
    sampled.  ``exclude_combos`` forbids results that contain a held-out (shape, colour) combo.
    Returns None when the edit is not applicable (e.g. remove on a one-object scene, add on a full
    scene, or a pinned value that is invalid); raises ValueError for an unknown kind.
    """
    if kind not in EDIT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    excl = frozenset(exclude_combos)
    if kind not in applicable_kinds(scene):
        return None
    if obj is not None and obj not in scene.objects:
        raise ValueError(f"{obj} is not in the scene")
    result = _EDITORS[kind](scene, rng, obj, value, excl)
    if result is None:
        return None
    target, spec = result
    if target.has_combo(excl):
        return None
    return target, spec


def _choose_obj(scene: Scene, rng: random.Random, obj: Obj | None,
                pool: list[Obj] | None = None) -> Obj | None:
    pool = list(scene.objects) if pool is None else pool
    if obj is not None:
        return obj if obj in pool else None
    return rng.choice(pool) if pool else None


def _spec(kind: str, scene: Scene, target: Scene, rng: random.Random, ref: Obj | None,
          new: Obj | None, old_v: str | None, new_v: str | None) -> tuple[Scene, EditSpec]:
    phrase = referring_expression(scene, ref, rng) if ref is not None else None
    return target, EditSpec(kind, ref, new, old_v, new_v, phrase, exact(target))


def _attr_edit(attr: str):
    def edit(scene: Scene, rng: random.Random, obj: Obj | None, value: EditValue,
             excl: frozenset[Combo]) -> tuple[Scene, EditSpec] | None:
        o = _choose_obj(scene, rng, obj)
        if o is None:
            return None
        if attr == "color":
            options = [c for c in allowed_colors(scene.background)
                       if c != o.color and (o.shape, c) not in excl]
        elif attr == "shape":
            options = [s for s in SHAPES if s != o.shape and (s, o.color) not in excl]
        else:
            options = [s for s in SIZES if s != o.size]
        v = _pick(rng, options, value)
        if v is None:
            return None
        new = Obj(**{**o.to_dict(), attr: v})
        return _spec(attr, scene, scene.replace_obj(o, new), rng, o, new, getattr(o, attr), v)
    return edit


def _add(scene, rng, obj, value, excl):
    if isinstance(value, Obj):
        if value.cell not in scene.free_cells() or value.color == scene.background:
            return None
        new = value
    else:
        cell = rng.choice(scene.free_cells())
        new = sample_obj(rng, cell, scene.background, excl)
    return _spec("add", scene, scene.with_obj(new), rng, None, new, None, _cell_name(new.cell))


def _remove(scene, rng, obj, value, excl):
    o = _choose_obj(scene, rng, obj)
    if o is None:
        return None
    return _spec("remove", scene, scene.without(o), rng, o, None, _cell_name(o.cell), None)


def _move(scene, rng, obj, value, excl):
    o = _choose_obj(scene, rng, obj)
    cell = _pick(rng, scene.free_cells(), value)
    if o is None or cell is None:
        return None
    new = o.moved(*cell)
    return _spec("move", scene, scene.replace_obj(o, new), rng, o, new, _cell_name(o.cell),
                 _cell_name(cell))


def _cardinality(scene, rng, obj, value, excl):
    o = _choose_obj(scene, rng, obj, unique_objects(scene))
    cell = _pick(rng, scene.free_cells(), value)
    if o is None or cell is None:
        return None
    new = o.moved(*cell)
    return _spec("cardinality", scene, scene.with_obj(new), rng, o, new, "one", "two")


def _background(scene, rng, obj, value, excl):
    bg = _pick(rng, background_choices(scene), value)
    if bg is None:
        return None
    return _spec("background", scene, scene.with_background(bg), rng, None, None,
                 scene.background, bg)


_EDITORS = {"color": _attr_edit("color"), "size": _attr_edit("size"), "shape": _attr_edit("shape"),
            "add": _add, "remove": _remove, "move": _move, "cardinality": _cardinality,
            "background": _background}


def random_edit(scene: Scene, rng: random.Random, kinds: Iterable[str] = EDIT_KINDS,
                exclude_combos: Iterable[Combo] = (), tries: int = 20
                ) -> tuple[Scene, EditSpec] | None:
    """Apply a random applicable edit (kind uniform over the applicable ``kinds``)."""
    options = [k for k in applicable_kinds(scene) if k in set(kinds)]
    for _ in range(tries):
        if not options:
            return None
        res = apply_edit(scene, rng.choice(options), rng, exclude_combos=exclude_combos)
        if res is not None:
            return res
    return None
