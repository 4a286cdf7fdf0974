"""Typed configuration of Fusion-Diff: joint space, diffusion prior, Control-Adapter, sampling.

Everything that changes *what a checkpoint means* (embedding space, fusion weight, captioner, prior and
adapter sizes, noise schedule) lives in `FusionDiffConfig` and is written into the checkpoint's
config.json; sampling knobs (`SamplingConfig`) are retrieval-time options that a user may override.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class JointConfig:
    """How the joint vision-language embedding is formed.

    Attributes:
        space: ``"joint"`` (fused image + caption, the paper's space) or ``"image"`` (the plain image
            embedding; the CompoDiff-like ablation, retrieval is then cross-modal as in earlier work).
        fusion_weight: text share w of ``normalise((1 - w) · image + w · text)``.
        captioner: ``"retrieval"`` (nearest captions of a caption bank), ``"generative"`` (an image-to-text
            model, ``captioner_model``) or ``"oracle"`` (exact scene captions; world benchmark only, for the
            ablation).
        caption_k: number of nearest bank captions averaged for a gallery image.
        bank_pairs: number of world training pairs whose caption variants form the caption bank; the bank
            is rebuilt deterministically from ``bank_world_seed`` rather than shipped (it is ~1 s to
            generate and several MB to store).
        caption_bank: a pair data spec whose captions form the retrieval bank instead of the world's
            (a real gallery needs captions of its kind of pictures); ``caption_bank_limit`` caps the items read.
        captioner_model: the transformers image-to-text model of the generative captioner.
    """

    space: str = "joint"
    fusion_weight: float = 0.5
    captioner: str = "retrieval"
    caption_k: int = 1
    bank_pairs: int = 10000
    bank_world_seed: int = 0
    caption_bank: str | None = None
    caption_bank_limit: int | None = None
    captioner_model: str | None = None


@dataclass
class PriorConfig:
    """The denoiser of the diffusion prior (a small pre-LN transformer over a few tokens)."""

    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    #: "sample" (x0-prediction, as the DALL-E 2 prior; the adapter's output skip then maps the control
    #: straight to x0); "v_prediction" and "epsilon" also work
    prediction_type: str = "sample"
    #: unit vectors have per-dimension std ≈ 1/√D; the prior sees them multiplied by √D (≈ unit variance)
    embed_scale: float | None = None
    cond_dropout: float = 0.1


@dataclass
class AdapterConfig:
    """The Control-Adapter: a trainable copy of the prior's first ``blocks`` blocks (ControlNet-style).

    ``mode="adapter"`` freezes the prior and trains only the adapter; ``mode="full"`` trains prior and
    adapter together (the ablation "fine-tune the whole prior").
    """

    blocks: int = 2
    control_parts: tuple[str, ...] = ("reference", "fused", "image", "text")
    mode: str = "adapter"


@dataclass
class SamplingConfig:
    """DDIM sampling at retrieval time."""

    steps: int = 10
    guidance_scale: float = 1.0
    n_samples: int = 1
    eta: float = 0.0
    seed: int = 0
    #: < 1: start from the fused reference noised to strength·T (edit the reference representation)
    strength: float = 1.0


@dataclass
class FusionDiffConfig:
    """The full configuration stored in a checkpoint's config.json."""

    embed_dim: int = 128
    joint: JointConfig = field(default_factory=JointConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    adapter: AdapterConfig | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    backbone: str = "world-clip"
    backbone_fingerprint: str = ""
    train_info: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        return float(self.prior.embed_scale) if self.prior.embed_scale else float(self.embed_dim) ** 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FusionDiffConfig":
        def build(kls, sub):
            names = {f.name for f in fields(kls)}
            sub = {k: v for k, v in (sub or {}).items() if k in names}
            if "control_parts" in sub:
                sub["control_parts"] = tuple(sub["control_parts"])
            return kls(**sub)

        return cls(
            embed_dim=int(d.get("embed_dim", 128)),
            joint=build(JointConfig, d.get("joint")),
            prior=build(PriorConfig, d.get("prior")),
            adapter=build(AdapterConfig, d["adapter"]) if d.get("adapter") else None,
            sampling=build(SamplingConfig, d.get("sampling")),
            backbone=d.get("backbone", "world-clip"),
            backbone_fingerprint=d.get("backbone_fingerprint", ""),
            train_info=d.get("train_info", {}),
        )
