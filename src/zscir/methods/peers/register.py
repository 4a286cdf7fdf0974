"""Registration of the peer reproductions ``searle``, ``lincir`` and ``pic2word-official``.

Each takes ``checkpoint=FILE`` (the released ``.pt``; there are no shipped weights) and the options
``template=...`` (overrides the peer's prompt; keep the placeholder space-separated) and ``batch_size``.
"""

from __future__ import annotations

from zscir.backbones.base import Backbone
from zscir.methods.peers.checkpoint import load_phi
from zscir.methods.peers.composer import PeerComposer
from zscir.methods.peers.specs import PEERS
from zscir.methods.registry import register_method


def build_peer(name: str, backbone: Backbone, checkpoint: str | None = None, template: str | None = None,
               batch_size: int = 128, **_: object) -> PeerComposer:
    spec = PEERS[name]
    if not checkpoint:
        files = " or ".join(f for f, _ in spec.files.values())
        raise ValueError(f"method {name!r} runs the released {spec.title.split(' (')[0]} weights: pass "
                         f"--checkpoint {files} (where to get it: docs/PEERS.md)")
    phi, info = load_phi(checkpoint, spec, backbone)
    return PeerComposer(backbone, spec, phi, info, template=template, batch_size=batch_size)


def _register(name: str, description: str) -> None:
    register_method(name, description, trained=True, peer=True, options=("template", "batch_size"))(
        lambda backbone, checkpoint=None, **options: build_peer(name, backbone, checkpoint, **options))


_register("searle", "SEARLE's released φ (SEARLE_ViT-B32.pt / _ViT-L14.pt): 'a photo of $ that {text}'")
_register("lincir", "LinCIR's released φ (lincir_large.pt, ViT-L/14): 'a photo of $ that {text}'")
_register("pic2word-official", "Pic2Word's released mapper (pic2word_model.pt, ViT-L/14): 'a photo of * , {text}'")
