"""Fusion-Diff checkpoints: a folder with config.json + model.safetensors (prior.* and adapter.* tensors).

Self-describing (the config rebuilds the modules without the trainer) and small: the shipped checkpoints
are stored in float16 (a few MB) and loaded back as float32. A checkpoint trained with a caption bank of
its own data keeps that bank in the folder (``caption_bank.json``, `CAPTION_BANK_FILE`) and its config
names that file: a checkpoint is data, so ``joint.caption_bank`` / ``joint.captioner_model`` may only name
files inside the folder (or, for the model, a hub name) — never a data spec, a ``pipe:`` command or a URL
(`zscir.backbones.folder_refs`); the weights are read by `zscir.backbones.tensor_files` (finite only).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from zscir.backbones.assets import shipped_model_dir
from zscir.backbones.folder_refs import FolderRefError, model_ref_in_folder, resolve_in_folder
from zscir.backbones.tensor_files import load_safetensors
from zscir.config_check import read_config_json, weights_mismatch
from zscir.methods.fusiondiff.config import FusionDiffConfig, JointConfig
from zscir.methods.fusiondiff.control_adapter import ControlAdapter
from zscir.methods.fusiondiff.prior import DiffusionPrior

logger = logging.getLogger(__name__)

#: shipped checkpoint variants inside the package (zscir/assets/fusiondiff/<variant>)
SHIPPED_VARIANTS = ("joint", "image")
#: the caption bank a checkpoint carries (a JSON list of caption strings), named by ``joint.caption_bank``
CAPTION_BANK_FILE = "caption_bank.json"


def shipped_checkpoint_dir(variant: str = "joint") -> Path:
    return shipped_model_dir("fusiondiff") / variant


def build_modules(cfg: FusionDiffConfig) -> tuple[DiffusionPrior, ControlAdapter | None]:
    prior = DiffusionPrior(cfg.embed_dim, cfg.prior, cfg.scale)
    adapter = ControlAdapter(prior.denoiser, cfg.adapter) if cfg.adapter is not None else None
    return prior, adapter


def save_checkpoint(out: str | Path, cfg: FusionDiffConfig, prior: DiffusionPrior,
                    adapter: ControlAdapter | None = None, half: bool = False,
                    caption_bank: Sequence[str] | None = None) -> Path:
    """Write config.json + model.safetensors; with ``caption_bank`` also `CAPTION_BANK_FILE`, which the
    config then names (the checkpoint carries its bank instead of pointing at the data it came from)."""
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
    if caption_bank is not None:
        tmp = out / (CAPTION_BANK_FILE + ".tmp")
        tmp.write_text(json.dumps(list(caption_bank), ensure_ascii=False), encoding="utf-8")
        tmp.replace(out / CAPTION_BANK_FILE)
        cfg = replace(cfg, joint=replace(cfg.joint, caption_bank=CAPTION_BANK_FILE))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    return out


def read_caption_bank(path: str | Path, ref: str) -> list[str]:
    """The caption bank a checkpoint names: ``ref`` must be a JSON file inside ``path`` holding a list of
    caption strings (what `save_checkpoint` writes); anything else raises `FolderRefError`."""
    path = Path(path)
    try:
        file = resolve_in_folder(path, ref, "joint.caption_bank")
    except FolderRefError as e:
        raise FolderRefError(f"{e}; to caption from a dataset, name it yourself: -m fusiondiff:caption_bank=SPEC"
                             ) from None
    try:
        bank = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FolderRefError(f"{file}: not a caption bank (a JSON list of captions): {e}") from None
    if isinstance(bank, dict):
        bank = bank.get("captions")
    if not isinstance(bank, list) or not bank or not all(isinstance(c, str) and c.strip() for c in bank):
        raise FolderRefError(f"{file}: not a caption bank (expected a non-empty JSON list of caption strings)")
    return bank


def read_checkpoint_config(path: str | Path) -> FusionDiffConfig:
    """The checked `FusionDiffConfig` of a checkpoint folder (nothing built, no weight read): a bad field is
    one `ModelConfigError` naming config.json and the field."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no Fusion-Diff checkpoint (config.json) in {path}")
    return FusionDiffConfig.from_dict(read_config_json(path / "config.json"), source=path / "config.json")



def check_refs(path: str | Path, cfg: FusionDiffConfig, skip: Sequence[str] = ()) -> None:
    """Refuse a config whose caption bank or captioner model names a command, URL or file elsewhere;
    fields in ``skip`` are the ones the user replaces (their value in the file is never used)."""
    if cfg.joint.caption_bank is not None and "caption_bank" not in skip:
        read_caption_bank(path, cfg.joint.caption_bank)
    if cfg.joint.captioner_model is not None and "captioner_model" not in skip:
        model_ref_in_folder(path, cfg.joint.captioner_model, "joint.captioner_model")


def captioner_inputs(path: str | Path, joint: JointConfig) -> tuple[JointConfig, list[str] | None]:
    """(joint config to build the captioner from, the checkpoint's own caption bank or None): the bank is
    read from the folder and a captioner model inside it is named by its absolute path."""
    bank = read_caption_bank(path, joint.caption_bank) if joint.caption_bank is not None else None
    if joint.captioner_model is not None:
        joint = replace(joint, captioner_model=str(model_ref_in_folder(path, joint.captioner_model,
                                                                       "joint.captioner_model")))
    return replace(joint, caption_bank=None), bank


def load_checkpoint(path: str | Path, skip_refs: Sequence[str] = ()
                    ) -> tuple[FusionDiffConfig, DiffusionPrior, ControlAdapter | None]:
    """Rebuild (config, prior, adapter) from a checkpoint folder; modules are in eval mode on CPU.

    The config's file references are checked (`check_refs`; ``skip_refs``: joint fields the caller replaces
    by the user's own) and the weights must be finite; a config or weights file that does not describe these
    modules raises a ``ValueError`` naming the file.
    """
    path = Path(path)
    cfg = read_checkpoint_config(path)
    check_refs(path, cfg, skip_refs)
    prior, adapter = build_modules(cfg)
    weights = path / "model.safetensors"
    tensors = {k: v.float() for k, v in load_safetensors(weights).items()}
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
