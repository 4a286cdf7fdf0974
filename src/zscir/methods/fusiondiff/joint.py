"""The joint vision-language encoder: one `encode_joint(images=None, texts=None)` for images, texts and pairs.

clip-fusion (the default, CPU-friendly) builds the joint space from the backbone's CLIP embeddings:

* pair (I, T)  → normalise((1 − w) · img(I) + w · txt(T))
* image alone  → the pair (I, caption(I)) with a caption from the pluggable captioner, so a gallery image
  lands in the same fused space as the generated query (multimodal-to-multimodal retrieval);
* text alone   → txt(T) (a pair whose image part is missing).

With ``space="image"`` (the CompoDiff-like ablation) the "joint" embedding of an image is its plain image
embedding and pairs are not fused: this is the space earlier diffusion methods generate in.
A weighted sum was kept over a learned fusion module: it is exact to reproduce, has one knob the
sensitivity sweep can vary, and the prior/adapter downstream already learn the composition.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from zscir.backbones.base import Backbone
from zscir.methods.fusiondiff.captioner import Captioner
from zscir.methods.fusiondiff.config import JointConfig


def fuse(image_embeds: torch.Tensor, text_embeds: torch.Tensor, weight: float) -> torch.Tensor:
    """normalise((1 − w) · image + w · text) for normalised inputs."""
    return F.normalize((1.0 - weight) * image_embeds + weight * text_embeds, dim=-1)


class ClipFusionEncoder:
    """clip-fusion joint encoder on a `Backbone`, with a captioner for text-less images."""

    def __init__(self, backbone: Backbone, cfg: JointConfig, captioner: Captioner | None = None):
        if cfg.space not in ("joint", "image"):
            raise ValueError(f"space must be 'joint' or 'image', got {cfg.space!r}")
        if not 0.0 <= cfg.fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must be in [0, 1], got {cfg.fusion_weight}")
        self.backbone = backbone
        self.cfg = cfg
        self.captioner = captioner

    @property
    def weight(self) -> float:
        return self.cfg.fusion_weight

    @torch.no_grad()
    def encode_joint(self, images: Sequence[Image.Image] | None = None,
                     texts: Sequence[str] | None = None) -> torch.Tensor:
        """Unit vectors in the joint space for images, texts, or aligned (image, text) pairs."""
        if images is None and texts is None:
            raise ValueError("encode_joint needs images, texts or both")
        if images is not None and texts is not None and len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        img = self.backbone.encode_images(list(images)) if images is not None else None
        txt = self.backbone.encode_texts(list(texts)) if texts is not None else None
        return self.from_embeddings(img, txt, images)

    @torch.no_grad()
    def from_embeddings(self, image_embeds: torch.Tensor | None, text_embeds: torch.Tensor | None,
                        images: Sequence[Image.Image] | None = None) -> torch.Tensor:
        """The same as `encode_joint`, from precomputed normalised backbone embeddings (training uses it)."""
        if image_embeds is None:
            return text_embeds
        if self.cfg.space == "image":
            return image_embeds if text_embeds is None else fuse(image_embeds, text_embeds, self.weight)
        if text_embeds is None:
            if self.captioner is None:
                raise ValueError("a text-less image needs a captioner in the joint space")
            text_embeds = self.captioner.embed_captions(image_embeds, images)
        return fuse(image_embeds, text_embeds, self.weight)

    def gallery_key(self) -> str:
        """Identifies how gallery images are embedded."""
        if self.cfg.space == "image":
            return "image"
        cap = self.captioner.cache_key() if self.captioner else "none"
        return f"fused(w={self.weight:g},captioner={cap})"
