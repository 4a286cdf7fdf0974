"""Every trainer on real data (issue 11): WebDataset shards, a CSV manifest, a canonical triplet manifest;
and the world path unchanged (first losses equal the values recorded on the pre-data-layer code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data_fixtures import corpus, write_csv, write_triplets, write_wds
from zscir.train.data_options import DataOptions


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    items = corpus(48)
    trip = write_triplets(root / "t", items, n=60)
    return {"wds": write_wds(root / "w", items, corrupt={"000007"}), "csv": str(write_csv(root / "c", items)),
            "triplets": str(trip), "root": root}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from zscir.backbones import create_backbone

    path = tmp_path_factory.mktemp("tiny") / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    return f"local-dir:{path}"


def _falls(losses, k=2):
    return float(np.mean(losses[-k:])) < float(np.mean(losses[:k]))


@pytest.mark.parametrize("kind", ["wds", "csv", "csv-from-backbone"])
def test_clip_trains_from_pairs_and_reloads(tmp_path, files, tiny, kind):
    from zscir.backbones.hf_clip import HFCLIPBackbone
    from zscir.backbones.registry import TinyCLIPConfig
    from zscir.train.clip import CLIPTrainConfig, evaluate_clip, train_clip

    arch = TinyCLIPConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                          text_width=32, text_layers=1, text_heads=2, projection_dim=32, vocab_size=300,
                          max_text_len=32)
    cfg = CLIPTrainConfig(steps=12, batch_size=12, lr=3e-3, warmup=2, eval_every=1000, vocab_size=300, n_val=6,
                          arch=arch, data=DataOptions(data=files[kind[:3]], workers=0 if kind != "wds" else 1),
                          model=tiny if kind.endswith("backbone") else None)  # any backbone name: fine-tune it
    r = train_clip(cfg, tmp_path / "m", progress=False)
    assert _falls(r["losses"], 4), r["losses"]
    if kind == "wds":
        assert 0 <= r["data_wait_share"] < 1 and "1 not_an_image" in r["problems"]
    bb = HFCLIPBackbone.from_pretrained(tmp_path / "m", local_files_only=True)
    from zscir.data import get_pair_data

    t = get_pair_data(files["csv"]).table(32)
    assert set(evaluate_clip(bb, t.images, t.primary)) == {"i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"}


@pytest.mark.parametrize("kind", ["wds", "csv", "wds-streaming"])
def test_tscir_stage1_trains_from_pairs_and_reloads(tmp_path, files, tiny, kind):
    from zscir.methods.tscir.checkpoint import load_mapping
    from zscir.methods.tscir.config import MappingConfig, Stage1Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.backbones import create_backbone

    cfg = Stage1Config(model=tiny, mapping=MappingConfig(vsi_layers=[0], phi_hidden=64), steps=10, batch_size=12,
                       lr=1e-2, warmup=1, eval_every=1000, n_val=6, bf16=False,
                       data=DataOptions(data=files[kind.split("-")[0]], workers=0, streaming=kind.endswith("streaming")))
    r = train_stage1(cfg, tmp_path / "s1", progress=False)
    assert _falls(r["losses"]) and "img_R@1" in r["metrics"]
    load_mapping(tmp_path / "s1", create_backbone(tiny))


def test_tscir_stage2_and_fusiondiff_from_a_triplet_manifest(tmp_path, files, tiny):
    from zscir.methods.fusiondiff.config import JointConfig, PriorConfig
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.methods.tscir.stage2 import train_stage2
    from zscir.methods import create_composer

    trip = DataOptions(data=files["triplets"], id_template="images/{id}.png")
    train_stage1(Stage1Config(model=tiny, mapping=MappingConfig(vsi_layers=[0], phi_hidden=64), steps=2, batch_size=8,
                              n_val=4, bf16=False, data=DataOptions(data=files["csv"], workers=0)),
                 tmp_path / "s1", progress=False)
    r = train_stage2(Stage2Config(stage1=str(tmp_path / "s1"), model=tiny,  # a model folder: named by the user
                                  adapter=AdapterConfig(bottleneck=16), steps=12,
                                  batch_size=12, lr=1e-2, warmup=1, eval_every=1000, n_val=6, bf16=False, data=trip),
                     tmp_path / "s2", progress=False)
    assert _falls(r["losses"], 3) and "R@1" in r["metrics"]
    create_composer("tscir", model=tiny, checkpoint=str(tmp_path / "s2"))

    small = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)
    p = train_prior(PriorTrainConfig(model=tiny, steps=12, batch_size=16, lr=1e-2, warmup=1, eval_every=1000, n_val=6,
                                     cache_dir=str(tmp_path / "cache"), prior=small, joint=JointConfig(bank_pairs=50),
                                     data=DataOptions(data=files["wds"], workers=0)), tmp_path / "prior", progress=False)
    assert _falls(p["losses"], 3) and "val_loss" in p["history"][-1]
    a = train_adapter(AdapterTrainConfig(prior=str(tmp_path / "prior"), model=tiny, steps=12, batch_size=16, lr=1e-2,
                                         warmup=1,
                                         eval_every=1000, n_val=6, cache_dir=str(tmp_path / "cache"), data=trip),
                      tmp_path / "fd", progress=False)
    assert _falls(a["losses"], 3) and "val_R@1" in a["history"][-1]
    create_composer("fusiondiff", model=tiny, checkpoint=str(tmp_path / "fd"))


#: first 4 losses of each trainer on the world, recorded by running exactly the calls of the test below on the
#: code before the data layer (main at f35b6dc), twice in separate processes (identical both times)
WORLD_LOSSES = {
    "clip": [3.3314690589904785, 4.529201507568359, 2.9916422367095947, 3.184123992919922],
    "stage1": [14.70036792755127, 15.59184741973877, 16.551326751708984, 17.865169525146484],
    "stage2": [8.111611366271973, 6.888892650604248, 7.47695255279541, 7.871795654296875],
    "prior": [1.340611457824707, 1.2097551822662354, 1.0551774501800537, 0.9687286019325256],
    "adapter": [1.1032854318618774, 1.1789928674697876, 1.2491376399993896, 1.089598298072815],
}


@pytest.mark.slow
def test_world_path_losses_equal_the_pre_data_layer_code(tmp_path):
    from zscir.backbones.registry import TinyCLIPConfig, shipped_model_dir
    from zscir.methods.fusiondiff.config import JointConfig, PriorConfig
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.methods.tscir.stage2 import train_stage2
    from zscir.train.clip import CLIPTrainConfig, train_clip

    arch = TinyCLIPConfig(vision_width=32, vision_layers=1, vision_heads=2, text_width=32, text_layers=1,
                          text_heads=2, projection_dim=32, vocab_size=300, max_text_len=32)
    got = {"clip": train_clip(CLIPTrainConfig(n_pairs=200, n_val=16, steps=4, batch_size=16, warmup=2, eval_every=1000,
                                              lr=3e-3, arch=arch, tokenizer=str(shipped_model_dir("world-clip"))),
                              tmp_path / "clip", progress=False)["losses"]}
    got["stage1"] = train_stage1(Stage1Config(model="world-clip", mapping=MappingConfig(vsi_layers=[0], phi_hidden=64),
                                              n_pairs=200, n_val=16, steps=4, batch_size=16, lr=1e-2, warmup=1,
                                              eval_every=1000, threads=1), tmp_path / "s1", progress=False)["losses"]
    got["stage2"] = train_stage2(Stage2Config(stage1=str(tmp_path / "s1"), adapter=AdapterConfig(bottleneck=16),
                                              max_triplets=120, n_val=16, gallery_pairs=40, steps=4, batch_size=15,
                                              lr=1e-2, warmup=1, eval_every=1000, hard_negatives=4, hn_pool=8,
                                              hn_refresh=2, threads=1), tmp_path / "s2", progress=False)["losses"]
    small = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)
    got["prior"] = train_prior(PriorTrainConfig(model="world-clip", steps=4, batch_size=16, lr=1e-2, warmup=1,
                                                eval_every=1000, n_val=20, cache_dir=str(tmp_path / "cache"),
                                                joint=JointConfig(bank_pairs=120), prior=small),
                               tmp_path / "prior", progress=False)["losses"]
    got["adapter"] = train_adapter(AdapterTrainConfig(prior=str(tmp_path / "prior"), n_triplets=80, n_val=20, steps=4,
                                                      batch_size=15, lr=1e-2, warmup=1, eval_every=1000,
                                                      cache_dir=str(tmp_path / "cache")),
                                   tmp_path / "adapter", progress=False)["losses"]
    # Recorded on another CPU: float sums in another order (BLAS kernels differ between AMD and Intel builds)
    # move these losses by up to ~5e-4 relative (an AMD EPYC read Stage I 14.7073 for 14.7004): the test checks
    # the property (the same batches reach the same losses up to float rounding), not one CPU's bits; other
    # pairs, another order or another augmentation change a 4-step loss well beyond 2e-3.
    for k, v in WORLD_LOSSES.items():
        np.testing.assert_allclose(got[k], v, rtol=2e-3, atol=1e-5, err_msg=k)


def test_datawait_benchmark_item_tiny(tmp_path):
    import json

    from benchmarks.suite import SuiteConfig, run_suite

    run_suite(SuiteConfig(items=["datawait"], out_dir=tmp_path, tiny=True, repeats=1, command="test"))
    rows = json.loads((tmp_path / "datawait.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["steps_timed"] == 2 and 0 <= rows[0]["wait_share"] < 1
    assert "wait_share" in (tmp_path / "datawait.md").read_text()


def test_stage2_and_adapter_train_from_make_triplets_output(tmp_path, files, tiny):
    """The documented chain: pairs → `make-triplets -g mine` → Stage II and the Control-Adapter train on its rows."""
    from zscir.data.synth.make import MakeTripletsConfig, make_triplets
    from zscir.data.synth.templates import MiningConfig
    from zscir.methods.fusiondiff.config import JointConfig, PriorConfig
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.methods.tscir.stage2 import train_stage2

    r = make_triplets(MakeTripletsConfig(data=files["csv"], out=str(tmp_path / "mt"), generators=("mine",),
                                         model=tiny, image_size=32, mining=MiningConfig(k=7, per_reference=3)),
                      progress=False)
    assert r["per_generator"]["mine"] >= 24, r
    trip = DataOptions(data=str(tmp_path / "mt" / "triplets.jsonl"))
    train_stage1(Stage1Config(model=tiny, mapping=MappingConfig(vsi_layers=[0], phi_hidden=64), steps=2, batch_size=8,
                              n_val=4, bf16=False, data=DataOptions(data=files["csv"], workers=0)),
                 tmp_path / "s1", progress=False)
    s2 = train_stage2(Stage2Config(stage1=str(tmp_path / "s1"), model=tiny, adapter=AdapterConfig(bottleneck=16),
                                   steps=12,
                                   batch_size=12, lr=1e-2, warmup=1, eval_every=1000, n_val=6, bf16=False, data=trip),
                      tmp_path / "s2", progress=False)
    assert _falls(s2["losses"], 3)
    small = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)
    train_prior(PriorTrainConfig(model=tiny, steps=4, batch_size=16, lr=1e-2, warmup=1, eval_every=1000, n_val=6,
                                 cache_dir=str(tmp_path / "cache"), prior=small, joint=JointConfig(bank_pairs=50),
                                 data=DataOptions(data=files["csv"], workers=0)), tmp_path / "prior", progress=False)
    a = train_adapter(AdapterTrainConfig(prior=str(tmp_path / "prior"), model=tiny, steps=12, batch_size=16, lr=1e-2,
                                         warmup=1,
                                         eval_every=1000, n_val=6, cache_dir=str(tmp_path / "cache"), data=trip),
                      tmp_path / "fd", progress=False)
    assert _falls(a["losses"], 3)


def test_one_image_pass_serves_references_and_gallery():
    """Stage II on a triplet manifest encodes each image once (with patch tokens under VSI) and takes the
    gallery's global embeddings from that pass: they must equal a global-only pass."""
    import torch

    from zscir.backbones import create_backbone
    from zscir.train.pair_features import encode_pixels

    bb = create_backbone("tiny-clip-test")
    pix = torch.rand(4, 3, bb.image_size, bb.image_size) * 2 - 1
    g_tok, p = encode_pixels(bb, pix, True, False)
    g_only, none = encode_pixels(bb, pix, False, False)
    assert p is not None and none is None
    assert torch.allclose(g_tok, g_only, atol=1e-6)
