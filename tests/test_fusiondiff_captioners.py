"""Fusion-Diff captioners for real galleries: a caption bank from any pair dataset, generative captioning."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from zscir.methods.fusiondiff.captioner import (GenerativeCaptioner, RetrievalCaptioner, bank_from_data,
                                                build_captioner, tiny_random_captioner_model)
from zscir.methods.fusiondiff.config import JointConfig

CAPTIONS = ["a red square", "a blue circle", "a green star", "a red square"]


def _pairs(tmp_path) -> str:
    root = tmp_path / "pairs"
    root.mkdir()
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        for i, c in enumerate(CAPTIONS):
            Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(root / f"{i}.png")
            w.writerow([f"{i}.png", c])
    return str(root / "pairs.csv")


def _images():
    out = []
    for i, col in enumerate(["red", "blue", "green"]):
        im = Image.new("RGB", (40, 40), "white")
        ImageDraw.Draw(im).rectangle((5 + i, 5, 30, 30), fill=col)
        out.append(im)
    return out


def test_caption_bank_from_pair_data_drives_retrieval(tmp_path, tiny_backbone):
    spec = _pairs(tmp_path)
    assert bank_from_data(spec) == ["a red square", "a blue circle", "a green star"]  # distinct, in order
    assert bank_from_data(spec, limit=1) == ["a red square"]
    cap = build_captioner(tiny_backbone, JointConfig(caption_bank=spec), cache_dir=None)
    assert isinstance(cap, RetrievalCaptioner) and cap.bank == ["a red square", "a blue circle", "a green star"]
    # an image embedding equal to a bank caption's text embedding is captioned with that caption
    txt = tiny_backbone.encode_texts(cap.bank)
    assert cap.captions(txt[[2, 0, 1]]) == ["a green star", "a red square", "a blue circle"]
    assert "bank=3" in cap.cache_key()
    from zscir.data import DataError

    with pytest.raises(DataError):
        bank_from_data(str(tmp_path / "nothing.csv"))


def test_generative_captioner_caches_by_image_hash(tmp_path, tiny_backbone, monkeypatch):
    folder = tiny_random_captioner_model(tmp_path / "ved")
    cfg = JointConfig(captioner="generative", captioner_model=str(folder))
    cap = build_captioner(tiny_backbone, cfg, cache_dir=tmp_path / "cache")
    assert isinstance(cap, GenerativeCaptioner)
    ims = _images()
    calls = []
    real = cap._generate
    monkeypatch.setattr(cap, "_generate", lambda batch: calls.append(len(batch)) or real(batch))
    first = cap.captions(None, ims + [ims[0].copy()])  # a duplicate picture is captioned once
    assert len(first) == 4 and all(isinstance(c, str) for c in first) and first[3] == first[0]
    assert len(set(first[:3])) > 1  # the caption depends on the picture
    assert sum(calls) == 3 and cap.generated == 3
    assert cap.captions(None, ims) == first[:3] and sum(calls) == 3  # memory cache
    # a new captioner (a new process) reads the on-disk cache: nothing is generated again
    again = build_captioner(tiny_backbone, cfg, cache_dir=tmp_path / "cache")
    assert again.captions(None, list(reversed(ims))) == list(reversed(first[:3])) and again.generated == 0
    assert again.cache_path.parent == tmp_path / "cache" / "captions"
    # the captions are the model's own: generating without the cache gives the same strings
    fresh = GenerativeCaptioner.from_pretrained(tiny_backbone, str(folder), cache_dir=None)
    assert fresh.captions(None, ims) == first[:3] and fresh.generated == 3
    emb = cap.embed_captions(torch.zeros(3, tiny_backbone.embed_dim), ims)
    assert emb.shape == (3, tiny_backbone.embed_dim) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-4)
    with pytest.raises(ValueError, match="images"):
        cap.captions(torch.zeros(1, 4), None)
    with pytest.raises(ValueError, match="captioner_model"):
        build_captioner(tiny_backbone, JointConfig(captioner="generative"))
    with pytest.raises(FileNotFoundError):
        GenerativeCaptioner.from_pretrained(tiny_backbone, str(tmp_path / "no-model"))


def test_fusiondiff_composer_with_real_captioners(tmp_path):
    """The shipped Fusion-Diff with captioner options: cache under $ZSCIR_CACHE, gallery encodes."""
    from zscir.backbones import create_backbone
    from zscir.methods.fusiondiff.register import load_composer

    bb = create_backbone("world-clip")
    folder = tiny_random_captioner_model(tmp_path / "ved")
    comp = load_composer(bb, captioner_model=str(folder))
    cap = comp.joint.captioner
    assert isinstance(cap, GenerativeCaptioner)
    assert Path(os.environ["ZSCIR_CACHE"]) in cap.cache_path.parents
    g = comp.encode_gallery(_images())
    assert g.shape[0] == 3 and torch.isfinite(g).all()
    comp2 = load_composer(bb, caption_bank=_pairs(tmp_path))
    assert comp2.joint.captioner.bank == ["a red square", "a blue circle", "a green star"]
    assert comp2.encode_gallery(_images()).shape == g.shape
