"""Unit tests of TSCIR / Pic2Word: VSI, adapters (bottleneck and peft LoRA), pseudo-token substitution,
checkpoints and registration. Tiny random backbones only (fresh per test: modules get attached)."""

from __future__ import annotations

import pytest
import torch

from zscir.backbones import create_backbone
from zscir.backbones.base import TextHookContext
from zscir.methods.tscir.adapters import BottleneckAdapter, ComposingAdapters
from zscir.methods.tscir.checkpoint import load_checkpoint, save_stage1, save_stage2
from zscir.methods.tscir.composer import PseudoTokenComposer, fill_template
from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
from zscir.methods.tscir.mapping import Mapping
from zscir.methods.tscir.training import soft_alignment_loss
from zscir.methods.tscir.vsi import PATCH_KEY, VSIModule

PROMPTS = ["a photo of $ that red", "a photo of $"]


def _bb(name="tiny-clip-test"):
    return create_backbone(name).freeze()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """The tiny model saved once: reloading it gives identical backbones (the tiny models' BPE tokenizer is
    retrained on every creation and is not deterministic across instances)."""
    path = tmp_path_factory.mktemp("tiny") / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    return f"local-dir:{path}"


def _inputs(bb, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    pix = torch.randn(n, 3, bb.image_size, bb.image_size, generator=g)
    return bb.encode_image_tokens(pix)


def _grads(named):
    return {n: (p.grad is not None and float(p.grad.abs().sum()) > 0) for n, p in named}


def test_vsi_changes_only_placeholder_positions():
    torch.manual_seed(0)
    vsi = VSIModule(text_width=16, vision_width=8, heads=2)
    h = torch.randn(2, 5, 16)
    pmask = torch.zeros(2, 5, dtype=torch.bool)
    pmask[0, 2] = pmask[1, 4] = True
    ctx = TextHookContext(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5), pmask, {PATCH_KEY: torch.randn(2, 7, 8)})
    assert torch.equal(vsi(h, ctx), h)  # zero gate: exactly the identity
    with torch.no_grad():
        vsi.gate.fill_(0.7)
    out = vsi(h, ctx)
    assert out.shape == h.shape
    assert torch.equal(out[~pmask], h[~pmask])
    assert (out[pmask] - h[pmask]).abs().min() > 1e-4
    # without patch tokens VSI is the identity (captions, backbones without VSI inputs)
    assert torch.equal(vsi(h, TextHookContext(ctx.input_ids, ctx.attention_mask, pmask, {})), h)


def test_vsi_patch_tokens_reach_the_query():
    bb = _bb()
    caption = bb.encode_text(["a red circle"])
    torch.manual_seed(0)
    m = Mapping(bb, MappingConfig(vsi_layers=[0], phi_dropout=0.0)).eval()
    with torch.no_grad():
        for v in m.vsi:
            v.gate.fill_(0.5)
    glob, patches = _inputs(bb)
    with pytest.raises(ValueError, match="last text layer"):
        Mapping(bb, MappingConfig(vsi_layers=[-1]))
    a = m.encode(bb, PROMPTS, glob, patches)
    b = m.encode(bb, PROMPTS, glob, patches + torch.randn_like(patches))
    assert a.shape == (2, bb.embed_dim)
    assert (a - b).abs().max() > 1e-4  # different patches → different query, same global embedding
    # a caption (no placeholder) is untouched by the attached VSI modules
    assert torch.allclose(bb.encode_text(["a red circle"]), caption, atol=1e-6)


def test_stage1_gradients_reach_only_phi_and_vsi():
    bb = _bb("tiny-clip-test-4l")
    m = Mapping(bb, MappingConfig(vsi_layers=[0, 1])).train()
    with torch.no_grad():
        for v in m.vsi:
            v.gate.fill_(0.5)
    glob, patches = _inputs(bb)
    q = m.encode(bb, PROMPTS, glob, patches)
    caps = bb.encode_text(["a red circle", "two blue squares"]).detach()
    loss = soft_alignment_loss(q, caps, 0.05, 0.05) + (q @ glob.T).sum()
    loss.backward()
    g = _grads(m.named_parameters())
    assert g["phi.mlp.0.weight"] and g["vsi.0.attn.in_proj_weight"] and g["vsi.1.kv_proj.weight"] and g["vsi.0.gate"]
    assert all(p.grad is None for p in bb.model.parameters())


def test_pic2word_config_has_no_vsi_and_ignores_patches():
    bb = _bb()
    m = Mapping(bb, MappingConfig(vsi_layers=[], phi_dropout=0.0)).eval()
    assert not m.uses_vsi and len(list(m.vsi.parameters())) == 0
    glob, patches = _inputs(bb)
    assert torch.allclose(m.encode(bb, PROMPTS, glob, patches), m.encode(bb, PROMPTS, glob, None))


def test_pseudo_token_substitution_equals_the_word():
    """φ's output replaces `$` in the token-embedding space: feeding a word's embedding = writing the word."""
    bb = _bb()
    m = Mapping(bb, MappingConfig(vsi_layers=[]))
    emb = bb.text_encoder.embeddings.token_embedding.weight
    red = bb.tokenizer("red", add_special_tokens=False)["input_ids"]
    assert len(red) == 1

    class WordPhi(torch.nn.Module):  # a φ that always outputs the word "red"
        def forward(self, x):
            return emb[red[0]].expand(x.shape[0], -1)

    m.phi = WordPhi()
    glob, _ = _inputs(bb)
    q = m.encode(bb, ["a photo of $ that circle", "a photo of $"], glob, None)
    ref = bb.encode_text(["a photo of red that circle", "a photo of red"])
    assert torch.allclose(q, ref, atol=1e-5)
    assert fill_template("a photo of $ that {}", "make it $5 cheaper") == "a photo of $ that make it  5 cheaper"
    with pytest.raises(ValueError):
        bb.encode_text(["no placeholder here"], pseudo_tokens=torch.zeros(1, bb.token_embed_dim))


