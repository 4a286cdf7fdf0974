"""Methods sharing one backbone never change each other's embeddings: every door gives the same answer.

The retriever behind `zscir search` / `zscir serve` and the indexer build every method on one backbone.
TSCIR's VSI modules and composing adapters (bottleneck hooks or peft LoRA inside the text layers) attach
to that backbone; they must run only in TSCIR's own query calls. Each test compares, bit for bit
(`torch.equal`), what a method computes on a backbone shared with all others — built in several orders —
with what it computes on a backbone it has alone.
"""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from PIL import Image

from zscir.methods import create_composer, list_methods

TEXTS = ["make it blue", "add a small star on the left", "remove the circle"]


def _images(n: int, seed: int) -> list[Image.Image]:
    g = torch.Generator().manual_seed(seed)
    return [Image.fromarray((torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()) for _ in range(n)]


REFS, GALLERY = _images(3, 0), _images(4, 1)


def _orders(labels: list[str]) -> list[list[str]]:
    shuffled = list(labels)
    random.Random(16).shuffle(shuffled)
    return [list(labels), list(reversed(labels)), shuffled]


def _embed(composer) -> tuple[torch.Tensor, torch.Tensor]:
    return composer.encode_queries(REFS, TEXTS), composer.encode_gallery(GALLERY)


def _assert_isolated(specs: dict[str, dict], new_backbone) -> None:
    """``specs``: label -> create_composer kwargs; every label alone vs. all on one backbone, 3 orders."""
    alone = {label: _embed(create_composer(backbone=new_backbone(), **kw)) for label, kw in specs.items()}
    for order in _orders(list(specs)):
        bb = new_backbone()
        built = {label: create_composer(backbone=bb, **specs[label]) for label in order}
        for label in reversed(order):  # encode in another order than built: nothing depends on either
            q, g = _embed(built[label])
            assert torch.equal(q, alone[label][0]), f"{label}: query differs when built in order {order}"
            assert torch.equal(g, alone[label][1]), f"{label}: gallery differs when built in order {order}"


# ----------------------------------------------------------------------------- every shipped method, world CLIP
@pytest.fixture(scope="module")
def world_parts():
    """The shipped world CLIP's model, tokenizer and processor, loaded once; backbones are cheap copies."""
    from transformers import CLIPModel, AutoTokenizer

    from zscir.backbones.hf_clip import load_image_processor
    from zscir.backbones.registry import shipped_model_dir

    path = shipped_model_dir("world-clip")
    return CLIPModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path), load_image_processor(path)


def world_backbone(parts):
    from zscir.backbones.hf_clip import HFCLIPBackbone

    model, tok, proc = parts
    return HFCLIPBackbone(copy.deepcopy(model), tok, proc, name="world-clip").freeze()


@pytest.fixture
def small_caption_bank(monkeypatch):
    """Fusion-Diff's retrieval captioner over 200 world pairs instead of 10 000 (seconds, not minutes)."""
    from zscir.methods.fusiondiff import features

    full = features.caption_bank
    monkeypatch.setattr(features, "caption_bank", lambda n_pairs, world_seed=0: full(200, world_seed))


def test_every_registered_method_is_isolated_on_a_shared_world_backbone(world_parts, small_caption_bank,
                                                                        tmp_path):
    from test_peers import write_checkpoints

    names = [spec.name for spec in list_methods()]
    assert {"image", "text", "sum", "pic2word", "tscir", "fusiondiff", "fusiondiff-image"} <= set(names)
    peers = write_checkpoints(tmp_path, d_in=128, d_out=128)  # released-format φ files for world-clip's sizes
    counter = iter(range(1000))

    def kwargs(name):
        if name.startswith("fusiondiff"):  # a bank cache of its own per backbone: nothing computed is shared
            return {"method": name, "cache_dir": str(tmp_path / f"cache{next(counter)}"), "steps": 3}
        if name in peers:
            return {"method": name, "checkpoint": str(peers[name])}
        return {"method": name}

    specs = {name: kwargs(name) for name in names}
    _assert_isolated(specs, lambda: world_backbone(world_parts))


