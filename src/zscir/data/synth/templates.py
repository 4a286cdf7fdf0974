"""Template triplet generators (CPU, deterministic): caption-pair mining and attribute substitution.

*Mining* turns two images of a user's pair set whose captions differ in a content word ("a red car" /
"a blue car") into a triplet with a **real target image**: nearest captions in a text-embedding space
propose the pairs, a word diff (difflib over lower-cased words) keeps those that differ in one or a few
content-word spans, and the modification is written from a phrasing set ("replace X with Y", "make it
Y", "add X", "remove X", ...). These are LQ triplets: the two images may differ in more than the
captions say. *Substitution* swaps one attribute word of a caption (colour, count, size, material) for
another of its kind and writes a **text-target** triplet (target caption, no target image).

Every choice (neighbour order, phrasing, replacement value) comes from a `random.Random` seeded by the
run seed and the item, so one seed gives the same triplets whatever the order of processing.
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass, field
from typing import Sequence

import torch

#: attribute vocabularies for substitution and for phrasing ("make it red" for a colour change)
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white",
               "grey", "gray"),
    "count": ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    "size": ("small", "large", "big", "tiny", "huge", "little"),
    "material": ("wooden", "metal", "metallic", "glass", "plastic", "paper", "stone", "golden", "silver",
                 "leather", "woollen", "cotton"),
}
ATTRIBUTE_OF = {w: k for k, ws in ATTRIBUTES.items() for w in ws}
STOPWORDS = frozenset(
    "a an the of and or in on at to with without for from by is are was were be been it its this that these "
    "those there here some any as into onto over under near next very".split())

#: modification phrasings; {old}/{new} are words, {what} the attribute kind
PHRASES: dict[str, tuple[str, ...]] = {
    "replace": ("replace {old} with {new}", "change {old} to {new}", "{new} instead of {old}",
                "swap the {old} for {new}"),
    "attribute": ("make it {new}", "change the {what} to {new}", "make it {new} instead of {old}",
                  "{new} instead of {old}"),
    "add": ("add {new}", "with {new}", "include {new}", "add some {new}"),
    "add_attribute": ("make it {new}", "make it {new} too"),
    "remove": ("remove {old}", "without {old}", "take away the {old}", "no {old}"),
}
_WORD = re.compile(r"[\w'-]+", re.UNICODE)


def words(caption: str) -> list[str]:
    """Lower-cased word tokens (punctuation dropped)."""
    return _WORD.findall(caption.lower())


def content(ws: Sequence[str]) -> list[str]:
    return [w for w in ws if w not in STOPWORDS]


@dataclass
class Edit:
    """One content-word edit span between two captions: ``old`` → ``new`` (either may be empty)."""

    old: tuple[str, ...]
    new: tuple[str, ...]

    @property
    def kind(self) -> str:
        if self.old and self.new:
            return "replace"
        return "add" if self.new else "remove"


def word_diff(a: str, b: str) -> list[Edit]:
    """Content-word edit spans turning caption ``a`` into ``b`` (spans of stop words only are ignored)."""
    wa, wb = words(a), words(b)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        old, new = tuple(content(wa[i1:i2])), tuple(content(wb[j1:j2]))
        # "letter m" → "letter a": a stop word that replaces a content word is content here
        if old and not new and j2 > j1:
            new = tuple(wb[j1:j2])
        elif new and not old and i2 > i1:
            old = tuple(wa[i1:i2])
        if old or new:
            out.append(Edit(old, new))
    return out


def phrase(edits: Sequence[Edit], rng: random.Random) -> str:
    """A modification text for the edits, phrasings drawn from `PHRASES` (joined by "and")."""
    parts = []
    for e in edits:
        old, new = " ".join(e.old), " ".join(e.new)
        attr_old = ATTRIBUTE_OF.get(old) if len(e.old) == 1 else None
        attr_new = ATTRIBUTE_OF.get(new) if len(e.new) == 1 else None
        if e.kind == "replace" and attr_old and attr_old == attr_new:
            key = "attribute"
        elif e.kind == "add" and attr_new:
            key = "add_attribute"
        else:
            key = e.kind
        parts.append(rng.choice(PHRASES[key]).format(old=old, new=new, what=attr_new or attr_old or "it"))
    return " and ".join(parts)


@dataclass
class MiningConfig:
    """Which caption pairs become triplets."""

    k: int = 10  #: nearest captions examined per caption
    max_edits: int = 1  #: content-word spans allowed to differ
    max_span: int = 2  #: words per span
    min_shared: int = 1  #: content words both captions must share (else the images are unrelated)
    min_similarity: float = -1.0  #: text-embedding cosine floor
    per_reference: int = 2  #: triplets kept per reference image


@dataclass
class MinedPair:
    ref: int
    tgt: int
    modification: str
    edits: list[Edit]
    similarity: float
    extra: dict = field(default_factory=dict)


def knn(embeds: torch.Tensor, k: int, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices) of the ``k`` nearest other rows by cosine (rows are unit vectors), chunked."""
    k = min(k, len(embeds) - 1)
    scores, idx = [], []
    for s in range(0, len(embeds), chunk):
        sim = embeds[s:s + chunk].float() @ embeds.float().T
        rows = torch.arange(s, min(s + chunk, len(embeds)))
        sim[torch.arange(len(rows)), rows] = -float("inf")  # not oneself
        v, i = sim.topk(k, dim=-1)
        scores.append(v)
        idx.append(i)
    return torch.cat(scores), torch.cat(idx)


