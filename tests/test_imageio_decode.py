"""Decoding photos for a model of known input size (issue 15 §2): `load_image(min_side=...)` and the indexer.

A JPEG may be decoded at a reduced DCT scale (1/2, 1/4, 1/8) as long as its short side stays at or above
the model's input side: the model resizes it to that side anyway, so the embedding hardly changes, while
the decode of a 12 MP photo gets much cheaper. These tests pin the decoded sizes, that embeddings stay
close to the general decode, that the indexer asks for the model's side, and the decode-thread default.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from zscir.index.build import IndexConfig, build_index, decode_side
from zscir.index.prefetch import default_workers
from zscir.data.imageio import SOURCE_SIZE_KEY, ImageLimits, load_image
from zscir.methods import create_composer


def photo(path, size=(2400, 1800), seed=0, **save):
    """A photo-like JPEG: a smooth random colour field plus grain (as benchmarks/realistic.py)."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = rng.integers(0, 256, (h // 64 + 2, w // 64 + 2, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), np.int16)
    img = np.clip(field + rng.integers(-12, 13, (h, w, 3), dtype=np.int16), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, "JPEG", quality=90, **save)
    return path


def test_jpeg_decoded_no_smaller_than_min_side(tmp_path):
    p = photo(tmp_path / "a.jpg")
    general = load_image(p)
    assert general.size == (512, 384) and general.mode == "RGB"  # 1/4 scale (600 x 450), bounded to 512
    small = load_image(p, min_side=224)
    assert small.size == (300, 225) and small.mode == "RGB"  # 1/8 scale: short side 225 >= 224
    assert small.info[SOURCE_SIZE_KEY] == (2400, 1800)
    assert load_image(p, min_side=226).size == (512, 384)  # 1/8 would be too small: 1/4, then bounded
    assert load_image(p, min_side=4000).size == (512, 384)  # never above the general bound
    assert load_image(p, ImageLimits(max_side=256), min_side=224).size == (256, 192)
    again = load_image(p, min_side=224)  # deterministic
    assert np.array_equal(np.asarray(small), np.asarray(again))


