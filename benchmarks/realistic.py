"""A realistic-size random model and photo-like JPEGs, made at run time (issue 15 §2 and §3).

Why random weights: timing depends on the architecture, not on the weights, and a random ViT-B/32-sized
HF CLIP needs no download. Why synthetic photos: no photo collection may be committed or fetched here;
a smooth random colour field plus grain, saved as JPEG quality 90, has the size on disk (~0.4 MB per
megapixel) and the decoding cost of a real photo of the same pixel count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: ViT-B/32 sizes (OpenAI CLIP ViT-B/32: 224 px, patch 32, width 768 x 12 layers; text 512 x 12; 512-d)
VITB32 = dict(image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12,
              text_width=512, text_layers=12, text_heads=8, max_text_len=77, projection_dim=512, vocab_size=1024)
MODEL_NAME = "bench-vitb32-random"
CORPUS = ("a photo of a dog on the beach at sunset", "make the car red and remove the people",
        "the same dress but in blue with long sleeves", "a city street at night in the rain with lights")


def register_bench_model() -> None:
    """Register :data:`MODEL_NAME` (random weights, seeded) so both processes can build it by name."""
    from zscir.backbones.registry import TinyCLIPConfig, build_random_clip, register_model
    from zscir.backbones.tokenizer import train_bpe_tokenizer

    def factory(seed: int = 0, **_: object):
        cfg = TinyCLIPConfig(**VITB32)
        tok = train_bpe_tokenizer(CORPUS, vocab_size=cfg.vocab_size, max_length=cfg.max_text_len)
        return build_random_clip(cfg, tok, seed=seed, name=MODEL_NAME)

    register_model(MODEL_NAME, factory)


def make_photo(path: Path, size: tuple[int, int], seed: int) -> int:
    """A photo-like JPEG (smooth colour field + grain, quality 90) of ``size``; returns its byte size."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    low = rng.integers(0, 256, (h // 32 + 2, w // 32 + 2, 3), dtype=np.uint8)
    field_ = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.int16)
    img = np.clip(field_ + rng.integers(-20, 21, (h, w, 3), dtype=np.int16), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, "JPEG", quality=90)
    return path.stat().st_size
