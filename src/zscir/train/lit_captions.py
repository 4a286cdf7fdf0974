"""Caption augmentation from a picture's metadata (`zscir train lit --caption-augment metadata`).

Why: a picture of the real corpus has one caption (a CLDR name, a stamp's description, an openclipart title),
so the heads (and a tuned text tower) see each picture under one phrasing only, and fit it (training loss
0.007 while held-out R@1 stays near 52). More phrasings of the same picture, built from what its metadata
already says, teach the text side that "an emoji of red apple", "red apple, emoji style" and "red apple:
fruit, food" mean the same picture.

The phrasings of a picture (`metadata_phrasings`), in this order, without duplicates and without its own
captions:

============================== =====================================================================
``a picture of {name}``        always
``{kind} {name}``              ``an emoji of``, ``a clip art picture of``, ``a {style} picture of``
``{name}, {style} style``      when a style is known (``style`` field, else the source's kind)
``{name}: {keywords}``         with keywords (up to 6, joined by ", ")
``{keywords}``                 with at least 2 keywords
============================== =====================================================================

``name`` is the metadata's ``name`` field, else the first caption (a trailing full stop dropped). Keywords
are ``keywords`` (a list or a comma-separated string) at the top of the metadata or under ``extra``, then
the emoji ``subgroup`` and the Tux Paint ``category`` folders, most specific first (``face-smiling`` →
``face smiling``, ``symbols/alphabets/english`` → ``english, alphabets, symbols``). The metadata is a
record's WebDataset ``{key}.json`` (`zscir.data.wds_source` keeps it in ``meta["json"]``) merged over its other ``meta`` fields;
sources without metadata (manifests, the world) get no phrasings beyond ``a picture of`` / nothing.

Each training step samples, per picture, one of its own captions or (with probability ``augment_share``)
one of these phrasings, from a generator seeded by the run's seed: deterministic given the seed. Held-out
metrics always use the picture's first own caption.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["AUGMENTS", "KIND_BY_SOURCE", "record_metadata", "metadata_keywords", "metadata_phrasings"]

AUGMENTS = ("none", "metadata")
#: what kind of picture each real-corpus source holds (`zscir.data.real`), when the metadata has no ``style``
KIND_BY_SOURCE = {"fonts-noto-color-emoji": "emoji", "tuxpaint-stamps-default": "clip art",
                  "openclipart-png": "clip art"}
_KIND_PHRASE = {"emoji": "an emoji of", "clip art": "a clip art picture of", "icon": "an icon of",
                "photo": "a photo of", "drawing": "a drawing of"}
MAX_KEYWORDS = 6
_MAX_FIELD = 80  # longer keyword / style / name strings are not phrasing material


def record_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """A record's metadata as one dict: its parsed ``json`` (when a dict) over its other fields."""
    if not isinstance(meta, Mapping):
        return {}
    out = {k: v for k, v in meta.items() if k != "json"}
    if isinstance(meta.get("json"), Mapping):
        out.update(meta["json"])
    return out


def _clean(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.replace("_", " ").split())
    return text if 0 < len(text) <= _MAX_FIELD else None


def metadata_keywords(meta: Mapping[str, Any]) -> list[str]:
    """Keywords of a picture (see the module docstring), cleaned, deduplicated, at most `MAX_KEYWORDS`."""
    raw: list[Any] = []
    extra = meta.get("extra") if isinstance(meta.get("extra"), Mapping) else {}
    for source in (meta.get("keywords"), extra.get("keywords")):
        if isinstance(source, str):
            raw += source.split(",")
        elif isinstance(source, (list, tuple)):
            raw += list(source)
    if isinstance(meta.get("subgroup"), str):  # emoji: "face-smiling"
        raw.append(meta["subgroup"].replace("-", " "))
    if isinstance(meta.get("category"), str):  # Tux Paint: a folder path, "symbols/alphabets/english"
        raw += [part for part in meta["category"].split("/")[::-1]]  # the most specific folder first
    out: list[str] = []
    for k in raw:
        k = _clean(k)
        if k and k.lower() not in (o.lower() for o in out):
            out.append(k)
    return out[:MAX_KEYWORDS]


def metadata_phrasings(captions: tuple[str, ...] | list[str], meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The augmented phrasings of one picture (module docstring), excluding its own ``captions``."""
    name = _clean(meta.get("name")) or (_clean(captions[0]) if captions else None)
    name = name.rstrip(" .") if name else None  # "The orange letter C." inside a template
    if not name:
        return ()
    style = _clean(meta.get("style")) or KIND_BY_SOURCE.get(str(meta.get("source")))
    keywords = [k for k in metadata_keywords(meta) if k.lower() != name.lower()]
    out = [f"a picture of {name}"]
    if style:
        out.append(f"{_KIND_PHRASE.get(style.lower(), f'a {style} picture of')} {name}")
        out.append(f"{name}, {style} style")
    if keywords:
        out.append(f"{name}: {', '.join(keywords)}")
    if len(keywords) >= 2:
        out.append(", ".join(keywords))
    own = set(captions)
    return tuple(dict.fromkeys(p for p in out if p not in own))
