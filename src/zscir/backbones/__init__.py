"""Backbone layer: CLIP-like dual encoders behind one interface (see `zscir.backbones.base`)."""

from zscir.backbones.base import Backbone, TextHookContext, TextLayerModule
from zscir.backbones.registry import (
    DEFAULT_MODEL,
    TINY_CONFIGS,
    WORLD_CLIP_CONFIG,
    TinyCLIPConfig,
    create_backbone,
    list_models,
    register_model,
)

__all__ = [
    "Backbone", "TextHookContext", "TextLayerModule", "DEFAULT_MODEL", "TINY_CONFIGS", "WORLD_CLIP_CONFIG",
    "TinyCLIPConfig", "create_backbone", "list_models", "register_model",
]
