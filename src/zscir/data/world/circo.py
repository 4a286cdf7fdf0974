"""CIRCO-style part of the benchmark: under-specified queries with multiple ground truths.

For each query we sample a reference, an under-specified edit (e.g. "add a star"), plant 1-5
valid targets and a few near misses, then add random distractors.  Ground truths are NOT the
planted list: they are recomputed by checking every gallery image against the edit's
constraints, so any image that is valid is listed (as CIRCO's exhaustive annotation intends)
and the reference never is (Baldrati et al., 2023).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from .captions import article, describe, join_words
from .config import WorldConfig
from .constraints import Constraints, satisfies
from .edits import EditSpec, random_edit
from .phrasing import phrase_edit
from .scene import Scene, sample_scene
from .underspecified import sample_target, underspecified_edit, underspecified_kinds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CircoQuery:
    id: int
    reference: Scene
    text: str
    shared_concept: str
    spec: EditSpec
    gts: tuple[Scene, ...]  # all valid gallery scenes, the sampled target first
    heldout: bool  # the first ground truth contains a held-out combo


def shared_concept(ref: Scene, constraints: Constraints) -> str:
    """A short description of what the reference and every valid target have in common."""
    common = set(ref.objects)
    for c in constraints:
        common &= set(c.keep)
    objs = [o for o in ref.objects if o in common]
    bgs = set.intersection(*(set(c.backgrounds) for c in constraints))
    if objs:
        text = join_words([article(describe(o, size=False, texture=False)) for o in objs])
    else:
        text = "some shapes"
    return f"{text} on a {ref.background} background" if ref.background in bgs else text


def _query(cfg: WorldConfig, rng: random.Random, seen: set[str], force_heldout: bool
           ) -> tuple[Scene, EditSpec, list[Scene], list[Scene]] | None:
    ref = sample_scene(rng, min_objects=2, max_objects=cfg.max_objects, texture_prob=cfg.texture_prob)
    if ref.key() in seen:
        return None
    kinds = underspecified_kinds(ref)
    if force_heldout:  # only these kinds can introduce a new (shape, colour) combo
        kinds = [k for k in kinds if k in ("add", "color", "shape")]
        if not kinds:
            return None
    res = underspecified_edit(ref, rng.choice(kinds), rng)
    if res is None:
        return None
    first, spec = res
    if force_heldout:
        for _ in range(30):
            if first.has_combo(cfg.heldout_combos) and not ref.has_combo(cfg.heldout_combos):
                break
            first = sample_target(spec.constraints, rng)
            if first is None:
                return None
        else:
            return None
    planted = [first]
    keys = {ref.key(), first.key()}
    for _ in range(rng.randint(0, 4) * 3):  # up to 4 more valid targets
        t = sample_target(spec.constraints, rng)
        if t is not None and t.key() not in keys and len(planted) < 5:
            planted.append(t)
            keys.add(t.key())
    near: list[Scene] = []
    for base in (ref, first, first):
        r = random_edit(base, rng)
        if r is not None and r[0].key() not in keys and not satisfies(r[0], spec.constraints):
            near.append(r[0])
            keys.add(r[0].key())
    if any(k in seen for k in keys):
        return None
    return ref, spec, planted, near


def build_circo(cfg: WorldConfig, rng: random.Random, seen: set[str]
                ) -> tuple[list[Scene], list[CircoQuery]]:
    """Gallery scenes (deduplicated, shuffled) and queries with complete ground truths."""
    raw: list[tuple[Scene, EditSpec, list[Scene]]] = []
    gallery: dict[str, Scene] = {}
    while len(raw) < cfg.n_circo_queries:
        made = _query(cfg, rng, seen, rng.random() < cfg.heldout_share)
        if made is None:
            continue
        ref, spec, planted, near = made
        raw.append((ref, spec, planted))
        for s in (ref, *planted, *near):
            gallery.setdefault(s.key(), s)
    n_before = len(gallery)
    while len(gallery) < n_before + cfg.n_circo_distractors:
        s = sample_scene(rng, max_objects=cfg.max_objects, texture_prob=cfg.texture_prob)
        if s.key() not in seen:
            gallery.setdefault(s.key(), s)
    scenes = list(gallery.values())
    rng.shuffle(scenes)
    queries: list[CircoQuery] = []
    dropped = 0
    for ref, spec, planted in raw:
        gts = [s for s in scenes if s != ref and satisfies(s, spec.constraints)]
        gts.sort(key=lambda s: s != planted[0])  # the sampled target becomes target_img_id
        if not 1 <= len(gts) <= cfg.max_circo_gts:
            dropped += 1
            continue
        text = phrase_edit(spec, rng, "test")
        queries.append(CircoQuery(len(queries), ref, text, shared_concept(ref, spec.constraints),
                                  spec, tuple(gts), gts[0].has_combo(cfg.heldout_combos)))
    if dropped:
        logger.warning("dropped %d CIRCO queries whose ground-truth count left [1, %d]", dropped,
                       cfg.max_circo_gts)
    logger.info("built %d CIRCO-style queries over %d images", len(queries), len(scenes))
    return scenes, queries
