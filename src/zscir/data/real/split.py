"""The concept split of the real-picture benchmark: which *families* are test, validation or training.

The real CIR benchmark (`zscir.data.real.benchmark`) asks for exact variants of emoji and Tux Paint stamps
("thumbs up" → "thumbs up: dark skin tone", a frog stamp → the red frog). Its numbers mean something only
if no test picture's concept was seen in training, by the backbone or by a method. Variants of one concept
share most pixels, so the unit of the split is the *family*: the concept with its variant removed, gender
words collapsed ("man frowning", "woman frowning", "person frowning" → "{g} frowning") and colour words
dropped ("red heart", "blue heart" → "heart"). Family names are source-free, so a held-out family also
removes the same concept from the other sources (a test "frog" stamp keeps "frog" emoji and openclipart
frogs out of training too).

Families go to test / val / train by a seeded hash of their name (stable when a package adds concepts).
`write_split` stores the lists as JSON; the corpus builder (``--exclude-split``) and anything else that
assembles training data call `ConceptSplit.held_out` on each item's metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

SPLIT_VERSION = 1
GENDERS = ("person", "man", "woman")
#: colour words dropped from family names (longest first: "light blue" before "blue")
COLOURS = ("light blue", "red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white",
           "pink", "grey")
HAIR = ("red hair", "curly hair", "white hair", "blond hair", "bald")
TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
_GENDER_RE = re.compile(r"\b(person|man|woman)\b")
_COLOUR_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in COLOURS) + r")\b")


@dataclass(frozen=True)
class EmojiSlots:
    """An emoji name cut into independent attributes; two emoji whose slots differ in one attribute are an
    exact (reference, target) pair for that attribute's edit."""

    template: str  #: the concept with "{g}" for its gender word and "{c}" for its colour word, + other variant parts
    gender: str | None
    colour: str | None
    tone: str | None  #: one skin tone, "multi" for several (couples), None for none
    hair: str | None

    @property
    def family(self) -> str:
        return family_name(self.template.replace("{c}", ""))


def family_name(concept: str) -> str:
    """Lower case, gender words → "{g}", colour words removed, spaces collapsed."""
    s = concept.lower().strip().rstrip(".")
    s = re.sub(r"^(an?|the)\s+", "", s)
    s = _GENDER_RE.sub("{g}", s)
    s = _COLOUR_RE.sub("", s)
    return re.sub(r"\s+", " ", s).strip(" ,")


def emoji_slots(name: str) -> EmojiSlots:
    """Parse a CLDR emoji name ("woman frowning: medium skin tone", "man: dark skin tone, red hair")."""
    concept, _, variant = name.partition(":")
    concept = concept.strip().lower()
    tone: str | None = None
    hair: str | None = None
    rest: list[str] = []
    tones = []
    for part in (p.strip() for p in variant.split(",") if p.strip()):
        p = part.lower()
        if p.endswith(" skin tone") and p[: -len(" skin tone")] in TONES:
            tones.append(p[: -len(" skin tone")])
        elif p in HAIR:
            hair = p
        else:
            rest.append(part)
    if tones:
        tone = tones[0] if len(tones) == 1 else "multi"
    gender = colour = None
    m = _GENDER_RE.search(concept)
    template = concept
    if m:
        gender = m.group(1)
        template = template[: m.start()] + "{g}" + template[m.end():]
    c = _COLOUR_RE.search(template)
    if c:
        colour = c.group(1)
        template = template[: c.start()] + "{c}" + template[c.end():]
    if rest:
        template += ": " + ", ".join(rest)
    return EmojiSlots(template, gender, colour, tone, hair)


def item_family(meta: Mapping[str, Any]) -> str:
    """The family of a corpus item from its metadata (``source``, ``concept``, ``caption``)."""
    source = str(meta.get("source", ""))
    # emoji in any art style (Noto, Twemoji, OpenMoji, flag-icons...: they carry an emoji_id) share one family
    if (source == "fonts-noto-color-emoji" or meta.get("emoji_id")) and meta.get("caption"):
        return emoji_slots(str(meta["caption"])).family
    return family_name(str(meta.get("concept") or meta.get("caption") or ""))


def assign(family: str, seed: int = 0, test: float = 0.2, val: float = 0.1) -> str:
    """"test", "val" or "train" from a seeded hash of the family name (independent of the other families)."""
    u = int(hashlib.sha1(f"{seed}:{family}".encode()).hexdigest()[:8], 16) / 0x100000000
    return "test" if u < test else "val" if u < test + val else "train"


@dataclass
class ConceptSplit:
    """Family lists per split. Families in neither ``test`` nor ``val`` count as training families."""

    test: set[str] = field(default_factory=set)
    val: set[str] = field(default_factory=set)
    train: set[str] = field(default_factory=set)
    seed: int = 0
    fractions: dict[str, float] = field(default_factory=lambda: {"test": 0.2, "val": 0.1})

    def split_of(self, family: str) -> str:
        return "test" if family in self.test else "val" if family in self.val else "train"

    def held_out(self, meta: Mapping[str, Any]) -> bool:
        """Whether a training item (its metadata) belongs to a test or validation family."""
        return self.split_of(item_family(meta)) != "train"

    @classmethod
    def from_families(cls, families: Iterable[str], seed: int = 0, test: float = 0.2,
                      val: float = 0.1) -> "ConceptSplit":
        out = cls(seed=seed, fractions={"test": test, "val": val})
        for f in sorted(set(families)):
            getattr(out, assign(f, seed, test, val)).add(f)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"version": SPLIT_VERSION, "unit": "family (zscir.data.real.split.item_family)", "seed": self.seed,
                "fractions": self.fractions, "test": sorted(self.test), "val": sorted(self.val),
                "train": sorted(self.train)}


def write_split(split: ConceptSplit, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(split.to_json(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_split(path: str | Path) -> ConceptSplit:
    """Read a split file; a missing or malformed one raises ValueError naming the path."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return ConceptSplit(set(d["test"]), set(d["val"]), set(d.get("train", [])), int(d.get("seed", 0)),
                            dict(d.get("fractions", {})))
    except FileNotFoundError:
        raise ValueError(f"{path}: split file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a concept split file (expected JSON with 'test' and 'val' lists): {e}") from None
