"""The backbone interface: a CLIP-like dual encoder, as every zscir method needs it.

Every method in zscir talks to its vision-language model through this one interface, so a method written
against the tiny test model runs unchanged on a real CLIP checkpoint. The capabilities are exactly the ones
the seed methods need:

* global image embeddings (all methods) and the vision tower's patch tokens (TSCIR's Visual Semantic
  Injection cross-attends to them);
* text embeddings, optionally with placeholder tokens (``$``) replaced by given vectors in the
  token-embedding space (pseudo-word methods: Pic2Word, SEARLE, TSCIR);
* modules attached to chosen text-encoder layers (VSI modules, composing adapters), run as forward hooks so
  that the encoder's own code is never copied. Each attached module has an *owner* and runs only in the
  text calls that name it (``encode_text(..., owners=...)``), so methods sharing one backbone never see
  each other's modules (see `zscir.backbones.hooks`);
* a tokenizer and an image preprocessor that travel with the checkpoint.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torch import nn


@dataclass
class TextHookContext:
    """What a text-layer module sees besides the hidden states of its layer.

    Attributes:
        input_ids: (B, L) token ids of the batch being encoded.
        attention_mask: (B, L) 1 for real tokens, 0 for padding.
        placeholder_mask: (B, L) bool, True at placeholder (pseudo-word) positions.
        extras: free per-call inputs, e.g. ``{"patch_tokens": (B, P, Dv)}`` for VSI modules.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    placeholder_mask: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)


