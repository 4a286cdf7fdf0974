"""`zscir data make-triplets`: template generators, the LLM parser, the manifest it writes."""

from __future__ import annotations

import csv
import hashlib
import json
import random

import pytest
import torch
from PIL import Image, ImageDraw

from zscir.data.synth.llm import ParseError, build_prompt, parse_completion, tiny_random_llm
from zscir.data.synth.templates import MiningConfig, mine_pairs, phrase, substitute, word_diff

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
CAPTIONS = ["a red square", "a blue square", "a red circle", "a green circle", "two red circles",
            "three red circles", "a small blue square", "a dog on the grass"]


def _pairs(tmp_path):
    """A CSV manifest of drawn shapes whose captions say what they show."""
    root = tmp_path / "pairs"
    root.mkdir()
    rows = []
    for i, cap in enumerate(CAPTIONS):
        im = Image.new("RGB", (48, 48), "white")
        d = ImageDraw.Draw(im)
        col = next((v for k, v in COLOURS.items() if k in cap), (120, 120, 120))
        (d.ellipse if "circle" in cap else d.rectangle)((8, 8, 40, 40), fill=col)
        im.save(root / f"img{i}.png")
        rows.append({"filepath": f"img{i}.png", "title": cap})
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filepath", "title"])
        w.writeheader()
        w.writerows(rows)
    return root / "pairs.csv"


def test_word_diff_and_phrasing():
    e = word_diff("a red car on the road", "a blue car on the road")
    assert [(x.old, x.new) for x in e] == [(("red",), ("blue",))]
    assert phrase(e, random.Random(0)) in {"make it blue", "change the colour to blue", "make it blue instead of red",
                                           "blue instead of red"}
    add = word_diff("a cat", "a cat with a hat")
    assert [x.kind for x in add] == ["add"] and "hat" in phrase(add, random.Random(1))
    rem = word_diff("a cat with a hat", "a cat")
    assert rem[0].kind == "remove" and "hat" in phrase(rem, random.Random(1))
    assert word_diff("a cat", "the cat") == []  # stop words only: no content edit
    m_to_a = word_diff("the letter m", "the letter a")  # a stop word replacing a content word is an edit
    assert [(x.old, x.new) for x in m_to_a] == [(("m",), ("a",))]


