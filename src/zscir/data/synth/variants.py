"""The ``variants`` generator of make-triplets: exact HQ triplets between variants of one concept.

A real corpus (`zscir.data.real`) ships pictures that are exact variants of each other: the same emoji in
five skin tones, as a man, a woman and a person, with red or curly hair, drawn in Noto's, Twitter's or
OpenMoji's style; the same Tux Paint stamp in several tints. Two such pictures that differ in exactly one
attribute are a composed-retrieval triplet whose answer is known by construction — reference + "with dark
skin" → target — on real drawn pictures, with no image generator involved (quality ``hq``). The other
members of the family (the same concept in another tone, the wrong style) are the *hard negatives* a model
must rule out; each row lists some of them (``hard_negatives``: ids of the manifest's images).

Metadata comes from each item's WebDataset ``.json`` (`zscir.data.wds_source` passes it as
``PairRecord.meta["json"]``): ``concept``, ``caption``, ``source``, ``variant`` ({"skin_tone": "dark"},
{"tint": "red"}, {"name": ...}), for emoji ``emoji`` / ``emoji_id`` and ``style``. The family is
`zscir.data.real.split.item_family`'s (the unit of the benchmark's concept split); emoji names are cut into
attributes by `zscir.data.real.split.emoji_slots`, as the benchmark does.

Modification texts come from this module's own templates (`PHRASES`, `STYLE_WORDS`), none of them a
phrasing of the real benchmark (`zscir.data.real.benchmark.PHRASINGS`; a test checks it), so the benchmark
never asks a question in the words training used. Memory holds item ids and attributes only, never
pictures; rows are produced family by family.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from zscir.data.real.split import TONES, emoji_slots, item_family

logger = logging.getLogger(__name__)

#: the attributes an edit may change, in the order rows name them
ATTRIBUTES = ("tone", "gender", "hair", "colour", "tint", "style")
EMOJI_SOURCE = "fonts-noto-color-emoji"  #: emoji glyphs rendered from Debian's font (style "noto")
ORDINALS = ("first", "second", "third", "fourth")

#: modification templates per (attribute, case); ``{v}`` is the new value's words. None of them is a
#: phrasing of the real benchmark (tests/test_variant_triplets.py checks both directions).
PHRASES: dict[str, tuple[str, ...]] = {
    "tone": ("with {v} skin", "make the skin {v}", "the same but with a {v} skin tone",
             "change the skin colour to {v}"),
    "tone_default": ("with the default yellow skin", "make the skin the standard cartoon yellow",
                     "without any skin tone"),
    "tone_one": ("make the {n} person's skin {v}", "change the {n} person to {v} skin",
                 "the {n} one with {v} skin instead"),
    "gender": ("make it a {v} instead", "show a {v} instead", "the {v} version of this"),
    "hair": ("with {v} instead", "change the hairstyle to {v}", "the same one but with {v}"),
    "bald": ("make them bald", "with no hair at all", "remove all the hair"),
    "hair_default": ("with an ordinary hairstyle", "drop the special hair"),
    "colour": ("make it {v}", "the {v} version", "in {v} instead"),
    "tint": ("make it {v}", "coloured {v} instead", "a {v} one"),
    "tint_default": ("in its original colours", "without the colour tint", "back to the normal colours"),
    "style": ("draw it {v}", "the same emoji {v}", "show this {v}"),
}
GENDER_TEXT = {"man": "man", "woman": "woman", "person": "person of unspecified gender"}
#: how a user would ask for an emoji style; an unknown style is "in the <name> style"
STYLE_WORDS = {
    "noto": "in a glossy rounded cartoon style",
    "google": "in a glossy rounded cartoon style",
    "twitter": "in a flat cartoon style",
    "twemoji": "in a flat cartoon style",
    "openmoji": "as a line drawing with thick black outlines",
    "fluent-color": "in a soft gradient style",
    "fluent-flat": "in a flat pastel style",
    "fluent-3d": "as a shiny 3D render",
    "fluent-high-contrast": "in black and white",
    "noto-monochrome": "in black and white",
    "apple": "in a glossy 3D look",
}


def style_words(style: str) -> str:
    return STYLE_WORDS.get(style, f"in the {style.replace('-', ' ')} style")


def same_look(a: tuple, b: tuple) -> bool:
    """Whether two attribute tuples show the same picture to a user: equal, or different only in styles
    that are described alike (Noto's font and Google's emoji set are the same drawings)."""
    s = ATTRIBUTES.index("style")
    return a[:s] + a[s + 1:] == b[:s] + b[s + 1:] and (
        a[s] == b[s] or (a[s] is not None and b[s] is not None and style_words(a[s]) == style_words(b[s])))


@dataclass
class VariantConfig:
    """Options of the ``variants`` generator (CLI: ``--variant-*``)."""

    kinds: tuple[str, ...] = ATTRIBUTES  #: attributes an edit may change
    max_diff: int = 1  #: attributes one edit may change at once (1 = exact single-attribute edits)
    per_reference: int | None = None  #: at most this many rows per reference picture (None: all)
    negatives: int = 8  #: hard negatives listed per row (0: none)

    def problems(self) -> list[str]:
        wrong = []
        bad = [k for k in self.kinds if k not in ATTRIBUTES]
        if bad or not self.kinds:
            wrong.append(f"--variant-kinds: unknown kind(s) {bad or '(none)'}; expected some of "
                         f"{', '.join(ATTRIBUTES)}")
        if not 1 <= self.max_diff <= len(ATTRIBUTES):
            wrong.append(f"--variant-max-diff must be in [1, {len(ATTRIBUTES)}], got {self.max_diff}")
        if self.per_reference is not None and self.per_reference < 1:
            wrong.append(f"--variant-per-reference must be >= 1, got {self.per_reference}")
        if self.negatives < 0:
            wrong.append(f"--variant-negatives must be >= 0, got {self.negatives}")
        return wrong


@dataclass(frozen=True)
class VariantItem:
    """What the generator keeps of one picture: its id, family, identity and attribute values."""

    key: str
    caption: str
    family: str
    base: str  #: the picture's identity in its family apart from the attributes (emoji template, stamp file)
    attrs: tuple[Any, ...]  #: one value per `ATTRIBUTES` entry (None: not set)


def record_metadata(meta: Mapping[str, Any] | None) -> dict | None:
    """The item metadata a `PairRecord.meta` carries (a WebDataset sample's ``.json``), or None."""
    j = (meta or {}).get("json")
    return j if isinstance(j, dict) else None


def has_metadata(meta: Mapping[str, Any] | None) -> bool:
    """Whether an item carries corpus metadata at all (a ``concept`` or a ``variant``)."""
    return isinstance(meta, Mapping) and bool(meta.get("concept") or meta.get("variant") is not None)


def describe(key: str, caption: str, meta: Mapping[str, Any] | None) -> VariantItem | None:
    """A `VariantItem` from an item's metadata, or None when it carries none the generator can use (no
    metadata, or a concept whose family name is empty: `item_family` drops colour words, so "orange")."""
    if not has_metadata(meta):
        return None
    caption = str(meta.get("caption") or caption or "")
    variant = meta.get("variant") if isinstance(meta.get("variant"), Mapping) else {}
    family = item_family({**meta, "caption": caption})
    if not family:
        return None
    style = meta.get("style")
    style = str(style) if isinstance(style, str) and style else None
    tone = variant.get("skin_tone") if isinstance(variant.get("skin_tone"), str) else None
    if meta.get("emoji") or meta.get("emoji_id"):
        s = emoji_slots(caption)
        if style is None and meta.get("source") == EMOJI_SOURCE:
            style = "noto"
        tone = tone or s.tone
        attrs = (tone, s.gender, s.hair, s.colour, _str(variant.get("tint")), style)
        base = "emoji:" + s.template
    else:
        attrs = (tone, _str(variant.get("gender")), _str(variant.get("hair")), _str(variant.get("colour")),
                 _str(variant.get("tint")), style)
        # two pictures are variants only when they are known to be one drawing: a stamp file, an emoji id
        base = "file:" + str(meta.get("file") or meta.get("emoji_id") or key)
    return VariantItem(key, caption, family, base, attrs)


def _str(v: Any) -> str | None:
    return str(v) if isinstance(v, (str, int)) and not isinstance(v, bool) and str(v) else None


def _tones(v: str | None) -> list[str] | None:
    """The per-person tones of a tone value ("light+dark"), None for no tone or an opaque value."""
    if v is None:
        return []
    parts = v.split("+")
    return parts if all(p in TONES for p in parts) else None


def tone_change(old: str | None, new: str | None) -> tuple[str, int | None] | None:
    """How a tone edit reads: ("all", None), ("one", person index), ("default", None); None when the two
    values are no one-step tone edit (several people change, an unknown value)."""
    a, b = _tones(old), _tones(new)
    if a is None or b is None or a == b:
        return None
    if not b:
        return ("default", None)
    if len(b) == 1 and len(a) <= 1:
        return ("all", None)
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(diff) == 1 and diff[0] < len(ORDINALS):
            return ("one", diff[0])
    return None


def edit_text(attr: str, old: Any, new: Any, rng: random.Random) -> str | None:
    """One modification text for changing ``attr`` from ``old`` to ``new`` (None: not an edit we phrase)."""
    if attr == "tone":
        how = tone_change(old, new)
        if how is None:
            return None
        if how[0] == "default":
            return rng.choice(PHRASES["tone_default"])
        if how[0] == "one":
            return rng.choice(PHRASES["tone_one"]).format(n=ORDINALS[how[1]], v=new.split("+")[how[1]])
        return rng.choice(PHRASES["tone"]).format(v=new)
    if new is None:
        if attr in ("hair", "tint"):
            return rng.choice(PHRASES[f"{attr}_default"])
        return None  # gender, colour and style are never absent in only one of two variants we phrase
    if attr == "gender":
        return rng.choice(PHRASES["gender"]).format(v=GENDER_TEXT.get(new, new))
    if attr == "hair" and new == "bald":
        return rng.choice(PHRASES["bald"])
    if attr == "style":
        if old is None or style_words(old) == style_words(new):  # Google's set is Noto's drawings: no edit
            return None
        return rng.choice(PHRASES["style"]).format(v=style_words(new))
    return rng.choice(PHRASES[attr]).format(v=new)


@dataclass
class VariantStats:
    """What the generator saw: per-kind row counts (before the caps) and skipped items by reason."""

    items: int = 0
    per_kind: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    families: int = 0


class VariantCollector:
    """Collects items (ids and attributes only) in the first pass over the pairs, then yields rows.

    ``add`` is the one place every source item passes through before any row is made from it (a filter
    such as a held-out exclusion hooks in there)."""

    def __init__(self, cfg: VariantConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.stats = VariantStats()
        self._families: dict[str, dict[tuple, VariantItem]] = defaultdict(dict)

    def add(self, key: str, caption: str, meta: Mapping[str, Any] | None) -> None:
        self.stats.items += 1
        item = describe(key, caption, meta)
        if item is None:
            self.stats.skipped["no_metadata" if not has_metadata(meta) else "no_family"] += 1
            return
        fam = self._families[item.family]
        sig = (item.base, item.attrs)
        if sig in fam:  # the same variant twice (a duplicate picture): the first one stands for it
            self.stats.skipped["duplicate_variant"] += 1
            if key < fam[sig].key:
                fam[sig] = item
            return
        fam[sig] = item

    def add_records(self, records: Iterable) -> None:
        for r in records:
            self.add(r.key, r.caption, record_metadata(r.meta))

    # ------------------------------------------------------------------------------------------ rows
    def _edit(self, ref: VariantItem, tgt: VariantItem, rng: random.Random) -> tuple[str, dict, dict, str] | None:
        diff = [i for i, (a, b) in enumerate(zip(ref.attrs, tgt.attrs)) if a != b]
        if not diff or len(diff) > self.cfg.max_diff or any(ATTRIBUTES[i] not in self.cfg.kinds for i in diff):
            return None
        texts = []
        for i in diff:
            t = edit_text(ATTRIBUTES[i], ref.attrs[i], tgt.attrs[i], rng)
            if t is None:
                return None
            texts.append(t)
        kind = "+".join(ATTRIBUTES[i] for i in diff)
        return (" and ".join(texts), {ATTRIBUTES[i]: ref.attrs[i] for i in diff},
                {ATTRIBUTES[i]: tgt.attrs[i] for i in diff}, kind)

    def _negatives(self, tgt: VariantItem, items: list[VariantItem]) -> list[str]:
        """Same-family items other than the target, nearest first: same drawing with the fewest attributes
        changed, then other drawings of the family; ties in a seeded order."""
        k = self.cfg.negatives
        if k <= 0:
            return []
        rng = random.Random(f"{self.seed}:neg:{tgt.key}")
        scored = []
        for it in items:
            if it is tgt or (it.base == tgt.base and same_look(it.attrs, tgt.attrs)):  # no look-alike answer
                continue
            d = sum(a != b for a, b in zip(it.attrs, tgt.attrs)) if it.base == tgt.base else len(ATTRIBUTES) + 1
            scored.append((d, rng.random(), it.key))
        scored.sort()
        return [key for _, _, key in scored[:k]]

    def family_rows(self, family: str, items: list[VariantItem]) -> Iterator[dict]:
        """The rows of one family (items sorted by key), capped per reference."""
        by_base: dict[str, list[VariantItem]] = defaultdict(list)
        for it in items:
            by_base[it.base].append(it)
        neg_cache: dict[str, list[str]] = {}
        for ref in items:
            rng = random.Random(f"{self.seed}:{ref.key}")
            found = []
            for tgt in by_base[ref.base]:
                if tgt is ref:
                    continue
                e = self._edit(ref, tgt, rng)
                if e is not None:
                    found.append((tgt, e))
            cap = self.cfg.per_reference
            if cap is not None and len(found) > cap:
                found = [found[i] for i in sorted(rng.sample(range(len(found)), cap))]
            for tgt, (text, old, new, kind) in found:
                self.stats.per_kind[kind] += 1
                if tgt.key not in neg_cache:
                    neg_cache[tgt.key] = self._negatives(tgt, items)
                yield {"reference": ref.key, "modification": text, "target": tgt.key,
                       "reference_caption": ref.caption, "target_caption": tgt.caption, "quality": "hq",
                       "source": "make-triplets", "generator": "variants", "model": None, "seed": self.seed,
                       "scores": {}, "family": family, "edit": {"kind": kind, "from": old, "to": new},
                       "hard_negatives": neg_cache[tgt.key]}

    def iter_rows(self) -> Iterator[dict]:
        """Every row, families in name order (one family's negatives cached at a time)."""
        self.stats.per_kind.clear()
        self.stats.families = 0
        self.stats.skipped.pop("family_of_one", None)
        for fam in sorted(self._families):
            items = sorted(self._families[fam].values(), key=lambda it: it.key)
            if len(items) < 2:
                self.stats.skipped["family_of_one"] += 1
                continue
            self.stats.families += 1
            yield from self.family_rows(fam, items)

    def rows(self, cap: int | None = None) -> list[dict]:
        """`iter_rows` as a list; with ``cap`` a seeded sample of ``cap`` rows (kept in that order), drawn
        by counting the rows first so that only the kept ones are ever held (a corpus gives 250K+)."""
        if cap is None:
            return list(self.iter_rows())
        n = sum(self.count().values())
        keep = set(random.Random(f"{self.seed}:cap").sample(range(n), cap)) if n > cap else None
        return [r for i, r in enumerate(self.iter_rows()) if keep is None or i in keep]

    def count(self) -> dict[str, int]:
        """Rows per edit kind before the ``--max-per-generator`` cap (``--dry-run``); no row is kept."""
        saved, self.cfg = self.cfg, VariantConfig(self.cfg.kinds, self.cfg.max_diff, self.cfg.per_reference, 0)
        try:
            for _ in self.iter_rows():
                pass
        finally:
            self.cfg = saved
        return dict(sorted(self.stats.per_kind.items()))

__all__ = ["ATTRIBUTES", "PHRASES", "STYLE_WORDS", "GENDER_TEXT", "VariantConfig", "VariantItem",
           "VariantCollector", "VariantStats", "describe", "has_metadata", "edit_text", "record_metadata", "same_look", "style_words",
           "tone_change"]
