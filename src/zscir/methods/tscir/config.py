"""Typed configurations of the TSCIR / Pic2Word model parts and of both training stages.

The *model* configs (`MappingConfig`, `AdapterConfig`) are stored in each checkpoint's config.json and
are all a loader needs; the *training* configs (`Stage1Config`, `Stage2Config`) are stored beside them
for provenance and resumption. Pic2Word is ``MappingConfig(vsi_layers=[])`` trained with
``soft_weight=0``: one code path, so the baseline differs from TSCIR only in the ablated parts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from zscir.config_check import (ModelConfigError, check_choice, check_int, check_int_list, check_number, check_str,
                                check_str_list, config_source, warn_unknown_keys)
from zscir.train.data_options import DataOptions

#: bounds of the model configs stored in a checkpoint's config.json (`MappingConfig.validate`,
#: `AdapterConfig.validate`); generous for any CLIP (widths up to 65536, 64 layers of φ, 256 heads), they stop
#: values that would allocate absurd tensors or fail deep inside torch (a layer index is also checked against
#: the backbone's text layers when the modules are built)
MAPPING_INT_BOUNDS: dict[str, tuple[int, int]] = {"phi_hidden": (1, 65536), "phi_layers": (1, 64),
                                                  "vsi_heads": (1, 256)}
ADAPTER_INT_BOUNDS: dict[str, tuple[int, int]] = {"bottleneck": (1, 65536), "lora_rank": (1, 4096)}
#: text-layer indices (negatives count back): any text encoder has fewer layers than this
MAX_LAYER_INDEX = 1024
ADAPTER_KINDS = ("bottleneck", "lora")


def _from_dict(cls, d: dict[str, Any]):
    """Build dataclass ``cls`` from ``d``, ignoring unknown keys (forward compatible checkpoints)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def _checked_from_dict(cls, d: Any, section: str, source: str | Path | None):
    """A model config from its config.json section: unknown keys logged, every field checked (`validate`),
    errors naming ``source`` and ``section.field``."""
    with config_source(source):
        if not isinstance(d, dict):
            raise ModelConfigError(f"{section} must be a JSON object, got {type(d).__name__}")
        warn_unknown_keys(d, {f.name for f in fields(cls)}, f"{source or 'config'} ({section})")
        try:
            return _from_dict(cls, d)
        except ModelConfigError as e:  # from validate(): name the section
            raise ModelConfigError(f"{section}.{e}") from None


@dataclass
class MappingConfig:
    """Stage I model: token learner φ and Visual Semantic Injection (VSI).

    Attributes:
        phi_hidden: hidden width of φ's MLP (Pic2Word uses a 3-layer MLP on the image embedding).
        phi_layers: number of linear layers of φ.
        phi_dropout: dropout between φ's layers (regularises the single token, as in Pic2Word).
        vsi_layers: text-encoder layers (0-based, negatives count back) after which a VSI module
            refines the ``$`` hidden state; ``[]`` disables VSI (Pic2Word / "no VSI" ablation).
        vsi_heads: attention heads of VSI's cross-attention to the vision patch tokens.
        prompt: the Stage I prompt; must contain exactly one ``$``.
    """

    phi_hidden: int = 512
    phi_layers: int = 3
    phi_dropout: float = 0.1
    vsi_layers: list[int] = field(default_factory=lambda: [0, 1])
    vsi_heads: int = 4
    prompt: str = "a photo of $"

    to_dict = asdict

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and bounds (`MAPPING_INT_BOUNDS`); a `ModelConfigError` naming the field."""
        for name, (lo, hi) in MAPPING_INT_BOUNDS.items():
            setattr(self, name, check_int(getattr(self, name), name, lo, hi))
        self.phi_dropout = check_number(self.phi_dropout, "phi_dropout", 0.0, 1.0, hi_open=True)
        self.vsi_layers = check_int_list(self.vsi_layers, "vsi_layers", -MAX_LAYER_INDEX, MAX_LAYER_INDEX - 1)
        check_str(self.prompt, "prompt", max_len=1000)
        if self.prompt.count("$") != 1:
            raise ModelConfigError(f"prompt must contain exactly one '$', got {self.prompt!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path | None = None) -> "MappingConfig":
        return _checked_from_dict(cls, d, "mapping", source)


@dataclass
class AdapterConfig:
    """Stage II composing adapters (CA).

    Attributes:
        kind: ``"bottleneck"`` (own residual bottleneck adapters attached as text-layer modules) or
            ``"lora"`` (peft LoRA on the text encoder's attention projections).
        layers: text layers that get an adapter (bottleneck) / are LoRA-targeted; ``None`` = all.
        bottleneck: hidden width of a bottleneck adapter.
        lora_rank, lora_alpha, lora_dropout, lora_targets: peft `LoraConfig` fields.
    """

    kind: str = "bottleneck"
    layers: list[int] | None = None
    bottleneck: int = 64
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    to_dict = asdict

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and bounds (`ADAPTER_INT_BOUNDS`); a `ModelConfigError` naming the field."""
        check_choice(self.kind, "kind", ADAPTER_KINDS)
        self.layers = check_int_list(self.layers, "layers", -MAX_LAYER_INDEX, MAX_LAYER_INDEX - 1, optional=True)
        for name, (lo, hi) in ADAPTER_INT_BOUNDS.items():
            setattr(self, name, check_int(getattr(self, name), name, lo, hi))
        self.lora_alpha = check_number(self.lora_alpha, "lora_alpha", 0.0, 1e6, lo_open=True)
        self.lora_dropout = check_number(self.lora_dropout, "lora_dropout", 0.0, 1.0, hi_open=True)
        self.lora_targets = check_str_list(self.lora_targets, "lora_targets")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path | None = None) -> "AdapterConfig":
        return _checked_from_dict(cls, d, "adapter", source)


