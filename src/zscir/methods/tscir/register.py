"""Registration of ``pic2word`` and ``tscir`` (one implementation; checkpoints shipped per built-in model).

Both factories accept ``checkpoint=DIR`` (any Stage I or Stage II folder) and otherwise load the
checkpoint shipped for the backbone: ``zscir/assets/<model>/methods/<method>/`` for a built-in model that has one
(``lit-clipart``), else the world-clip one in ``zscir/assets/<method>/``. ``template=...`` overrides the
query prompt stored in the checkpoint (it must contain one ``$`` and one ``{}``).
"""

from __future__ import annotations

from pathlib import Path

from zscir.backbones.assets import shipped_model_dir
from zscir.backbones.base import Backbone
from zscir.methods.registry import register_method
from zscir.methods.tscir.checkpoint import load_checkpoint
from zscir.methods.tscir.composer import PseudoTokenComposer


def shipped_checkpoint(method: str, model: str | None = None) -> Path:
    """Folder of the checkpoint shipped inside the package for ``method``: the one trained for the built-in
    ``model`` (``zscir/assets/<model>/methods/<method>``) when the package has one, else the world-clip one
    (``zscir/assets/<method>``)."""
    if model and (shipped_model_dir(model) / "methods" / method / "config.json").is_file():
        return shipped_model_dir(model) / "methods" / method
    return shipped_model_dir(method)


def build_composer(method: str, backbone: Backbone, checkpoint: str | None = None, template: str | None = None,
                   batch_size: int = 128, **_: object) -> PseudoTokenComposer:
    path = Path(checkpoint) if checkpoint else shipped_checkpoint(method, backbone.name)
    if not checkpoint and not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no shipped {method} checkpoint at {path}; train one with `zscir train tscir-stage1"
            f"{' --pic2word' if method == 'pic2word' else ''} ...` and pass --checkpoint DIR"
        )
    mapping, adapters, cfg = load_checkpoint(path, backbone)
    info = {"checkpoint": str(path), "stage": cfg["stage"], "checkpoint_method": cfg.get("method"),
            "vsi_layers": list(mapping.vsi_layers)}
    if adapters is not None:
        info["adapter"] = adapters.cfg.kind
    return PseudoTokenComposer(backbone, mapping, adapters, template=template or cfg.get("template") or
                               "a photo of $ that {}", name=method, info=info, batch_size=batch_size)


#: the options `build_composer` reads (``-O template=... -O batch_size=...``)
OPTIONS = ("template", "batch_size")


@register_method("pic2word", "Pic2Word: one pseudo-word token φ(image) in 'a photo of $ that {text}'",
                 trained=True, options=OPTIONS)
def _pic2word(backbone, checkpoint=None, **options):
    return build_composer("pic2word", backbone, checkpoint, **options)


@register_method("tscir", "TSCIR: Stage I token + VSI + soft alignment, Stage II composing adapters",
                 trained=True, options=OPTIONS)
def _tscir(backbone, checkpoint=None, **options):
    return build_composer("tscir", backbone, checkpoint, **options)
