"""Model names → backbones: source prefixes, built-in names, and tiny random configs for tests.

Names follow open_clip/timm conventions:

* ``hf-hub:openai/clip-vit-large-patch14`` — a transformers checkpoint by hub id (offline: from the local
  HF cache; set ``HF_HUB_OFFLINE=1`` to forbid any network attempt);
* ``local-dir:/path/to/folder`` — a transformers CLIP folder on disk (a bare existing path works too);
* ``open_clip:ViT-B-32/laion2b_s34b_b79k`` — the optional open_clip backend (``[openclip]`` extra);
* built-in names from `list_models()`: ``world-clip`` (the shipped default, trained on the CIR world) and
  tiny random models such as ``tiny-clip-test`` for unit tests;
* LiT models (`zscir.backbones.lit`: frozen pretrained towers + trained heads): built-in names such as
  ``lit-untrained``, and ``local-dir:`` / bare folders whose config.json says ``"model_type": "zscir-lit"``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from zscir.backbones.assets import shipped_model_dir  # noqa: F401 - re-exported
from zscir.backbones.base import Backbone
from zscir.backbones.lit import BUILTIN_LIT_MODELS, LiTBackbone, builtin_lit_version, lit_folder_of
from zscir.backbones.folder_refs import FolderRefError, field_location, is_hub_name

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "world-clip"


@dataclass(frozen=True)
class TinyCLIPConfig:
    """Sizes of a small HF `CLIPModel`; used for the world CLIP and for random test models."""

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_text_len: int = 64
    projection_dim: int = 128
    vocab_size: int = 1024

    def to_clip_config(self, tokenizer):
        from transformers import CLIPConfig

        text = dict(
            vocab_size=len(tokenizer),
            hidden_size=self.text_width,
            intermediate_size=4 * self.text_width,
            num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads,
            max_position_embeddings=self.max_text_len,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        vision = dict(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.vision_width,
            intermediate_size=4 * self.vision_width,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
        )
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.projection_dim)


#: tiny random configurations, for tests and smoke runs
TINY_CONFIGS: dict[str, TinyCLIPConfig] = {
    "tiny-clip-test": TinyCLIPConfig(
        image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
        text_width=32, text_layers=2, text_heads=2, max_text_len=32, projection_dim=24, vocab_size=300,
    ),
    "tiny-clip-test-4l": TinyCLIPConfig(
        image_size=32, patch_size=8, vision_width=48, vision_layers=2, vision_heads=2,
        text_width=48, text_layers=4, text_heads=2, max_text_len=32, projection_dim=32, vocab_size=300,
    ),
}

#: the architecture of the shipped world CLIP (see `zscir train clip`)
WORLD_CLIP_CONFIG = TinyCLIPConfig()

_TINY_CORPUS = (
    "a photo of a small red circle to the left of a large blue square on a grey background",
    "make the green triangle yellow and add a purple star in the top right",
    "remove the orange hexagon, the pink diamond should be bigger instead",
    "two white crosses below a black heart on a beige background striped dotted plain",
)


def build_random_clip(cfg: TinyCLIPConfig, tokenizer, seed: int = 0, name: str = "random"):
    """A randomly initialised `HFCLIPBackbone` with the given sizes (deterministic for a seed)."""
    from transformers import CLIPModel

    from zscir.backbones.hf_clip import HFCLIPBackbone, build_image_processor

    torch.manual_seed(seed)
    model = CLIPModel(cfg.to_clip_config(tokenizer)).eval()
    return HFCLIPBackbone(model, tokenizer, build_image_processor(cfg.image_size), name=name)


def _tiny(name: str) -> Callable[..., Backbone]:
    def factory(seed: int = 0, **_: object) -> Backbone:
        from zscir.backbones.tokenizer import train_bpe_tokenizer

        cfg = TINY_CONFIGS[name]
        tok = train_bpe_tokenizer(_TINY_CORPUS, vocab_size=cfg.vocab_size, max_length=cfg.max_text_len)
        return build_random_clip(cfg, tok, seed=seed, name=name)

    return factory


def _world_clip(**kw: object) -> Backbone:
    from zscir.backbones.hf_clip import HFCLIPBackbone

    path = shipped_model_dir("world-clip")
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"the shipped world CLIP is missing at {path}; reproduce it with `zscir train clip --out {path}`"
        )
    return HFCLIPBackbone.from_pretrained(path, name="world-clip", local_files_only=True)


_BUILTIN: dict[str, Callable[..., Backbone]] = {"world-clip": _world_clip}
_BUILTIN.update({n: _tiny(n) for n in TINY_CONFIGS})
_BUILTIN.update(BUILTIN_LIT_MODELS)
PREFIXES = ("hf-hub:", "local-dir:", "open_clip:")


def register_model(name: str, factory: Callable[..., Backbone]) -> None:
    """Register a built-in model name (a factory taking keyword options)."""
    _BUILTIN[name] = factory


def list_models() -> list[str]:
    """Built-in model names, followed by the accepted source prefixes."""
    return sorted(_BUILTIN) + [p + "<...>" for p in PREFIXES]


def create_backbone(name: str = DEFAULT_MODEL, device: str | torch.device = "cpu", **kw) -> Backbone:
    """Create a backbone from a model name (see module docstring for the accepted forms)."""
    from zscir.backbones.hf_clip import HFCLIPBackbone
    from zscir.backbones.hub import check_local_dir, resolve_hub_model

    # hub ids and folders are checked (files present, cache first, one short network try) before
    # transformers sees them: its own offline path retries for a minute and then names no missing file
    if name in _BUILTIN:
        bb = _BUILTIN[name](**kw)
    elif (lit_dir := lit_folder_of(name)) is not None:  # a LiT folder, by local-dir: or bare path
        bb = LiTBackbone.from_pretrained(lit_dir, name=name, **kw)
    elif name.startswith("hf-hub:"):
        bb = HFCLIPBackbone.from_pretrained(resolve_hub_model(name[len("hf-hub:"):]), name=name,
                                            local_files_only=True, **kw)
    elif name.startswith("local-dir:"):
        bb = HFCLIPBackbone.from_pretrained(check_local_dir(name[len("local-dir:"):]), name=name,
                                            local_files_only=True, **kw)
    elif name.startswith("open_clip:"):
        from zscir.backbones.open_clip_backend import OpenCLIPBackbone

        bb = OpenCLIPBackbone.create(name[len("open_clip:"):], **kw)
    elif Path(name).expanduser().is_dir():
        bb = HFCLIPBackbone.from_pretrained(check_local_dir(name), name=name, local_files_only=True, **kw)
    else:
        raise ValueError(
            f"unknown model {name!r}: use a built-in name ({', '.join(sorted(_BUILTIN))}), "
            "hf-hub:<org/name>, local-dir:<path> or open_clip:<arch>/<pretrained>"
        )
    return bb.to(device).eval()


def tiny_config_dict(name: str) -> dict:
    return asdict(TINY_CONFIGS[name])


@dataclass(frozen=True)
class ModelInfo:
    """What a built-in model is for, told to users where they pick or meet it (index, web page, docs)."""

    purpose: str
    real_images: bool = False  # False: ranks real photos at chance, so `zscir index` says so


#: how to choose a model that knows real pictures (printed next to a built-in that does not)
REAL_MODEL_HINT = ("for real photos choose a real CLIP, e.g. --model hf-hub:openai/clip-vit-base-patch32 "
                   "(from the local Hugging Face cache) or --model local-dir:/path/to/clip-folder; for icons and "
                   "clip-art, offline, --model lit-clipart (shipped; the [real] extra)")

MODEL_INFO: dict[str, ModelInfo] = {
    "world-clip": ModelInfo("a small CLIP trained only on zscir's procedural world of coloured shapes (demo, "
                            "tests, world benchmark); it ranks real photos at chance"),
    **{n: ModelInfo("random weights for unit tests; its rankings mean nothing") for n in TINY_CONFIGS},
    "lit-untrained": ModelInfo("pretrained image and text towers joined by untrained (random) projection "
                               "heads, the starting point of `zscir train lit`; its rankings mean nothing"),
    "lit-clipart": ModelInfo("real pretrained towers (EfficientNet-Lite0 + all-MiniLM-L6-v2, the [real] extra) "
                             "with heads trained on ~6.7K real captioned clip-art pictures (emoji, stamps, "
                             "openclipart): icons and clip-art; for photos a real CLIP is better",
                             real_images=True),
}


def model_info(name: str | None) -> ModelInfo | None:
    """The `ModelInfo` of a built-in model name; None for checkpoints named by prefix or path."""
    return MODEL_INFO.get(name or "")


def model_version(name: str | None) -> str | None:
    """The version a shipped built-in model states (its config.json's ``version``, e.g. ``lit-clipart-1``), or
    None: which trained weights ``lit-clipart`` is in this install (`zscir list models`, ``/health``)."""
    return builtin_lit_version(name or "")


def real_images_note(name: str | None) -> str | None:
    """One line for `zscir index`: what a built-in model that does not know real pictures is for."""
    info = model_info(name)
    if info is None or info.real_images:
        return None
    return f"note: model {name} is {info.purpose}; {REAL_MODEL_HINT}"


def checked_model_name(name: object, source: str | os.PathLike, option: str = "--model") -> str:
    """A backbone name recorded in a checkpoint, if it loads without naming a path elsewhere: a built-in, an
    ``hf-hub:owner/name`` or ``open_clip:arch/tag`` name; a model folder (``local-dir:`` or a bare path) is
    refused, so the user gives it with ``option`` (`zscir.backbones.folder_refs` explains why)."""
    where = field_location(source, "backbone")
    if not isinstance(name, str) or not name:
        raise FolderRefError(f"{where} is {name!r}, not a model name; give the model with {option}")
    if name in list_models():
        return name
    if name.startswith("hf-hub:") and is_hub_name(name[len("hf-hub:"):]) and "/" in name:
        return name
    if name.startswith("open_clip:"):
        arch, _, tag = name[len("open_clip:"):].partition("/")
        if "/" not in arch and is_hub_name(arch) and (not tag or ("/" not in tag and is_hub_name(tag))):
            return name
    kind = "a model folder" if name.startswith("local-dir:") or not name.startswith(PREFIXES) else "a model"
    raise FolderRefError(f"{where} is {name!r}: {kind} outside the checkpoint, which zscir does not load from a "
                         f"checkpoint's word; give it yourself with {option} {name}")
