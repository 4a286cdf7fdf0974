"""Visual Semantic Injection (VSI): keeps feeding visual detail into the pseudo-token inside the text encoder.

A single pseudo-word vector has little capacity; VSI lets the ``$`` position's hidden state cross-attend to
the vision tower's patch tokens after chosen text layers, so fine-grained visual semantics (which object is
where, textures, ...) can enter where one vector cannot carry them. Design (our reading of the abstract):

* only placeholder positions change, so captions and the modification words are untouched and a text
  without ``$`` (or a call without patch tokens) passes through unchanged;
* pre-LayerNorm cross-attention (queries from the ``$`` hidden state, keys/values from projected patch
  tokens) with a tanh gate initialised at 0, so training starts exactly from the Pic2Word-style model and
  the frozen encoder is never disturbed early on (Flamingo-style gating).
"""

from __future__ import annotations

import torch
from torch import nn

from zscir.backbones.base import TextHookContext, TextLayerModule

#: key of the patch tokens (B, P, vision_width) in `TextHookContext.extras`
PATCH_KEY = "patch_tokens"


class VSIModule(TextLayerModule):
    """Gated cross-attention from the ``$`` hidden state to the image's patch tokens."""

    def __init__(self, text_width: int, vision_width: int, heads: int = 4):
        super().__init__()
        self.norm_q = nn.LayerNorm(text_width)
        self.norm_kv = nn.LayerNorm(vision_width)
        self.kv_proj = nn.Linear(vision_width, text_width)
        self.attn = nn.MultiheadAttention(text_width, heads, batch_first=True)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, hidden_states: torch.Tensor, ctx: TextHookContext) -> torch.Tensor:
        patches = ctx.extras.get(PATCH_KEY)
        pmask = ctx.placeholder_mask
        if patches is None or not bool(pmask.any()):
            return hidden_states
        rows, cols = pmask.nonzero(as_tuple=True)  # one entry per placeholder occurrence
        q = self.norm_q(hidden_states[rows, cols])[:, None, :]  # (n, 1, W)
        kv = self.kv_proj(self.norm_kv(patches[rows].to(hidden_states.dtype)))  # (n, P, W)
        inj, _ = self.attn(q, kv, kv, need_weights=False)
        out = hidden_states.clone()
        out[rows, cols] = hidden_states[rows, cols] + torch.tanh(self.gate) * inj[:, 0]
        return out
