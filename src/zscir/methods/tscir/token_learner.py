"""The token learner φ: image embedding → one pseudo-word vector in the text token-embedding space.

As in Pic2Word, φ is a small MLP on the frozen image encoder's *global, normalised* embedding. Its input
is the projected embedding (not the vision tower's hidden states) so that φ works with any backbone of
the backbone layer, whose only guaranteed image output is that embedding; the patch tokens enter through
VSI instead. The output scale is matched to the real token embeddings (``target_norm``), since the text
encoder was only ever trained on vectors of that magnitude.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenLearner(nn.Module):
    """MLP φ mapping (B, embed_dim) image embeddings to (B, token_embed_dim) pseudo-word vectors."""

    def __init__(self, embed_dim: int, token_dim: int, hidden: int = 512, layers: int = 3,
                 dropout: float = 0.1, target_norm: float | None = None):
        super().__init__()
        dims = [embed_dim] + [hidden] * (layers - 1) + [token_dim]
        mods: list[nn.Module] = []
        for i in range(layers):
            mods.append(nn.Linear(dims[i], dims[i + 1]))
            if i < layers - 1:
                mods += [nn.ReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*mods)
        # Mean norm of the real word embeddings; the MLP output direction is free, its norm is rescaled.
        self.register_buffer("target_norm", torch.tensor(float(target_norm or 0.0)))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        out = self.mlp(image_embeds)
        if float(self.target_norm) > 0:
            out = nn.functional.normalize(out, dim=-1) * self.target_norm
        return out


def mean_token_norm(backbone) -> float:
    """Mean L2 norm of the backbone's word embeddings (the scale φ's output is given)."""
    enc = backbone.text_encoder
    # CLIP's text transformer names its table ``embeddings.token_embedding``; HF AutoModel text towers (the
    # LiT backbone's BERT) expose theirs through ``get_input_embeddings()``
    table = enc.get_input_embeddings() if hasattr(enc, "get_input_embeddings") else enc.embeddings.token_embedding
    return float(table.weight.detach().float().norm(dim=-1).mean())
