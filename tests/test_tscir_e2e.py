"""End-to-end: train both stages on a small slice of the world and check the result beats an untrained φ.

The fast test uses the tiny random backbone (saved once so that every stage reloads identical weights
and tokenizer); the slow one runs the real CLI on the shipped world CLIP and `zscir eval`.
"""

from __future__ import annotations

import json

import pytest
import torch

from zscir.backbones import create_backbone

# the fast tiny pipeline test runs in ≈20 s; the world-slice and CLI tests are marked slow


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-e2e") / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    return f"local-dir:{path}"


def _val_recall(composer, trips, size: int, k: int = 5) -> float:
    """R@k of each triplet's target among all the slice's targets, through the public Composer API."""
    from zscir.data.world import render

    refs = [render(t.reference.scene, size) for t in trips]
    tgts = [render(t.target_scene, size) for t in trips]
    q = composer.encode_queries(refs, [t.text for t in trips])
    g = composer.encode_gallery(tgts)
    sims = q @ g.T
    rank = (sims > sims.diagonal()[:, None]).sum(1)
    return float((rank < k).float().mean() * 100)


def _train_slice(tmp_path, model: str, size: int, s1_steps: int, s2_steps: int):
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.methods.tscir.stage2 import train_stage2

    torch.manual_seed(0)
    s1 = train_stage1(Stage1Config(model=model, mapping=MappingConfig(vsi_layers=[0]), n_pairs=1000, n_val=100,
                                   steps=s1_steps, batch_size=64, lr=2e-3, warmup=5, eval_every=s1_steps),
                      tmp_path / "s1", progress=False)
    # model named again: a model folder recorded in the Stage I config is not loaded on the checkpoint's word
    s2 = train_stage2(Stage2Config(stage1=str(tmp_path / "s1"), model=model, adapter=AdapterConfig(bottleneck=16),
                                   max_triplets=500, n_val=100, gallery_pairs=200, steps=s2_steps, batch_size=64,
                                   lr=2e-3, warmup=5, hard_negatives=4, hn_pool=8, hn_refresh=20,
                                   eval_every=s2_steps), tmp_path / "s2", progress=False)
    return s1, s2


def _unseen_triplets(size: int):
    from zscir.data import world

    wcfg = world.WorldConfig(seed=0, image_size=size)
    return world.generate_triplets(wcfg, "hq", n=1200, pairs=world.generate_pairs(wcfg))[1000:]  # never trained on


def test_tiny_pipeline_writes_self_contained_checkpoints(tmp_path, tiny_dir):
    """Both stages run end to end on the tiny random model; the Stage II folder alone rebuilds the model."""
    from zscir.methods import create_composer

    s1, s2 = _train_slice(tmp_path, tiny_dir, 32, 10, 6)
    assert s1["history"][-1]["step"] == 10 and "img_R@1" in s1["history"][-1]
    assert [h["step"] for h in s2["history"]] == [0, 6]
    cfg = json.loads((tmp_path / "s2" / "config.json").read_text())
    assert cfg["stage"] == 2 and cfg["stage1"] == "stage1" and cfg["train"]["max_triplets"] == 500
    assert (tmp_path / "s2" / "stage1" / "model.safetensors").exists()
    comp = create_composer("tscir", model=tiny_dir, checkpoint=str(tmp_path / "s2"))
    assert comp.adapters is not None and _val_recall(comp, _unseen_triplets(32)[:20], 32, k=20) == 100.0


def test_world_slice_train_and_eval_beats_untrained_phi(tmp_path):
    """A tiny train on a slice of the world beats an untrained φ on unseen triplets.

    The issue's end-to-end check, kept in the default suite: ≈50 s on this machine (R@5 82.5 trained vs
    15.0 untrained on the shipped world-clip). The tiny pipeline test above checks the plumbing only.
    """
    import os

    from zscir.backbones.registry import shipped_model_dir
    from zscir.methods import create_composer
    from zscir.methods.tscir.composer import PseudoTokenComposer
    from zscir.methods.tscir.config import MappingConfig
    from zscir.methods.tscir.mapping import Mapping

    model = os.environ.get("ZSCIR_TSCIR_TEST_MODEL", "world-clip")
    if model == "world-clip" and not (shipped_model_dir("world-clip") / "config.json").exists():
        pytest.skip("world-clip not shipped in this build")
    _train_slice(tmp_path, model, 64, 80, 60)
    trips = _unseen_triplets(64)
    trained = create_composer("tscir", model=model, checkpoint=str(tmp_path / "s2"))
    bb = create_backbone(model)
    torch.manual_seed(0)
    untrained = PseudoTokenComposer(bb, Mapping(bb, MappingConfig(vsi_layers=[0])))
    r_trained, r_untrained = _val_recall(trained, trips, 64), _val_recall(untrained, trips, 64)
    print(f"R@5 on 200 unseen triplets: trained {r_trained:.1f}, untrained {r_untrained:.1f}")
    assert r_trained > r_untrained + 5, (r_trained, r_untrained)


@pytest.mark.slow
def test_cli_both_stages_on_world_clip_and_eval(tmp_path):
    """`zscir train tscir-stage1/2` + `zscir eval --benchmark world` on the shipped world CLIP (~2-4 min)."""
    from typer.testing import CliRunner

    from zscir.backbones.registry import shipped_model_dir
    from zscir.cli import app

    if not (shipped_model_dir("world-clip") / "config.json").exists():
        pytest.skip("world-clip not shipped in this build")
    run = CliRunner().invoke
    r = run(app, ["train", "tscir-stage1", "--out", str(tmp_path / "s1"), "--steps", "150", "--n-pairs", "3000",
                  "--eval-every", "150", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = run(app, ["train", "tscir-stage2", "--stage1", str(tmp_path / "s1"), "--out", str(tmp_path / "s2"),
                  "--max-triplets", "2000", "--steps", "150", "--eval-every", "150", "--no-progress"])
    assert r.exit_code == 0, r.output
    hist = json.loads((tmp_path / "s2" / "train_log.json").read_text())["history"]
    assert hist[-1]["R@10"] > hist[0]["R@10"]  # Stage II improves over Stage I alone on held-out triplets
    out = tmp_path / "eval.json"
    r = run(app, ["eval", "--benchmark", "world", "-m", "tscir", "--checkpoint", str(tmp_path / "s2"),
                  "--limit", "100", "--no-progress", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["metrics"]["R@50"] > 10
