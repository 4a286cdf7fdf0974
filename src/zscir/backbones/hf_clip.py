"""HF transformers `CLIPModel` behind the zscir `Backbone` interface.

Real checkpoints (``openai/clip-vit-large-patch14`` ...), the shipped world CLIP and the tiny random test
models all go through this one class, so whatever works on the world works on real CLIP.

Two mechanisms keep the encoder's own code untouched:

pseudo-word substitution and text-layer modules (VSI, bottleneck adapters) are forward hooks, see
`zscir.backbones.hooks`.

transformers 5.x returns output objects from ``get_text_features``; we call the towers and projections
directly in one place (`_text_features` / `_image_outputs`) so that the version difference never leaks.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from zscir.backbones.base import Backbone, TextHookContext
from zscir.backbones.hooks import TextHookMixin
from zscir.backbones.openai_bpe import openai_tokenizer_for
from zscir.backbones.tensor_files import check_module_finite, check_safetensors
from zscir.config_check import (ModelConfigError, check_choice, check_int, check_mapping, check_number, check_str,
                                config_source, read_config_json)

logger = logging.getLogger(__name__)

#: bounds of the sizes in a transformers CLIP config.json, per section (``None``: the top level). Generous
#: for every released CLIP (ViT-bigG/14: width 1664, 48 layers, MLP 8192, 77 positions, 49408 tokens); they
#: stop values that would allocate absurd tensors (``image_size: 20000`` took 20 s before failing,
#: ``max_position_embeddings: 10**7`` 56 s) or divide by zero (``patch_size: 0``). A missing field takes
#: transformers' default, and a default that does not fit the weights is reported by the load.
CLIP_INT_BOUNDS: dict[str | None, dict[str, tuple[int, int]]] = {
    None: {"projection_dim": (1, 8192)},
    "text_config": {"hidden_size": (1, 8192), "intermediate_size": (1, 65536), "num_hidden_layers": (1, 256),
                    "num_attention_heads": (1, 256), "max_position_embeddings": (1, 8192),
                    "vocab_size": (1, 1_048_576)},
    "vision_config": {"hidden_size": (1, 8192), "intermediate_size": (1, 65536), "num_hidden_layers": (1, 256),
                      "num_attention_heads": (1, 256), "image_size": (1, 4096), "patch_size": (1, 4096),
                      "num_channels": (1, 4)},
}
#: at most this many patches per image (a 256 × 256 grid): the position table has one row per patch
CLIP_MAX_PATCHES = 65536
#: float fields of each tower section: (low, high), open at low when the value must be positive
CLIP_FLOAT_BOUNDS = {"layer_norm_eps": (0.0, 1.0), "attention_dropout": (0.0, 1.0), "initializer_range": (0.0, 10.0),
                     "initializer_factor": (0.0, 100.0)}
CLIP_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish")


def check_clip_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a transformers CLIP ``config.json`` (types, bounds, heads dividing widths) before
    transformers builds anything from it; returns the parsed dict. Raises `ModelConfigError` naming the file
    and the field."""
    cfg = read_config_json(path)
    with config_source(path):
        if cfg.get("model_type", "clip") != "clip":
            raise ModelConfigError(f"model_type must be 'clip' for a CLIP checkpoint, got {cfg.get('model_type')!r}")
        for section, bounds in CLIP_INT_BOUNDS.items():
            sub = cfg if section is None else check_mapping(cfg.get(section), section, optional=True)
            if sub is None:
                continue
            prefix = f"{section}." if section else ""
            for key, (lo, hi) in bounds.items():
                if key in sub:
                    check_int(sub[key], prefix + key, lo, hi)
            if section is None:
                if "logit_scale_init_value" in sub:
                    check_number(sub["logit_scale_init_value"], "logit_scale_init_value", -100.0, 100.0)
                continue
            for key, (lo, hi) in CLIP_FLOAT_BOUNDS.items():
                if key in sub:
                    check_number(sub[key], prefix + key, lo, hi, lo_open=key == "layer_norm_eps")
            if "hidden_act" in sub:
                check_choice(sub["hidden_act"], prefix + "hidden_act", CLIP_ACTIVATIONS)
            width, heads = sub.get("hidden_size"), sub.get("num_attention_heads")
            if isinstance(width, int) and isinstance(heads, int) and width % heads:
                raise ModelConfigError(f"{prefix}hidden_size ({width}) must be a multiple of "
                                       f"{prefix}num_attention_heads ({heads})")
            side, patch = sub.get("image_size"), sub.get("patch_size")
            if isinstance(side, int) and isinstance(patch, int):
                if patch > side:
                    raise ModelConfigError(f"{prefix}patch_size ({patch}) must not exceed {prefix}image_size ({side})")
                if (side // patch) ** 2 > CLIP_MAX_PATCHES:
                    raise ModelConfigError(f"{prefix}image_size / patch_size gives {(side // patch) ** 2} patches "
                                           f"per image; at most {CLIP_MAX_PATCHES}")
        if "name_or_path" in cfg:
            check_str(cfg["name_or_path"], "name_or_path", nonempty=False)
    return cfg


def check_loading_info(info: dict[str, Any], folder: str | os.PathLike) -> None:
    """Refuse weights that do not fit config.json: transformers would re-initialise missing or mismatched
    tensors with random values and drop unexpected ones (a config with 5 text layers for 3 layers of weights
    loaded "fine" and ranked at random)."""
    names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
    weights = next((Path(folder) / n for n in names if (Path(folder) / n).is_file()), Path(folder) / names[0])
    config = Path(folder) / "config.json"
    mism = list(info.get("mismatched_keys") or [])
    missing = sorted(info.get("missing_keys") or [])
    # checkpoints of older transformers versions store the position_ids buffers, which are not weights
    unexpected = sorted(k for k in info.get("unexpected_keys") or [] if not k.endswith("position_ids"))
    if mism:
        key, have, want = (tuple(mism[0]) + (None, None))[:3]
        shape = lambda s: tuple(s) if s is not None else "?"  # noqa: E731
        raise ModelConfigError(f"{weights} does not match {config} (a wrong or edited config.json?): {key} has "
                               f"shape {shape(have)} in the weights but {shape(want)} in the model the config "
                               f"describes" + (f" (and {len(mism) - 1} more)" if len(mism) > 1 else ""))
    for what, keys in (("lacks", missing), ("has tensors the config does not describe:", unexpected)):
        if keys:
            raise ModelConfigError(f"{weights} does not match {config} (a wrong or edited config.json?): it {what} "
                                   f"{', '.join(keys[:3])}" + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""))


