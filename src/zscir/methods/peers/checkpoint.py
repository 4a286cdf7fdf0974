"""Loading a released peer checkpoint safely and strictly onto a backbone.

The released files are ``torch.save`` pickles of plain dicts of tensors (plus, for Pic2Word, training
bookkeeping such as the epoch and optimizer state). They are read by `zscir.backbones.tensor_files`
(``torch.load(weights_only=True)``), whose unpickler only rebuilds tensors and plain containers: a file that
would need arbitrary code to unpickle is refused with one clear error instead of being executed, and so is a
φ holding NaN, inf or absurd magnitudes. φ's sizes are inferred from the weight shapes and checked against
the backbone before anything is loaded, so a SEARLE-B/32 file on a ViT-L/14 backbone fails with a message
naming the right backbone rather than a shape error deep inside the encoder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zscir.backbones.base import Backbone
from zscir.backbones.tensor_files import TensorFileError, check_finite, load_torch_tensors
from zscir.methods.peers.phi import LayoutError, build_phi, infer_dims
from zscir.methods.peers.specs import PeerSpec

logger = logging.getLogger(__name__)


class PeerCheckpointError(ValueError):
    """The file is missing, unsafe, not of the peer's format, or does not fit the backbone."""


def read_checkpoint(path: str | Path) -> Any:
    """The file read by `zscir.backbones.tensor_files.load_torch_tensors` (``weights_only=True``, CPU);
    every failure becomes one `PeerCheckpointError`. Finiteness is checked on φ's weights only
    (`load_phi`): a released file's optimiser bookkeeping is never used."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PeerCheckpointError(f"checkpoint file not found: {p}")
    try:
        return load_torch_tensors(p, check=False)
    except TensorFileError as e:
        raise PeerCheckpointError(str(e)) from None


def _strip_prefix(state: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Remove a DataParallel/DDP ``module.`` prefix when every key carries it."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def extract_state(obj: Any, spec: PeerSpec, path: str | Path) -> dict[str, torch.Tensor]:
    """φ's state dict from a loaded checkpoint: ``obj[spec.container]``, or ``obj`` itself if it is one."""
    if not isinstance(obj, dict):
        raise PeerCheckpointError(f"{path}: expected a dict with key {spec.container!r}, got {type(obj).__name__}")
    if spec.container in obj:
        state = obj[spec.container]
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        logger.info("%s has no %r key; reading it as a bare φ state dict", path, spec.container)
        state = obj
    else:
        raise PeerCheckpointError(f"{path}: no {spec.container!r} entry, so not a {spec.title} file "
                                  f"(top-level keys: {', '.join(map(str, list(obj)[:10]))})")
    if not isinstance(state, dict) or not state:
        raise PeerCheckpointError(f"{path}: {spec.container!r} is not a state dict")
    state = _strip_prefix(state)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise PeerCheckpointError(f"{path}: {spec.container!r} holds non-tensor entries ({', '.join(bad[:5])})")
    return state


def check_backbone(dims: dict[str, int], spec: PeerSpec, backbone: Backbone, path: str | Path) -> None:
    """Refuse a φ whose input is not the backbone's projection dim or whose output is not its token width."""
    want_in, want_out = dims["in_dim"], dims["out_dim"]
    have_in, have_out = backbone.embed_dim, backbone.token_embed_dim
    if (want_in, want_out) == (have_in, have_out):
        return
    hint = ""
    if want_in in spec.files:
        fname, model = spec.files[want_in]
        hint = f" ({fname} belongs with --model {model})"
    raise PeerCheckpointError(
        f"{path}: this {spec.title} maps {want_in}-d image embeddings to {want_out}-d token embeddings, but "
        f"backbone {backbone.name!r} has projection dim {have_in} and token width {have_out}{hint}")


def load_phi(path: str | Path, spec: PeerSpec, backbone: Backbone) -> tuple[nn.Module, dict[str, Any]]:
    """Read, check and strictly load the φ of ``spec`` from ``path``; returns (φ in eval mode, info)."""
    state = extract_state(read_checkpoint(path), spec, path)
    try:  # NaN / inf / absurd weights would make every score -inf or NaN: refuse them here, once
        check_finite(state, Path(path).expanduser())
    except TensorFileError as e:
        raise PeerCheckpointError(str(e)) from None
    try:
        dims = infer_dims(state, spec.layout)
    except LayoutError as e:
        raise PeerCheckpointError(f"{path}: {e}") from None
    check_backbone(dims, spec, backbone, path)
    phi = build_phi(spec.layout, dims)
    try:
        phi.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PeerCheckpointError(f"{path}: does not load strictly as a {spec.layout}-layout φ: {e}") from None
    phi.to(backbone.device)
    info = {"checkpoint": str(Path(path).expanduser()), "layout": spec.layout, "container": spec.container,
            "phi_dims": dims}
    return phi.eval().requires_grad_(False), info
