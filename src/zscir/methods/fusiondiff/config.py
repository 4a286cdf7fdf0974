"""Typed configuration of Fusion-Diff: joint space, diffusion prior, Control-Adapter, sampling.

Everything that changes *what a checkpoint means* (embedding space, fusion weight, captioner, prior and
adapter sizes, noise schedule) lives in `FusionDiffConfig` and is written into the checkpoint's
config.json; sampling knobs (`SamplingConfig`) are retrieval-time options that a user may override.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from zscir.config_check import (ModelConfigError, check_choice, check_int, check_mapping, check_number, check_str,
                                check_str_list, config_source, warn_unknown_keys)

# Bounds of every numeric field (checked by each dataclass's ``validate``, on construction, so a checkpoint's
# config.json, a trainer's options and a retrieval-time override such as ``-O caption_k=-3`` are all refused
# before any work; that one used to fail only after the caption bank was built, 175 s later). They are
# generous for the method (the shipped prior: width 128, 4 layers; 10 DDIM steps) and stop values that would
# allocate absurd modules, loop forever or divide by zero.
#: embedding width of the space the prior models (any CLIP projection)
EMBED_DIM_BOUNDS = (1, 8192)
JOINT_INT_BOUNDS: dict[str, tuple[int, int]] = {"caption_k": (1, 1000), "bank_pairs": (1, 10_000_000),
                                                "bank_world_seed": (0, 2**32 - 1)}
PRIOR_INT_BOUNDS: dict[str, tuple[int, int]] = {"width": (1, 8192), "layers": (1, 64), "heads": (1, 256),
                                                "num_train_timesteps": (1, 100_000)}
SAMPLING_INT_BOUNDS: dict[str, tuple[int, int]] = {"steps": (1, 1000), "n_samples": (1, 1024), "seed": (0, 2**63 - 1)}
SPACES = ("joint", "image")
CAPTIONERS = ("retrieval", "generative", "oracle")
#: diffusers' DDPM/DDIM schedules and prediction targets
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
ADAPTER_MODES = ("adapter", "full")
#: what the Control-Adapter can be fed (`zscir.methods.fusiondiff.control_adapter.CONTROL_PARTS`)
CONTROL_PART_NAMES = ("reference", "fused", "image", "text")


def _ints(obj: Any, bounds: dict[str, tuple[int, int]]) -> None:
    for name, (lo, hi) in bounds.items():
        setattr(obj, name, check_int(getattr(obj, name), name, lo, hi))


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and bounds (`JOINT_INT_BOUNDS`); a `ModelConfigError` naming the field."""
        check_choice(self.space, "space", SPACES)
        self.fusion_weight = check_number(self.fusion_weight, "fusion_weight", 0.0, 1.0)
        check_choice(self.captioner, "captioner", CAPTIONERS)
        _ints(self, JOINT_INT_BOUNDS)
        check_str(self.caption_bank, "caption_bank", optional=True)
        self.caption_bank_limit = check_int(self.caption_bank_limit, "caption_bank_limit", 1, 10**9, optional=True)
        check_str(self.captioner_model, "captioner_model", optional=True)


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and bounds (`PRIOR_INT_BOUNDS`; heads divide the width); a `ModelConfigError` naming the field."""
        _ints(self, PRIOR_INT_BOUNDS)
        if self.width % self.heads:
            raise ModelConfigError(f"width ({self.width}) must be a multiple of heads ({self.heads})")
        self.mlp_ratio = check_number(self.mlp_ratio, "mlp_ratio", 0.0, 64.0, lo_open=True)
        if int(self.width * self.mlp_ratio) < 1:
            raise ModelConfigError(f"width × mlp_ratio must be at least 1, got {self.width} × {self.mlp_ratio}")
        check_choice(self.beta_schedule, "beta_schedule", BETA_SCHEDULES)
        check_choice(self.prediction_type, "prediction_type", PREDICTION_TYPES)
        self.embed_scale = check_number(self.embed_scale, "embed_scale", 0.0, 1e6, lo_open=True, optional=True)
        self.cond_dropout = check_number(self.cond_dropout, "cond_dropout", 0.0, 1.0)


@dataclass
class AdapterConfig:
    """The Control-Adapter: a trainable copy of the prior's first ``blocks`` blocks (ControlNet-style).

    ``mode="adapter"`` freezes the prior and trains only the adapter; ``mode="full"`` trains prior and
    adapter together (the ablation "fine-tune the whole prior").
    """

    blocks: int = 2
    control_parts: tuple[str, ...] = ("reference", "fused", "image", "text")
    mode: str = "adapter"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and bounds (blocks in [1, 64]; at most the prior's layers, checked by `FusionDiffConfig`)."""
        self.blocks = check_int(self.blocks, "blocks", 1, PRIOR_INT_BOUNDS["layers"][1])
        parts = tuple(check_str_list(self.control_parts, "control_parts", max_items=len(CONTROL_PART_NAMES)))
        for i, p in enumerate(parts):
            check_choice(p, f"control_parts[{i}]", CONTROL_PART_NAMES)
        if len(set(parts)) != len(parts):
            raise ModelConfigError(f"control_parts must not repeat a part, got {list(parts)}")
        self.control_parts = parts
        check_choice(self.mode, "mode", ADAPTER_MODES)


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and bounds (`SAMPLING_INT_BOUNDS`, guidance in [0, 100], eta in [0, 1], strength in (0, 1])."""
        _ints(self, SAMPLING_INT_BOUNDS)
        self.guidance_scale = check_number(self.guidance_scale, "guidance_scale", 0.0, 100.0)
        self.eta = check_number(self.eta, "eta", 0.0, 1.0)
        self.strength = check_number(self.strength, "strength", 0.0, 1.0, lo_open=True)


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The fields of this level and what spans sections (adapter blocks ≤ prior layers, DDIM steps ≤
        training time steps); the sections check themselves on construction."""
        self.embed_dim = check_int(self.embed_dim, "embed_dim", *EMBED_DIM_BOUNDS)
        for name, kls in (("joint", JointConfig), ("prior", PriorConfig), ("sampling", SamplingConfig)):
            if not isinstance(getattr(self, name), kls):
                raise ModelConfigError(f"{name} must be a {kls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.adapter is not None and self.adapter.blocks > self.prior.layers:
            raise ModelConfigError(f"adapter.blocks ({self.adapter.blocks}) must not exceed prior.layers "
                                   f"({self.prior.layers})")
        if self.sampling.steps > self.prior.num_train_timesteps:
            raise ModelConfigError(f"sampling.steps ({self.sampling.steps}) must not exceed "
                                   f"prior.num_train_timesteps ({self.prior.num_train_timesteps})")
        check_str(self.backbone, "backbone")
        check_str(self.backbone_fingerprint, "backbone_fingerprint", nonempty=False)
        check_mapping(self.train_info, "train_info")

    @property
    def scale(self) -> float:
        return float(self.prior.embed_scale) if self.prior.embed_scale else float(self.embed_dim) ** 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path | None = None) -> "FusionDiffConfig":
        """Build from a checkpoint's config.json dict: missing fields take their defaults, unknown keys are
        logged, and a bad value is a `ModelConfigError` naming ``source`` and ``section.field``."""
        with config_source(source):
            if not isinstance(d, dict):
                raise ModelConfigError(f"expected a JSON object, got {type(d).__name__}")
            warn_unknown_keys(d, {f.name for f in fields(cls)}, str(source or "Fusion-Diff config"))

            def build(kls, section: str):
                sub = check_mapping(d.get(section), section, optional=True) or {}
                names = {f.name for f in fields(kls)}
                warn_unknown_keys(sub, names, f"{source or 'Fusion-Diff config'} ({section})")
                sub = {k: v for k, v in sub.items() if k in names}
                if isinstance(sub.get("control_parts"), list):
                    sub["control_parts"] = tuple(sub["control_parts"])
                try:
                    return kls(**sub)
                except ModelConfigError as e:
                    raise ModelConfigError(f"{section}.{e}") from None

            return cls(
                embed_dim=d.get("embed_dim", 128),
                joint=build(JointConfig, "joint"),
                prior=build(PriorConfig, "prior"),
                adapter=build(AdapterConfig, "adapter") if d.get("adapter") else None,  # {} / null: prior only
                sampling=build(SamplingConfig, "sampling"),
                backbone=d.get("backbone", "world-clip"),
                backbone_fingerprint=d.get("backbone_fingerprint", "") or "",
                train_info=d.get("train_info") or {},
            )
