"""TSCIR ("From Mapping to Composing", arXiv 2504.17990) and Pic2Word as a configuration of the same code.

Stage I (mapping) learns a token learner φ that maps the frozen image encoder's output to a pseudo-word
``$`` (optionally refined inside the text encoder by Visual Semantic Injection and trained with soft text
alignment); Stage II (composing) freezes Stage I and trains lightweight composing adapters in the text
encoder on a small triplet set. Pic2Word = Stage I with φ only (no VSI, no soft alignment, no Stage II).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zscir.methods.tscir.composer import PseudoTokenComposer
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config

__all__ = ["AdapterConfig", "MappingConfig", "PseudoTokenComposer", "Stage1Config", "Stage2Config"]
_HOME = {"PseudoTokenComposer": "zscir.methods.tscir.composer", "AdapterConfig": "zscir.methods.tscir.config",
         "MappingConfig": "zscir.methods.tscir.config", "Stage1Config": "zscir.methods.tscir.config",
         "Stage2Config": "zscir.methods.tscir.config"}


def __getattr__(name: str) -> Any:
    """Names on first use: importing one submodule (the method registry imports ``register``) must not pay
    for torch (the composer) or the data layer (the configs)."""
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
