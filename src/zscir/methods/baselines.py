"""Training-free baselines: image-only, text-only, weighted-sum fusion and spherical interpolation (Slerp).

They bound what a composed-retrieval method must beat: image-only finds look-alikes of the reference and
ignores the modification, text-only ignores the reference, and the weighted sum of the two normalised
embeddings (as in the Pic2Word / SEARLE baseline tables) is the simplest composition. Slerp walks along the
great circle from the image embedding towards the text embedding instead of cutting the chord (`slerp`). All
four embed the gallery with the backbone's image encoder, so they share cached gallery features.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from zscir.backbones.base import Backbone
from zscir.methods.base import Composer


class ImageGalleryComposer(Composer):
    """A composer whose gallery side is the backbone's plain (normalised) image embedding."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    @torch.no_grad()
    def encode_gallery(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.backbone.encode_images(list(images))

    def gallery_cache_key(self) -> str:
        return f"image-embedding:{self.backbone.name}:{self.backbone.fingerprint()}"

    def _plain_gallery(self) -> bool:
        """False for a subclass that embeds its gallery its own way (then nothing is split off)."""
        return type(self).encode_gallery is ImageGalleryComposer.encode_gallery

    def gallery_input_side(self) -> int | None:
        return self.backbone.input_side if self._plain_gallery() else None

    def prepare_gallery_image(self, image: Image.Image) -> torch.Tensor | None:
        return self.backbone.preprocess([image]) if self._plain_gallery() else None

    @torch.no_grad()
    def encode_prepared_gallery(self, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        pixels = torch.cat(list(prepared)) if prepared else torch.zeros(0)
        return self.backbone.encode_pixels(pixels)

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, **self.backbone.describe()}


class ImageOnlyComposer(ImageGalleryComposer):
    """Query = the reference image's embedding (the modification text is ignored)."""

    name = "image"
    query_inputs = ("image",)

    @torch.no_grad()
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        return self.backbone.encode_images(list(reference_images))


class TextOnlyComposer(ImageGalleryComposer):
    """Query = the text embedding of the modification text (the reference image is ignored)."""

    name = "text"
    query_inputs = ("text",)

    def __init__(self, backbone: Backbone, template: str = "{}"):
        super().__init__(backbone)
        self.template = template

    @torch.no_grad()
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        return self.backbone.encode_texts([self.template.format(t) for t in texts])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "template": self.template}


class SumFusionComposer(ImageGalleryComposer):
    """Query = normalise((1 - w) · image embedding + w · text embedding)."""

    name = "sum"

    def __init__(self, backbone: Backbone, weight: float = 0.5, template: str = "{}"):
        super().__init__(backbone)
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
        self.weight = weight
        self.template = template

    @torch.no_grad()
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        img = self.backbone.encode_images(list(reference_images))
        txt = self.backbone.encode_texts([self.template.format(t) for t in texts])
        return F.normalize((1.0 - self.weight) * img + self.weight * txt, dim=-1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "weight": self.weight, "template": self.template}


#: below this sine of the angle two unit vectors count as parallel (or opposite): float32 embeddings carry
#: about 1e-7 of rounding, so a smaller tangent component is noise, not a direction
PARALLEL_EPS = 1e-6


def check_fraction(method: str, key: str, value: Any, meaning: str) -> float:
    """``value`` as a float in [0, 1], else one ``ValueError`` line naming the option and what it means.

    Option values arrive from ``-m NAME:KEY=VALUE`` as JSON when they parse and as strings otherwise
    (``alpha=nan`` is the string 'nan'); booleans are JSON too but are not fractions.
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"method {method!r}: {key} must be a number in [0, 1] ({meaning}), got {value!r}")
    return float(value)


def _perpendicular(a: torch.Tensor) -> torch.Tensor:
    """A unit vector orthogonal to each row of ``a`` (unit rows), chosen deterministically.

    Gram-Schmidt of the coordinate axis least aligned with the row; ``a`` and ``-a`` get the same vector, so
    the arc chosen for an opposite pair does not depend on which end is called the image.
    """
    axis = a.abs().argmin(dim=-1)
    e = F.one_hot(axis, a.shape[-1]).to(a.dtype)
    p = e - (a * e).sum(-1, keepdim=True) * a
    return F.normalize(p, dim=-1)


def slerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical linear interpolation from ``a`` towards ``b`` (rows), a fraction ``alpha`` of the angle.

    The rows are L2-normalised first; the result has unit rows: ``alpha=0`` gives ``a``, ``alpha=1`` gives
    ``b`` and ``alpha=0.5`` the midpoint of the arc (for orthogonal rows ``(a + b) / sqrt(2)``). Computed as
    ``cos(alpha·t)·a + sin(alpha·t)·u`` with ``u`` the unit tangent from ``a`` towards ``b`` and
    ``t = atan2(|b - (a·b)a|, a·b)`` (accurate near 0 and near pi, where ``acos`` is not). Degenerate rows:
    parallel ones (sine of the angle < `PARALLEL_EPS`) give the normalised linear interpolation (which is
    ``a``); exactly opposite ones have no unique arc, so a fixed perpendicular (`_perpendicular`) is used and
    the endpoints still hold. Works in float64 and returns the dtype of ``a``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"slerp alpha must be in [0, 1], got {alpha}")
    dtype = a.dtype
    a = F.normalize(a.double(), dim=-1)
    b = F.normalize(b.double(), dim=-1)
    if alpha in (0.0, 1.0):  # the endpoints exactly: slerp:alpha=0 / 1 are image-only / text-only
        return (a if alpha == 0.0 else b).to(dtype)
    cos = (a * b).sum(-1, keepdim=True)
    tangent = b - cos * a
    sin = tangent.norm(dim=-1, keepdim=True)
    degenerate = sin < PARALLEL_EPS
    opposite = degenerate & (cos < 0)
    u = torch.where(degenerate, _perpendicular(a), tangent / sin.clamp_min(PARALLEL_EPS))
    theta = torch.where(opposite, torch.full_like(cos, math.pi), torch.atan2(sin, cos))
    out = torch.cos(alpha * theta) * a + torch.sin(alpha * theta) * u
    linear = F.normalize((1.0 - alpha) * a + alpha * b, dim=-1)
    out = torch.where(degenerate & ~opposite, linear, out)
    return F.normalize(out, dim=-1).to(dtype)


class SlerpComposer(ImageGalleryComposer):
    """Query = Slerp from the image embedding towards the text embedding by ``alpha`` of the angle between them.

    The idea comes from Jang et al., "Spherical Linear Interpolation and Text-Anchoring for Zero-shot
    Composed Image Retrieval" (ECCV 2024): both embeddings live on the unit sphere of a contrastive model, so
    composing them by moving along the sphere keeps the query a unit vector at every mixing ratio, where the
    weighted sum shrinks towards the origin (and is renormalised) when the two point apart. Only the
    training-free interpolation is here; the paper's text-anchored tuning of the image encoder is not. ``alpha``
    is the text share of the angle: 0 is image-only, 1 is text-only.
    """

    name = "slerp"

    def __init__(self, backbone: Backbone, alpha: float = 0.5, template: str = "{}"):
        super().__init__(backbone)
        self.alpha = check_fraction("slerp", "alpha", alpha, "the fraction of the angle from the image "
                                    "embedding towards the text embedding; 0 = image, 1 = text")
        self.template = template

    @torch.no_grad()
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        img = self.backbone.encode_images(list(reference_images))
        txt = self.backbone.encode_texts([self.template.format(t) for t in texts])
        return slerp(img, txt, self.alpha)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "alpha": self.alpha, "template": self.template}
