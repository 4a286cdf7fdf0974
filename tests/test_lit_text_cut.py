"""`zscir train lit --text-tower {lora,full} --text-unlock-layers K`: only the text tower's last K layers train,
on hidden states of the frozen first layers cached once per caption (`zscir.train.lit_text_cut`).

Tiny towers as in tests/test_lit_text_tower.py, but a 3-layer BERT here, so that K = 1 and K = 2 both leave
frozen layers in front of the cut.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_lit_text_tower import TEXT_NAME, WORDS, build, digest, pairs, text_emb, tiny_towers  # noqa: F401
from tests.test_lit_text_tower import train as _train

N_LAYERS = 3
#: float16 cached states reproduce the float32 tower to this absolute tolerance (tiny tower outputs ~1)
ATOL = 2e-3


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tinybert3")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    vocab = {w: i for i, w in enumerate(WORDS)}
    try:
        tok = BertTokenizerFast(vocab=vocab)
    except TypeError:
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=N_LAYERS, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(folder)
    return folder


def train(tmp_path, **kw):
    k = kw.pop("text_unlocked_layers", 0)
    if k:  # the shared helper knows the other tuning fields only
        import tests.test_lit_text_tower as base

        orig = base.model_cfg
        try:
            base.model_cfg = lambda **m: orig(**m, text_unlocked_layers=k)
            return _train(tmp_path, **kw)
        finally:
            base.model_cfg = orig
    return _train(tmp_path, **kw)


def layer_digests(bb):
    from zscir.backbones.text_towers import find_text_layers

    return [digest(layer) for layer in find_text_layers(bb.text_model)]


def rest_digest(bb):
    """Everything of the text tower outside its transformer layers (embeddings, pooler)."""
    return {n: p.detach().clone() for n, p in bb.text_model.named_parameters() if ".layer." not in n}


# --- what trains -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_only_the_last_k_layers_change(tmp_path, mode, k):
    bb = build(text_tuning=mode, text_unlocked_layers=k)
    before, rest = layer_digests(bb), rest_digest(bb)
    image0 = digest(bb.image_model)
    r = train(tmp_path, backbone=bb, text_tuning=mode, text_unlocked_layers=k, steps=4)
    after = layer_digests(bb)
    changed = [a != b for a, b in zip(before, after)]
    assert changed == [False] * (N_LAYERS - k) + [True] * k
    assert all(torch.equal(v, dict(bb.text_model.named_parameters())[n]) for n, v in rest.items())
    assert digest(bb.image_model) == image0
    assert not any(p.requires_grad for p in bb.text_model.parameters())
    assert r["data"]["text_cache_bytes"] > 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_cached_states_through_the_last_layers_are_the_tower(k):
    from zscir.backbones.lit_tuning import text_front, text_tail_pooled
    from zscir.train.lit_text_cut import pad_hidden

    bb = build(text_tuning="full", text_unlocked_layers=k)
    texts = ["a red circle", "an emoji of a big brown dog , clip art style", "cat"]
    tok = bb.tokenize(texts)
    with torch.no_grad():
        ref = bb.text_features(texts)
        hidden = text_front(bb.text_model, tok["input_ids"], tok["attention_mask"], k)
        lengths = tok["attention_mask"].sum(1).tolist()
        states = [hidden[i, :n].half() for i, n in enumerate(lengths)]  # as cached: real length, float16
        h, mask = pad_hidden(states, torch.float32, "cpu")
        out = text_tail_pooled(bb.text_model, h, mask, k)
        assert torch.allclose(out, ref, atol=ATOL), (out - ref).abs().max()
        assert torch.equal(bb.text_features(texts), ref)  # the tower is whole again afterwards
    assert h.shape[1] == max(lengths) < bb.cfg.max_text_len  # not padded to max_text_len


# --- the cache -----------------------------------------------------------------------------------------
def cache_files(tmp_path):
    return sorted((tmp_path / "cache").glob("lit-text-*-cut*.pt"))


def test_cache_holds_each_caption_once_at_its_length_and_is_reused(tmp_path, monkeypatch):
    from zscir.backbones.tensor_files import load_torch_tensors
    import zscir.train.lit_text_cut as cut

    data = pairs(8, phrasings=True)
    r = train(tmp_path, name="a", text_tuning="full", text_unlocked_layers=1, data=data, caption_augment="metadata")
    (f,) = cache_files(tmp_path)
    assert f.name.endswith(f"-cut{N_LAYERS - 1}.pt")
    saved = load_torch_tensors(f)["text"]
    distinct = {c for p in data for c in (p[1], *p[2])}
    assert len(saved) == len(distinct) == r["data"]["texts"]
    assert all(t.dtype == torch.float16 and t.ndim == 2 and t.shape[1] == 16 for t in saved.values())
    assert len({t.shape[0] for t in saved.values()}) > 1  # real lengths, not one padded length
    calls = []
    orig = cut.text_front
    monkeypatch.setattr(cut, "text_front", lambda *a, **kw: calls.append(1) or orig(*a, **kw))
    train(tmp_path, name="b", text_tuning="lora", text_unlocked_layers=1, data=data, caption_augment="metadata")
    assert calls == []  # every caption came from the file
    train(tmp_path, name="c", text_tuning="full", text_unlocked_layers=2, data=data, caption_augment="metadata")
    assert calls and len(cache_files(tmp_path)) == 2  # another cut: another file


@pytest.mark.parametrize("poison", ["garbage", "features", "nan", "width", "dtype", "too_long", "empty_entry",
                                    "not_tensor", "format"])
def test_foreign_or_poisoned_cache_is_rebuilt(tmp_path, monkeypatch, poison):
    from zscir.backbones.tensor_files import load_torch_tensors
    import zscir.train.lit_text_cut as cut

    data = pairs(8)
    train(tmp_path, name="a", text_tuning="full", text_unlocked_layers=1, data=data)
    (f,) = cache_files(tmp_path)
    good = load_torch_tensors(f)
    key = next(iter(good["text"]))
    bad = {"format": good["format"], "text": dict(good["text"])}
    if poison == "garbage":
        f.write_bytes(b"not a torch file" * 4)
    else:
        if poison == "features":
            bad = {"image": {}, "text": {key: torch.zeros(16)}}
        elif poison == "nan":
            bad["text"][key] = torch.full_like(bad["text"][key], float("nan"))
        elif poison == "width":
            bad["text"][key] = torch.zeros(3, 17, dtype=torch.float16)
        elif poison == "dtype":
            bad["text"][key] = bad["text"][key].float()
        elif poison == "too_long":
            bad["text"][key] = torch.zeros(500, 16, dtype=torch.float16)
        elif poison == "empty_entry":
            bad["text"][key] = torch.zeros(0, 16, dtype=torch.float16)
        elif poison == "not_tensor":
            bad["text"][key] = [1, 2, 3]
        elif poison == "format":
            bad["format"] = "something-else"
        torch.save(bad, f)
    calls = []
    orig = cut.text_front
    monkeypatch.setattr(cut, "text_front", lambda *a, **kw: calls.append(1) or orig(*a, **kw))
    r = train(tmp_path, name="b", text_tuning="full", text_unlocked_layers=1, data=data)
    assert calls  # rebuilt, not trusted
    assert torch.isfinite(torch.tensor(r["losses"])).all()
    rebuilt = load_torch_tensors(f)
    assert set(rebuilt["text"]) == set(good["text"])
    assert all(torch.allclose(rebuilt["text"][k].float(), good["text"][k].float(), atol=ATOL) for k in good["text"])


def test_cache_cap_is_one_line(tmp_path, monkeypatch):
    import zscir.train.lit_text_cut as cut

    monkeypatch.setattr(cut, "TEXT_CACHE_CAP_BYTES", 100)
    with pytest.raises(ValueError, match="fewer phrasings"):
        train(tmp_path, text_tuning="full", text_unlocked_layers=1, data=pairs(8))


# --- saving and loading --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("k", [1, 2])
def test_round_trip_saves_only_the_tuned_layers(tmp_path, mode, k):
    from safetensors import safe_open

    from zscir.backbones.lit import LiTBackbone

    bb = build(text_tuning=mode, text_unlocked_layers=k)
    train(tmp_path, backbone=bb, text_tuning=mode, text_unlocked_layers=k, steps=4)
    folder = tmp_path / "out"
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["text_unlocked_layers"] == k
    name = "text_tower.safetensors" if mode == "full" else "text_lora.safetensors"
    with safe_open(str(folder / name), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert meta["text_unlocked_layers"] == str(k)
    layers = {int(n.split(".layer.")[1].split(".")[0]) for n in keys}
    assert layers == set(range(N_LAYERS - k, N_LAYERS)) and all(".layer." in n for n in keys)
    loaded = LiTBackbone.from_pretrained(folder)
    assert torch.allclose(text_emb(loaded), text_emb(bb), atol=1e-5)
    assert loaded.describe()["towers"]["text_unlocked_layers"] == k


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_old_whole_tower_folders_still_load(tmp_path, mode):
    from zscir.backbones.lit import LiTBackbone

    bb = build(text_tuning=mode)
    train(tmp_path, backbone=bb, text_tuning=mode, steps=3)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert "text_unlocked_layers" not in cfg  # exactly as before the option existed
    assert torch.allclose(text_emb(LiTBackbone.from_pretrained(tmp_path / "out")), text_emb(bb), atol=1e-5)


@pytest.mark.parametrize("mode", ["full", "lora"])
@pytest.mark.parametrize("claim", [0, 2, 3, 4])
def test_config_k_that_does_not_fit_the_file_is_refused(tmp_path, mode, claim):
    from zscir.backbones.lit import LiTBackbone
    from zscir.config_check import ModelConfigError

    train(tmp_path, text_tuning=mode, text_unlocked_layers=1, steps=2)
    p = tmp_path / "out" / "config.json"
    cfg = json.loads(p.read_text())
    cfg["text_unlocked_layers"] = claim
    p.write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError):
        LiTBackbone.from_pretrained(tmp_path / "out")


# --- hostile options -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [4, 6, 1024])
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_more_layers_than_the_tower_has(k, mode):
    from zscir.config_check import ModelConfigError

    with pytest.raises(ModelConfigError, match=r"text_unlocked_layers must be in \[1, 3\]"):
        build(text_tuning=mode, text_unlocked_layers=k)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_layers_with_a_locked_tower_are_refused(k):
    from zscir.config_check import ModelConfigError

    with pytest.raises(ModelConfigError, match="needs text_tuning lora or full"):
        build(text_unlocked_layers=k)


@pytest.mark.parametrize("value", [-1, 1025, 2.5, "2", True, None])
def test_bad_layer_values_in_config(value):
    from zscir.backbones.lit import LiTConfig
    from zscir.config_check import ModelConfigError

    with pytest.raises(ModelConfigError, match="text_unlocked_layers"):
        LiTConfig.from_dict({"text_tuning": "full", "text_unlocked_layers": value})


def _cli(tmp_path, args):
    from typer.testing import CliRunner

    from zscir.cli import app

    return CliRunner().invoke(app, ["train", "lit", "--data", "world", "--n-pairs", "8", "--no-progress",
                                    "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "cache"), *args])


@pytest.mark.parametrize("args,match", [
    (["--text-unlock-layers", "1"], "needs --text-tower lora or full"),
    (["--text-tower", "locked", "--text-unlock-layers", "2"], "needs --text-tower lora or full"),
    (["--text-tower", "full", "--text-unlock-layers", "0"], "must be at least 1"),
    (["--text-tower", "lora", "--text-unlock-layers", "0"], "must be at least 1"),
    (["--text-tower", "full", "--text-unlock-layers", "-2"], "must be at least 1"),
    (["--text-tower", "full", "--text-unlock-layers", "two"], None),
])
def test_cli_refuses_bad_layer_options(tmp_path, args, match):
    r = _cli(tmp_path, args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    if match is not None:
        assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("k", [4, 7])
def test_cli_refuses_more_layers_than_the_tower_has(tmp_path, k):
    r = _cli(tmp_path, ["--text-model", TEXT_NAME, "--image-tower", "tiny-lite", "--image-size", "32",
                        "--embed-dim", "8", "--head-hidden", "0", "--steps", "2", "--text-tower", "full",
                        "--text-unlock-layers", str(k)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "text_unlocked_layers must be in [1, 3]" in lines[0]
