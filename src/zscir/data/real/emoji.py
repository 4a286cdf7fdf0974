"""Emoji from Debian: glyphs of ``fonts-noto-color-emoji`` named by ``unicode-data``'s emoji-test.txt.

Each fully-qualified sequence of emoji-test.txt becomes one picture (the colour bitmap glyph of
NotoColorEmoji.ttf, a CBDT font that Pillow renders only at its bitmap size, 109 px) with its CLDR name as
caption ("thumbs up: dark skin tone"). The part before the colon is the *concept* ("thumbs up"), the part
after it the *variant*; skin-tone modifiers are also recorded separately with the base emoji (the sequence
without them), so a benchmark can hold out whole concepts or ask "the same gesture, darker skin".
Sequences the font cannot draw as one glyph (newer than the font) are skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from PIL import Image, ImageDraw, ImageFont

from zscir.data.real.item import RealItem, SourceMissing, make_key
from zscir.data.real.sources import RealSources, missing_message

logger = logging.getLogger(__name__)

PACKAGE = "fonts-noto-color-emoji"
LICENCE = "OFL-1.1"
FONT_PATH = Path(RealSources().emoji_font)  # Debian's; other places: RealSources / --emoji-font
EMOJI_TEST = Path(RealSources().emoji_test)
#: CBDT bitmap strikes exist at one size only; Pillow refuses other sizes for this font
FONT_SIZE = 109
SKIN_TONES = {0x1F3FB: "light", 0x1F3FC: "medium-light", 0x1F3FD: "medium", 0x1F3FE: "medium-dark",
              0x1F3FF: "dark"}


@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified line of emoji-test.txt."""

    codepoints: tuple[int, ...]
    name: str
    group: str
    subgroup: str
    version: str

    @property
    def text(self) -> str:
        return "".join(chr(c) for c in self.codepoints)

    @property
    def concept(self) -> str:
        return self.name.split(":", 1)[0].strip()

    @property
    def variant_name(self) -> str:
        return self.name.split(":", 1)[1].strip() if ":" in self.name else ""

    @property
    def skin_tones(self) -> list[str]:
        return [SKIN_TONES[c] for c in self.codepoints if c in SKIN_TONES]

    @property
    def base(self) -> str:
        """The sequence without skin-tone modifiers (what the variants of one gesture share)."""
        return "".join(chr(c) for c in self.codepoints if c not in SKIN_TONES)


def parse_emoji_test(path: Path = EMOJI_TEST) -> list[EmojiEntry]:
    """Fully-qualified entries of an emoji-test.txt, in file order."""
    group = subgroup = ""
    out: list[EmojiEntry] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and ";" in line and "#" in line:
            cps, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() != "fully-qualified":
                continue
            # comment: "<emoji> E<version> <name>"
            parts = comment.strip().split(" ", 2)
            if len(parts) < 3 or not parts[1].startswith("E"):
                continue
            out.append(EmojiEntry(tuple(int(c, 16) for c in cps.split()), parts[2].strip(), group, subgroup,
                                  parts[1][1:]))
    return out


@lru_cache(maxsize=2)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, FONT_SIZE)


def render_emoji(text: str, font_path: Path = FONT_PATH) -> Image.Image | None:
    """The colour glyph of one emoji sequence as RGBA, or None when the font has no single glyph for it."""
    font = _font(str(font_path))
    width = font.getlength(text)
    if width <= 0 or width > 1.5 * FONT_SIZE * 1.25:  # several glyphs side by side: no ligature in the font
        return None
    im = Image.new("RGBA", (int(width) + 8, int(FONT_SIZE * 1.25) + 8), (0, 0, 0, 0))
    ImageDraw.Draw(im).text((4, 4), text, font=font, embedded_color=True)
    box = im.getbbox()
    if box is None:  # .notdef or an empty glyph
        return None
    return im.crop(box)


def read_emoji(font_path: Path = FONT_PATH, test_path: Path = EMOJI_TEST) -> Iterator[RealItem]:
    """Every fully-qualified emoji as a `RealItem` (rendered lazily); raises `SourceMissing` without the files."""
    for p, field in ((font_path, "emoji_font"), (test_path, "emoji_test")):
        if not Path(p).is_file():
            raise SourceMissing(missing_message(field, p))
    font_path, test_path = Path(font_path), Path(test_path)
    for e in parse_emoji_test(test_path):
        variant = {"name": e.variant_name} if e.variant_name else {}
        if e.skin_tones:
            variant["skin_tone"] = "+".join(e.skin_tones)

        def load(text=e.text) -> Image.Image:
            im = render_emoji(text, font_path)
            if im is None:
                raise ValueError(f"the font has no single glyph for {text!r}")
            return im

        yield RealItem(
            key=make_key("emoji", *(f"{c:x}" for c in e.codepoints)), caption=e.name, source=PACKAGE,
            licence=LICENCE, concept=e.concept, load=load, variant=variant,
            extra={"base_emoji": e.base, "emoji": e.text, "group": e.group, "subgroup": e.subgroup,
                   "emoji_version": e.version},
        )
