"""One captioned picture from a Debian package, listed cheaply and decoded only when selected.

Readers list every candidate with its caption and metadata first (file names, caption files, the emoji
test list: milliseconds), so that the corpus builder can draw a seeded sample over the whole package and
decode or render only what it keeps. The metadata (source package, licence, concept, variant) travels with
each item into the shards and the CSV, because the benchmark built on this corpus splits by concept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

#: characters allowed in a WebDataset key (no dots: webdataset splits a member name at its first dot)
_KEY_BAD = re.compile(r"[^a-z0-9_-]+")


def make_key(*parts: str) -> str:
    """A WebDataset-safe key: lower case, ``[a-z0-9_-]``, pieces joined by ``-``."""
    out = "-".join(_KEY_BAD.sub("_", p.lower()).strip("_") for p in parts if p)
    return out or "item"


class SourceMissing(RuntimeError):
    """The Debian package a reader needs is not installed (tests skip; the script reports and goes on)."""


@dataclass
class RealItem:
    """A captioned image to be: ``load()`` decodes or renders it (RGB or RGBA, any size)."""

    key: str
    caption: str
    source: str  #: Debian package name
    licence: str  #: SPDX-style identifier of the image's licence
    concept: str  #: what the picture shows, without its variant (the benchmark splits on it)
    load: Callable[[], Image.Image] = field(repr=False, compare=False)
    variant: dict[str, Any] = field(default_factory=dict)  #: e.g. {"skin_tone": "dark"}, {"tint": "red"}
    extra: dict[str, Any] = field(default_factory=dict)  #: reader-specific: category, file, codepoints…

    def metadata(self) -> dict[str, Any]:
        """Everything but the pixels, JSON-serialisable (written beside each image)."""
        return {"key": self.key, "caption": self.caption, "source": self.source, "licence": self.licence,
                "concept": self.concept, "variant": dict(self.variant), **self.extra}



def load_package_image(path: Path, max_side: int = 512) -> Image.Image:
    """A package picture through zscir's hardened loader (header pixel count checked before decoding:
    some clip art is over 100 MP), alpha composited on white, downsized to ``max_side``."""
    from zscir.data.imageio import ImageLimits, load_image

    return load_image(path, ImageLimits(max_side=max_side))
