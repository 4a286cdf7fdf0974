"""Fusion-Diff on a tiny backbone: joint encoder, captioners, composer, trainers, mllm encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zscir.backbones import create_backbone
from zscir.data.world import WorldConfig, canonical_caption, generate_pairs, render
from zscir.methods.fusiondiff.captioner import OracleCaptioner, RetrievalCaptioner, image_key
from zscir.methods.fusiondiff.config import JointConfig
from zscir.methods.fusiondiff.joint import ClipFusionEncoder


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("tiny-clip-test").freeze()


@pytest.fixture(scope="module")
def pairs():
    return generate_pairs(WorldConfig(seed=0), n=6)


def test_encode_joint_pair_image_text(backbone, pairs):
    images = [render(p.scene, size=32) for p in pairs]
    texts = [p.caption for p in pairs]
    bank = [c for p in pairs for c in p.captions]
    cap = RetrievalCaptioner(backbone, bank, k=1)
    enc = ClipFusionEncoder(backbone, JointConfig(fusion_weight=0.3), cap)
    img, txt = backbone.encode_images(images), backbone.encode_texts(texts)
    pair = enc.encode_joint(images=images, texts=texts)
    assert torch.allclose(pair, F.normalize(0.7 * img + 0.3 * txt, dim=-1), atol=1e-5)
    assert torch.allclose(enc.encode_joint(texts=texts), txt, atol=1e-6)
    # a text-less image is fused with its nearest bank caption
    alone = enc.encode_joint(images=images)
    nearest = bank[int((img[0] @ cap.bank_embeds.T).argmax())]
    assert cap.captions(img[:1]) == [nearest]
    expected = F.normalize(0.7 * img[0] + 0.3 * backbone.encode_texts([nearest])[0], dim=-1)
    assert torch.allclose(alone[0], expected, atol=1e-5)
    assert torch.allclose(alone.norm(dim=-1), torch.ones(len(images)), atol=1e-5)
    # the image space keeps images plain
    plain = ClipFusionEncoder(backbone, JointConfig(space="image"))
    assert torch.allclose(plain.encode_joint(images=images), img, atol=1e-6)
    with pytest.raises(ValueError):
        ClipFusionEncoder(backbone, JointConfig(), None).encode_joint(images=images)


def test_retrieval_captioner_topk_average(backbone):
    bank = ["a red circle", "a blue square", "a green star"]
    cap = RetrievalCaptioner(backbone, bank, k=2)
    q = cap.bank_embeds[1:2]  # an "image" embedding equal to the second caption's embedding
    _, idx = cap.nearest(q)
    assert idx[0, 0].item() == 1
    expected = F.normalize(cap.bank_embeds[idx[0]].mean(0), dim=-1)
    assert torch.allclose(cap.embed_captions(q)[0], expected, atol=1e-6)


def test_oracle_captioner_by_pixels(backbone, pairs):
    lookup = {image_key(render(p.scene, size=32)): canonical_caption(p.scene) for p in pairs}
    cap = OracleCaptioner(backbone, lookup)
    images = [render(p.scene, size=32) for p in pairs[::-1]]
    assert cap.captions(None, images) == [canonical_caption(p.scene) for p in pairs[::-1]]
    other = render(generate_pairs(WorldConfig(seed=5), n=1)[0].scene, size=32)
    with pytest.raises(KeyError):
        cap.captions(None, [other])


def test_trainers_composer_and_resume(tmp_path, backbone):
    """Both stages train end to end on a tiny backbone, resume, and the checkpoint serves as a composer."""
    from zscir.methods.baselines import ImageOnlyComposer
    from zscir.methods.fusiondiff.config import PriorConfig
    from zscir.methods.fusiondiff.register import load_composer
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior

    small = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)
    pcfg = PriorTrainConfig(model="tiny-clip-test", steps=6, batch_size=16, eval_every=3, n_val=20,
                            cache_dir=str(tmp_path / "cache"), joint=JointConfig(bank_pairs=120), prior=small)
    r1 = train_prior(pcfg, tmp_path / "prior", progress=False, backbone=backbone)
    assert [h["step"] for h in r1["history"]] == [3, 6]
    acfg = AdapterTrainConfig(prior=str(tmp_path / "prior"), n_triplets=80, n_val=20, steps=4, batch_size=16,
                              eval_every=2, cache_dir=str(tmp_path / "cache"))
    train_adapter(acfg, tmp_path / "fd", progress=False, backbone=backbone)
    acfg.steps = 6
    r2 = train_adapter(acfg, tmp_path / "fd", resume=True, progress=False, backbone=backbone)
    assert [h["step"] for h in r2["history"]] == [2, 4, 6]
    assert r2["trainable_params"] > 0 and r2["n_train_triplets"] == 60

    comp = load_composer(backbone, tmp_path / "fd", steps=3, cache_dir=str(tmp_path / "cache"))
    pairs = generate_pairs(WorldConfig(seed=0), n=4)
    images = [render(p.scene, size=32) for p in pairs]
    q = comp.encode_queries(images, ["make it red"] * 4)
    g = comp.encode_gallery(images)
    assert q.shape == g.shape == (4, backbone.embed_dim)
    assert torch.allclose(q.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.equal(q, comp.encode_queries(images, ["make it red"] * 4))  # deterministic sampling
    assert comp.gallery_cache_key() != ImageOnlyComposer(backbone).gallery_cache_key()
    assert comp.describe()["sampling_ms_per_query"] > 0
    no_adapter = load_composer(backbone, tmp_path / "fd", steps=3, use_adapter=False,
                               cache_dir=str(tmp_path / "cache"))
    assert not torch.allclose(no_adapter.encode_queries(images, ["make it red"] * 4), q)


def test_image_space_shares_the_plain_gallery(tmp_path, backbone):
    from zscir.methods.baselines import ImageOnlyComposer
    from zscir.methods.fusiondiff.checkpoint import build_modules, save_checkpoint
    from zscir.methods.fusiondiff.config import FusionDiffConfig, PriorConfig
    from zscir.methods.fusiondiff.register import load_composer

    cfg = FusionDiffConfig(embed_dim=backbone.embed_dim, joint=JointConfig(space="image"),
                           prior=PriorConfig(width=32, layers=2, heads=2))
    save_checkpoint(tmp_path, cfg, *build_modules(cfg))
    comp = load_composer(backbone, tmp_path)
    images = [render(p.scene, size=32) for p in generate_pairs(WorldConfig(seed=0), n=3)]
    assert comp.gallery_cache_key() == ImageOnlyComposer(backbone).gallery_cache_key()
    assert torch.allclose(comp.encode_gallery(images), backbone.encode_images(images), atol=1e-6)


def test_mllm_encoder_tiny_random_qwen2vl():
    from PIL import Image

    from zscir.methods.fusiondiff.mllm import MLLMJointEncoder, tiny_random_qwen2vl

    model, proc = tiny_random_qwen2vl()
    enc = MLLMJointEncoder(model, proc)
    ims = [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))]
    texts = ["a red circle", "make it a blue star star"]
    a, b, c = enc.encode_joint(images=ims), enc.encode_joint(texts=texts), enc.encode_joint(images=ims, texts=texts)
    hidden = model.config.text_config.hidden_size
    for e in (a, b, c):
        assert e.shape == (2, hidden)
        assert torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(a[0], a[1])  # the image matters
    assert not torch.allclose(a, c)  # the text of a pair matters (and the prompt differs)
    # padding-invariant: the last *real* token is read even in a padded batch
    assert torch.allclose(enc.encode_joint(texts=texts[:1])[0], b[0], atol=1e-5)
    with pytest.raises(ValueError):
        enc.encode_joint(images=ims, texts=texts[:1])
