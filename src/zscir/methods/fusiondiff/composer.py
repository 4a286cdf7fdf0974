"""Retrieval with Fusion-Diff: sample the target's fused embedding, rank the gallery's fused embeddings.

Query: the reference image and modification text give the control (fused reference feature and its parts)
and the text condition; DDIM (configurable steps, guidance scale, number of averaged samples) turns noise
into the target's embedding. Gallery: each image fused with its caption from the captioner — or the plain
image embedding in the image-space variant, which then shares cached features with the baselines.
Without an adapter (or with ``use_adapter=False``) the prior is conditioned on the text alone (ablation 2).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from typing import Any, Sequence

import torch
from PIL import Image

from zscir.backbones.base import Backbone
from zscir.methods.base import Composer
from zscir.methods.fusiondiff.captioner import Captioner
from zscir.methods.fusiondiff.config import FusionDiffConfig, SamplingConfig
from zscir.methods.fusiondiff.control_adapter import ControlAdapter
from zscir.methods.fusiondiff.joint import ClipFusionEncoder
from zscir.methods.fusiondiff.prior import DiffusionPrior
from zscir.methods.fusiondiff.train_adapter import control_parts

logger = logging.getLogger(__name__)


class FusionDiffComposer(Composer):
    """Generative editing in the joint space + multimodal-to-multimodal retrieval."""

    name = "fusiondiff"

    def __init__(self, backbone: Backbone, cfg: FusionDiffConfig, prior: DiffusionPrior,
                 adapter: ControlAdapter | None = None, captioner: Captioner | None = None,
                 sampling: SamplingConfig | None = None, use_adapter: bool = True, checkpoint: str | None = None):
        self.backbone = backbone
        self.cfg = cfg
        self.prior = prior.eval()
        self.adapter = adapter.eval() if (adapter is not None and use_adapter) else None
        self.joint = ClipFusionEncoder(backbone, cfg.joint, captioner)
        self.sampling = sampling or cfg.sampling
        self.checkpoint = checkpoint
        self._sample_seconds = 0.0
        self._n_queries = 0

    @property
    def denoiser_calls_per_query(self) -> int:
        s = self.sampling
        steps = s.steps if s.strength >= 1.0 else max(0, round(s.steps * s.strength))
        return steps * s.n_samples * (1 if s.guidance_scale == 1.0 else 2)

    @torch.no_grad()
    def generate(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, sampling: SamplingConfig | None = None,
                 reference_images: Sequence[Image.Image] | None = None) -> torch.Tensor:
        """Sample target embeddings from normalised backbone embeddings of (reference, modification)."""
        s = sampling or self.sampling
        ctrl, ref_joint = None, None
        if self.adapter is not None or s.strength < 1.0:
            ref_joint = self.joint.from_embeddings(image_embeds, None, reference_images)
        if self.adapter is not None:
            ctrl = control_parts(image_embeds, text_embeds, self.cfg.joint.fusion_weight,
                                 self.adapter.cfg.control_parts, ref_joint)
        gen = torch.Generator().manual_seed(s.seed)
        t0 = time.perf_counter()
        init = ref_joint if s.strength < 1.0 else None
        z = self.prior.sample(text_embeds, adapter=self.adapter, control=ctrl, steps=s.steps,
                              guidance_scale=s.guidance_scale, n_samples=s.n_samples, eta=s.eta, generator=gen,
                              init=init, strength=s.strength)
        self._sample_seconds += time.perf_counter() - t0
        self._n_queries += len(z)
        return z

    @torch.no_grad()
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        img = self.backbone.encode_images(list(reference_images))
        txt = self.backbone.encode_texts(list(texts))
        return self.generate(img, txt, reference_images=list(reference_images))

    @torch.no_grad()
    def encode_gallery(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.joint.encode_joint(images=list(images))

    def gallery_cache_key(self) -> str:
        fp = f"{self.backbone.name}:{self.backbone.fingerprint()}"
        if self.cfg.joint.space == "image":
            return f"image-embedding:{fp}"  # identical to the plain image gallery of the baselines
        return f"fusiondiff-fused:{fp}:{self.joint.gallery_key()}"

    def describe(self) -> dict[str, Any]:
        per_q = self._sample_seconds / self._n_queries if self._n_queries else None
        return {
            "method": self.name,
            **self.backbone.describe(),
            "checkpoint": self.checkpoint,
            "space": self.cfg.joint.space,
            "fusion_weight": self.cfg.joint.fusion_weight,
            "gallery": self.joint.gallery_key(),
            "adapter": asdict(self.adapter.cfg) if self.adapter is not None else None,
            "sampling": asdict(self.sampling),
            "denoiser_calls_per_query": self.denoiser_calls_per_query,
            "sampling_ms_per_query": None if per_q is None else round(per_q * 1000, 4),
            "trainable_params": self.cfg.train_info.get("trainable_params"),
        }


def sampling_with(base: SamplingConfig, **overrides: Any) -> SamplingConfig:
    """``base`` with the non-None overrides applied (CLI ``-o steps=20`` etc.)."""
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