def test_token_learner_matches_word_embedding_scale():
    bb = _bb()
    m = Mapping(bb, MappingConfig(vsi_layers=[]))
    glob, _ = _inputs(bb, n=4)
    norms = m.phi(glob).norm(dim=-1)
    expected = bb.text_encoder.embeddings.token_embedding.weight.norm(dim=-1).mean()
    assert torch.allclose(norms, expected.expand(4), rtol=1e-4)


@pytest.mark.parametrize("kind", ["bottleneck", "lora"])
def test_adapters_start_as_identity_and_only_they_train(kind):
    bb = _bb("tiny-clip-test-4l")
    fp = bb.fingerprint()
    m = Mapping(bb, MappingConfig(vsi_layers=[1])).eval().requires_grad_(False)
    m.attach(bb)
    glob, patches = _inputs(bb)
    before = m.encode(bb, PROMPTS, glob, patches)
    ad = ComposingAdapters(bb, AdapterConfig(kind=kind, layers=[1, 3], bottleneck=8, lora_rank=4))
    ad.attach(bb)
    assert bb.fingerprint() == fp  # gallery cache key unchanged by text-side adapters
    assert torch.allclose(m.encode(bb, PROMPTS, glob, patches, ad), before, atol=1e-6)
    params = ad.trainable_parameters()
    assert params and all(p.requires_grad for p in params)
    if kind == "lora":
        names = ad._lora_names
        assert all("lora_" in n for n in names) and any("layers.3." in n for n in names)
        assert not any("layers.0." in n or "layers.2." in n for n in names)
        with torch.no_grad():
            for n, p in bb.text_encoder.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    else:
        with torch.no_grad():
            for a in ad.adapters:
                a.up.weight.normal_(0, 0.1)
    q = m.encode(bb, PROMPTS, glob, patches, ad)  # adapters run only in the calls that name them
    assert (q - before).abs().max() > 1e-4
    assert torch.equal(m.encode(bb, PROMPTS, glob, patches).detach(), before.detach())
    q.sum().backward()
    ids = {id(p) for p in params}
    others = [p for p in list(bb.parameters()) + list(m.parameters()) if id(p) not in ids]
    assert all(p.grad is None for p in others)
    trained = [p for p in params if p.grad is not None and float(p.grad.abs().sum()) > 0]
    assert len(trained) >= len(params) // 2  # with B = 0 only B gets grads at init; here both move


def test_bottleneck_adapter_shape():
    a = BottleneckAdapter(16, 4)
    h = torch.randn(3, 5, 16)
    ctx = TextHookContext(torch.zeros(3, 5, dtype=torch.long), torch.ones(3, 5), torch.zeros(3, 5, dtype=torch.bool))
    assert a(h, ctx).shape == h.shape and torch.equal(a(h, ctx), h)


@pytest.mark.parametrize("kind", ["bottleneck", "lora"])
def test_checkpoint_round_trip_and_registry(tmp_path, kind, tiny_dir):
    from zscir.methods import create_composer

    bb = _bb(tiny_dir)
    torch.manual_seed(1)
    m = Mapping(bb, MappingConfig(vsi_layers=[0])).eval()
    with torch.no_grad():
        m.vsi[0].gate.fill_(0.3)
    m.attach(bb)
    ad = ComposingAdapters(bb, AdapterConfig(kind=kind, bottleneck=8, lora_rank=4))
    ad.attach(bb)
    with torch.no_grad():
        for p in ad.trainable_parameters():
            p.normal_(0, 0.05)
    save_stage1(tmp_path / "s1", m, bb, "tscir", Stage1Config().to_dict())
    save_stage2(tmp_path / "s2", ad, tmp_path / "s1", bb, "a photo of $ that {}", Stage2Config().to_dict())
    assert (tmp_path / "s2" / "stage1" / "model.safetensors").exists()
    comp = PseudoTokenComposer(bb, m, ad)
    from PIL import Image

    imgs = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    texts = ["make it green", "add a circle"]
    want = comp.encode_queries(imgs, texts)
    for method in ("tscir", "pic2word"):
        other = create_composer(method, backbone=_bb(tiny_dir), checkpoint=str(tmp_path / "s2"))
        assert other.name == method and other.describe()["stage"] == 2
        assert torch.allclose(other.encode_queries(imgs, texts), want, atol=1e-5)
        assert other.gallery_cache_key() == create_composer("sum", backbone=_bb(tiny_dir)).gallery_cache_key()
    s1 = create_composer("tscir", backbone=_bb(tiny_dir), checkpoint=str(tmp_path / "s1"))
    assert s1.adapters is None and not torch.allclose(s1.encode_queries(imgs, texts), want, atol=1e-4)
    mapping, adapters, cfg = load_checkpoint(tmp_path / "s1", _bb())
    assert adapters is None and cfg["stage"] == 1 and mapping.vsi_layers == [0]
    with pytest.raises(ValueError):
        create_composer("tscir", backbone=_bb("tiny-clip-test-4l"), checkpoint=str(tmp_path / "s1"))
    with pytest.raises(FileNotFoundError):
        create_composer("tscir", backbone=_bb(), checkpoint=str(tmp_path / "nowhere"))


def test_soft_alignment_prefers_the_caption_structure():
    caps = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    good = soft_alignment_loss(caps.clone(), caps, 0.05, 0.05)
    bad = soft_alignment_loss(caps.roll(1, 0), caps, 0.05, 0.05)
    assert good < bad
