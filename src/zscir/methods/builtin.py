"""Registration of the built-in methods (import side effects only)."""

from __future__ import annotations

from zscir.methods.baselines import ImageOnlyComposer, SlerpComposer, SumFusionComposer, TextOnlyComposer
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


#: the default grid of a fusion method's text share, as `zscir eval --tune-on val` tries it
SHARE_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@register_method("sum", "weighted sum of image and text embeddings (weight = text share, default 0.5)",
                 options=("weight", "template"), grid=("weight", SHARE_GRID))
def _sum(backbone, checkpoint=None, weight: float = 0.5, template: str = "{}", **kw):
    _no_checkpoint("sum", checkpoint)
    return SumFusionComposer(backbone, weight=weight, template=template)


@register_method("slerp", "spherical interpolation from the image towards the text embedding (alpha = text "
                 "share of the angle, default 0.5; Jang et al., ECCV 2024)",
                 options=("alpha", "template"), grid=("alpha", SHARE_GRID))
def _slerp(backbone, checkpoint=None, alpha: float = 0.5, template: str = "{}", **kw):
    _no_checkpoint("slerp", checkpoint)
    return SlerpComposer(backbone, alpha=alpha, template=template)
