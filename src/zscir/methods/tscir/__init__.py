"""TSCIR ("From Mapping to Composing", arXiv 2504.17990) and Pic2Word as a configuration of the same code.

Stage I (mapping) learns a token learner φ that maps the frozen image encoder's output to a pseudo-word
``$`` (optionally refined inside the text encoder by Visual Semantic Injection and trained with soft text
alignment); Stage II (composing) freezes Stage I and trains lightweight composing adapters in the text
encoder on a small triplet set. Pic2Word = Stage I with φ only (no VSI, no soft alignment, no Stage II).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config

if TYPE_CHECKING:
    from zscir.methods.tscir.composer import PseudoTokenComposer

__all__ = ["AdapterConfig", "MappingConfig", "PseudoTokenComposer", "Stage1Config", "Stage2Config"]


def __getattr__(name: str) -> Any:
    """`PseudoTokenComposer` on first use: it imports torch, which ``zscir --help`` must not pay for."""
    if name == "PseudoTokenComposer":
        from zscir.methods.tscir.composer import PseudoTokenComposer

        return PseudoTokenComposer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
