"""The concept split of the real-picture benchmark: which *families* are test, validation or training.

The real CIR benchmark (`zscir.data.real.benchmark`) asks for exact variants of emoji and Tux Paint stamps
("thumbs up" → "thumbs up: dark skin tone", a frog stamp → the red frog). Its numbers mean something only
if no test picture's concept was seen in training, by the backbone or by a method. Variants of one concept
share most pixels, so the unit of the split is the *family*: one family per concept, whatever its gender,
skin tone, hair, colour or number of people (`family_name`, `emoji_family`). The rule, in order:

1. the variant is cut off (the CLDR name after the colon: skin tones, hair, beard) — except parts that name the
   thing itself ("flag: Germany", "keycap: 1"); person words among those parts go ("kiss: woman, man,
   light skin tone, dark skin tone" → "kiss", "family: man, woman, boy" → "family");
2. person words are removed from the concept, with their "X and Y" sequences: person/people, man/men,
   woman/women ("man superhero", "superhero" → "superhero"; "men holding hands", "woman and man holding
   hands", "people holding hands" → "holding hands"; "man", "woman", "person" → "person");
3. the direction ("… facing right": a mirrored picture) and colour words are dropped ("red heart",
   "blue heart" → "heart");
4. gendered word pairs without a shared word are aliased to one name (`ALIASES`: prince / princess / person
   with crown, Santa / Mrs. / Mx Claus, merman / mermaid / merperson, old man / old woman / older person,
   boy / girl / child, men's / women's room → restroom).

Family names are source-free, so a held-out family also removes the same concept from the other sources and
art styles (a test "frog" stamp keeps "frog" emoji and openclipart frogs out of training too).
Split version 2 is this rule; version 1 kept gender words as "{g}", which put "man superhero" and
"superhero" (or "kiss" and "kiss: woman, man") into different families, one of them possibly in training.

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

SPLIT_VERSION = 2
GENDERS = ("person", "man", "woman")
#: colour words dropped from family names (longest first: "light blue" before "blue")
COLOURS = ("light blue", "red", "orange", "yellow", "green", "blue", "purple", "brown", "black", "white",
           "pink", "grey")
HAIR = ("red hair", "curly hair", "white hair", "blond hair", "bald")
TONES = ("light", "medium-light", "medium", "medium-dark", "dark")
_GENDER_RE = re.compile(r"\b(person|man|woman)\b")
_COLOUR_RE = re.compile(r"\b(" + "|".join(re.escape(c) for c in COLOURS) + r")\b")
_PERSON = r"(?:person|people|man|men|woman|women)"
#: person words with their "X and Y" sequences ("woman and man holding hands" → "holding hands")
_PEOPLE_RE = re.compile(rf"\b{_PERSON}(?:\s+and\s+{_PERSON})*\b")
_FACING_RE = re.compile(r"\bfacing (?:right|left)\b")
#: variant parts that only say who is in the picture ("kiss: woman, man") or how they look ("man: beard"):
#: dropped from the family
PERSON_PARTS = frozenset({"person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "adult",
                          "baby", "beard"})
#: whole names replaced before person words are removed (the gendered word is the whole concept)
PRE_ALIASES = {"men's room": "restroom", "women's room": "restroom"}
#: gendered forms without a shared word, after person words are removed → one family name
ALIASES = {"old": "older person", "older": "older person", "prince": "person with crown",
           "princess": "person with crown", "with crown": "person with crown", "santa claus": "mx claus",
           "mrs. claus": "mx claus", "mrs claus": "mx claus", "merman": "merperson", "mermaid": "merperson",
           "boy": "child", "girl": "child"}


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
        return emoji_family(self.template)


def family_name(concept: str) -> str:
    """The family of a concept name (rules 2–4 of the module docstring): lower case, leading article and
    final period dropped, person words and colour words removed, aliases applied; "" becomes "person"."""
    s = concept.lower().strip().rstrip(".").replace("\u2019", "'")
    if not s:
        return ""
    s = re.sub(r"^(an?|the)\s+", "", s)
    s = PRE_ALIASES.get(s, s)
    s = _FACING_RE.sub(" ", s)  # "person walking facing right" is the mirror picture of "person walking"
    s = _squash(_PEOPLE_RE.sub(" ", s.replace("{g}", "person")))
    if not s:  # "man", "woman", "person"
        return "person"
    s = _squash(_COLOUR_RE.sub("", s.replace("{c}", ""))) or _squash(s.replace("{c}", "colour"))  # "orange" stays
    return ALIASES.get(s, s)


def _squash(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip(" ,")


def emoji_family(template: str) -> str:
    """The family of an emoji template (`EmojiSlots.template`, tones and hair already cut off): the concept
    part by `family_name`, the other variant parts kept (lower case) unless they only name people."""
    concept, _, rest = template.partition(": ")
    parts = [p.strip().lower() for p in rest.split(",") if p.strip()]
    parts = [p for p in parts if p not in PERSON_PARTS]
    fam = family_name(concept)
    return f"{fam}: {', '.join(parts)}" if parts else fam


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
    """The family of a corpus item from its metadata (``source``, ``concept``, ``caption``). Any emoji —
    Noto's, or another set's whose items carry ``emoji_id``/``emoji`` — is read as a CLDR name, so the
    same emoji in several styles is one family."""
    source = str(meta.get("source", ""))
    is_emoji = source == "fonts-noto-color-emoji" or bool(meta.get("emoji_id") or meta.get("emoji"))
    if is_emoji and isinstance(meta.get("caption"), str) and meta["caption"]:
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
    def from_families(cls, families: Iterable[str], seed: int = 0, test: float = 0.2, val: float = 0.1,
                      together: Iterable[Iterable[str]] = ()) -> "ConceptSplit":
        """Each family to the split its hash picks; the families of each group of ``together`` (concepts
        drawn with pixel-identical pictures: the flags of Australia and of Heard & McDonald Islands) all go
        where the alphabetically first of them goes."""
        out = cls(seed=seed, fractions={"test": test, "val": val})
        lead: dict[str, str] = {}

        def find(f: str) -> str:
            while lead.get(f, f) != f:
                f = lead[f]
            return f

        for group in together:  # union-find: chained groups end up with one leader, their smallest name
            roots = sorted({find(f) for f in group})
            for r in roots[1:]:
                lead[r] = roots[0]
        for f in sorted(set(families)):
            getattr(out, assign(find(f), seed, test, val)).add(f)
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
        if isinstance(d, dict) and d.get("version", SPLIT_VERSION) != SPLIT_VERSION:
            # its family names follow another rule: items of its test families would not be recognised
            raise ValueError(f"{path}: a concept split of version {d.get('version')!r}, this zscir names "
                             f"families by version {SPLIT_VERSION}: rebuild the benchmark (zscir data "
                             "build-benchmark) and use its split.json")
        return ConceptSplit(set(d["test"]), set(d["val"]), set(d.get("train", [])), int(d.get("seed", 0)),
                            dict(d.get("fractions", {})))
    except FileNotFoundError:
        raise ValueError(f"{path}: split file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a concept split file (expected JSON with 'test' and 'val' lists): {e}") from None