@dataclass
class Stage1Config:
    """Training of Stage I (mapping) on world image–caption pairs.

    ``soft_weight = 0`` and ``mapping.vsi_layers = []`` give Pic2Word. Defaults are sized so that the
    stage trains in a few minutes on one CPU core with the world CLIP (see docs/DESIGN-CHOICES.md, TSCIR).
    """

    model: str = "world-clip"
    method: str = "tscir"  # name written into the checkpoint: "tscir" or "pic2word"
    mapping: MappingConfig = field(default_factory=MappingConfig)
    seed: int = 0
    world_seed: int = 0
    n_pairs: int = 10000
    n_val: int = 1000
    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    temperature: float = 0.05  # InfoNCE temperature of the image alignment
    soft_weight: float = 1.0  # weight of the soft text-alignment loss (0 = off)
    soft_temperature: float = 0.05  # temperature of the caption–caption soft targets
    eval_every: int = 500
    # bf16 autocast (frozen encoders and the step): None = where the hardware has native bf16
    # (zscir.train.precision; emulated bf16 was ~9x slower); the saved config records the resolved value
    bf16: bool | None = None
    threads: int | None = None
    device: str = "cpu"
    data: DataOptions = field(default_factory=DataOptions)  # --data / --val-data (world by default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage1Config":
        cfg = _from_dict(cls, d)
        if isinstance(cfg.mapping, dict):
            cfg.mapping = MappingConfig.from_dict(cfg.mapping)
        if isinstance(cfg.data, dict):
            cfg.data = _from_dict(DataOptions, cfg.data)
        return cfg


@dataclass
class Stage2Config:
    """Training of Stage II (composing) on world triplets with Stage I frozen.

    Attributes:
        quality: ``"hq"`` (rendered exact targets) or ``"lq"`` (caption-mined targets).
        max_triplets: size of the training triplet set (the first N of the world's sequence).
        template: query prompt; ``$`` is the Stage I token, ``{}`` the modification text.
        hard_negatives: number of mined hard negatives per query (0 = off, plain in-batch InfoNCE; the
            ablation used 8).
        hn_pool: candidates per triplet mined once with the frozen image encoder (nearest images to the
            target in the training gallery) plus targets of other triplets with the same reference.
        hn_refresh: every this many steps the pool is re-ranked with the *current* query model and the
            ``hard_negatives`` candidates it scores highest are used until the next refresh.
        gallery_pairs: number of training-pair images in the mining gallery (besides references/targets).
    """

    stage1: str = ""
    model: str = ""  # backbone; "" = the one the Stage I checkpoint was trained on
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    quality: str = "hq"
    max_triplets: int = 20000  # = the world's default triplet set (the "100%" of the ablation)
    n_val: int = 500
    template: str = "a photo of $ that {}"
    seed: int = 0
    world_seed: int = 0
    steps: int = 800
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    temperature: float = 0.05
    # Off by default: on the world, mined negatives cost 5.7 R@1 at 20k triplets (docs/RESULTS.md, TSCIR ablations)
    hard_negatives: int = 0
    hn_pool: int = 32
    hn_refresh: int = 200
    gallery_pairs: int = 10000
    eval_every: int = 400
    bf16: bool | None = None  # None: from the hardware, as in Stage1Config
    threads: int | None = None
    device: str = "cpu"
    data: DataOptions = field(default_factory=DataOptions)  # --data (triplets) / --val-data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Stage2Config":
        cfg = _from_dict(cls, d)
        if isinstance(cfg.adapter, dict):
            cfg.adapter = AdapterConfig.from_dict(cfg.adapter)
        if isinstance(cfg.data, dict):
            cfg.data = _from_dict(DataOptions, cfg.data)
        return cfg
