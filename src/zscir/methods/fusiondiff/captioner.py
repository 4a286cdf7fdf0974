"""Captioners: give a gallery image (which has no text) the caption its fused embedding needs.

Fusion-Diff retrieves multimodal-to-multimodal: gallery items are fused (image + text) embeddings, so an
image without text must first get a caption. The default is *retrieval-based* — the nearest captions of a
caption bank built from the training pairs, by the backbone's own image–text similarity — because it
needs no generative captioning model and runs on CPU. The oracle captioner (the world's exact scene
caption, found by the image's pixels) bounds how much a better captioner could help (ablation 7).

Both expose `embed_captions(image_embeds, images)` → normalised text embeddings, which is all the fusion
needs; `captions(...)` returns the strings for inspection and visualisation.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from zscir.backbones.base import Backbone

logger = logging.getLogger(__name__)


def image_key(image: Image.Image) -> str:
    """Content hash of an image's RGB pixels (identifies benchmark images without their file names)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()


class Captioner(ABC):
    """Maps gallery images to caption embeddings in the backbone's text space."""

    backbone: Backbone

    @abstractmethod
    def captions(self, image_embeds: torch.Tensor, images: Sequence[Image.Image] | None = None) -> list[str]:
        """One caption string per image."""

    def embed_captions(self, image_embeds: torch.Tensor,
                       images: Sequence[Image.Image] | None = None) -> torch.Tensor:
        """(N, D) normalised text embeddings of the images' captions."""
        return self.backbone.encode_texts(self.captions(image_embeds, images))

    @abstractmethod
    def cache_key(self) -> str:
        """Identifies the captioner's output (part of the gallery cache key)."""


class RetrievalCaptioner(Captioner):
    """Nearest bank captions by image→text cosine; the fused caption is the mean of the top-k embeddings."""

    def __init__(self, backbone: Backbone, bank: Sequence[str], k: int = 1, cache_dir: str | Path | None = None):
        if not bank:
            raise ValueError("the caption bank is empty")
        self.backbone = backbone
        self.bank = list(bank)
        self.k = int(k)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._bank_embeds: torch.Tensor | None = None
        self._bank_hash = hashlib.sha1("\n".join(self.bank).encode()).hexdigest()[:12]

    @property
    def bank_embeds(self) -> torch.Tensor:
        """(M, D) normalised text embeddings of the bank, computed once (and cached on disk if allowed)."""
        if self._bank_embeds is None:
            path = None
            if self.cache_dir is not None:
                # "v2": a bank cached before text-side modules became owner-gated may have been embedded
                # through another method's adapters on a shared backbone; such files are never read
                path = self.cache_dir / f"bank-v2-{self.backbone.fingerprint()}-{self._bank_hash}.pt"
                if path.exists():
                    self._bank_embeds = torch.load(path)
                    return self._bank_embeds
            logger.info("embedding a caption bank of %d captions", len(self.bank))
            self._bank_embeds = self.backbone.encode_texts(self.bank, batch_size=1024)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save(self._bank_embeds, tmp)
                tmp.replace(path)
        return self._bank_embeds

    def nearest(self, image_embeds: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, indices) of the k nearest bank captions per image, chunked to bound memory."""
        k = k or self.k
        bank = self.bank_embeds
        scores, idx = [], []
        for s in range(0, len(image_embeds), 1024):
            sim = image_embeds[s:s + 1024].float() @ bank.T
            v, i = sim.topk(k, dim=-1)
            scores.append(v)
            idx.append(i)
        return torch.cat(scores), torch.cat(idx)

    def captions(self, image_embeds: torch.Tensor, images: Sequence[Image.Image] | None = None) -> list[str]:
        _, idx = self.nearest(image_embeds, 1)
        return [self.bank[i] for i in idx[:, 0].tolist()]

    def embed_captions(self, image_embeds: torch.Tensor,
                       images: Sequence[Image.Image] | None = None) -> torch.Tensor:
        _, idx = self.nearest(image_embeds)
        return F.normalize(self.bank_embeds[idx].mean(1), dim=-1)

    def cache_key(self) -> str:
        return f"retrieval(k={self.k},bank={len(self.bank)}:{self._bank_hash})"


class OracleCaptioner(Captioner):
    """The exact caption of each image, looked up by pixel hash (world benchmark ablation only)."""

    def __init__(self, backbone: Backbone, lookup: dict[str, str], name: str = "oracle"):
        self.backbone = backbone
        self.lookup = dict(lookup)
        self.name = name

    @classmethod
    def from_world_benchmark(cls, backbone: Backbone, world_seed: int = 0, image_size: int = 64) -> "OracleCaptioner":
        """Render every benchmark scene of ``world.json`` and map its pixels to `canonical_caption`."""
        import json

        from zscir.data.world import Scene, canonical_caption, render
        from zscir.eval.world import ensure_world_benchmark

        root = ensure_world_benchmark(world_seed)
        scenes = json.loads((root / "world.json").read_text())["scenes"]
        lookup: dict[str, str] = {}
        for part in scenes.values():
            for sd in part.values():
                scene = Scene.from_dict(sd)
                lookup[image_key(render(scene, size=image_size))] = canonical_caption(scene)
        logger.info("oracle captioner: %d benchmark scenes", len(lookup))
        return cls(backbone, lookup, name=f"oracle-world-seed{world_seed}")

    def captions(self, image_embeds: torch.Tensor, images: Sequence[Image.Image] | None = None) -> list[str]:
        if images is None:
            raise ValueError("the oracle captioner needs the images themselves")
        out = []
        for im in images:
            key = image_key(im)
            if key not in self.lookup:
                raise KeyError("oracle captioner: image not found among the world benchmark scenes")
            out.append(self.lookup[key])
        return out

    def cache_key(self) -> str:
        return self.name


def build_captioner(backbone: Backbone, cfg, cache_dir: str | Path | None = None, world_seed: int = 0) -> Captioner:
    """The captioner a `JointConfig` names (``retrieval`` over the world caption bank, or ``oracle``)."""
    if cfg.captioner == "retrieval":
        from zscir.methods.fusiondiff.features import caption_bank

        return RetrievalCaptioner(backbone, caption_bank(cfg.bank_pairs, cfg.bank_world_seed), k=cfg.caption_k,
                                  cache_dir=cache_dir)
    if cfg.captioner == "oracle":
        return OracleCaptioner.from_world_benchmark(backbone, world_seed=world_seed)
    raise ValueError(f"unknown captioner {cfg.captioner!r}: expected 'retrieval' or 'oracle'")
