"""Fusion-Diff checkpoints: a folder with config.json + model.safetensors (prior.* and adapter.* tensors).

Self-describing (the config rebuilds the modules without the trainer) and small: the shipped checkpoints
are stored in float16 (a few MB) and loaded back as float32.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from zscir.backbones.assets import shipped_model_dir
from zscir.config_check import read_config_json, weights_mismatch
from zscir.methods.fusiondiff.config import FusionDiffConfig
from zscir.methods.fusiondiff.control_adapter import ControlAdapter
from zscir.methods.fusiondiff.prior import DiffusionPrior

logger = logging.getLogger(__name__)

#: shipped checkpoint variants inside the package (zscir/assets/fusiondiff/<variant>)
SHIPPED_VARIANTS = ("joint", "image")


def shipped_checkpoint_dir(variant: str = "joint") -> Path:
    return shipped_model_dir("fusiondiff") / variant


def build_modules(cfg: FusionDiffConfig) -> tuple[DiffusionPrior, ControlAdapter | None]:
    prior = DiffusionPrior(cfg.embed_dim, cfg.prior, cfg.scale)
    adapter = ControlAdapter(prior.denoiser, cfg.adapter) if cfg.adapter is not None else None
    return prior, adapter


def save_checkpoint(out: str | Path, cfg: FusionDiffConfig, prior: DiffusionPrior,
                    adapter: ControlAdapter | None = None, half: bool = False) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"prior.{k}": v for k, v in prior.denoiser.state_dict().items()}
    if adapter is not None:
        tensors.update({f"adapter.{k}": v for k, v in adapter.state_dict().items()})
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.detach().to(dtype).contiguous().cpu() for k, v in tensors.items()}
    save_file(tensors, str(out / "model.safetensors.tmp"))
    (out / "model.safetensors.tmp").replace(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    return out


def read_checkpoint_config(path: str | Path) -> FusionDiffConfig:
    """The checked `FusionDiffConfig` of a checkpoint folder (nothing built, no weight read): a bad field is
    one `ModelConfigError` naming config.json and the field."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no Fusion-Diff checkpoint (config.json) in {path}")
    return FusionDiffConfig.from_dict(read_config_json(path / "config.json"), source=path / "config.json")


def load_checkpoint(path: str | Path) -> tuple[FusionDiffConfig, DiffusionPrior, ControlAdapter | None]:
    """Rebuild (config, prior, adapter) from a checkpoint folder; modules are in eval mode on CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg = read_checkpoint_config(path)
    prior, adapter = build_modules(cfg)
    tensors = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}
    try:  # strict: a config.json whose sizes are not the weights' is refused, naming both files
        prior.denoiser.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("prior.")})
        if adapter is not None:
            adapter.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("adapter.")})
    except RuntimeError as e:
        raise weights_mismatch(path / "model.safetensors", path / "config.json", e) from None
    prior.eval()
    if adapter is not None:
        adapter.eval()
    return cfg, prior, adapter


def count_parameters(module: torch.nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