def test_min_side_leaves_other_formats_and_rotation_alone(tmp_path):
    Image.new("RGB", (2400, 1800), (10, 200, 30)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", min_side=224).size == (512, 384)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    p = photo(tmp_path / "r.jpg", exif=exif)
    assert load_image(p, min_side=224).size == (225, 300)  # decoded small, then turned upright
    assert load_image(p).size == (384, 512)
    grey = tmp_path / "g.jpg"
    Image.new("L", (2400, 1800), 77).save(grey, "JPEG")
    im = load_image(grey, min_side=224)
    assert im.mode == "RGB" and im.size == (300, 225) and im.getpixel((5, 5)) == (77, 77, 77)


@pytest.fixture(scope="module")
def clip224():
    """A tiny random HF CLIP whose processor resizes to 224 px, like ViT-B/32 (seconds to build)."""
    from zscir.backbones.registry import TinyCLIPConfig, build_random_clip
    from zscir.backbones.tokenizer import train_bpe_tokenizer

    cfg = TinyCLIPConfig(image_size=224, patch_size=32, vision_width=32, vision_layers=1, vision_heads=2,
                         text_width=32, text_layers=1, text_heads=2, max_text_len=16, projection_dim=32,
                         vocab_size=300)
    tok = train_bpe_tokenizer(["a photo of a dog", "a red car in the rain"], vocab_size=cfg.vocab_size,
                              max_length=cfg.max_text_len)
    return build_random_clip(cfg, tok, seed=0)


def test_model_side_decode_embeds_like_the_general_decode(tmp_path, clip224):
    assert clip224.input_side == 224
    paths = [photo(tmp_path / f"{i}.jpg", size=(2400 + 400 * i, 1800 + 300 * i), seed=i) for i in range(3)]
    with torch.no_grad():
        full = clip224.encode_images([load_image(p) for p in paths])
        fast = clip224.encode_images([load_image(p, min_side=clip224.input_side) for p in paths])
        again = clip224.encode_images([load_image(p, min_side=clip224.input_side) for p in paths])
    assert torch.equal(fast, again)
    same = (full * fast).sum(-1)  # both normalised: cosine
    assert bool((same > 0.99).all()), same
    # and the difference is far below what tells two photos apart (a random model maps everything close)
    other = full @ full.T
    gap_same = float((1 - same).max())
    gap_other = float((1 - other[~torch.eye(3, dtype=torch.bool)]).min())
    print(f"1 - cos: same photo {gap_same:.2e}, two photos {gap_other:.2e}")
    assert gap_same < 0.1 * gap_other, (gap_same, gap_other)


def test_indexer_decodes_at_the_models_side(tmp_path):
    torch.manual_seed(0)
    composer = create_composer("image", model="tiny-clip-test")  # 32 px model
    assert composer.gallery_input_side() == 32 and decode_side([composer]) == 32
    photos = tmp_path / "photos"
    photos.mkdir()
    p = photo(photos / "big.jpg")
    build_index(photos, tmp_path / "idx", composer, model="tiny-clip-test",
                config=IndexConfig(batch_size=2, progress=False))
    m = json.loads((tmp_path / "idx/manifest.json").read_text())
    assert m["indexer"]["decode_side"] == 32
    item = json.loads((tmp_path / "idx" / m["items_file"]).read_text().splitlines()[0])
    assert (item["width"], item["height"]) == (300, 225)  # 1/8 DCT scale, not the general 512 x 384
    emb = np.load(tmp_path / "idx" / m["embeddings_file"])
    direct = composer.encode_gallery([load_image(p, min_side=32)]).numpy()
    np.testing.assert_allclose(emb, direct, atol=1e-5)


def test_decode_side_is_general_when_a_composer_does_not_know_it():
    class Known:
        def __init__(self, side):
            self.side = side

        def gallery_input_side(self):
            return self.side

    assert decode_side([Known(224), Known(336)]) == 336  # the largest need wins
    assert decode_side([Known(224), Known(None)]) is None
    assert decode_side([]) is None
    from zscir.methods.base import Composer

    assert Composer.gallery_input_side(object()) is None  # e.g. Fusion-Diff's own image pipeline


def test_default_workers_leave_the_models_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert default_workers() == 1  # 2 vCPUs, 1 torch thread: one decode thread, not two
    assert default_workers(model_on_cpu=False) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers(model_on_cpu=False) == 8  # capped
    monkeypatch.setattr(torch, "get_num_threads", lambda: 12)
    assert default_workers() == 4
    monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
    assert default_workers() == 1  # never zero: decoding must still happen off the model's thread


def test_prepared_gallery_path_equals_encode_gallery_and_runs_in_decode_threads(tmp_path):
    import threading

    from zscir.methods.baselines import ImageOnlyComposer

    torch.manual_seed(0)
    composer = create_composer("sum", model="tiny-clip-test")
    images = [Image.new("RGB", (40 + 7 * i, 30 + 3 * i), (20 * i, 200 - 9 * i, 90)) for i in range(5)]
    prepared = [composer.prepare_gallery_image(im) for im in images]
    assert all(p.shape == (1, 3, 32, 32) for p in prepared)
    assert torch.equal(composer.encode_prepared_gallery(prepared), composer.encode_gallery(images))

    class Negated(ImageOnlyComposer):  # embeds its gallery its own way: nothing may be split off
        def encode_gallery(self, images):
            return -super().encode_gallery(images)

        def gallery_cache_key(self):
            return "negated:" + super().gallery_cache_key()

    neg = Negated(composer.backbone)
    assert neg.prepare_gallery_image(images[0]) is None and neg.gallery_input_side() is None

    seen: list[str] = []

    class Spy(ImageOnlyComposer):
        def prepare_gallery_image(self, image):
            seen.append(threading.current_thread().name)
            return super().prepare_gallery_image(image)

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, im in enumerate(images):
        im.save(photos / f"{i}.png")
    build_index(photos, tmp_path / "idx", [Spy(composer.backbone), neg], model="tiny-clip-test",
                config=IndexConfig(batch_size=2, workers=1, progress=False))
    # once per image, with the decoding: in the pool's thread, or in the model's thread for jobs of a batch
    # the pool had not started when the model asked for it (it decodes those rather than wait)
    assert len(seen) == 5 and any(name != threading.main_thread().name for name in seen)
    m = json.loads((tmp_path / "idx/manifest.json").read_text())
    assert m["indexer"]["decode_side"] is None  # one composer does not know its side: general decode
    ids = [json.loads(line)["id"] for line in (tmp_path / "idx" / m["items_file"]).read_text().splitlines()]
    direct = composer.encode_gallery([load_image(photos / i) for i in ids]).numpy()
    files = [g["file"] for g in m["galleries"].values()]
    np.testing.assert_allclose(np.load(tmp_path / "idx" / files[0]), direct, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "idx" / files[1]), -direct, atol=1e-5)