class TextLayerModule(nn.Module):
    """Base class for modules attached after a text-encoder layer.

    ``forward(hidden_states, ctx)`` returns the new hidden states (same shape). Implementations should be
    residual and zero-initialised where they are meant to start as the identity.
    """

    def forward(self, hidden_states: torch.Tensor, ctx: TextHookContext) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class Backbone(nn.Module, ABC):
    """A CLIP-like dual encoder with the hooks composed-retrieval methods need."""

    #: the model name it was created from (with its source prefix)
    name: str = ""

    # --- sizes -------------------------------------------------------------------------------------
    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Dimension of the joint (projected) embedding space."""

    @property
    @abstractmethod
    def token_embed_dim(self) -> int:
        """Dimension of the text encoder's token-embedding space (where pseudo-words live)."""

    @property
    @abstractmethod
    def vision_width(self) -> int:
        """Dimension of the vision tower's patch tokens."""

    @property
    @abstractmethod
    def num_text_layers(self) -> int:
        """Number of transformer layers in the text encoder."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- preprocessing -----------------------------------------------------------------------------
    @abstractmethod
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images → (B, 3, H, W) pixel tensor with the checkpoint's own preprocessing."""

    @property
    def input_side(self) -> int | None:
        """The short side (px) `preprocess` resizes every image to first, or None where unknown.

        Why: pixels decoded beyond this side only cost time, so the indexer has JPEGs decoded at the
        smallest DCT scale that keeps this side (`zscir.data.imageio.load_image`'s ``min_side``).
        """
        return None

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts → {"input_ids": (B, L), "attention_mask": (B, L)} with the checkpoint's tokenizer."""

    @property
    @abstractmethod
    def placeholder_token_id(self) -> int:
        """Token id of the placeholder (``$`` by default) that pseudo-word vectors replace."""

    # --- encoders ----------------------------------------------------------------------------------
    @abstractmethod
    def encode_image(self, pixel_values: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(B, 3, H, W) → (B, embed_dim) global image embeddings."""

    @abstractmethod
    def encode_image_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) → (normalised global embedding (B, embed_dim), patch tokens (B, P, vision_width))."""

    @abstractmethod
    def encode_text(
        self,
        texts: Sequence[str] | dict[str, torch.Tensor],
        normalize: bool = True,
        pseudo_tokens: torch.Tensor | None = None,
        extras: dict[str, Any] | None = None,
        placeholder_mask: torch.Tensor | None = None,
        owners: Sequence[Any] = (),
    ) -> torch.Tensor:
        """Texts (or a tokenized batch) → (B, embed_dim) text embeddings.

        Args:
            pseudo_tokens: optional (B, n, token_embed_dim) vectors; the i-th placeholder token of text b is
                replaced by ``pseudo_tokens[b, i]`` in the token-embedding space. Every text must contain
                exactly n placeholders.
            extras: passed to attached text-layer modules through `TextHookContext.extras`.
            placeholder_mask: optional (B, L) bool mask of the positions that count as placeholders, for a
                tokenized batch; default: every ``placeholder_token_id``. Peer methods use it for another
                placeholder token (Pic2Word's ``*``) or only its first occurrence.
            owners: the owners (see `attach_text_module`) whose attached modules and switches are active in
                this call; modules of any other owner are skipped.
        """

    # --- text-layer modules -----------------------------------------------------------------------
    @abstractmethod
    def attach_text_module(self, layer: int, module: TextLayerModule, owner: Any = None) -> None:
        """Run ``module`` on the output of text-encoder layer ``layer`` (0-based; negatives count back).

        With an ``owner`` (any object, compared by identity) the module runs only in `encode_text` calls
        whose ``owners`` include it: a method attaching modules to a shared backbone changes nothing for
        the other methods. Without one it runs in every call.
        """

    @abstractmethod
    def add_text_switch(self, owner: Any, switch: Callable[[bool], None]) -> None:
        """Register ``switch(on)`` for modules living inside the encoder's layers (e.g. peft LoRA).

        It is called with True before a text call whose ``owners`` include ``owner`` and with False after
        it; the owner keeps its modules switched off otherwise.
        """

    @abstractmethod
    def detach_text_modules(self) -> list[tuple[int, TextLayerModule]]:
        """Remove every attached text-layer module; returns what was attached."""

    @property
    @abstractmethod
    def text_encoder(self) -> nn.Module:
        """The underlying text transformer (for adapter libraries such as peft)."""

    # --- convenience -------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 128) -> torch.Tensor:
        """PIL images → (N, embed_dim) normalised embeddings, batched, on CPU."""
        out = [self.encode_pixels(self.preprocess(images[i : i + batch_size]), batch_size)
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """`encode_images` of already preprocessed pixels (N, 3, H, W): the same batches, the same result."""
        out = [self.encode_image(pixels[i : i + batch_size].to(self.device)).float().cpu()
               for i in range(0, len(pixels), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Texts → (N, embed_dim) normalised embeddings, batched, on CPU."""
        out = []
        for i in range(0, len(texts), batch_size):
            out.append(self.encode_text(list(texts[i : i + batch_size])).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim)

    def freeze(self) -> "Backbone":
        """Freeze every parameter of the dual encoder (attached modules keep their own flags)."""
        for p in self.model_parameters():
            p.requires_grad_(False)
        return self

    def model_parameters(self):
        """Parameters of the encoders themselves, excluding attached modules."""
        return self.parameters()

    def fingerprint(self) -> str:
        """A short hash of the weights, so cached features are never reused across different weights.

        Hashes a strided sample of every parameter (≤ 1024 values each) plus all shapes: cheap even for
        large checkpoints, yet any retraining changes it.
        """
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha1(self.tokenizer_signature().encode())
            with torch.no_grad():
                for name, p in self.model_named_parameters():
                    flat = p.detach().reshape(-1)
                    sample = flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy().tobytes()
                    h.update(name.encode() + str(tuple(p.shape)).encode() + sample)
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def tokenizer_signature(self) -> str:
        """A string that changes whenever the tokenizer maps text to different ids (part of the fingerprint)."""
        return ""

    def model_named_parameters(self):
        """Named parameters of the encoders themselves, excluding attached modules."""
        return self.named_parameters()

    def describe(self) -> dict[str, Any]:
        return {"model": self.name, "embed_dim": self.embed_dim, "fingerprint": self.fingerprint()}
