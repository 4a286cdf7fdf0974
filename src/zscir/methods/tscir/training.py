"""Helpers shared by the two TSCIR training stages: backbone set-up, image tables, losses, checkpoints.

Images are rendered once into a uint8 array (`ImageTable`) and normalised as tensors
(`zscir.train.common.uint8_to_pixels`, equal to the CLIP processor at the model's resolution), so a
training step never touches PIL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zscir.backbones.base import Backbone
from zscir.train.common import uint8_to_pixels

logger = logging.getLogger(__name__)


def image_size(backbone: Backbone) -> int:
    """Pixel size the world is rendered at for ``backbone`` (its native resolution)."""
    return int(getattr(backbone, "image_size", 64))


@dataclass
class ImageTable:
    """Unique images by id, rendered once: ``pixels(idx)`` gives normalised model inputs."""

    ids: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # scene keys: equal key = identical image
    images: np.ndarray | None = None
    index: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, items: Sequence[tuple[str, object]], size: int, progress: bool = False) -> "ImageTable":
        """``items``: (id, scene) pairs, duplicates by id are rendered once (``progress``: with a bar)."""
        from zscir.data.world_source import render_scenes as render_batch

        table = cls()
        scenes = []
        for iid, scene in items:
            if iid in table.index:
                continue
            table.index[iid] = len(table.ids)
            table.ids.append(iid)
            table.keys.append(scene.key())
            scenes.append(scene)
        table.images = render_batch(scenes, size, progress)
        return table

    def __len__(self) -> int:
        return len(self.ids)

    def pixels(self, idx) -> torch.Tensor:
        return uint8_to_pixels(self.images[np.asarray(idx)])


def autocast(backbone: Backbone, enabled: bool):
    """bf16 autocast on the backbone's device (≈5× faster frozen encoders on a modern CPU)."""
    return torch.autocast(backbone.device.type, dtype=torch.bfloat16, enabled=enabled)


@dataclass
class FeatureBank:
    """Frozen vision outputs of every image of a table, computed once.

    The image encoder is frozen in both stages, so its outputs are a pure function of the image: caching
    the global embeddings (float32) and, when VSI needs them, the patch tokens (bfloat16, ~16 kB per
    image) removes the vision tower from the training step entirely.
    """

    glob: torch.Tensor
    patches: torch.Tensor | None

    @classmethod
    @torch.no_grad()
    def build(cls, backbone: Backbone, table: ImageTable, patches: bool, bf16: bool = True,
              batch_size: int = 256, progress: bool = False, desc: str = "encode images") -> "FeatureBank":
        from tqdm.auto import tqdm

        from zscir.train.pair_features import encode_pixels

        globs, toks = [], []
        for s in tqdm(range(0, len(table), batch_size), desc=desc, disable=not progress, leave=False):
            g, p = encode_pixels(backbone, table.pixels(range(s, min(s + batch_size, len(table)))), patches, bf16)
            globs.append(g)
            if p is not None:
                toks.append(p)
        return cls(torch.cat(globs), torch.cat(toks) if patches else None)

    def get(self, idx, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.as_tensor(np.asarray(idx))
        p = self.patches[idx].to(device).float() if self.patches is not None else None
        return self.glob[idx].to(device), p


@torch.no_grad()
def encode_texts_bf16(backbone: Backbone, texts: Sequence[str], bf16: bool = True, batch_size: int = 512,
                      progress: bool = False, desc: str = "encode texts") -> torch.Tensor:
    """(N, D) normalised frozen text embeddings (no placeholders), batched."""
    from tqdm.auto import tqdm

    out = []
    for s in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, leave=False):
        with autocast(backbone, bf16):
            out.append(F.normalize(backbone.encode_text(list(texts[s : s + batch_size])).float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, backbone.embed_dim)


def info_nce(logits: torch.Tensor, symmetric: bool = True) -> torch.Tensor:
    """Cross-entropy with the diagonal as positives (both directions when ``symmetric``)."""
    target = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, target)
    return (loss + F.cross_entropy(logits.T, target)) / 2 if symmetric else loss


def soft_alignment_loss(query: torch.Tensor, captions: torch.Tensor, temperature: float,
                        soft_temperature: float) -> torch.Tensor:
    """Soft text alignment: match the query→caption distribution to the captions' own similarity structure.

    One-hot targets would push a pseudo-prompt away from captions of near-identical scenes in the batch;
    the soft targets (softmax of caption–caption similarities) instead ask ``$`` to relate to every caption
    the way the true caption does, i.e. to behave like real words.
    """
    with torch.no_grad():
        targets = F.softmax(captions @ captions.T / soft_temperature, dim=-1)
    logits = query @ captions.T / temperature
    loss_q = -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()
    loss_c = -(targets * F.log_softmax(logits.T, dim=-1)).sum(-1).mean()
    return (loss_q + loss_c) / 2


def recall_at(query: torch.Tensor, gallery: torch.Tensor, target: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """R@K (×100) of ``target[i]`` (a gallery index) for query i."""
    sims = query @ gallery.T
    pos = sims.gather(1, target[:, None])
    rank = (sims > pos).sum(1)
    return {f"R@{k}": float((rank < k).float().mean() * 100) for k in ks}


def prepare_backbone(name: str, device: str) -> Backbone:
    from zscir.backbones import create_backbone

    backbone = create_backbone(name, device=device)
    backbone.freeze()
    backbone.fingerprint()
    return backbone



def pair_banks(backbone: Backbone, opts, size: int, patches: bool, bf16: bool, n_val: int, progress: bool = False):
    """(train bank, train captions, val bank, val captions) of a non-world ``--data`` (`DataOptions`), see
    `zscir.train.pair_features.pair_feature_split`."""
    from zscir.train.pair_features import pair_feature_split

    tr, va = pair_feature_split(backbone, opts, size, patches, bf16, n_val, "tscir", progress)
    return FeatureBank(tr.glob, tr.patches), tr.captions, FeatureBank(va.glob, va.patches), [c[0] for c in va.captions]
