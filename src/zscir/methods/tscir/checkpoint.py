"""Checkpoint folders of both stages: config.json + safetensors, self-contained.

Layout::

    stage1/                      stage2/
      config.json  (stage=1)       config.json  (stage=2, adapter config, template)
      model.safetensors (φ, VSI)   adapters.safetensors
                                   stage1/  (a copy of the Stage I folder it was trained on)

A Stage II folder embeds its Stage I (a few hundred kB), so ``--checkpoint DIR`` alone rebuilds the full
model and cannot silently pair adapters with a different φ. config.json records the backbone name and
fingerprint; loading on another backbone is allowed (same sizes) but logged as a warning. A checkpoint is
data: its ``stage1`` field may only name a sub-folder of its own (`zscir.backbones.folder_refs`), and the
weights are read by `zscir.backbones.tensor_files` (damaged files and NaN / inf weights are refused).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from zscir.backbones.base import Backbone
from zscir.backbones.folder_refs import FolderRefError, resolve_in_folder
from zscir.backbones.tensor_files import load_safetensors
from zscir.config_check import (ModelConfigError, check_int, check_mapping, check_str, config_source,
                                read_config_json, weights_mismatch)
from zscir.methods.tscir.adapters import ComposingAdapters
from zscir.methods.tscir.config import AdapterConfig, MappingConfig
from zscir.methods.tscir.mapping import Mapping

logger = logging.getLogger(__name__)

FORMAT = "zscir-tscir-v1"


def _backbone_info(backbone: Backbone) -> dict[str, Any]:
    return {"name": backbone.name, "fingerprint": backbone.fingerprint(), "embed_dim": backbone.embed_dim,
            "token_embed_dim": backbone.token_embed_dim, "vision_width": backbone.vision_width}


def save_stage1(out: Path, mapping: Mapping, backbone: Backbone, method: str, train: dict[str, Any],
                metrics: dict[str, Any] | None = None, template: str = "a photo of $ that {}") -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in mapping.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    cfg = {"format": FORMAT, "method": method, "stage": 1, "mapping": mapping.cfg.to_dict(), "template": template,
           "backbone": _backbone_info(backbone), "train": train, "metrics": metrics or {}}
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))


def save_stage2(out: Path, adapters: ComposingAdapters, stage1_dir: Path, backbone: Backbone, template: str,
                train: dict[str, Any], metrics: dict[str, Any] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sub = out / "stage1"
    if Path(stage1_dir).resolve() != sub.resolve():
        sub.mkdir(exist_ok=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copyfile(Path(stage1_dir) / name, sub / name)
    state = {k: v.contiguous().cpu() for k, v in adapters.adapter_state_dict().items()}
    save_file(state, str(out / "adapters.safetensors"))
    cfg = {"format": FORMAT, "method": "tscir", "stage": 2, "adapter": adapters.cfg.to_dict(),
           "template": template, "stage1": "stage1", "backbone": _backbone_info(backbone), "train": train,
           "metrics": metrics or {}}
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))


#: integer fields of a checkpoint's ``backbone`` record (compared with the backbone it is loaded on)
BACKBONE_INFO_FIELDS = ("embed_dim", "token_embed_dim", "vision_width")


def read_config(path: str | Path) -> dict[str, Any]:
    """A checkpoint folder's config.json, checked before any module is built: the format, ``stage`` (1 or
    2), the query ``template``, the embedded Stage I folder name and the model config of the stage
    (`MappingConfig` / `AdapterConfig`, validated by their ``from_dict``). A `ModelConfigError` names the
    file and the field."""
    p = Path(path) / "config.json"
    if not p.exists():
        raise FileNotFoundError(f"no TSCIR/Pic2Word checkpoint at {path} (config.json missing)")
    cfg = read_config_json(p)
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{p} is not a {FORMAT} checkpoint (format={cfg.get('format')!r})")
    with config_source(p):
        check_int(cfg.get("stage"), "stage", 1, 2)
        check_str(cfg.get("method"), "method", optional=True)
        if cfg.get("template") is not None:
            template = check_str(cfg["template"], "template", max_len=1000)
            if template.count("$") != 1 or "{}" not in template:
                raise ModelConfigError(f"template must contain one '$' and one '{{}}', got {template!r}")
        info = check_mapping(cfg.get("backbone"), "backbone", optional=True) or {}
        for key in BACKBONE_INFO_FIELDS:
            check_int(info.get(key), f"backbone.{key}", 1, 65536, optional=True)
        if cfg["stage"] == 2:
            sub = check_str(cfg.get("stage1", "stage1"), "stage1", max_len=255)
            if sub in (".", "..") or "/" in sub or "\\" in sub:  # a folder inside this one, never elsewhere
                raise ModelConfigError(f"stage1 must name a sub-folder of the checkpoint, got {sub!r}")
    # the model config of the stage: checked here, before anything is built or any weight is read
    if cfg["stage"] == 1:
        MappingConfig.from_dict(cfg.get("mapping"), source=p)
    else:
        AdapterConfig.from_dict(cfg.get("adapter"), source=p)
    return cfg


def stage1_folder(path: str | Path, cfg: dict[str, Any]) -> Path:
    """The Stage I folder a Stage II checkpoint embeds: a sub-folder of its own, never a path elsewhere."""
    path = Path(path)
    sub = resolve_in_folder(path, cfg.get("stage1", "stage1"), "stage1")
    if sub == path.resolve():
        raise FolderRefError(f"{path / 'config.json'}: field 'stage1' names the checkpoint folder itself")
    return sub


def load_weights(file: Path, load, config: Path | None = None) -> None:
    """``load(tensors)`` with the tensors of ``file`` (finite, from an intact safetensors file); a state that
    does not fit the modules (config.json edited, weights of another model) raises one `ModelConfigError`
    naming the weights and ``config`` (default: the config.json beside them) instead of a traceback."""
    tensors = load_safetensors(file)
    try:
        load(tensors)
    except (RuntimeError, KeyError, ValueError) as e:
        raise weights_mismatch(file, config or Path(file).parent / "config.json", e) from None


def _check_backbone(cfg: dict[str, Any], backbone: Backbone, path: Path) -> None:
    info = cfg.get("backbone", {})
    for key in ("embed_dim", "token_embed_dim", "vision_width"):
        if key in info and info[key] != getattr(backbone, key):
            raise ValueError(f"checkpoint {path} was trained for {key}={info[key]}, but backbone "
                             f"{backbone.name!r} has {getattr(backbone, key)}")
    if info.get("fingerprint") and info["fingerprint"] != backbone.fingerprint():
        logger.warning("checkpoint %s was trained on backbone %s (fingerprint %s), loading it on %s (%s)",
                       path, info.get("name"), info["fingerprint"], backbone.name, backbone.fingerprint())


def load_mapping(path: str | Path, backbone: Backbone) -> tuple[Mapping, dict[str, Any]]:
    """Load a Stage I folder (or the Stage I embedded in a Stage II folder) onto ``backbone``."""
    path = Path(path)
    cfg = read_config(path)
    if cfg["stage"] == 2:
        sub = stage1_folder(path, cfg)
        if read_config(sub)["stage"] != 1:
            raise ValueError(f"{sub / 'config.json'}: the Stage I inside a Stage II checkpoint must be stage 1")
        return load_mapping(sub, backbone)
    _check_backbone(cfg, backbone, path)
    with config_source(path / "config.json"):
        mapping = Mapping(backbone, MappingConfig.from_dict(cfg["mapping"], source=path / "config.json"))
    load_weights(path / "model.safetensors", mapping.load_state_dict)
    return mapping.eval(), cfg


def load_checkpoint(path: str | Path, backbone: Backbone
                    ) -> tuple[Mapping, ComposingAdapters | None, dict[str, Any]]:
    """Load a Stage I or Stage II folder: (mapping, adapters or None, config). Adapters come attached."""
    path = Path(path)
    cfg = read_config(path)
    mapping, _ = load_mapping(path, backbone)
    if cfg["stage"] == 1:
        return mapping, None, cfg
    _check_backbone(cfg, backbone, path)
    mapping.attach(backbone)  # VSI hooks first, adapters after: the order they were trained in
    with config_source(path / "config.json"):
        adapters = ComposingAdapters(backbone, AdapterConfig.from_dict(cfg["adapter"], source=path / "config.json"))
    adapters.attach(backbone)
    load_weights(path / "adapters.safetensors", adapters.load_adapter_state_dict)
    return mapping, adapters.eval(), cfg
