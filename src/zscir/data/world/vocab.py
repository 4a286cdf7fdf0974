"""The closed vocabulary of the CIR world.

Every word that can appear in a caption or a modification text is defined here, so that captions,
edits, rendering and the benchmark builders agree on one set of attribute values.  Colours were
picked to be far apart in RGB *and* to have unambiguous everyday names, because a tiny CLIP trained
on 64 px renders must be able to tell them apart; a benchmark that tests colour words whose pixels
are nearly identical would measure rendering noise instead of composition.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")
"""Shape names (singular).  Plurals are formed with :func:`plural`."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (30, 160, 50),
    "blue": (35, 75, 225),
    "yellow": (250, 220, 30),
    "purple": (130, 45, 175),
    "orange": (250, 135, 20),
    "pink": (250, 135, 200),
    "cyan": (40, 205, 215),
    "brown": (125, 75, 35),
    "white": (250, 250, 250),
    "black": (20, 20, 20),
    "gray": (135, 135, 135),
}
"""Object colour name -> RGB."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (238, 238, 238),
    "black": (30, 30, 30),
    "gray": (150, 150, 150),
    "beige": (228, 210, 170),
}
"""Background name -> RGB.  An object never has the colour *named* like the background
(:func:`allowed_colors`); beige has no object counterpart but is far from yellow/orange/brown."""

SIZES: dict[str, float] = {"small": 0.52, "large": 0.92}
"""Size name -> object radius as a fraction of half a grid cell.  The ratio (~1.8) keeps the two
sizes distinct at 64 px, while *small* still spans ~11 px so its shape stays recognisable."""

TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted")
"""Surface textures.  ``plain`` is the default and is never mentioned in captions."""

GRID: int = 3
"""Scenes are laid out on a GRID x GRID grid of cells; each object owns one cell."""

POSITION_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "top left",
    (0, 1): "top",
    (0, 2): "top right",
    (1, 0): "left",
    (1, 1): "center",
    (1, 2): "right",
    (2, 0): "bottom left",
    (2, 1): "bottom",
    (2, 2): "bottom right",
}
"""(row, col) -> position name."""

POSITION_PHRASES: dict[tuple[int, int], str] = {
    (0, 0): "in the top left corner",
    (0, 1): "at the top",
    (0, 2): "in the top right corner",
    (1, 0): "on the left",
    (1, 1): "in the center",
    (1, 2): "on the right",
    (2, 0): "in the bottom left corner",
    (2, 1): "at the bottom",
    (2, 2): "in the bottom right corner",
}
"""(row, col) -> locative phrase used in captions and edits ("a red star in the center")."""

CELLS: tuple[tuple[int, int], ...] = tuple((r, c) for r in range(GRID) for c in range(GRID))

NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                 "eight", "nine")
"""Numbers are always spelled out: captions contain no digits."""


def plural(shape: str) -> str:
    """Plural of a shape name ("cross" -> "crosses")."""
    return shape + "es" if shape.endswith(("s", "x", "sh", "ch")) else shape + "s"


def number_word(n: int) -> str:
    """Spell out a small count (captions never contain digits)."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else "many"


def allowed_colors(background: str) -> tuple[str, ...]:
    """Object colours that may be drawn on ``background`` (never the background's own colour)."""
    return tuple(c for c in COLORS if c != background)
