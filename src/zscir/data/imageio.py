"""One hardened image loader for everything that reads user images: training data, benchmarks, indexer, server.

Checks happen *before* pixels are decoded — regular file, size, supported decoder, pixel count
(decompression bombs) — and large photos are downsized at once, so a hostile or merely huge file can
neither crash a run nor exhaust memory. Refusals raise `ImageRejected` with a reason code that the indexer
reports and the server maps to a 4xx answer.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from zscir.data.files import NotARegularFile, open_regular_fd

#: ``Image.info`` key of a decoded image: the (width, height) of the file before downsizing
SOURCE_SIZE_KEY = "zscir_source_size"

#: decoders PIL may use; anything else (EPS via Ghostscript, exotic plugins) is refused
PIL_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "MPO")

class ImageRejected(ValueError):
    """A file or upload that is not accepted as an image; ``code`` says why (for reports and HTTP)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code



@dataclass(frozen=True)
class ImageLimits:
    """Bounds applied before any pixel is decoded; defaults suit camera photos, not bombs."""

    max_bytes: int = 100 * 2**20
    max_pixels: int = 64_000_000  # below PIL's own bomb warning (89 MP), so ours fires first
    max_side: int = 512  # decoded images are downsized to this at once (the models need <= 336 px)


#: modes that resample correctly as they are, so a large image is downsized before it is copied
_RESIZE_FIRST = ("RGB", "RGBA", "RGBX", "L", "LA", "CMYK")


def _formats() -> list[str]:
    Image.init()
    return [f for f in PIL_FORMATS if f in Image.OPEN]


def _decode(data: bytes, limits: ImageLimits, min_side: int | None = None) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data), formats=_formats())
    except Image.DecompressionBombError as e:
        raise ImageRejected("too_many_pixels", str(e)) from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("not_an_image", f"not a supported image format (accepted: {', '.join(PIL_FORMATS)})") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for garbage
        raise ImageRejected("not_an_image", f"not a supported image ({type(e).__name__}: {e})") from None
    w, h = im.size
    if w < 1 or h < 1 or w * h > limits.max_pixels:
        raise ImageRejected("too_many_pixels", f"{w}x{h} pixels exceeds the limit of {limits.max_pixels}")
    try:
        if im.format == "JPEG":
            # decode at reduced DCT scale (1/2, 1/4, 1/8): both sides stay >= the requested box
            side = limits.max_side if min_side is None else max(1, min(min_side, limits.max_side))
            im.draft("RGB", (side, side))
        im.load()
        if im.mode in _RESIZE_FIRST:  # downsize before any full-size copy (transpose, convert)
            im.thumbnail((limits.max_side, limits.max_side))
        with contextlib.suppress(Exception):  # in place: no copy when there is nothing to turn
            ImageOps.exif_transpose(im, in_place=True)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.getchannel("A"))
        elif im.mode != "RGB":  # convert() of an RGB image would only copy it
            im = im.convert("RGB")
        im.thumbnail((limits.max_side, limits.max_side))
        im.info[SOURCE_SIZE_KEY] = (w, h)
        return im
    except Exception as e:  # noqa: BLE001 - truncated/corrupt data, odd modes, decoder bugs
        raise ImageRejected("corrupt", f"cannot decode image ({type(e).__name__}: {e})") from None


def read_file_bytes(path: str | Path, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes``; FIFOs, devices, loops and dangling links are refused.

    Every image the indexer, retriever, server and benchmark loaders read comes through it. The file is
    opened by `zscir.data.files.open_regular_fd` (the project's one way to open a data file): non-blocking,
    so a FIFO named like an image is refused at once instead of blocking the reader forever, and its type
    and size come from the ``fstat`` of the opened descriptor, so a file swapped between check and read
    cannot slip through.
    """
    try:
        fd, st = open_regular_fd(path)
    except NotARegularFile:
        raise ImageRejected("not_a_file", "not a regular file") from None
    except OSError as e:
        raise ImageRejected("unreadable", f"cannot open ({e.strerror or e})") from None
    try:
        if st.st_size == 0:
            raise ImageRejected("empty", "empty file")
        if st.st_size > max_bytes:
            raise ImageRejected("file_too_large", f"{st.st_size} bytes exceeds the limit of {max_bytes}")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ImageRejected("file_too_large", f"file exceeds the limit of {max_bytes} bytes")
    if not data:
        raise ImageRejected("empty", "empty file")
    return data


def load_image(source: str | Path | bytes, limits: ImageLimits = ImageLimits(), *,
               min_side: int | None = None) -> Image.Image:
    """Decode a file path or raw bytes into a bounded RGB image, or raise :class:`ImageRejected`.

    Used by the indexer, the retriever (reference images) and the server (uploads), so every image the
    models see went through the same checks and the same downsizing: the long side is at most
    ``limits.max_side``. ``min_side`` lets a caller that knows how small it may go (the indexer: the model's
    input side, see `Composer.gallery_input_side`) have JPEGs decoded at the smallest DCT scale whose short
    side is still >= ``min_side`` instead of >= ``max_side``: a 12 MP photo is then decoded at 1/8 scale
    (500 x 375) rather than 1/4 and downsized, which is cheaper and, for a model that resizes to that side
    anyway, sees the same picture. Other formats are unaffected.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageRejected("empty", "empty upload")
        if len(data) > limits.max_bytes:
            raise ImageRejected("file_too_large", f"{len(data)} bytes exceeds the limit of {limits.max_bytes}")
    else:
        data = read_file_bytes(source, limits.max_bytes)
    return _decode(data, limits, min_side)
