"""Peer methods through zscir's interfaces: eval (world, CIRR layout, FashionIQ), submit, index/search.

Each run records the peer's prompt and the protocol flags it applied by default (``method_preset``); an
explicit ``--flag`` wins and is then not listed as a preset.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import SMALL_WORLD
from test_peers import write_checkpoints
from zscir.cli import app
from zscir.methods import create_composer
from zscir.methods.peers import PeerComposer

TINY = ["--model", "tiny-clip-test"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("peer-ckpts-eval"))


def _invoke(args: list[str]):
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_world_eval_records_prompts_and_presets(ckpts, tiny_backbone, small_world_root, tmp_path):
    from zscir.eval.world import evaluate_world

    comp = create_composer("searle", backbone=tiny_backbone, checkpoint=str(ckpts["searle"]))
    r = json.loads(json.dumps(evaluate_world(comp, world_overrides=SMALL_WORLD, progress=False, cache_dir=tmp_path,
                                             limit=4)))
    m = r["method"]
    assert m["method"] == "searle" and m["prompt"] == "a photo of $ that {caption}" and m["placeholder"] == "$"
    assert m["prompts"]["fashioniq"] == ["a photo of $ that {cap1} and {cap2}", "a photo of $ that {cap2} and {cap1}"]
    assert m["checkpoint"] == str(ckpts["searle"]) and m["phi_dims"]["in_dim"] == 24
    for part in ("cirr", "circo"):
        proto = r["parts"][part]["protocol"]
        assert proto["method_preset"]["preprocessing"] == "targetpad" and proto["preprocessing"] == "targetpad"
    assert r["parts"]["circo"]["protocol"]["use_shared_concept"] is False
    assert 0.0 <= r["metrics"]["R@1"] <= 100.0


@pytest.mark.parametrize("name,flags,preset,pre", [
    ("searle", [], {"preprocessing": "targetpad"}, "targetpad"),
    ("searle", ["--flag", "preprocessing=default"], {}, "default"),  # the user's flag wins
    ("pic2word-official", [], {"preprocessing": "default"}, "default"),
])
def test_cli_eval_cirr_layout(name, flags, preset, pre, ckpts, small_world_root, tmp_path):
    out = tmp_path / "r.json"
    _invoke(["eval", "--benchmark", "cirr", "--data-root", str(small_world_root / "cirr"), "-m", name,
             "--checkpoint", str(ckpts[name]), *TINY, "--limit", "6", "--no-progress", "--cache-dir", str(tmp_path),
             "--output", str(out), *flags])
    r = json.loads(out.read_text())
    assert r["protocol"]["method_preset"] == preset and r["protocol"]["preprocessing"] == pre
    assert r["method"]["prompt"] == {"searle": "a photo of $ that {caption}",
                                     "pic2word-official": "a photo of * , {caption}"}[name]
    assert r["n_queries"] == 6 and "R@1" in r["metrics"]


def test_cli_eval_without_checkpoint_is_one_clear_error():
    res = CliRunner().invoke(app, ["eval", "--benchmark", "world", "-m", "lincir", *TINY])
    assert res.exit_code == 2 and "--checkpoint" in res.output and "Traceback" not in res.output


def _tiny_fashioniq(root: Path) -> None:
    """Three categories, two queries each; captions with stray punctuation and spaces (stripping matters)."""
    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    (root / "images").mkdir()
    k = 0
    for cat in ("dress", "shirt", "toptee"):
        names = [f"{cat}{i}" for i in range(4)]
        for i, n in enumerate(names):
            Image.new("RGB", (24, 40), ((50 * i) % 256, 40 * k % 256, 90)).save(root / "images" / f"{n}.png")
            k += 1
        caps = [{"candidate": names[0], "target": names[1], "captions": [" is red.", "has long sleeves?"]},
                {"candidate": names[2], "target": names[3], "captions": ["is shorter", " is blue ,"]}]
        (root / "captions" / f"cap.{cat}.val.json").write_text(json.dumps(caps))
        (root / "image_splits" / f"split.{cat}.val.json").write_text(json.dumps(names))


def test_fashioniq_prompts_per_peer(ckpts, tiny_backbone, tmp_path, monkeypatch):
    from zscir.eval.benchmarks import evaluate_benchmark

    _tiny_fashioniq(tmp_path / "fiq")
    seen: list[str] = []
    orig = PeerComposer.prompts
    monkeypatch.setattr(PeerComposer, "prompts", lambda self, texts: seen.extend(orig(self, texts)) or orig(self, texts))

    p2w = create_composer("pic2word-official", backbone=tiny_backbone, checkpoint=str(ckpts["pic2word-official"]))
    r = evaluate_benchmark("fashioniq", tmp_path / "fiq", "val", p2w, progress=False, cache_dir=tmp_path)
    assert r["protocol"]["caption_mode"] == "pic2word" and r["protocol"]["strip_captions"] is False
    assert r["protocol"]["method_preset"] == {"preprocessing": "default", "caption_mode": "pic2word",
                                              "strip_captions": False}
    assert seen[:2] == ["a photo of * , has long sleeves? and  is red.", "a photo of * ,  is blue , and is shorter"]
    assert len(seen) == 6  # one text per query

    seen.clear()
    searle = create_composer("searle", backbone=tiny_backbone, checkpoint=str(ckpts["searle"]))
    r = evaluate_benchmark("fashioniq", tmp_path / "fiq", "val", searle, progress=False, cache_dir=tmp_path)
    assert r["protocol"]["caption_mode"] == "searle" and r["protocol"]["preprocessing"] == "targetpad"
    # both caption orders, stripped; their normalised features are averaged by the runner
    assert seen[:4] == ["a photo of $ that is red and has long sleeves", "a photo of $ that is shorter and is blue",
                        "a photo of $ that has long sleeves and is red", "a photo of $ that is blue and is shorter"]
    assert set(r["metrics"]) >= {"dress/R@10", "avg/R@10", "avg"}


def test_cli_submit_records_prompt(ckpts, small_world_root, tmp_path):
    res = _invoke(["submit", "--benchmark", "circo", "--data-root", str(small_world_root / "circo"), "--split", "val",
                   "-m", "lincir", "--checkpoint", str(ckpts["lincir"]), *TINY, "--out-dir", str(tmp_path / "sub"),
                   "--no-progress", "--cache-dir", str(tmp_path)])
    meta = json.loads(next((tmp_path / "sub").glob("*.meta.json")).read_text())
    assert meta["method"]["method"] == "lincir" and meta["method"]["prompt"] == "a photo of $ that {caption}"
    assert meta["protocol"]["use_shared_concept"] is False and "lincir" in res.output


def test_index_search_and_python_api(ckpts, tmp_path):
    from zscir.index.retriever import Retriever

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 30), (40 * i, 255 - 40 * i, 120)).save(photos / f"p{i}.png")
    idx = tmp_path / "idx"
    _invoke(["index", str(photos), "--out", str(idx), *TINY, "--workers", "0"])
    res = _invoke(["search", str(idx), "--image", str(photos / "p0.png"), "--text", "the same but blue", "-k", "3",
                   "-m", "pic2word-official", "--checkpoint", str(ckpts["pic2word-official"]), "--json"])
    hits = json.loads(res.output)
    assert len(hits) == 3
    r = Retriever.load(idx, method="searle", checkpoint=str(ckpts["searle"]))
    api_hits = r.search(photos / "p1.png", "make it red", k=4)
    assert len(api_hits) == 4 and r.composer().name == "searle"
    listed = {m["name"]: m for m in r.methods()}  # what /methods and the web page's selector show
    assert listed["searle"]["available"] and listed["searle"]["gallery"] == "indexed"
    assert not listed["lincir"]["available"] and "--checkpoint" in listed["lincir"]["reason"]
    # the peers share the plain image-embedding gallery of the index (no re-encoding)
    assert r.composer().gallery_cache_key() == create_composer("sum", backbone=r.backbone).gallery_cache_key()