def load_image_processor(path_or_id: str | os.PathLike, **kw):
    """Load the checkpoint's image processor, preferring the PIL backend when torchvision is unusable.

    transformers 5 defaults CLIP to a torchvision backend; the PyPI torchvision wheel does not import with
    the CPU torch build, in which case transformers falls back to the PIL processor (with a warning we
    silence here, since the fallback is the intended path).
    """
    from transformers import AutoImageProcessor
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoImageProcessor.from_pretrained(path_or_id, **kw)
    finally:
        hf_logging.set_verbosity(verbosity)


def build_image_processor(image_size: int):
    """A CLIP image processor for square images of ``image_size`` (OpenAI CLIP mean/std)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


class HFCLIPBackbone(TextHookMixin, Backbone):
    """A transformers `CLIPModel` with its tokenizer and image processor."""

    def __init__(self, model, tokenizer, image_processor, name: str = "", placeholder: str = "$"):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        self.placeholder = placeholder
        ids = tokenizer(placeholder, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"placeholder {placeholder!r} tokenizes into {len(ids)} tokens; need exactly one")
        self._placeholder_id = int(ids[0])
        self.max_text_len = int(model.config.text_config.max_position_embeddings)
        self._init_text_hooks(self.model.text_model.embeddings.token_embedding)

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def token_embed_dim(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def vision_width(self) -> int:
        return int(self.model.config.vision_config.hidden_size)

    @property
    def num_text_layers(self) -> int:
        return len(self.model.text_model.encoder.layers)

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def placeholder_token_id(self) -> int:
        return self._placeholder_id

    def _text_layers(self):
        return self.model.text_model.encoder.layers

    @property
    def text_encoder(self) -> nn.Module:
        return self.model.text_model

    def model_parameters(self):
        return self.model.parameters()

    def model_named_parameters(self):
        return self.model.named_parameters()

    def tokenizer_signature(self) -> str:
        vocab = sorted(self.tokenizer.get_vocab().items())
        return hashlib.sha1(repr(vocab).encode()).hexdigest()

    # --- preprocessing -----------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
        side = self._identity_geometry_side()
        if side and rgb and all(im.size == (side, side) for im in rgb):
            # Resize to the same size and centre-crop to it are identities, so only rescale + normalise
            # remain. A uint8 pixel has 256 values per channel, so both become one table lookup whose
            # entries are computed with the processor's own arithmetic (rescale in float64, then float32
            # normalise): bit-identical output, ≈3× faster than the per-image path.
            x = np.stack([np.asarray(im).transpose(2, 0, 1) for im in rgb])  # (B, 3, H, W) uint8
            lut = self._pixel_table()
            out = np.empty(x.shape, np.float32)
            for c in range(3):
                np.take(lut[c], x[:, c], out=out[:, c])
            return torch.from_numpy(out)
        return self.image_processor(images=rgb, return_tensors="pt")["pixel_values"]

    @property
    def input_side(self) -> int | None:
        proc = self.image_processor
        if not getattr(proc, "do_resize", False):
            return None
        size = getattr(proc, "size", None)
        edge = _field(size, "shortest_edge")
        if edge:
            return int(edge)
        h, w = _field(size, "height"), _field(size, "width")
        return int(max(h, w)) if h and w else None  # resized to h x w: short side >= both suffices

    def _pixel_table(self) -> np.ndarray:
        """(3, 256) float32: the processor's rescale + normalise of every uint8 value, per channel."""
        proc = self.image_processor
        key = (float(proc.rescale_factor), bool(proc.do_normalize), tuple(proc.image_mean), tuple(proc.image_std))
        if getattr(self, "_lut_key", None) != key:
            v = (np.arange(256, dtype=np.float64) * key[0]).astype(np.float32)  # as transformers' rescale
            table = np.tile(v, (3, 1))
            if key[1]:  # as transformers' normalize: float32 (x - mean) / std
                table = (table - np.array(key[2], np.float32)[:, None]) / np.array(key[3], np.float32)[:, None]
            self._lut, self._lut_key = np.ascontiguousarray(table, np.float32), key
        return self._lut

    def _identity_geometry_side(self) -> int | None:
        """The square input side for which this processor's resize + crop do nothing, if there is one."""
        proc = self.image_processor
        size = getattr(proc, "size", None)
        crop = getattr(proc, "crop_size", None)
        side = _field(size, "shortest_edge")
        if (
            side
            and getattr(proc, "do_rescale", False)
            and _field(crop, "height") == side
            and _field(crop, "width") == side
            and type(proc).__name__.startswith("CLIPImageProcessor")
        ):
            return int(side)
        return None

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # --- encoders ----------------------------------------------------------------------------------
    def _vision(self, pixel_values: torch.Tensor):
        dtype = self.model.visual_projection.weight.dtype
        return self.model.vision_model(pixel_values=pixel_values.to(self.device, dtype))

    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        feats = self.model.visual_projection(self._vision(pixel_values).pooler_output)
        return F.normalize(feats, dim=-1) if normalize else feats

    def encode_image_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._vision(pixel_values)
        glob = F.normalize(self.model.visual_projection(out.pooler_output), dim=-1)
        # The patch tokens get the same final LayerNorm as the CLS token so that their scale matches what
        # the projection was trained on; they stay in the vision width (no projection).
        patches = self.model.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
        return glob, patches

    def encode_text(
        self,
        texts: Sequence[str] | dict[str, torch.Tensor],
        normalize: bool = True,
        pseudo_tokens: torch.Tensor | None = None,
        extras: dict[str, Any] | None = None,
        placeholder_mask: torch.Tensor | None = None,
        owners: Sequence[Any] = (),
    ) -> torch.Tensor:
        tok = texts if isinstance(texts, dict) else self.tokenize(texts)
        ids = tok["input_ids"].to(self.device)
        mask = tok["attention_mask"].to(self.device)
        pmask = ids == self._placeholder_id if placeholder_mask is None else placeholder_mask.to(self.device).bool()
        pseudo = self._check_pseudo(pseudo_tokens, pmask, self.placeholder)
        with self._text_call(TextHookContext(ids, mask, pmask, dict(extras or {})), pseudo, owners):
            out = self.model.text_model(input_ids=ids, attention_mask=mask)
        feats = self.model.text_projection(out.pooler_output)
        return F.normalize(feats, dim=-1) if normalize else feats

    # --- persistence -------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write a normal HF model folder: config.json, model.safetensors, tokenizer and preprocessor."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        self.image_processor.save_pretrained(out)
        return out

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike,
        name: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        placeholder: str = "$",
        local_files_only: bool | None = None,
    ) -> "HFCLIPBackbone":
        """Load model, tokenizer and image processor with transformers' ``from_pretrained``.

        Works offline when the files are local (a directory, or the HF cache with ``HF_HUB_OFFLINE=1``). A
        folder's safetensors files are checked first and the loaded weights after
        (`zscir.backbones.tensor_files`): a damaged file or NaN / inf weights give one error naming the file.
        """
        from huggingface_hub.errors import StrictDataclassError
        from transformers import AutoTokenizer, CLIPModel

        from zscir.backbones.tokenizer import check_tokenizer_files

        folder = Path(path_or_id).expanduser()
        local, has_tokenizer = folder.is_dir(), False
        if local:  # hub ids are resolved to a snapshot folder by the registry before they get here
            check_clip_config(folder / "config.json")
            has_tokenizer = check_tokenizer_files(folder)
        weights_files = sorted(folder.glob("*.safetensors")) if local else []
        for f in weights_files:
            check_safetensors(f)
        kw: dict[str, Any] = {}
        if local_files_only is None and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            local_files_only = True  # read at call time: huggingface_hub reads it only at import
        if local_files_only is not None:
            kw["local_files_only"] = local_files_only
        if dtype:
            kw["dtype"] = dtype
        try:
            try:
                # local folders: mismatches are collected (and refused by check_loading_info, naming the
                # tensor) instead of raised after a long table on the log
                model, info = CLIPModel.from_pretrained(path_or_id, output_loading_info=True,
                                                        ignore_mismatched_sizes=local, **kw)
            except StrictDataclassError as e:  # transformers' own config validation (not a ValueError)
                reason = [ln.strip() for ln in str(e).splitlines() if ln.strip()][-1:] or [type(e).__name__]
                raise ModelConfigError(f"{folder / 'config.json'}: {reason[0]}") from None
            if local:
                check_loading_info(info, folder)
            kw.pop("dtype", None)
            tokenizer = AutoTokenizer.from_pretrained(path_or_id, **kw)
            vocab_size = int(model.config.text_config.vocab_size)
            if len(tokenizer) < vocab_size // 2:  # transformers 5 builds an empty CLIPTokenizer when files are missing
                if local and has_tokenizer:
                    raise ModelConfigError(f"{folder}: the tokenizer has {len(tokenizer)} tokens but config.json "
                                           f"text_config.vocab_size is {vocab_size} (tokenizer files of another "
                                           "model?)")
                tokenizer = openai_tokenizer_for(vocab_size, str(path_or_id))
            top = max(tokenizer.get_vocab().values(), default=-1)
            if top >= vocab_size:  # such ids would index past the embedding table at the first query
                raise ModelConfigError(f"{folder}: the tokenizer has token id {top} but config.json "
                                       f"text_config.vocab_size is {vocab_size} (tokenizer files of another model?)")
            try:
                processor = load_image_processor(path_or_id, **kw)
            except OSError:
                logger.warning("%s has no preprocessor_config.json; using OpenAI CLIP's preprocessing at %d px",
                               path_or_id, model.config.vision_config.image_size)
                processor = build_image_processor(int(model.config.vision_config.image_size))
        except OSError as e:
            raise OSError(
                f"could not load a CLIP checkpoint from {str(path_or_id)!r}: {e}. Give a local folder with "
                "config.json, model weights, tokenizer and preprocessor_config.json, or a hub id that is "
                "already in the local HF cache (no model hub is reachable offline)."
            ) from e
        model.eval()
        check_module_finite(model, weights_files[0] if len(weights_files) == 1 else path_or_id)
        bb = cls(model, tokenizer, processor, name=name or str(path_or_id), placeholder=placeholder)
        return bb.to(device)


def _field(obj: Any, key: str) -> Any:
    """``obj[key]`` for the plain dicts of transformers 4.x and the ``SizeDict`` objects of 5.x."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)
