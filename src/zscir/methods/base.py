"""The `Composer` interface shared by every composed-retrieval method.

A composer turns (reference image, modification text) pairs into query embeddings and gallery images into
gallery embeddings, both L2-normalised, so that ranking is a cosine similarity. Methods are free to embed
the gallery differently (Fusion-Diff embeds gallery images *with* a caption in a fused space), which is why
the gallery side is part of the interface rather than fixed to the image encoder.

Callers batch: each call receives one batch of PIL images / strings and must not rely on state from an
earlier call. `gallery_cache_key()` tells evaluation code when two composers embed a gallery identically,
so gallery features can be computed once and shared (image-only, sum fusion, Pic2Word and TSCIR all embed
the gallery with the plain image encoder of the same backbone).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import torch
from PIL import Image


class Composer(ABC):
    """Base class of query/gallery encoders for composed image retrieval."""

    #: registry name of the method ("image", "text", "sum", "pic2word", "tscir", "fusiondiff", ...)
    name: str = "base"
    #: what a query of this method reads: ("image", "text") composes both; the single-input baselines read
    #: one (a search with only a picture or only a text picks them; see zscir.index.query)
    query_inputs: tuple[str, ...] = ("image", "text")

    @abstractmethod
    def encode_queries(self, reference_images: Sequence[Image.Image], texts: Sequence[str]) -> torch.Tensor:
        """Return an (N, D) float tensor of L2-normalised query embeddings, one per (image, text) pair."""

    @abstractmethod
    def encode_gallery(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Return an (N, D) float tensor of L2-normalised gallery embeddings."""

    def gallery_cache_key(self) -> str:
        """A string identifying how `encode_gallery` embeds images (model + preprocessing + space).

        Two composers returning the same key produce identical gallery embeddings, so cached gallery
        features may be shared between them.
        """
        return f"{type(self).__module__}.{type(self).__qualname__}:{id(self)}"

    def gallery_input_side(self) -> int | None:
        """The short side (px) below which `encode_gallery` loses detail, or None where unknown.

        The indexer decodes JPEGs no smaller than this (the DCT-scaled decode of a 12 MP photo at 1/8 costs
        much less than at the general 512 px bound); None keeps the general bound. Only composers whose
        gallery side is the backbone's plain preprocessing know it (`ImageGalleryComposer`).
        """
        return None

    def prepare_gallery_image(self, image: Image.Image) -> torch.Tensor | None:
        """The per-image part of `encode_gallery` (its preprocessing), or None where it cannot be split off.

        The indexer runs it with the decoding, in its decode threads, so the thread that runs the model does
        no per-image work while the pool keeps up (`encode_prepared_gallery`); the embeddings are those of
        `encode_gallery`.
        """
        return None

    def encode_prepared_gallery(self, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        """`encode_gallery` of images given as `prepare_gallery_image` results (only where those are not None)."""
        raise NotImplementedError(f"{type(self).__name__} does not split its gallery encoding")

    def protocol_preset(self, benchmark: str) -> dict[str, Any]:
        """Protocol flags this method's own published evaluation used on ``benchmark`` (cirr, fashioniq, circo).

        Benchmark runs apply them under the user's explicit flags and record them, so that a peer
        reproduction (docs/PEERS.md) runs with its paper's preprocessing and caption handling by default.
        """
        return {}

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description of the method's configuration, written into result files."""
        return {"method": self.name}

    def encode_query_batches(self, backbone, batch_size: int, reference_images: Sequence[Image.Image],
                             texts: Sequence[str], encode: Callable[[torch.Tensor, Sequence[str]], torch.Tensor]
                             ) -> torch.Tensor:
        """Preprocess the references batch by batch and concatenate ``encode(pixels, texts)`` on the CPU.

        The one loop of the pseudo-word methods (TSCIR, Pic2Word, the peer reproductions): they differ only in
        how a batch of pixels and texts becomes query embeddings.
        """
        if len(reference_images) != len(texts):
            raise ValueError(f"{len(reference_images)} reference images but {len(texts)} texts")
        out = []
        for i in range(0, len(texts), batch_size):
            pix = backbone.preprocess(list(reference_images[i:i + batch_size])).to(backbone.device)
            out.append(encode(pix, texts[i:i + batch_size]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, backbone.embed_dim)
