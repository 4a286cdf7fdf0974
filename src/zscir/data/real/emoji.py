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

    @property
    def emoji_id(self) -> str:
        return emoji_id(self.codepoints)

    def variant(self) -> dict:
        """``{"name": <after the colon>, "skin_tone": "dark"}`` (each only when present): every style's item
        of this sequence carries the same variant."""
        out: dict = {"name": self.variant_name} if self.variant_name else {}
        if self.skin_tones:
            out["skin_tone"] = "+".join(self.skin_tones)
        return out

    def extra(self, style: str) -> dict:
        """The metadata every style's item of this sequence shares (``emoji_id``, ``style``, group...)."""
        return {"base_emoji": self.base, "emoji": self.text, "group": self.group, "subgroup": self.subgroup,
                "emoji_version": self.version, "emoji_id": self.emoji_id, "style": style}


def emoji_id(codepoints) -> str:
    """The one id of an emoji sequence in every art style: lower-case hex code points joined by ``-``, every
    FE0F (variation selector 16) dropped ("1f44c-1f3fb"); packages disagree on where they write FE0F."""
    return "-".join(f"{c:x}" for c in codepoints if c != 0xFE0F)


def parse_emoji_id(text: str) -> str:
    """`emoji_id` of a file or metadata spelling ("1F44D-1F3FB", "1f44d_1f3fb", "2764-fe0f"); ValueError if
    it is not hexadecimal code points."""
    parts = [p for p in text.replace("_", "-").replace(" ", "-").split("-") if p]
    if not parts:
        raise ValueError(f"not an emoji code point sequence: {text!r}")
    return emoji_id(int(p, 16) for p in parts)


@lru_cache(maxsize=4)
def emoji_index(path: Path = EMOJI_TEST) -> dict[str, "EmojiEntry"]:
    """`emoji_id` → fully-qualified entry of an emoji-test.txt (how the other styles get CLDR names)."""
    return {e.emoji_id: e for e in parse_emoji_test(Path(path))}


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

        def load(text=e.text) -> Image.Image:
            im = render_emoji(text, font_path)
            if im is None:
                raise ValueError(f"the font has no single glyph for {text!r}")
            return im

        yield RealItem(
            key=make_key("emoji", *(f"{c:x}" for c in e.codepoints)), caption=e.name, source=PACKAGE,
            licence=LICENCE, concept=e.concept, load=load, variant=e.variant(), extra=e.extra("noto"),
        )
