"""`PseudoTokenComposer`: the query side of Pic2Word and TSCIR (Stage I alone or Stage I + II).

Query = text encoder (+ VSI, + composing adapters when Stage II is loaded) on the template with ``$``
replaced by φ(reference image) and the modification text filled in. VSI modules and adapters are attached
to the (possibly shared) backbone owned by this composer's mapping and adapters, so they run in its own
query calls only: every other method on the backbone keeps the plain text encoder. The gallery side is the plain image
embedding (`ImageGalleryComposer`), so gallery features are shared with the image/sum baselines and with
every other pseudo-token checkpoint on the same backbone.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from zscir.backbones.base import Backbone
from zscir.config_check import check_int
from zscir.methods.baselines import ImageGalleryComposer
from zscir.methods.tscir.adapters import ComposingAdapters
from zscir.methods.tscir.mapping import Mapping


def fill_template(template: str, text: str) -> str:
    """Put ``text`` into ``template`` ("a photo of $ that {}"); a literal ``$`` in the text is dropped,
    since every placeholder must be the pseudo-token."""
    return template.replace("{}", text.replace("$", " ").strip())


class PseudoTokenComposer(ImageGalleryComposer):
    """Composed query = text encoder on a pseudo-word prompt; gallery = plain image embeddings."""

    def __init__(self, backbone: Backbone, mapping: Mapping, adapters: ComposingAdapters | None = None,
                 template: str = "a photo of $ that {}", name: str = "tscir", info: dict[str, Any] | None = None,
                 batch_size: int = 128):
        super().__init__(backbone)
        check_int(batch_size, "batch_size", 1, 65536)
        if not isinstance(template, str) or template.count("$") != 1 or "{}" not in template:
            raise ValueError(f"template must contain one '$' and one '{{}}', got {template!r}")
        backbone.fingerprint()  # fix the gallery cache key before any adapter touches the text encoder
        self.name = name
        self.mapping = mapping.eval()
        self.adapters = adapters
        self.template = template
        self.info = dict(info or {})
        self.batch_size = batch_size
        mapping.attach(backbone)
        if adapters is not None:
            adapters.attach(backbone)
            adapters.eval()

    @torch.no_grad()
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        def encode(pix: torch.Tensor, batch: Sequence[str]) -> torch.Tensor:
            glob, patches = self.mapping.image_inputs(self.backbone, pix)
            prompts = [fill_template(self.template, t) for t in batch]
            return self.mapping.encode(self.backbone, prompts, glob, patches, self.adapters)

        return self.encode_query_batches(self.backbone, self.batch_size, reference_images, texts, encode)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "template": self.template, **self.info}
