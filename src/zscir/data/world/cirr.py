"""CIRR-style part of the benchmark: img_sets of six near-duplicate images.

Each set holds a reference, ``queries_per_set`` targets reached from it by different fully
specified edits, and hard distractors that are one attribute away from a target or from the
reference (the right edit with the wrong value, the edit applied to the wrong object, the target
with one extra change, the reference with a different change).  Ranking the five non-reference
members (Recall_subset@K) therefore tests fine-grained composition, as in CIRR (Liu et al., 2021).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable, Iterable

from .config import WorldConfig
from .edits import EDIT_KINDS, EditSpec, apply_edit, applicable_kinds, random_edit
from .phrasing import phrase_edit
from .scene import Combo, Obj, Scene, sample_scene
from .vocab import SIZES, TEXTURES

logger = logging.getLogger(__name__)

SET_SIZE = 6


@dataclass(frozen=True)
class CirrQuery:
    """One query; images are referred to by scene key until names are assigned."""

    pairid: int
    set_id: int
    reference: Scene
    target: Scene
    caption: str
    spec: EditSpec
    heldout: bool


@dataclass(frozen=True)
class CirrSet:
    id: int
    members: tuple[Scene, ...]  # shuffled order, exactly SET_SIZE distinct scenes


def heldout_edit(ref: Scene, rng: random.Random, heldout: Iterable[Combo]
                 ) -> tuple[Scene, EditSpec] | None:
    """An edit whose result contains a held-out (shape, colour) combo that the reference lacks:
    recolour an object of a held-out shape, reshape an object of a held-out colour, or add a
    held-out object.  Used to put unseen compositions into benchmark targets."""
    options: list[tuple[str, Obj | None, object]] = []
    for shape, color in heldout:
        if (shape, color) in ref.combos() or color == ref.background:
            continue
        for o in ref.objects:
            if o.shape == shape:
                options.append(("color", o, color))
            if o.color == color:
                options.append(("shape", o, shape))
        for cell in ref.free_cells():
            size = rng.choice(tuple(SIZES))
            texture = rng.choice(TEXTURES) if rng.random() < 0.3 else "plain"
            options.append(("add", None, Obj(shape, color, size, cell[0], cell[1], texture)))
    # choose the kind first so that "add" (which has many more options) does not dominate
    by_kind: dict[str, list[tuple[str, Obj | None, object]]] = {}
    for opt in options:
        by_kind.setdefault(opt[0], []).append(opt)
    kinds = list(by_kind)
    rng.shuffle(kinds)
    ordered = []
    for k in kinds:
        rng.shuffle(by_kind[k])
        ordered.extend(by_kind[k])
    for kind, obj, value in ordered:
        res = apply_edit(ref, kind, rng, obj=obj, value=value)  # type: ignore[arg-type]
        if res is not None:
            return res
    return None


def _near_misses(ref: Scene, target: Scene, spec: EditSpec, rng: random.Random
                 ) -> list[Callable[[], Scene | None]]:
    """Generators of hard distractors for one (reference, target) query."""
    def wrong_value() -> Scene | None:
        r = apply_edit(ref, spec.kind, rng, obj=spec.ref_obj)
        return r[0] if r else None

    def wrong_object() -> Scene | None:
        others = [o for o in ref.objects if o != spec.ref_obj]
        if spec.ref_obj is None or not others:
            return None
        obj = rng.choice(others)
        value = getattr(spec.new_obj, spec.kind) if spec.kind in ("color", "shape", "size") else None
        r = apply_edit(ref, spec.kind, rng, obj=obj, value=value)
        if r is None:
            r = apply_edit(ref, spec.kind, rng, obj=obj)
        return r[0] if r else None

    def target_plus() -> Scene | None:
        r = random_edit(target, rng, kinds=[k for k in EDIT_KINDS if k != spec.kind])
        return r[0] if r else None

    def ref_other() -> Scene | None:
        r = random_edit(ref, rng, kinds=[k for k in applicable_kinds(ref) if k != spec.kind])
        return r[0] if r else None

    return [wrong_value, wrong_object, target_plus, ref_other]


def _one_set(cfg: WorldConfig, rng: random.Random, seen: set[str], set_id: int, first_pairid: int
             ) -> tuple[CirrSet, list[CirrQuery]] | None:
    ref = sample_scene(rng, min_objects=2, max_objects=cfg.max_objects, texture_prob=cfg.texture_prob)
    if ref.key() in seen:
        return None
    members = [ref]
    keys = {ref.key()}
    queries: list[tuple[Scene, EditSpec, bool]] = []
    used_kinds: set[str] = set()
    for _ in range(cfg.queries_per_set):
        for _try in range(20):
            if rng.random() < cfg.heldout_share:
                res = heldout_edit(ref, rng, cfg.heldout_combos)
            else:
                kinds = [k for k in applicable_kinds(ref) if k not in used_kinds]
                res = random_edit(ref, rng, kinds=kinds)
            if res is None or res[0].key() in keys or res[0].key() in seen:
                continue
            if res[1].kind in used_kinds:
                continue
            break
        else:
            return None
        target, spec = res
        used_kinds.add(spec.kind)
        members.append(target)
        keys.add(target.key())
        queries.append((target, spec, target.has_combo(cfg.heldout_combos)))
    gens = [g for t, s, _ in queries for g in _near_misses(ref, t, s, rng)]
    # round-robin over queries and distractor types so every query gets hard negatives
    order = [gens[i::4] for i in range(4)]
    flat = [g for group in order for g in group]
    for _ in range(3):
        for gen in flat:
            if len(members) == SET_SIZE:
                break
            d = gen()
            if d is not None and d.key() not in keys and d.key() not in seen:
                members.append(d)
                keys.add(d.key())
    if len(members) != SET_SIZE:
        return None
    rng.shuffle(members)
    cset = CirrSet(set_id, tuple(members))
    out = [CirrQuery(first_pairid + i, set_id, ref, t, phrase_edit(s, rng, "test"), s, h)
           for i, (t, s, h) in enumerate(queries)]
    return cset, out


def build_cirr(cfg: WorldConfig, rng: random.Random, seen: set[str]
               ) -> tuple[list[CirrSet], list[CirrQuery]]:
    """``cfg.n_cirr_sets`` sets and their queries, all scenes unseen in training."""
    sets: list[CirrSet] = []
    queries: list[CirrQuery] = []
    while len(sets) < cfg.n_cirr_sets:
        made = _one_set(cfg, rng, seen, len(sets), len(queries))
        if made is None:
            continue
        sets.append(made[0])
        queries.extend(made[1])
    logger.info("built %d CIRR-style sets, %d queries (%d with held-out targets)", len(sets),
                len(queries), sum(q.heldout for q in queries))
    return sets, queries
