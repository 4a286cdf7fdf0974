"""Training images: decode through the hardened loader, then resize + centre-crop to the model's size.

Every byte string or path goes through `zscir.data.imageio.load_image` (regular-file and size checks, the
pixel count read from the header *before* decoding, so a 100-megapixel clip-art PNG is refused without
allocating it; JPEG draft-mode decoding; alpha flattened on white). A refusal becomes a `Problem` and the
record is skipped. The result is a (size, size, 3) uint8 array: `zscir.train.common.uint8_to_pixels`
normalises a batch of them exactly as the CLIP image processor does (shorter side resized with bicubic
filtering, centre crop, OpenAI mean/std).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from zscir.data.cells import image_payload
from zscir.data.records import Problem
from zscir.data.imageio import ImageLimits, ImageRejected, load_image

__all__ = ["open_image", "to_uint8", "DEFAULT_LIMITS"]

#: decoded images are downsized at once to at most 512 px (no model here needs more than 336)
DEFAULT_LIMITS = ImageLimits()


def open_image(source: bytes | str | Path | Image.Image, where: str,
               limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image | Problem:
    """An RGB image, or the `Problem` that says why ``source`` was refused (never raises for bad data).

    ``source`` may also be an HF-style ``{"bytes", "path"}`` image struct (`zscir.data.cells.image_payload`).
    """
    source = image_payload(source)
    if isinstance(source, Image.Image):
        w, h = source.size
        if w * h > limits.max_pixels:
            return Problem("too_many_pixels", where, f"{w}x{h} pixels exceeds the limit of {limits.max_pixels}")
        return source if source.mode == "RGB" else source.convert("RGB")
    if not isinstance(source, (bytes, str, Path)):
        return Problem("bad_image_cell", where, f"{type(source).__name__} is not a path or image bytes")
    try:
        return load_image(source, limits)
    except ImageRejected as e:
        code = {"unreadable": "missing"}.get(e.code, e.code)
        return Problem(code, where, str(e))


def to_uint8(image: Image.Image, size: int) -> np.ndarray:
    """(size, size, 3) uint8: shorter side to ``size`` (bicubic), then the centre crop — the CLIP processor's
    geometry. Images already at ``size`` x ``size`` are returned unchanged (the world renders)."""
    if image.size != (size, size):
        w, h = image.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
