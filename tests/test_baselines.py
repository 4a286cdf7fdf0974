"""Baseline composers and the method registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zscir.methods import create_composer, list_methods


def _images(n, size=32):
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_registry_lists_baselines():
    names = {m.name for m in list_methods()}
    assert {"image", "text", "sum"} <= names
    with pytest.raises(ValueError, match="unknown method"):
        create_composer("nope", backbone=object())


def test_sum_fusion_interpolates_between_image_and_text(tiny_backbone):
    ims, texts = _images(3), ["make it red", "add a star", "remove the square"]
    img = create_composer("image", backbone=tiny_backbone).encode_queries(ims, texts)
    txt = create_composer("text", backbone=tiny_backbone).encode_queries(ims, texts)
    s0 = create_composer("sum", backbone=tiny_backbone, weight=0.0).encode_queries(ims, texts)
    s1 = create_composer("sum", backbone=tiny_backbone, weight=1.0).encode_queries(ims, texts)
    s5 = create_composer("sum", backbone=tiny_backbone, weight=0.5).encode_queries(ims, texts)
    assert torch.allclose(s0, img, atol=1e-6) and torch.allclose(s1, txt, atol=1e-6)
    expected = torch.nn.functional.normalize(img + txt, dim=-1)
    assert torch.allclose(s5, expected, atol=1e-6)
    assert torch.allclose(s5.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_baselines_share_the_gallery_embedding(tiny_backbone):
    a = create_composer("image", backbone=tiny_backbone)
    b = create_composer("sum", backbone=tiny_backbone, weight=0.3)
    assert a.gallery_cache_key() == b.gallery_cache_key()
    ims = _images(2)
    assert torch.allclose(a.encode_gallery(ims), tiny_backbone.encode_images(ims))
    assert b.describe()["weight"] == 0.3 and b.describe()["model"] == "tiny-clip-test"


def test_invalid_options_are_rejected(tiny_backbone):
    with pytest.raises(ValueError, match="weight"):
        create_composer("sum", backbone=tiny_backbone, weight=1.5)
    with pytest.raises(ValueError, match="takes no checkpoint"):
        create_composer("image", backbone=tiny_backbone, checkpoint="/tmp/x")
