"""The Stage I model: φ plus the VSI modules, bound to a backbone.

`Mapping` owns every Stage I parameter (so one ``state_dict`` is the whole Stage I checkpoint) and knows
how to turn images into pseudo-token text embeddings: image → (global embedding, patch tokens) with the
frozen vision tower, φ(global) → ``$``, text encoder (+VSI reading the patch tokens) on the prompt.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from zscir.backbones.base import Backbone
from zscir.config_check import ModelConfigError
from zscir.methods.tscir.config import MappingConfig
from zscir.methods.tscir.token_learner import TokenLearner, mean_token_norm
from zscir.methods.tscir.vsi import PATCH_KEY, VSIModule


class Mapping(nn.Module):
    """φ and VSI for one backbone. Call `attach` once to hook the VSI modules into the text encoder."""

    def __init__(self, backbone: Backbone, cfg: MappingConfig):
        super().__init__()
        self.cfg = cfg
        try:
            norm = mean_token_norm(backbone)
        except AttributeError:  # a backbone without an HF-style embedding table: leave φ's scale free
            norm = None
        self.phi = TokenLearner(backbone.embed_dim, backbone.token_embed_dim, cfg.phi_hidden, cfg.phi_layers,
                                cfg.phi_dropout, target_norm=norm)
        n = backbone.num_text_layers
        bad = [layer for layer in cfg.vsi_layers if not -n <= layer < n]
        if bad:
            raise ModelConfigError(f"vsi_layers {bad} out of range: backbone {backbone.name!r} has {n} text layers "
                                   f"(0..{n - 1}, or -{n}..-1 counting back)")
        if backbone.token_embed_dim % cfg.vsi_heads:
            raise ModelConfigError(f"vsi_heads {cfg.vsi_heads} must divide the text width "
                                   f"{backbone.token_embed_dim} of backbone {backbone.name!r}")
        self.vsi_layers = sorted({layer % n for layer in cfg.vsi_layers})
        if n - 1 in self.vsi_layers:
            # the pooled output is the EOS token's state: after the last layer nothing carries $ to it
            raise ModelConfigError(f"VSI after the last text layer ({n - 1}) cannot influence the text embedding; "
                             f"choose layers in 0..{n - 2}")
        self.vsi = nn.ModuleList(
            VSIModule(backbone.token_embed_dim, backbone.vision_width, cfg.vsi_heads) for _ in self.vsi_layers
        )
        # a plain attribute (not a submodule): the backbone's weights are not part of Stage I's state
        self.__dict__["_attached_to"] = None

    @property
    def uses_vsi(self) -> bool:
        return len(self.vsi_layers) > 0

    def attach(self, backbone: Backbone) -> None:
        """Hook the VSI modules into ``backbone``'s text encoder, owned by this mapping.

        They run only in `encode` calls of this mapping, so other methods on the same backbone (another
        checkpoint's prompts, the baselines' texts) never pass through them.
        """
        if self._attached_to is backbone:
            return
        for layer, mod in zip(self.vsi_layers, self.vsi):
            backbone.attach_text_module(layer, mod, owner=self)
        self.__dict__["_attached_to"] = backbone

    def image_inputs(self, backbone: Backbone, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frozen vision tower → (global embedding, patch tokens or None when VSI is off)."""
        with torch.no_grad():
            if self.uses_vsi:
                glob, patches = backbone.encode_image_tokens(pixels)
                return glob.float(), patches
            return backbone.encode_image(pixels).float(), None

    def encode(self, backbone: Backbone, texts: Sequence[str] | dict, image_embeds: torch.Tensor,
               patches: torch.Tensor | None, adapters: nn.Module | None = None) -> torch.Tensor:
        """Text embeddings of prompts containing one ``$`` each, ``$`` = φ(image), VSI reading ``patches``.

        ``adapters`` (Stage II `ComposingAdapters` attached to the same backbone) also run when given; no
        other module attached to the backbone does.
        """
        return self.encode_pseudo(backbone, texts, self.phi(image_embeds.to(backbone.device)), patches, adapters)

    def encode_pseudo(self, backbone: Backbone, texts: Sequence[str] | dict, pseudo: torch.Tensor,
                      patches: torch.Tensor | None, adapters: nn.Module | None = None) -> torch.Tensor:
        """`encode` with φ's output given (Stage I training runs φ on the global batch, the text on a slice)."""
        self.attach(backbone)
        extras = {PATCH_KEY: patches} if patches is not None else None
        return backbone.encode_text(texts, pseudo_tokens=pseudo, extras=extras, owners=(self, adapters))
