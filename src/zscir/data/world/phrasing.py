"""Modification texts: turning an :class:`EditSpec` into words.

Every edit kind has several sentence templates in each of two *disjoint* sets: ``"train"``
templates (used for synthetic training triplets) and ``"test"`` templates (used only by the
held-out benchmark).  Both sets use the same attribute words, so the benchmark measures whether
a model understood the edit rather than whether it memorised the training sentence patterns --
the gap real zero-shot CIR models face between their training text and human annotations.
Under-specified edits (CIRCO-style) have their own template pairs.
"""

from __future__ import annotations

import random

from .captions import article, describe
from .edits import EditSpec
from .vocab import POSITION_NAMES, POSITION_PHRASES, plural

PHRASINGS: tuple[str, ...] = ("train", "test")

DESTINATIONS: dict[str, str] = {
    "top left": "to the top left corner", "top": "to the top", "top right": "to the top right corner",
    "left": "to the left", "center": "to the center", "right": "to the right",
    "bottom left": "to the bottom left corner", "bottom": "to the bottom",
    "bottom right": "to the bottom right corner",
}

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "color": ("make {obj} {new}", "change {obj} to {new}", "change the color of {obj} to {new}",
                  "paint {obj} {new}", "turn {obj} {new}", "recolor {obj} in {new}"),
        "size": ("make {obj} {cmp}", "change {obj} to {new}", "{verb} {obj}",
                 "resize {obj} to be {new}"),
        "shape": ("make {obj} {a_new}", "change {obj} into {a_new}", "turn {obj} into {a_new}",
                  "replace {obj} with {a_new} of the same color"),
        "add": ("add {new_obj} {pos}", "put {new_obj} {pos}", "insert {new_obj} {pos}",
                "place {new_obj} {pos}"),
        "remove": ("remove {obj}", "delete {obj}", "take away {obj}", "get rid of {obj}"),
        "move": ("move {obj} {dest}", "shift {obj} {dest}", "place {obj} {pos} instead",
                 "relocate {obj} {dest}"),
        "cardinality": ("add another {desc} {pos}", "duplicate {obj} and put the copy {pos}",
                        "make it two {plural_desc} with the new one {pos}",
                        "copy {obj} {dest}"),
        "background": ("change the background to {new}", "make the background {new}",
                       "use a {new} background", "paint the background {new}"),
    },
    "test": {
        "color": ("{obj} should be {new} instead", "i want {obj} in {new}",
                  "same image but with {obj} colored {new}", "have {obj} be {new} rather than {old}"),
        "size": ("{obj} should be {cmp}", "i want {obj} to look {cmp}",
                 "same image but {obj} is {new}", "have {obj} be {cmp} than now"),
        "shape": ("{obj} should be {a_new} instead", "i want {a_new} where {obj} is",
                  "same image but with {a_new} in place of {obj}", "have {a_new} instead of {obj}"),
        "add": ("there should also be {new_obj} {pos}", "i want {new_obj} {pos} as well",
                "same image plus {new_obj} {pos}", "have an extra {new_desc} {pos}"),
        "remove": ("{obj} should not be there", "i want the image without {obj}",
                   "same image but without {obj}", "have no {obj_noun} anymore"),
        "move": ("{obj} should be {pos} instead", "i want {obj} {pos}",
                 "same image but with {obj} {pos}", "have {obj} sit {pos}"),
        "cardinality": ("there should be two {plural_desc}, the new one {pos}",
                        "i want a second {desc} {pos}", "same image plus one more {desc} {pos}",
                        "have two {plural_desc} instead of one, the extra one {pos}"),
        "background": ("the background should be {new} instead", "i want a {new} background",
                       "same shapes but against a {new} background", "have it all on {new}"),
    },
}
"""kind -> templates for fully specified edits, per phrasing set."""

UNDERSPECIFIED_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "add": ("add {a_shape}", "put {a_shape} somewhere", "insert {a_shape} anywhere"),
        "color": ("change the color of {obj}", "give {obj} a different color",
                  "recolor {obj} in any other color"),
        "shape": ("replace {obj} with another shape of the same color",
                  "turn {obj} into a different shape"),
        "move": ("move {obj} somewhere else", "put {obj} in another place"),
        "background": ("change the background color", "use a different background"),
        "cardinality": ("add another {desc}", "duplicate {obj}"),
        "remove": ("remove one of the {plural_shape}", "delete a {shape}"),
    },
    "test": {
        "add": ("there should also be {a_shape} somewhere", "i want one more shape, {a_shape}",
                "same image plus {a_shape}"),
        "color": ("{obj} should have another color", "i want {obj} in a different color",
                  "same image but {obj} is not {old}"),
        "shape": ("{obj} should be some other shape", "same image but {obj} has a different shape"),
        "move": ("{obj} should be somewhere else", "i want {obj} in a different place"),
        "background": ("the background should be a different color",
                       "same shapes on another background"),
        "cardinality": ("there should be two {plural_desc}", "i want one more {desc}"),
        "remove": ("there should be one {shape} less", "i want one of the {plural_shape} gone"),
    },
}
"""kind -> templates for under-specified edits (CIRCO-style), per phrasing set."""


def _slots(spec: EditSpec) -> dict[str, str]:
    """Every placeholder a template may use, filled from the spec."""
    s: dict[str, str] = {"obj": spec.ref_phrase or "", "old": spec.old or "", "new": spec.new or ""}
    ref, new = spec.ref_obj, spec.new_obj
    if ref is not None:
        s["shape"] = ref.shape
        s["plural_shape"] = plural(ref.shape)
        s["a_shape"] = article(ref.shape)
        s["obj_noun"] = (spec.ref_phrase or "")[4:]  # drop "the "
        s["desc"] = describe(ref)
        s["plural_desc"] = describe(ref)[: -len(ref.shape)] + plural(ref.shape)
    if new is not None:
        s["new_obj"] = article(describe(new))
        s["new_desc"] = describe(new)
        s["pos"] = POSITION_PHRASES[new.cell]
        s["dest"] = DESTINATIONS[spec.new] if spec.new in DESTINATIONS else \
            DESTINATIONS[_pos_name(new.cell)]
        if spec.kind == "add":
            s["shape"] = new.shape
            s["a_shape"] = article(new.shape)
    if spec.kind == "shape" and spec.new:
        s["a_new"] = article(spec.new)
    if spec.kind == "size" and spec.new:
        s["cmp"] = "bigger" if spec.new == "large" else "smaller"
        s["verb"] = "enlarge" if spec.new == "large" else "shrink"
    return s


def _pos_name(cell: tuple[int, int]) -> str:
    return POSITION_NAMES[cell]


def templates_for(kind: str, phrasing: str, underspecified: bool = False) -> tuple[str, ...]:
    """The template strings of one kind in one phrasing set."""
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, got {phrasing!r}")
    table = UNDERSPECIFIED_TEMPLATES if underspecified else TEMPLATES
    return table[phrasing][kind]


def phrase_edit(spec: EditSpec, rng: random.Random, phrasing: str = "train") -> str:
    """A modification text for ``spec`` from the ``phrasing`` template set ("train" or "test")."""
    template = rng.choice(templates_for(spec.kind, phrasing, spec.underspecified))
    return template.format(**_slots(spec))
