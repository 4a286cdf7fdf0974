"""Training-free baselines: image-only, text-only and weighted-sum fusion.

They bound what a composed-retrieval method must beat: image-only finds look-alikes of the reference and
ignores the modification, text-only ignores the reference, and the weighted sum of the two normalised
embeddings (as in the Pic2Word / SEARLE baseline tables) is the simplest composition. All three embed the
gallery with the backbone's image encoder, so they share cached gallery features.
"""

from __future__ import annotations

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
