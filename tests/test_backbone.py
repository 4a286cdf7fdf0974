"""Backbone layer: encoders, pseudo-token substitution, text-layer modules, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zscir.backbones import TextLayerModule, create_backbone, list_models


def _images(n=4, size=32, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_registry_lists_builtin_and_prefixes():
    names = list_models()
    assert "world-clip" in names and "tiny-clip-test" in names
    assert any(n.startswith("hf-hub:") for n in names) and any(n.startswith("local-dir:") for n in names)
    with pytest.raises(ValueError, match="unknown model"):
        create_backbone("no-such-model")


def test_image_and_text_embeddings_are_normalised(tiny_backbone):
    bb = tiny_backbone
    img = bb.encode_images(_images())
    txt = bb.encode_texts(["a red circle", "two blue squares on a grey background"])
    assert img.shape == (4, bb.embed_dim) and txt.shape == (2, bb.embed_dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(2), atol=1e-5)
    glob, patches = bb.encode_image_tokens(bb.preprocess(_images(2)))
    n_patches = (bb.image_size // bb.model.config.vision_config.patch_size) ** 2
    assert patches.shape == (2, n_patches, bb.vision_width)
    assert torch.allclose(glob, img[:2], atol=1e-5)


def test_fast_preprocess_equals_hf_processor(tiny_backbone):
    bb = tiny_backbone
    # the fast path must be taken (transformers 5 keeps sizes in SizeDict objects, not dicts: once missed)
    assert bb._identity_geometry_side() == bb.image_size
    ims = _images(3, size=bb.image_size)
    fast = bb.preprocess(ims)
    ref = bb.image_processor(images=ims, return_tensors="pt")["pixel_values"]
    assert torch.equal(fast, ref)
    other = [im.resize((40, 50)) for im in ims]  # other sizes take the processor's own path
    assert bb.preprocess(other).shape == (3, 3, bb.image_size, bb.image_size)


@torch.no_grad()
def test_pseudo_token_with_a_word_embedding_equals_the_word(tiny_backbone):
    """Substituting `$` by the embedding of "circle" must give exactly the text with "circle"."""
    bb = tiny_backbone
    word_id = bb.tokenizer("circle", add_special_tokens=False)["input_ids"]
    assert len(word_id) == 1
    vec = bb.model.text_model.embeddings.token_embedding.weight[word_id[0]]
    a = bb.encode_text(["a photo of $ on grey"], pseudo_tokens=vec[None])
    b = bb.encode_text(["a photo of circle on grey"])
    assert torch.allclose(a, b, atol=1e-6)
    c = bb.encode_text(["a photo of $ on grey"], pseudo_tokens=torch.randn(1, bb.token_embed_dim))
    assert not torch.allclose(a, c, atol=1e-3)


def test_pseudo_tokens_receive_gradients_and_model_does_not(tiny_backbone):
    bb = tiny_backbone.freeze()
    pseudo = torch.randn(2, 2, bb.token_embed_dim, requires_grad=True)
    out = bb.encode_text(["$ left of $", "a $ and a $"], pseudo_tokens=pseudo)
    out.sum().backward()
    assert pseudo.grad is not None and pseudo.grad.abs().sum() > 0
    assert all(p.grad is None for p in bb.model_parameters())


def test_placeholder_count_mismatch_is_a_clear_error(tiny_backbone):
    with pytest.raises(ValueError, match="placeholder"):
        tiny_backbone.encode_text(["no placeholder here"], pseudo_tokens=torch.zeros(1, tiny_backbone.token_embed_dim))


class _Recorder(TextLayerModule):
    """Adds a learnable bias at the placeholder positions (or everywhere)."""

    def __init__(self, width, scale=0.0, everywhere=False):
        super().__init__()
        self.bias = torch.nn.Parameter(scale * torch.linspace(-1.0, 1.0, width))
        self.everywhere = everywhere
        self.seen = None

    def forward(self, hidden_states, ctx):
        self.seen = (ctx.placeholder_mask.clone(), dict(ctx.extras))
        mask = torch.ones_like(ctx.placeholder_mask) if self.everywhere else ctx.placeholder_mask
        return hidden_states + self.bias * mask[..., None]


def test_text_layer_modules_hook_in_and_detach(tiny_backbone):
    bb = tiny_backbone
    texts = ["a photo of $"]
    pseudo = torch.randn(1, bb.token_embed_dim)
    with torch.no_grad():
        base = bb.encode_text(texts, pseudo_tokens=pseudo)
    zero = _Recorder(bb.token_embed_dim, 0.0)
    bb.attach_text_module(0, zero)
    with torch.no_grad():
        same = bb.encode_text(texts, pseudo_tokens=pseudo, extras={"patch_tokens": "x"})
    assert torch.allclose(base, same, atol=1e-6)  # zero-initialised module is the identity
    assert zero.seen[0].sum() == 1 and zero.seen[1] == {"patch_tokens": "x"}
    # after the last layer only the pooled (eos) position matters: a change at `$` alone would be invisible
    # there because of the causal mask, so this module shifts every position
    bump = _Recorder(bb.token_embed_dim, 0.5, everywhere=True)
    bb.attach_text_module(-1, bump)
    out = bb.encode_text(texts, pseudo_tokens=pseudo)
    assert not torch.allclose(base, out.detach(), atol=1e-4)
    out.sum().backward()
    assert bump.bias.grad is not None and bump.bias.grad.abs().sum() > 0
    removed = bb.detach_text_modules()
    assert [layer for layer, _ in removed] == [0, bb.num_text_layers - 1]
    with torch.no_grad():
        assert torch.allclose(base, bb.encode_text(texts, pseudo_tokens=pseudo), atol=1e-6)
    with pytest.raises(IndexError):
        bb.attach_text_module(bb.num_text_layers, zero)


def test_save_and_load_local_dir_round_trip(tiny_backbone, tmp_path):
    bb = tiny_backbone
    bb.save_pretrained(tmp_path / "m")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        assert (tmp_path / "m" / name).exists()
    loaded = create_backbone(f"local-dir:{tmp_path / 'm'}")
    ims, texts = _images(2), ["a red $ circle", "grey"]
    assert torch.allclose(bb.encode_images(ims), loaded.encode_images(ims), atol=1e-6)
    assert torch.allclose(bb.encode_texts(texts), loaded.encode_texts(texts), atol=1e-6)
    assert loaded.placeholder_token_id == bb.placeholder_token_id
    assert loaded.fingerprint() == bb.fingerprint()
    other = create_backbone("tiny-clip-test", seed=1)
    assert other.fingerprint() != bb.fingerprint()


def test_offline_hub_id_fails_with_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="not in the local Hugging Face cache, and HF_HUB_OFFLINE is set"):
        create_backbone("hf-hub:nobody/not-a-cached-model")


def test_tokenizer_training_is_deterministic():
    from zscir.backbones.tokenizer import train_bpe_tokenizer

    corpus = ["a red circle left of a blue square", "two green stars above a purple hexagon"] * 3
    a, b = (train_bpe_tokenizer(corpus, vocab_size=120) for _ in range(2))
    assert a.get_vocab() == b.get_vocab()
    assert a("purple squares")["input_ids"] == b("purple squares")["input_ids"]
    # every letter exists bare and word-final, so no unseen word ever becomes [UNK]
    assert a.unk_token_id not in a("zebra quux jolt vex")["input_ids"]


def test_tokenizer_shape():
    from zscir.backbones.tokenizer import PLACEHOLDER, train_bpe_tokenizer

    tok = train_bpe_tokenizer(["a red circle left of a blue square"] * 5, vocab_size=200, max_length=16)
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    ids = tok("a red unseenword")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3
    assert tok.unk_token_id not in ids  # unseen words fall back to sub-word pieces
    assert len(tok(PLACEHOLDER, add_special_tokens=False)["input_ids"]) == 1


def test_open_clip_backend_optional():
    pytest.importorskip("open_clip", exc_type=ImportError)
    bb = create_backbone("open_clip:ViT-B-32/none")
    assert bb.embed_dim > 0
