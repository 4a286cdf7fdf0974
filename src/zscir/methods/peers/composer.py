"""`PeerComposer`: queries built exactly as SEARLE, LinCIR and Pic2Word build them.

Query = text encoder on the peer's prompt, with the placeholder token's *input embedding* replaced by
φ(raw image embedding) before the positional embeddings are added; the encoder then runs unchanged
(causal transformer, final layer norm, pooling at the end-of-text token, text projection). Unlike zscir's
own token learner (`zscir.methods.tscir.token_learner`), φ's input is the un-normalised projected image
embedding and its output is used as is (no rescaling): that is what the released weights were trained for.

The gallery side is the plain image embedding (`ImageGalleryComposer`), so gallery features and indexes
are shared with the image/sum baselines and zscir's Pic2Word/TSCIR on the same backbone.

The peers tokenize with OpenAI's tokenizer, which cleans text first (ftfy, HTML unescaping); prompts get
the same cleaning (`openai_text_clean`) before the backbone's tokenizer sees them. The replacement goes
through `Backbone.encode_text(pseudo_tokens=..., placeholder_mask=...)`, i.e. the
backbone's token-embedding hook, so the encoder's code is never copied and any backend works.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image
from torch import nn

from zscir.backbones.base import Backbone
from zscir.backbones.openai_bpe import openai_text_clean
from zscir.methods.baselines import ImageGalleryComposer
from zscir.methods.peers.specs import PeerSpec


def backbone_token_id(backbone: Backbone, text: str) -> int:
    """The id of ``text`` when the backbone's tokenizer makes exactly one token of it (between BOS/EOS)."""
    tok = backbone.tokenize([text])
    ids = tok["input_ids"][0][tok["attention_mask"][0].bool()].tolist()
    if len(ids) != 3:
        raise ValueError(f"placeholder {text!r} is {len(ids) - 2} tokens for the tokenizer of {backbone.name!r}; "
                         "the peer prompts need it to be exactly one")
    return int(ids[1])


def placeholder_positions(input_ids: torch.Tensor, token_id: int, replace: str) -> torch.Tensor:
    """(B, L) bool mask of the positions that receive φ(image): every occurrence, or only the first."""
    mask = input_ids == token_id
    if replace == "first":
        mask = mask & (mask.long().cumsum(1) == 1)
    elif replace != "all":
        raise ValueError(f"replace must be 'all' or 'first', got {replace!r}")
    return mask


class PeerComposer(ImageGalleryComposer):
    """Composed query of a released peer φ; gallery = plain image embeddings of the same backbone."""

    def __init__(self, backbone: Backbone, spec: PeerSpec, phi: nn.Module, info: dict[str, Any] | None = None,
                 template: str | None = None, batch_size: int = 128):
        super().__init__(backbone)
        self.spec = spec
        self.name = spec.name
        self.phi = phi.eval()
        self.template = template or spec.template
        if self.template.count(spec.placeholder) != 1 or self.template.count("{}") != 1:
            raise ValueError(f"{spec.name} template must contain {spec.placeholder!r} once and '{{}}' once, "
                             f"got {self.template!r}")
        self.placeholder_id = backbone_token_id(backbone, spec.placeholder)
        self.info = dict(info or {})
        self.batch_size = batch_size

    def protocol_preset(self, benchmark: str) -> dict[str, Any]:
        return self.spec.protocol_preset(benchmark)

    def prompts(self, texts: Sequence[str]) -> list[str]:
        """The peer's prompt around each modification text, cleaned as OpenAI's tokenizer cleans it."""
        return [openai_text_clean(self.template.replace("{}", t)) for t in texts]

    @torch.no_grad()
    def pseudo_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → (B, token_dim): φ of the raw (un-normalised) projected image embedding."""
        raw = self.backbone.encode_image(pixel_values, normalize=False)
        p = next(self.phi.parameters())
        return self.phi(raw.to(p.device, p.dtype))

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], tokens: torch.Tensor) -> torch.Tensor:
        """Normalised text features of ``prompts`` with the placeholder position(s) of row b set to tokens[b]."""
        tok = self.backbone.tokenize(list(prompts))
        mask = placeholder_positions(tok["input_ids"], self.placeholder_id, self.spec.replace)
        counts = mask.sum(1)
        if bool((counts == 0).any()):
            bad = int((counts == 0).nonzero()[0, 0])
            raise ValueError(f"prompt {prompts[bad]!r} lost its placeholder {self.spec.placeholder!r} in tokenization")
        out = torch.empty(len(prompts), self.backbone.embed_dim)
        for c in counts.unique().tolist():  # the backbone takes n vectors per text; group texts by n
            rows = (counts == c).nonzero().squeeze(1)
            sub = {k: v[rows] for k, v in tok.items()}
            pseudo = tokens[rows.to(tokens.device), None, :].expand(-1, c, -1)
            feats = self.backbone.encode_text(sub, normalize=True, pseudo_tokens=pseudo, placeholder_mask=mask[rows])
            out[rows] = feats.float().cpu()
        return out

    @torch.no_grad()
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        return self.encode_query_batches(self.backbone, self.batch_size, reference_images, texts,
                                         lambda pix, t: self.encode_prompts(self.prompts(t), self.pseudo_tokens(pix)))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.spec.describe(), "template": self.template,
                "placeholder_id": self.placeholder_id, **self.info}