# --------------------------------------------------------------------------- VSI + bottleneck + two LoRA, tiny
@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A tiny model folder, a Stage I with VSI, and three Stage II on it: bottleneck and two different LoRA."""
    from zscir.backbones import create_backbone
    from zscir.methods.tscir.adapters import ComposingAdapters
    from zscir.methods.tscir.checkpoint import save_stage1, save_stage2
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
    from zscir.methods.tscir.mapping import Mapping

    tmp = tmp_path_factory.mktemp("iso")
    create_backbone("tiny-clip-test-4l").save_pretrained(tmp / "clip")
    model = f"local-dir:{tmp / 'clip'}"
    torch.manual_seed(3)
    bb = create_backbone(model)
    m = Mapping(bb, MappingConfig(vsi_layers=[0, 1])).eval()
    with torch.no_grad():
        for v in m.vsi:
            v.gate.fill_(0.5)
    save_stage1(tmp / "s1", m, bb, "tscir", Stage1Config().to_dict())
    out = {"model": model, "stage1": str(tmp / "s1")}
    for i, kind in enumerate(["bottleneck", "lora", "lora"]):
        bb = create_backbone(model)
        ad = ComposingAdapters(bb, AdapterConfig(kind=kind, layers=[1, 2], bottleneck=8, lora_rank=4))
        ad.attach(bb)
        with torch.no_grad():
            for p in ad.trainable_parameters():
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(i))
        name = f"s2-{kind}{i}"
        save_stage2(tmp / name, ad, tmp / "s1", bb, "a photo of $ that {}", Stage2Config().to_dict())
        out[name] = str(tmp / name)
    return out


def test_vsi_bottleneck_and_lora_adapters_are_isolated(tiny_checkpoints):
    from zscir.backbones import create_backbone

    ck = tiny_checkpoints
    specs = {"image": {"method": "image"}, "text": {"method": "text"}, "sum": {"method": "sum"},
             "stage1-vsi": {"method": "pic2word", "checkpoint": ck["stage1"]}}
    specs.update({name: {"method": "tscir", "checkpoint": ck[name]} for name in ck if name.startswith("s2-")})
    _assert_isolated(specs, lambda: create_backbone(ck["model"]).freeze())


def test_lora_switch_keeps_training_flags_and_other_adapters(tiny_checkpoints):
    """Turning one LoRA adapter on for its calls leaves every tensor's requires_grad as the trainer set it."""
    from zscir.backbones import create_backbone

    ck = tiny_checkpoints
    bb = create_backbone(ck["model"]).freeze()
    a = create_composer("tscir", backbone=bb, checkpoint=ck["s2-lora1"])
    b = create_composer("tscir", backbone=bb, checkpoint=ck["s2-lora2"])
    assert a.adapters._lora_name != b.adapters._lora_name
    for p in a.adapters.trainable_parameters():
        p.requires_grad_(True)
    flags = {n: p.requires_grad for n, p in bb.text_encoder.named_parameters()}
    qa, qb = a.encode_queries(REFS, TEXTS), b.encode_queries(REFS, TEXTS)
    assert not torch.equal(qa, qb)  # two different adapters, each active only in its own calls
    assert flags == {n: p.requires_grad for n, p in bb.text_encoder.named_parameters()}
    assert torch.equal(bb.encode_texts(TEXTS), create_backbone(ck["model"]).encode_texts(TEXTS))


# ------------------------------------------------------------------------------------ server, CLI, Retriever
def test_same_answer_through_server_cli_and_retriever(tmp_path, small_caption_bank):
    """GET /methods builds every method on the retriever's backbone; `sum` and `tscir` answers stay the ones
    a process that built only that method gives (the CLI)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from zscir.cli import app as cli
    from zscir.index.build import IndexConfig, build_index
    from zscir.index.retriever import Retriever
    from zscir.index.store import EmbeddingStore
    from zscir.serve import create_app

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, im in enumerate(_images(10, 7)):
        im.save(photos / f"img{i:02d}.png")
    composer = create_composer("sum", model="world-clip")
    build_index(photos, tmp_path / "idx", composer, model="world-clip", config=IndexConfig(progress=False))
    r = Retriever(EmbeddingStore.load(tmp_path / "idx"), composer)
    query = {"text": "make it red", "k": "5", "item_id": "img03.png"}

    def pairs(hits):
        return [(h.id, round(h.score, 6)) for h in hits]

    before = pairs(r.search("img03.png", query["text"], k=5, method="sum"))
    client = TestClient(create_app(r))
    got = client.post("/search", data={**query, "method": "sum"}).json()["results"]
    assert [(x["id"], x["score"]) for x in got] == before
    listed = client.get("/methods").json()["methods"]
    assert {m["name"] for m in listed if m["available"]} >= {"sum", "tscir", "pic2word", "fusiondiff"}
    for method in ("sum", "tscir"):
        served = client.post("/search", data={**query, "method": method}).json()["results"]
        res = CliRunner().invoke(cli, ["search", str(tmp_path / "idx"), "--image", "img03.png", "--text",
                                       query["text"], "-k", "5", "-m", method, "--json"])
        assert res.exit_code == 0, res.output
        alone = [(x["id"], x["score"]) for x in json.loads(res.stdout)]
        assert [(x["id"], x["score"]) for x in served] == alone, method
        assert pairs(r.search("img03.png", query["text"], k=5, method=method)) == alone, method
    assert pairs(r.search("img03.png", query["text"], k=5, method="sum")) == before
