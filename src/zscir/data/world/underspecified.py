"""Under-specified edits (CIRCO-style): texts that admit several valid target images.

"add a star" says nothing about the star's colour, size or place; "move the circle somewhere
else" allows every free cell.  Each such edit is returned with the :mod:`.constraints` that
characterise *all* valid targets, plus a sampler that draws valid targets, so the benchmark can
plant several ground truths in the gallery and then recover every one of them (and any accidental
extra one) by checking the constraint against the whole gallery.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Iterable

from .captions import referring_expression
from .constraints import Constraint, Constraints, ObjPattern, satisfies
from .edits import EditSpec, background_choices, unique_objects
from .scene import Combo, Obj, Scene
from .vocab import CELLS, COLORS, POSITION_NAMES, SHAPES, SIZES, TEXTURES, allowed_colors

UNDERSPECIFIED_KINDS: tuple[str, ...] = ("add", "color", "shape", "move", "background",
                                         "cardinality", "remove")


def _same_shape_groups(scene: Scene) -> list[list[Obj]]:
    groups: dict[str, list[Obj]] = defaultdict(list)
    for o in scene.objects:
        groups[o.shape].append(o)
    return [g for g in groups.values() if len(g) >= 2]


def underspecified_kinds(scene: Scene) -> list[str]:
    """Under-specified kinds applicable to ``scene``."""
    free = bool(scene.free_cells())
    out = []
    if free:
        out.append("add")
    if scene.objects:
        out += ["color", "shape"]
        if free:
            out.append("move")
            if unique_objects(scene):
                out.append("cardinality")
    if len(background_choices(scene)) >= 2:
        out.append("background")
    if _same_shape_groups(scene):
        out.append("remove")
    return [k for k in UNDERSPECIFIED_KINDS if k in out]


def _constraints(scene: Scene, kind: str, rng: random.Random
                 ) -> tuple[Constraints, Obj | None, str | None, str | None] | None:
    """(constraints, referred object, old word, new word) for an under-specified edit."""
    bg = frozenset([scene.background])
    if kind == "add":
        shape = rng.choice(SHAPES)
        return (Constraint(bg, scene.objects, ObjPattern(shapes=frozenset([shape]))),), None, None, shape
    if kind == "background":
        return (Constraint(frozenset(background_choices(scene)), scene.objects, None),), None, \
            scene.background, None
    if kind == "remove":
        group = rng.choice(_same_shape_groups(scene))
        cons = tuple(Constraint(bg, scene.without(o).objects, None) for o in group)
        return cons, group[0], str(len(group)), str(len(group) - 1)
    pool = unique_objects(scene) if kind == "cardinality" else list(scene.objects)
    if not pool:
        return None
    o = rng.choice(pool)
    same = dict(shapes=frozenset([o.shape]), colors=frozenset([o.color]), sizes=frozenset([o.size]),
                textures=frozenset([o.texture]), cells=frozenset([o.cell]))
    if kind == "color":
        pat = ObjPattern(**{**same, "colors": frozenset(allowed_colors(scene.background)) - {o.color}})
    elif kind == "shape":
        pat = ObjPattern(**{**same, "shapes": frozenset(SHAPES) - {o.shape}})
    elif kind == "move":
        pat = ObjPattern(**{**same, "cells": frozenset(CELLS) - {o.cell}})
    elif kind == "cardinality":
        return (Constraint(bg, scene.objects, ObjPattern(**{**same, "cells": None})),), o, "one", "two"
    else:
        raise ValueError(f"unknown under-specified kind {kind!r}")
    return (Constraint(bg, scene.without(o).objects, pat),), o, \
        {"color": o.color, "shape": o.shape, "move": POSITION_NAMES[o.cell]}[kind], None


def sample_target(constraints: Constraints, rng: random.Random,
                  exclude_combos: Iterable[Combo] = (), tries: int = 50) -> Scene | None:
    """Draw one scene satisfying ``constraints`` (uniform over free choices), or None."""
    excl = frozenset(exclude_combos)
    for _ in range(tries):
        c = rng.choice(constraints)
        bg = rng.choice(sorted(c.backgrounds))
        if any(o.color == bg for o in c.keep):
            continue
        if c.new is None:
            scene = Scene(c.keep, bg)
        else:
            p = c.new
            used = {o.cell for o in c.keep}
            cells = [x for x in sorted(p.cells if p.cells is not None else CELLS) if x not in used]
            colors = [x for x in sorted(p.colors if p.colors is not None else COLORS) if x != bg]
            if not cells or not colors:
                return None
            cell = rng.choice(cells)
            new = Obj(rng.choice(sorted(p.shapes or SHAPES)), rng.choice(colors),
                      rng.choice(sorted(p.sizes or SIZES)), cell[0], cell[1],
                      rng.choice(sorted(p.textures or TEXTURES)))
            scene = Scene(c.keep + (new,), bg)
        if not scene.has_combo(excl) and satisfies(scene, constraints):
            return scene
    return None


def underspecified_edit(scene: Scene, kind: str, rng: random.Random,
                        exclude_combos: Iterable[Combo] = ()) -> tuple[Scene, EditSpec] | None:
    """An under-specified edit of ``kind``: one sampled valid target and a spec whose
    ``constraints`` define all valid targets (``spec.underspecified`` is True).  None if the
    kind does not apply to ``scene``."""
    if kind not in UNDERSPECIFIED_KINDS:
        raise ValueError(f"unknown under-specified kind {kind!r}; expected {UNDERSPECIFIED_KINDS}")
    if kind not in underspecified_kinds(scene):
        return None
    made = _constraints(scene, kind, rng)
    if made is None:
        return None
    cons, ref, old, new = made
    target = sample_target(cons, rng, exclude_combos)
    if target is None:
        return None
    if kind == "remove":
        phrase = None  # the text names only the shape ("remove one of the circles")
    else:
        phrase = referring_expression(scene, ref, rng) if ref is not None else None
    new_obj = None
    if kind in ("add", "color", "shape", "move", "cardinality"):
        rest = set(target.objects) - set(scene.objects)
        new_obj = next(iter(rest)) if rest else None
    return target, EditSpec(kind, ref, new_obj, old, new, phrase, cons, underspecified=True)


def valid_targets(gallery: Iterable[tuple[str | int, Scene]], constraints: Constraints,
                  exclude: Iterable[str | int] = ()) -> list[str | int]:
    """Ids of all gallery scenes satisfying ``constraints`` (brute force; the gallery is small)."""
    skip = set(exclude)
    return [i for i, s in gallery if i not in skip and satisfies(s, constraints)]


__all__ = ["UNDERSPECIFIED_KINDS", "underspecified_kinds", "underspecified_edit", "sample_target",
           "valid_targets"]
