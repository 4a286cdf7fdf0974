"""Registration of the built-in methods (import side effects only)."""

from __future__ import annotations

from zscir.methods.baselines import ImageOnlyComposer, SumFusionComposer, TextOnlyComposer
from zscir.methods.registry import register_method


def _no_checkpoint(name: str, checkpoint: str | None) -> None:
    if checkpoint:
        raise ValueError(f"method {name!r} is training-free and takes no checkpoint")


@register_method("image", "image-only baseline: the reference image's embedding", options=())
def _image(backbone, checkpoint=None, **kw):
    _no_checkpoint("image", checkpoint)
    return ImageOnlyComposer(backbone)


@register_method("text", "text-only baseline: the modification text's embedding", options=("template",))
def _text(backbone, checkpoint=None, template: str = "{}", **kw):
    _no_checkpoint("text", checkpoint)
    return TextOnlyComposer(backbone, template=template)


@register_method("sum", "weighted sum of image and text embeddings (weight = text share, default 0.5)",
                 options=("weight", "template"))
def _sum(backbone, checkpoint=None, weight: float = 0.5, template: str = "{}", **kw):
    _no_checkpoint("sum", checkpoint)
    return SumFusionComposer(backbone, weight=weight, template=template)
