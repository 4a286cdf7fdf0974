"""Flags from the npm package ``flag-icons`` (MIT): one SVG per country or region, in 4:3 and 1:1.

``country.json`` names every flag ("Japan") by its code ("jp", "gb-eng"). A flag is also an emoji, so each
item is named like the emoji of the same flag in every other style: the code becomes its emoji sequence
(two regional indicators, or the black-flag tag sequence of a subdivision: "gb-eng" → 1f3f4-e0067-…-e007f),
and when emoji-test.txt lists that sequence the item gets its caption ("flag: England"), concept ("flag"),
variant and ``emoji_id``; other flags ("ASEAN", "Canary Islands") are captioned "flag: <name>". Every item
carries ``style: "flag-icons"``, ``variant.aspect`` ("4x3", "1x1") and the country's capital and continent
as keywords when known.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from zscir.data.real.emoji import EmojiEntry, emoji_id
from zscir.data.real.emoji_sets import EMOJI_TEST, emoji_names, package_dir, svg_loader
from zscir.data.real.item import RealItem, SourceMissing, make_key
from zscir.data.real.sources import RealSources

PACKAGE = "flag-icons"
LICENCE = "MIT"
ASPECTS = ("4x3", "1x1")
_CODE = re.compile(r"^[a-z]{2}(-[a-z0-9]{1,3})?$")


def flag_sequence(code: str) -> str | None:
    """The `emoji_id` of a flag code: "jp" → "1f1ef-1f1f5", "gb-sct" → "1f3f4-e0067-e0062-e0073-e0063-e0074-e007f";
    None for codes that are no ISO country or subdivision ("asean", "un")."""
    code = code.lower()
    if not _CODE.match(code):
        return None
    if "-" not in code:
        return emoji_id(0x1F1E6 + ord(c) - ord("a") for c in code)
    tags = [0xE0000 + ord(c) for c in code.replace("-", "")]
    return emoji_id([0x1F3F4, *tags, 0xE007F])


def read_flags(npm_dir: str | Path = RealSources().npm_dir, test_path: str | Path = EMOJI_TEST,
               aspects: tuple[str, ...] = ASPECTS) -> Iterator[RealItem]:
    """Every flag of ``country.json`` in each aspect, in the file's order."""
    root = package_dir(npm_dir, PACKAGE)
    index = emoji_names(test_path)
    meta = root / "country.json"
    try:
        rows = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceMissing(f"{meta}: unreadable country.json ({e})") from None
    for aspect in aspects:
        for row in rows:
            if not isinstance(row, dict) or not row.get("code") or not row.get("name"):
                continue
            code, name = str(row["code"]).lower(), str(row["name"]).strip()
            svg = root / "flags" / aspect / f"{code}.svg"
            if not re.fullmatch(r"[a-z0-9-]+", code) or not svg.is_file():
                continue
            eid = flag_sequence(code)
            entry: EmojiEntry | None = index.get(eid) if eid else None
            keywords = [str(row[k]) for k in ("capital", "continent") if row.get(k)] + [name]
            extra = {"style": "flag-icons", "keywords": keywords, "code": code, "iso": bool(row.get("iso")),
                     "file": svg.relative_to(root).as_posix()}
            if entry is not None:
                caption, variant = entry.name, {**entry.variant(), "aspect": aspect}
                extra = {**entry.extra("flag-icons"), **extra}
            else:
                caption, variant = f"flag: {name}", {"name": name, "aspect": aspect}
                if eid:
                    extra["emoji_id"] = eid
            yield RealItem(make_key("flag", aspect, code), caption, PACKAGE, LICENCE, "flag", svg_loader(svg),
                           variant, extra)
