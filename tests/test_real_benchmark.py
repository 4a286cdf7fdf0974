"""The real-picture CIR benchmark: exact ground truth, concept split, phrasing disjointness, deterministic
build, and the CIRR/CIRCO loaders + protocol code reading it. Skips without the Debian packages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from zscir.data.real.emoji import EMOJI_TEST, FONT_PATH
from zscir.data.real.split import ConceptSplit, emoji_slots, family_name, item_family, read_split, write_split
from zscir.data.real.tuxpaint import ROOT as TUX_ROOT

needs_packages = pytest.mark.skipif(not (FONT_PATH.exists() and EMOJI_TEST.exists() and TUX_ROOT.is_dir()),
                                    reason="needs fonts-noto-color-emoji, unicode-data, tuxpaint-stamps-default")


# --- pure logic (no package needed) -------------------------------------------------------------------
def test_emoji_slots_and_families():
    s = emoji_slots("woman frowning: medium skin tone")
    assert (s.template, s.gender, s.tone, s.hair, s.colour) == ("{g} frowning", "woman", "medium", None, None)
    s = emoji_slots("man: dark skin tone, red hair")
    assert (s.template, s.gender, s.tone, s.hair) == ("{g}", "man", "dark", "red hair")
    assert emoji_slots("kiss: woman, man, light skin tone, dark skin tone").tone == "multi"
    assert emoji_slots("red heart").family == emoji_slots("blue heart").family == "heart"
    assert emoji_slots("person frowning").family == emoji_slots("man frowning: dark skin tone").family
    assert emoji_slots("flag: Grenada").family != emoji_slots("flag: Benin").family
    # source-free: a stamp "frog" and an emoji "frog" are one family
    assert item_family({"source": "tuxpaint-stamps-default", "concept": "frog"}) == \
        item_family({"source": "fonts-noto-color-emoji", "caption": "frog", "concept": "frog"}) == "frog"
    assert family_name("A Green Apple.") == "apple"


def test_split_file_round_trip_and_disjoint(tmp_path):
    fams = [f"family {i}" for i in range(400)]
    sp = ConceptSplit.from_families(fams, seed=3)
    assert not (sp.test & sp.val) and not (sp.test & sp.train) and not (sp.val & sp.train)
    assert sp.test | sp.val | sp.train == set(fams)
    assert 40 < len(sp.test) < 120 and 15 < len(sp.val) < 70  # 20 % / 10 % of 400, hashed
    back = read_split(write_split(sp, tmp_path / "split.json"))
    assert (back.test, back.val, back.train) == (sp.test, sp.val, sp.train)
    t = next(iter(sp.test))
    assert back.held_out({"source": "openclipart-png", "concept": t})
    assert not back.held_out({"source": "openclipart-png", "concept": next(iter(sp.train))})
    with pytest.raises(ValueError, match="not a concept split"):
        (tmp_path / "bad.json").write_text("{}")
        read_split(tmp_path / "bad.json")


def test_phrasings_disjoint_from_make_triplets():
    """No benchmark modification is an instance of a training-triplet phrasing template."""
    from zscir.data.real.benchmark import GENDER_WORDS, PHRASINGS
    from zscir.data.real.split import COLOURS, HAIR, TONES
    from zscir.data.synth.templates import PHRASES

    regexes = [re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(t)) + "$")
               for ts in PHRASES.values() for t in ts]
    values = list(TONES) + list(GENDER_WORDS.values()) + list(HAIR) + list(COLOURS) + ["purple", ""]
    ours = {p.format(v=v) for ps in PHRASINGS.values() for p in ps for v in values}
    assert len(ours) > 50
    clashes = sorted(m for m in ours if any(r.match(m) for r in regexes))
    assert not clashes, clashes
    # and the check can fail: a make-triplets phrase is caught
    assert any(r.match("make it red") for r in regexes)


# --- with the packages ---------------------------------------------------------------------------------
def _emoji_items(keys):
    from zscir.data.real.emoji import read_emoji

    return [it for it in read_emoji() if it.key in keys]


@needs_packages
def test_ground_truth_hand_checked():
    from zscir.data.real.benchmark import _emoji_queries  # noqa: PLC2701 - the module's own test
    import random

    keys = {"emoji-1f44d", "emoji-1f44d-1f3fb", "emoji-1f44d-1f3ff",  # thumbs up, light, dark
            "emoji-1f64d", "emoji-1f64d-200d-2640-fe0f", "emoji-1f64d-200d-2642-fe0f",  # person/woman/man frowning
            "emoji-2764-fe0f", "emoji-1f499"}  # red heart, blue heart
    items = _emoji_items(keys)
    assert {it.key for it in items} == keys
    qs = _emoji_queries(items, random.Random(0))
    got = {(q.kind, q.reference, q.targets) for q in qs}
    assert ("tone", "emoji-1f44d", ("emoji-1f44d-1f3ff",)) in got  # thumbs up → dark skin tone
    assert ("tone", "emoji-1f44d-1f3fb", ("emoji-1f44d-1f3ff",)) in got
    assert ("gender", "emoji-1f64d", ("emoji-1f64d-200d-2640-fe0f",)) in got  # person frowning → woman
    assert ("colour", "emoji-2764-fe0f", ("emoji-1f499",)) in got  # red heart → blue heart
    assert ("any_gender", "emoji-1f64d", ("emoji-1f64d-200d-2642-fe0f", "emoji-1f64d-200d-2640-fe0f")) in got
    text = {(q.reference, q.targets[0]): q.caption for q in qs if not q.kind.startswith("any_")}
    assert "dark skin tone" in text[("emoji-1f44d", "emoji-1f44d-1f3ff")]
    assert "woman" in text[("emoji-1f64d", "emoji-1f64d-200d-2640-fe0f")]
    assert "blue" in text[("emoji-2764-fe0f", "emoji-1f499")]
    # no query changes two attributes: the toned thumbs up never targets a heart, nor the default glyph
    assert all(q.reference != q.targets[0] for q in qs)
    assert ("tone", "emoji-1f44d-1f3fb", ("emoji-1f44d",)) not in got


def _small_config():
    """A few test and val families of the full plan: a gallery of ~100 pictures that renders in seconds."""
    from zscir.data.real.benchmark import RealBenchmarkConfig, gallery_items, plan

    cfg = RealBenchmarkConfig()
    _, queries = plan(cfg, gallery_items())
    fams = []
    for split in ("test", "val"):
        by_kind = {}
        for q in queries[split]:
            by_kind.setdefault(q.kind, q.family)
        fams += sorted({by_kind[k] for k in ("tone", "gender", "tint") if k in by_kind})
    return RealBenchmarkConfig(families=tuple(fams))


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    from zscir.data.real.benchmark import build_benchmark

    cfg = _small_config()
    a = tmp_path_factory.mktemp("real-a")
    b = tmp_path_factory.mktemp("real-b")
    return cfg, a, build_benchmark(a, cfg, progress=False), b, build_benchmark(b, cfg, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@needs_packages
def test_build_is_deterministic(small_build):
    _, a, ra, b, rb = small_build
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys() and len(fa) > 50
    assert all(fa[k] == fb[k] for k in fa)
    assert ra["queries"]["test"]["cirr"] > 0 and ra["queries"]["val"]["cirr"] > 0


@needs_packages
def test_split_disjointness_of_queries(small_build):
    _, a, info, _, _ = small_build
    split = read_split(a / "split.json")
    keys = {k for k in info["ids"]}
    for s in ("test", "val"):
        meta = json.loads((a / s / "meta.json").read_text())
        fams = {m["family"] for part in meta.values() for m in part.values()}
        assert fams and all(split.split_of(f) == s for f in fams)
    assert not (split.test & split.val)
    # images of the gallery: RGB on white, corners white
    from PIL import Image

    im = Image.open(next((a / "images").glob("emoji-*.png")))
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)
    assert len(keys) == info["n_gallery"]


@needs_packages
def test_loaders_and_protocol_read_it(small_build, tiny_backbone):
    from zscir.eval.benchmarks import load_circo, load_cirr
    from zscir.eval.real import evaluate_real
    from zscir.methods import create_composer

    cfg, a, info, _, _ = small_build
    cirr = load_cirr(a / "test", "val")
    assert len(cirr.queries) == info["queries"]["test"]["cirr"] and len(cirr.gallery) == info["n_gallery"]
    q = cirr.queries[0]
    assert q.target in q.members and q.reference in q.members and q.target != q.reference
    circo = load_circo(a / "test", "val")
    assert all(len(c.gt) >= 2 and c.reference not in c.gt for c in circo.queries)
    r = evaluate_real(create_composer("image", backbone=tiny_backbone), "test", root=a, progress=False,
                      cache_dir=a.parent / "feat-cache")
    assert set(r["metrics"]) >= {"R@1", "R@5", "mAP@10"}
    assert 0.0 <= r["metrics"]["R@5"] <= 100.0
    assert sum(v["n"] for v in r["breakdown"].values()) == info["queries"]["test"]["cirr"]
    # the sum of exact text-only and image-only: text-only finds the colour of a "paint it red" tint better
    # than chance is not asserted on a random backbone; the run above proves the protocol code reads it


@needs_packages
def test_corpus_exclude_split(tmp_path, small_build):
    """build_real_corpus --exclude-split keeps every test/val family out of the training corpus."""
    from zscir.data.real.corpus import CorpusConfig, build_corpus

    _, a, _, _, _ = small_build
    split = read_split(a / "split.json")
    r = build_corpus(CorpusConfig(out=str(tmp_path / "c"), sources=("emoji",), max_per_source=300,
                                  image_size=16, exclude_split=str(a / "split.json"), write_images=False),
                     progress=False)
    assert r["counts"]["emoji"]["held_out"] > 0
    import csv

    rows = list(csv.DictReader(open(tmp_path / "c" / "manifest.csv", encoding="utf-8")))
    assert rows and not any(split.held_out({"source": r_["source"], "caption": r_["title"],
                                            "concept": r_["concept"]}) for r_ in rows)
