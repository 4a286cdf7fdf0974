"""`Retriever`: load an index and answer composed queries — the Python API behind CLI and server.

    r = Retriever.load("my-index")
    for hit in r.search("photo.jpg", "the same but at night", k=5):
        print(hit.path, hit.score)

The composer is re-created from the index manifest (method and model), and a different method may be
used at query time only when it embeds the gallery identically (same `gallery_cache_key`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from zscir.index.store import EmbeddingStore, SearchHit
from zscir.methods.base import Composer

logger = logging.getLogger(__name__)


class Retriever:
    def __init__(self, store: EmbeddingStore, composer: Composer):
        self.store = store
        self.composer = composer
        key = store.manifest.get("gallery_key")
        if key and key != composer.gallery_cache_key():
            raise ValueError(
                f"the index at {store.path} was embedded with gallery key {key!r}, but method "
                f"{composer.name!r} embeds galleries as {composer.gallery_cache_key()!r}: re-index with "
                f"--method {composer.name}"
            )

    @classmethod
    def load(cls, index_dir: str | Path, method: str | None = None, model: str | None = None,
             checkpoint: str | None = None, device: str = "cpu", **options: Any) -> "Retriever":
        from zscir.methods import create_composer

        store = EmbeddingStore.load(index_dir)
        composer = create_composer(method or store.manifest.get("method") or "sum",
                                   model=model or store.manifest.get("model"), checkpoint=checkpoint,
                                   device=device, **options)
        return cls(store, composer)

    def resolve_image(self, image: Image.Image | str | Path) -> tuple[Image.Image, int | None]:
        """A PIL image, an id of an indexed item, or a file path → (RGB image, index of the item or None)."""
        if isinstance(image, Image.Image):
            return image.convert("RGB"), None
        key = str(image)
        try:
            idx = self.store.index_of(key)
        except KeyError:
            idx = None
        path = Path(self.store.items[idx]["path"]) if idx is not None else Path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{key}: neither an indexed item id nor an image file")
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB"), idx

    @torch.no_grad()
    def search(self, image: Image.Image | str | Path, text: str, k: int = 10,
               exclude_reference: bool = True) -> list[SearchHit]:
        """Top-``k`` gallery items for (reference image, modification text)."""
        img, idx = self.resolve_image(image)
        q = self.composer.encode_queries([img], [text]).float().numpy()
        exclude = [idx if (idx is not None and exclude_reference) else -1]
        return self.store.search(q, k, exclude=exclude)[0]