def mine_pairs(captions: Sequence[str], embeds: torch.Tensor, cfg: MiningConfig, seed: int) -> list[MinedPair]:
    """Caption pairs (reference → target) that differ in a few content words, with their modification."""
    if len(captions) < 2:
        return []
    scores, idx = knn(embeds, cfg.k)
    norm = [" ".join(words(c)) for c in captions]
    out: list[MinedPair] = []
    for i in range(len(captions)):
        kept, seen = 0, {norm[i]}
        for s, j in zip(scores[i].tolist(), idx[i].tolist()):
            if kept >= cfg.per_reference or s < cfg.min_similarity:
                break
            if norm[j] in seen:  # same caption as the reference or as a kept target
                continue
            edits = word_diff(captions[i], captions[j])
            if not edits or len(edits) > cfg.max_edits:
                continue
            if any(len(e.old) > cfg.max_span or len(e.new) > cfg.max_span for e in edits):
                continue
            if len(set(content(words(captions[i]))) & set(content(words(captions[j])))) < cfg.min_shared:
                continue
            rng = random.Random(f"{seed}:mine:{i}:{j}")
            out.append(MinedPair(i, j, phrase(edits, rng), edits, float(s)))
            seen.add(norm[j])
            kept += 1
    return out


@dataclass
class Substitution:
    caption: str
    target_caption: str
    modification: str
    attribute: str
    old: str
    new: str


def substitute(caption: str, seed: int, key: str = "", kinds: Sequence[str] = tuple(ATTRIBUTES),
               insert_colour: bool = True) -> Substitution | None:
    """Swap one attribute word for another of its kind (counts only between plural numerals), or — for a
    short "a/an/the noun" caption without one — insert a colour after the article. None if nothing fits."""
    rng = random.Random(f"{seed}:sub:{key}:{caption}")
    tokens = re.split(r"(\W+)", caption)
    spots = [(n, t.lower()) for n, t in enumerate(tokens) if ATTRIBUTE_OF.get(t.lower()) in kinds]
    if spots:
        n, old = rng.choice(spots)
        kind = ATTRIBUTE_OF[old]
        same = {"grey": "gray", "gray": "grey", "big": "large", "large": "big", "little": "small",
                "small": "little", "metal": "metallic", "metallic": "metal"}
        choices = [w for w in ATTRIBUTES[kind] if w != old and w != same.get(old)]
        new = rng.choice(choices)
        tok = tokens[n]
        tokens[n] = new.capitalize() if tok[:1].isupper() else new
        target = "".join(tokens)
        mod = rng.choice(PHRASES["attribute"]).format(old=old, new=new, what=kind.replace("count", "number"))
        return Substitution(caption, target, mod, kind, old, new)
    m = re.match(r"^\s*(an?|the)\s+(\w[\w-]*(?:\s+\w[\w-]*)?)\s*\.?\s*$", caption, re.IGNORECASE)
    if insert_colour and "colour" in kinds and m:
        new = rng.choice(ATTRIBUTES["colour"][:9])
        art = m.group(1)
        if art.lower() != "the":
            art = ("An" if new[0] in "aeiou" else "A") if art[0].isupper() else ("an" if new[0] in "aeiou" else "a")
        target = f"{art} {new} {m.group(2)}" + ("." if caption.rstrip().endswith(".") else "")
        return Substitution(caption, target, rng.choice(PHRASES["add_attribute"]).format(new=new), "colour", "", new)
    return None
