"""Tux Paint stamps from Debian's ``tuxpaint-stamps-default`` (GPL-2: built at run time, never committed).

A stamp is ``name.png`` with ``name.txt`` beside it whose first line is the English description ("A
frog."); ``name.dat`` holds rendering flags. Stamps flagged ``colorable`` or ``tintable`` are meant to
be recoloured by the painter, so each of them also yields one variant per tint colour, with the colour
written into the caption ("A red heart.") and into the variant metadata — real pictures with a known
attribute edit between them. Stamps that exist only as SVG (Pillow cannot read them) and the
``_mirror``/``_back`` alternates are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image, ImageOps

from zscir.data.real.item import RealItem, SourceMissing, load_package_image, make_key
from zscir.data.real.sources import RealSources, missing_message

PACKAGE = "tuxpaint-stamps-default"
LICENCE = "GPL-2.0-or-later"
ROOT = Path(RealSources().tuxpaint_dir)  # Debian's; other places: RealSources / --tuxpaint-dir
TINT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220), "yellow": (240, 210, 20),
    "purple": (140, 40, 180), "orange": (245, 130, 20),
}
_ARTICLE = re.compile(r"^(an?|the)\s+", re.IGNORECASE)
_NUMBERED = re.compile(r"[-_]?\d+$")


def stamp_caption(txt: Path) -> str:
    """The English description: the first line of the caption file that is not a ``lang.utf8=`` line."""
    for line in txt.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line and not re.match(r"^[a-zA-Z_@]+\.utf8=", line):
            return line
    return ""


def stamp_concept(stem: str) -> str:
    """The concept of a stamp file stem: its number dropped, ``_``/``-`` as spaces ("frog_2" → "frog")."""
    return (_NUMBERED.sub("", stem) or stem).replace("_", " ").replace("-", " ").strip()


def tinted_caption(caption: str, colour: str) -> str:
    """"A heart." → "A red heart." ("An orange heart."); captions without an article get ", coloured red."."""
    m = _ARTICLE.match(caption)
    if not m:
        return f"{caption.rstrip('.')}, coloured {colour}."
    article = m.group(1).capitalize()
    if article != "The":
        article = "An" if colour[0] in "aeiou" else "A"
    return f"{article} {colour} {caption[m.end():]}"


def tint(im: Image.Image, rgb: tuple[int, int, int], colorable: bool) -> Image.Image:
    """Tux Paint-like recolouring of a stamp flattened onto white.

    ``colorable`` stamps are masks (usually black shapes) that the painter's colour replaces: dark becomes
    the colour, white stays white. ``tintable`` stamps keep their shading: luminance is kept, mid-tones
    take the colour, black outlines and white stay.
    """
    grey = im.convert("L")
    if colorable:
        return ImageOps.colorize(grey, black=rgb, white=(255, 255, 255))
    return ImageOps.colorize(grey, black=(0, 0, 0), white=(255, 255, 255), mid=rgb)


def read_stamps(root: Path = ROOT, tint_colours: Sequence[str] = tuple(TINT_COLOURS)) -> Iterator[RealItem]:
    """Every PNG stamp with an English caption, plus tinted variants of recolourable ones, in path order."""
    root = Path(root)
    if not root.is_dir():
        raise SourceMissing(missing_message("tuxpaint_dir", root))
    for colour in tint_colours:
        if colour not in TINT_COLOURS:
            raise ValueError(f"unknown tint colour {colour!r}: expected one of {', '.join(TINT_COLOURS)}")
    for png in sorted(root.rglob("*.png")):
        stem = png.stem
        if stem.endswith(("_mirror", "_back")):
            continue
        txt = png.with_suffix(".txt")
        caption = stamp_caption(txt) if txt.exists() else ""
        if not caption:
            continue
        dat = png.with_suffix(".dat")
        flags = dat.read_text(errors="replace").split() if dat.exists() else []
        category = png.parent.relative_to(root).as_posix()
        concept = stamp_concept(stem)
        extra = {"category": category, "file": png.relative_to(root).as_posix(), "flags": flags}
        key = make_key("tux", category.replace("/", "_"), stem)
        yield RealItem(key, caption, PACKAGE, LICENCE, concept, lambda p=png: load_package_image(p), {}, extra)
        if "colorable" in flags or "tintable" in flags:
            mask = "colorable" in flags
            for colour in tint_colours:
                def load(p=png, c=TINT_COLOURS[colour], m=mask) -> Image.Image:
                    return tint(load_package_image(p), c, m)

                yield RealItem(make_key(key, colour), tinted_caption(caption, colour), PACKAGE, LICENCE, concept,
                               load, {"tint": colour}, extra)

