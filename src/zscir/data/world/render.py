"""Rasterise a :class:`Scene` into an RGB image.

Shapes are drawn with PIL at ``SUPERSAMPLE`` x the output size and downsampled with LANCZOS; this
is the cheapest way to get anti-aliased edges from ``ImageDraw`` (which has no AA for polygons),
and anti-aliasing matters because hard, aliased edges give a small CNN/ViT shortcut features that
do not transfer.  ``render(scene)`` is a pure function of the scene: the optional ``jitter_seed``
adds a small, seeded offset/scale/rotation, used to make near-duplicate views of one scene.
"""

from __future__ import annotations

import logging
import math
import random
from multiprocessing import Pool
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .scene import Obj, Scene
from .vocab import BACKGROUNDS, COLORS, GRID, SIZES

logger = logging.getLogger(__name__)

SUPERSAMPLE = 4

_STAR_INNER = 0.45


def _unit_polygon(shape: str) -> list[tuple[float, float]] | None:
    """Vertices of ``shape`` on the unit disc (y down), or None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        s = 0.82  # visually matches the circle's area better than a full inscribed square
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.8, 0.0), (0.0, 1.0), (-0.8, 0.0)]
    if shape == "triangle":
        return [(0.0, -1.0), (0.95, 0.8), (-0.95, 0.8)]
    if shape == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in (math.pi / 3 * k for k in range(6))]
    if shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else _STAR_INNER
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        return pts
    if shape == "cross":
        w = 0.34
        return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w),
                (-1, w), (-1, -w), (-w, -w)]
    raise ValueError(f"unknown shape {shape!r}")


_UNIT = {s: _unit_polygon(s) for s in ("circle", "square", "diamond", "triangle", "hexagon",
                                       "star", "cross")}


def _pattern_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Colour of stripes/dots: a darker shade, or a lighter one for dark colours, so the object's
    hue (the colour word) still dominates while the texture stays visible."""
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    if lum < 90:
        return tuple(int(c + (255 - c) * 0.55) for c in rgb)  # type: ignore[return-value]
    return tuple(int(c * 0.45) for c in rgb)  # type: ignore[return-value]


def _geometry(obj: Obj, cell_px: float, jit: random.Random | None) -> tuple[float, float, float, float]:
    """Centre x, centre y, radius (px on the supersampled canvas) and rotation (radians)."""
    cx, cy = (obj.col + 0.5) * cell_px, (obj.row + 0.5) * cell_px
    r = 0.5 * cell_px * SIZES[obj.size]
    rot = 0.0
    if jit is not None:
        cx += jit.uniform(-0.06, 0.06) * cell_px
        cy += jit.uniform(-0.06, 0.06) * cell_px
        r *= jit.uniform(0.94, 1.04)
        rot = jit.uniform(-0.15, 0.15)
    return cx, cy, r, rot


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                rot: float, fill: int | tuple[int, int, int]) -> None:
    poly = _UNIT[shape]
    if poly is None:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        return
    c, s = math.cos(rot), math.sin(rot)
    draw.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in poly], fill=fill)


def _draw_textured(img: Image.Image, obj: Obj, cx: float, cy: float, r: float, rot: float) -> None:
    """Fill the shape with a stripe/dot pattern, clipped by a mask of the shape's bounding box."""
    box = int(math.ceil(2 * r)) + 4
    ox, oy = int(cx - box / 2), int(cy - box / 2)
    mask = Image.new("L", (box, box), 0)
    _draw_shape(ImageDraw.Draw(mask), obj.shape, cx - ox, cy - oy, r, rot, 255)
    base = COLORS[obj.color]
    pat = Image.new("RGB", (box, box), base)
    pd = ImageDraw.Draw(pat)
    pc = _pattern_color(base)
    period = max(6, int(r * 0.55))
    if obj.texture == "striped":
        w = max(2, period // 2 - 1)
        for k in range(-box, 2 * box, period):
            pd.line([(k, 0), (k - box, box)], fill=pc, width=w)
    else:  # dotted
        d = max(2.0, period * 0.28)
        for yy in range(period // 2, box, period):
            for xx in range(period // 2, box, period):
                pd.ellipse((xx - d, yy - d, xx + d, yy + d), fill=pc)
    img.paste(pat, (ox, oy), mask)


def render(scene: Scene, size: int = 64, jitter_seed: int | None = None) -> Image.Image:
    """Render ``scene`` as a ``size`` x ``size`` RGB image (deterministic for a given scene and
    ``jitter_seed``; ``None`` means no jitter)."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    cell_px = big / GRID
    jit = random.Random(jitter_seed) if jitter_seed is not None else None
    for obj in scene.objects:
        cx, cy, r, rot = _geometry(obj, cell_px, jit)
        if obj.texture == "plain":
            _draw_shape(draw, obj.shape, cx, cy, r, rot, COLORS[obj.color])
        else:
            _draw_textured(img, obj, cx, cy, r, rot)
    return img.resize((size, size), Image.LANCZOS)


def _render_array(args: tuple[Scene, int]) -> np.ndarray:
    return np.asarray(render(args[0], args[1]), dtype=np.uint8)


def render_batch(scenes: Sequence[Scene], size: int = 64, workers: int = 1) -> np.ndarray:
    """Render many scenes into one uint8 array of shape (N, size, size, 3).

    ``workers > 1`` uses a process pool; with ~1 ms per image the pool only pays off for
    thousands of images, so the default stays single-process (the machine is shared).
    """
    out = np.empty((len(scenes), size, size, 3), dtype=np.uint8)
    if workers > 1 and len(scenes) >= 2000:
        with Pool(workers) as pool:
            for i, arr in enumerate(pool.imap(_render_array, [(s, size) for s in scenes],
                                              chunksize=256)):
                out[i] = arr
    else:
        for i, s in enumerate(scenes):
            out[i] = np.asarray(render(s, size), dtype=np.uint8)
    return out