def test_mining_finds_one_word_differences():
    emb = torch.nn.functional.normalize(torch.randn(len(CAPTIONS), 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    # every caption a neighbour of every other: mining is decided by the word diff alone
    pairs = mine_pairs(CAPTIONS, emb, MiningConfig(k=len(CAPTIONS), per_reference=10), seed=0)
    got = {(CAPTIONS[p.ref], CAPTIONS[p.tgt]) for p in pairs}
    assert ("a red square", "a blue square") in got and ("a red square", "a red circle") in got
    assert ("a red square", "a dog on the grass") not in got  # no shared content word
    assert ("a red square", "a green circle") not in got  # two edits > max_edits=1
    assert pairs == mine_pairs(CAPTIONS, emb, MiningConfig(k=len(CAPTIONS), per_reference=10), seed=0)


def test_substitution_kinds():
    s = substitute("two red circles on a wooden table", seed=0, key="k")
    assert s is not None and s.target_caption != s.caption and s.new in s.target_caption
    assert s.old in s.caption and s.attribute in ("colour", "count", "material")
    assert substitute("A frog.", 0, "f").target_caption.endswith(" frog.")  # colour inserted
    assert substitute("grinning face with big eyes", 0, "g", kinds=("colour",)) is None
    seen = {substitute("a red car", seed, "x").new for seed in range(20)}
    assert len(seen) > 3 and "red" not in seen


def test_llm_parser_is_strict():
    cap = "a red car on a road"
    assert parse_completion(cap, " make it blue\nOutput: a blue car on a road\n") == ("make it blue",
                                                                                     "a blue car on a road")
    for bad, why in [(" make it blue\nOutput: A red car on a road.", "no_change"), (" make it blue", "format"),
                     (" \nOutput: a blue car", "empty"), (" a red car on a road\nOutput: a blue car on a road", "echo"),
                     (" x\nOutput: Input: y", "format")]:
        with pytest.raises(ParseError, match=why):
            parse_completion(cap, bad)
    assert build_prompt(cap).endswith(f"Input: {cap}\nEdit:") and build_prompt(cap).count("Output:") == 5


def _llm_outcomes(ed, caption, seeds):
    out = []
    for seed in seeds:
        try:
            out.append(ed.edit(caption, seed))
        except ParseError as e:
            out.append(str(e))
    return out


def test_tiny_random_llm_generates_and_is_parsed():
    ed = tiny_random_llm()
    outcomes = _llm_outcomes(ed, "a red square", range(3))
    assert len(outcomes) == 3 and all(o in ("format", "empty", "too_long", "no_change", "echo") or isinstance(o, tuple)
                                      for o in outcomes)
    assert _llm_outcomes(ed, "a red square", range(3)) == outcomes  # seeded
    # the prompt's words are in the tiny tokenizer's vocabulary: the model reads the few-shot prompt itself
    ids = ed.tokenizer(build_prompt("a red car"))["input_ids"]
    assert ids.count(ed.tokenizer.unk_token_id) / len(ids) < 0.05


class _ScriptedLM:
    """Stands in for a causal LM: "generates" a fixed completion (tests the decode + parse path)."""

    device = torch.device("cpu")

    def __init__(self, tokenizer, completion):
        self.completion = tokenizer(completion, add_special_tokens=False, return_tensors="pt")["input_ids"]

    def generate(self, input_ids, **kw):
        return torch.cat([input_ids, self.completion], dim=1)


def test_llm_editor_decodes_and_parses_a_completion():
    from zscir.data.synth.llm import LLMEditor

    tok = tiny_random_llm().tokenizer
    ed = LLMEditor(_ScriptedLM(tok, " make the car blue\nOutput: a blue car"), tok, "scripted")
    assert ed.edit("a red car", 0) == ("make the car blue", "a blue car")
    with pytest.raises(ParseError, match="no_change"):
        LLMEditor(_ScriptedLM(tok, " make it blue\nOutput: a red car"), tok, "scripted").edit("a red car", 0)


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "make-triplets.json"}


def test_make_triplets_writes_canonical_manifest(tmp_path, tiny_backbone):
    from zscir.data import get_triplet_data
    from zscir.data.synth.make import MakeTripletsConfig, make_triplets

    spec = str(_pairs(tmp_path))
    cfg = MakeTripletsConfig(data=spec, out=str(tmp_path / "t"), model="tiny-clip-test", image_size=32,
                             mining=MiningConfig(k=7, per_reference=3), generators=("mine", "substitute", "llm"))
    r = make_triplets(cfg, progress=False, llm_editor=tiny_random_llm())
    assert r["per_generator"]["mine"] > 0 and r["per_generator"]["substitute"] > 0
    llm_seen = r["per_generator"].get("llm", 0) + sum(v for k, v in r["rejected"].items() if k.startswith("llm:"))
    assert llm_seen == len(CAPTIONS)  # every caption went through the LLM and its parser
    rows = [json.loads(x) for x in (tmp_path / "t" / "triplets.jsonl").read_text().splitlines()]
    assert len(rows) == r["triplets"]
    for row in rows:
        assert {"reference", "modification", "target", "quality", "generator", "seed", "scores"} <= set(row)
        assert (tmp_path / "t" / row["reference"]).exists()
        if row["generator"] == "mine":
            assert row["quality"] == "lq" and (tmp_path / "t" / row["target"]).exists()
            assert row["reference_caption"] != row["target_caption"] and "text_similarity" in row["scores"]
        else:
            assert row["target"] == "" and row["target_caption"] != row["reference_caption"]
    mined = {(x["reference_caption"], x["target_caption"]) for x in rows if x["generator"] == "mine"}
    assert ("a red square", "a blue square") in mined or ("a blue square", "a red square") in mined
    # read back through the data layer: text-target rows carry no target image
    td = get_triplet_data(str(tmp_path / "t" / "triplets.jsonl"))
    assert len(td) == len(rows) and td.text_target_count == sum(1 for x in rows if not x["target"])
    # deterministic, and a re-run over its own folder is allowed
    cfg2 = MakeTripletsConfig(**{**cfg.__dict__, "out": str(tmp_path / "t2")})
    make_triplets(cfg2, progress=False, llm_editor=tiny_random_llm())
    assert _digest(tmp_path / "t") == _digest(tmp_path / "t2")
    make_triplets(cfg, progress=False, llm_editor=tiny_random_llm())
    assert _digest(tmp_path / "t") == _digest(tmp_path / "t2")


def test_make_triplets_cli_errors(tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app

    spec = str(_pairs(tmp_path))
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    r = CliRunner().invoke(app, ["data", "make-triplets", spec, "--out", str(foreign), "--model", "tiny-clip-test",
                                 "--no-progress"])
    assert r.exit_code == 2 and "not created by" in r.output and (foreign / "notes.txt").read_text() == "keep"
    r = CliRunner().invoke(app, ["data", "make-triplets", spec, "--out", str(tmp_path / "o"), "-g", "llm"])
    assert r.exit_code == 2 and "--llm" in r.output
    r = CliRunner().invoke(app, ["data", "make-triplets", spec, "--out", str(tmp_path / "o2"), "--model",
                                 "tiny-clip-test", "-g", "mine", "--no-progress", "--image-size", "24"])
    assert r.exit_code == 0, r.output
    assert "triplets" in r.output and (tmp_path / "o2" / "triplets.jsonl").exists()


@pytest.mark.parametrize("mode", ["ip2p", "t2i"])
def test_hq_targets_tiny_pipeline_scores_and_filters(tmp_path, tiny_backbone, mode):
    from zscir.data.synth.hq import HQConfig, HQTargets, clip_scores, tiny_random_pipeline
    from zscir.data.synth.make import MakeTripletsConfig, make_triplets

    spec = str(_pairs(tmp_path))
    pipe = tiny_random_pipeline(mode)
    cfg = MakeTripletsConfig(data=spec, out=str(tmp_path / "hq"), generators=("substitute",), image_size=32)
    hq = HQTargets(pipe, HQConfig(mode=mode, steps=2, image_size=32, clip_model="tiny-clip-test"), tiny_backbone)
    r = make_triplets(cfg, progress=False, hq=hq)
    rows = [json.loads(x) for x in (tmp_path / "hq" / "triplets.jsonl").read_text().splitlines()]
    assert rows and r["per_quality"] == {"hq": len(rows)}
    for row in rows:
        assert row["generator"] == f"substitute+{mode}" and row["model"]["clip"] == "tiny-clip-test"
        assert set(row["scores"]) == {"text_image", "image_image", "direction"}
        ref = Image.open(tmp_path / "hq" / row["reference"])
        tgt = Image.open(tmp_path / "hq" / row["target"])
        assert tgt.size == (32, 32)
    # the stored scores are the CLIP scores of the stored images (text_image: target image + caption only)
    row = rows[0]
    ref = Image.open(tmp_path / "hq" / row["reference"]).convert("RGB")
    again = clip_scores(tiny_backbone, ref, Image.open(tmp_path / "hq" / row["target"]).convert("RGB"),
                        row["reference_caption"], row["target_caption"])
    assert again["text_image"] == pytest.approx(row["scores"]["text_image"], abs=1e-4)
    # a threshold above every score drops every row, and the drops are counted
    hq2 = HQTargets(pipe, HQConfig(mode=mode, steps=2, image_size=32, min_text_image=1.01), tiny_backbone)
    from zscir.data import DataError

    with pytest.raises(DataError, match="text_image"):
        make_triplets(MakeTripletsConfig(**{**cfg.__dict__, "out": str(tmp_path / "none")}), progress=False, hq=hq2)
    hq3 = HQTargets(pipe, HQConfig(mode=mode, steps=2, image_size=32,
                                   min_image_image=sorted(x["scores"]["image_image"] for x in rows)[len(rows) // 2]),
                    tiny_backbone)
    r3 = make_triplets(MakeTripletsConfig(**{**cfg.__dict__, "out": str(tmp_path / "half")}), progress=False, hq=hq3)
    assert not (tmp_path / "none").exists()
    assert 0 < r3["triplets"] < len(rows) and sum(v for k, v in r3["rejected"].items() if "image_image" in k) > 0


def test_make_triplets_cli_hq_from_saved_pipeline(tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app
    from zscir.data.synth.hq import tiny_random_pipeline

    tiny_random_pipeline("t2i").save_pretrained(tmp_path / "sd")
    spec = str(_pairs(tmp_path))
    r = CliRunner().invoke(app, ["data", "make-triplets", spec, "--out", str(tmp_path / "o"), "-g", "substitute",
                                 "--hq", "t2i", "--hq-model", str(tmp_path / "sd"), "--hq-steps", "2",
                                 "--model", "tiny-clip-test", "--image-size", "32", "--no-progress"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "o" / "triplets.jsonl").read_text().splitlines()]
    assert rows and all(x["quality"] == "hq" and x["model"]["image"] == str(tmp_path / "sd") for x in rows)
    r = CliRunner().invoke(app, ["data", "make-triplets", spec, "--out", str(tmp_path / "o2"), "--hq", "t2i",
                                 "--hq-model", str(tmp_path / "nothing"), "--model", "tiny-clip-test"])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output


def test_mining_embeddings_from_a_text_model_by_name(tmp_path):
    """``--text-model NAME``: any HF AutoModel text encoder, mean-pooled (a tiny BERT saved offline here)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from zscir.data.synth.make import embed_texts

    words = sorted({w for c in CAPTIONS for w in c.split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]"] + words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path / "tm")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "tm")
    emb = embed_texts(CAPTIONS + ["a red square"], text_model=str(tmp_path / "tm"), batch_size=3)
    assert emb.shape == (len(CAPTIONS) + 1, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(len(emb)), atol=1e-5)
    assert torch.allclose(emb[0], emb[-1], atol=1e-5) and not torch.allclose(emb[0], emb[1], atol=1e-3)
