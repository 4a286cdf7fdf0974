"""open_clip models behind the zscir `Backbone` interface (optional ``[openclip]`` extra).

open_clip imports torchvision; where that fails (e.g. a CUDA torchvision wheel next to a CPU torch) this
backend is unavailable and its tests skip. The same two mechanisms as the HF backend are used: a forward
hook on ``token_embedding`` substitutes pseudo-words, forward hooks on the text transformer's resblocks run
attached modules. Only the standard open_clip ``CLIP`` class (its own text tower) is supported; models
with an HF text tower (``CustomTextCLIP``) should be loaded through transformers instead.

Name format: ``open_clip:<arch>/<pretrained>`` where ``<pretrained>`` is an open_clip pretrained tag, a
local checkpoint file, or ``none`` for random weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from zscir.backbones.base import Backbone, TextHookContext
from zscir.backbones.hooks import TextHookMixin
from zscir.backbones.tensor_files import (TensorFileError, check_module_finite, load_safetensors,
                                         load_torch_tensors)

logger = logging.getLogger(__name__)


def load_checkpoint_file(model: nn.Module, file: Path) -> None:
    """Load a local open_clip checkpoint (``.safetensors`` or a ``torch.save`` file, optionally under a
    ``state_dict`` key and with a DDP ``module.`` prefix) strictly into ``model``, through
    `zscir.backbones.tensor_files`: never unpickled with code, never with NaN / inf weights."""
    state = load_safetensors(file) if file.suffix == ".safetensors" else load_torch_tensors(file)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TensorFileError(f"{file}: not an open_clip state dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise TensorFileError(f"{file}: does not fit this open_clip architecture ({str(e).splitlines()[0]})") from None


class OpenCLIPBackbone(TextHookMixin, Backbone):
    def __init__(self, model, preprocess_fn, tokenizer, name: str, placeholder: str = "$"):
        super().__init__()
        if not hasattr(model, "token_embedding") or not hasattr(model, "transformer"):
            raise ValueError(f"{name}: only open_clip models with their own text tower are supported")
        self.model = model
        self.preprocess_fn = preprocess_fn
        self.tokenizer = tokenizer
        self.name = name
        self.placeholder = placeholder
        ids = tokenizer([placeholder])[0]
        inner = ids[ids != 0][1:-1]  # strip start/end-of-text and padding
        if inner.numel() != 1:
            raise ValueError(f"placeholder {placeholder!r} tokenizes into {inner.numel()} tokens; need one")
        self._placeholder_id = int(inner[0])
        self._batch_first = bool(getattr(model.transformer, "batch_first", True))
        self._init_text_hooks(model.token_embedding)
        model.visual.output_tokens = True

    @classmethod
    def create(cls, spec: str, device: str | torch.device = "cpu", **kw: Any) -> "OpenCLIPBackbone":
        try:
            import open_clip
        except Exception as e:  # noqa: BLE001 - open_clip fails with several error types when torchvision is broken
            from zscir.extras import install_hint

            raise ImportError(f"model open_clip:{spec} needs the optional open_clip backend, which is not usable "
                              f"here ({e}): {install_hint('openclip')}") from e
        arch, _, pretrained = spec.partition("/")
        pretrained = None if pretrained in ("", "none") else pretrained
        file = Path(pretrained).expanduser() if pretrained else None
        if file is not None and file.is_file():  # a local checkpoint: read by zscir's own tensor-file loader
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None, device="cpu")
            load_checkpoint_file(model, file)
            model = model.to(device)
        else:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
            check_module_finite(model, f"open_clip:{spec}")
        return cls(model.eval(), preprocess, open_clip.get_tokenizer(arch), name=f"open_clip:{spec}", **kw)

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1])

    @property
    def token_embed_dim(self) -> int:
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def vision_width(self) -> int:
        return int(getattr(self.model.visual, "width", self.model.visual.conv1.out_channels))

    @property
    def num_text_layers(self) -> int:
        return len(self.model.transformer.resblocks)

    @property
    def placeholder_token_id(self) -> int:
        return self._placeholder_id

    @property
    def text_encoder(self) -> nn.Module:
        return self.model.transformer

    def model_parameters(self):
        return self.model.parameters()

    def model_named_parameters(self):
        return self.model.named_parameters()

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess_fn(im.convert("RGB")) for im in images])

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        ids = self.tokenizer(list(texts))
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    def _visual(self, pixel_values: torch.Tensor):
        dtype = next(self.model.visual.parameters()).dtype
        return self.model.visual(pixel_values.to(self.device, dtype))

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        pooled, _ = self._visual(pixel_values)
        return F.normalize(pooled, dim=-1) if normalize else pooled

    def encode_image_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, tokens = self._visual(pixel_values)
        return F.normalize(pooled, dim=-1), tokens

    def encode_text(self, texts, normalize: bool = True, pseudo_tokens=None, extras=None,
                    placeholder_mask=None, owners: Sequence[Any] = ()) -> torch.Tensor:
        tok = texts if isinstance(texts, dict) else self.tokenize(texts)
        ids = tok["input_ids"].to(self.device)
        pmask = ids == self._placeholder_id if placeholder_mask is None else placeholder_mask.to(self.device).bool()
        pseudo = self._check_pseudo(pseudo_tokens, pmask, self.placeholder)
        ctx = TextHookContext(ids, tok["attention_mask"].to(self.device), pmask, dict(extras or {}))
        with self._text_call(ctx, pseudo, owners):
            feats = self.model.encode_text(ids)
        return F.normalize(feats, dim=-1) if normalize else feats

    def _text_layers(self):
        return self.model.transformer.resblocks

    def _to_bld(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self._batch_first else hidden.transpose(0, 1)  # modules always see (B, L, D)

    def _from_bld(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self._batch_first else hidden.transpose(0, 1)
