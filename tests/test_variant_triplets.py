"""make-triplets ``-g variants``: exact HQ triplets between variants of one concept, with same-family hard
negatives, from a tiny fake real corpus (WebDataset shards with the corpus's json metadata)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
import re
import tarfile
from collections import Counter

import pytest
from PIL import Image

from zscir.data.real.split import family_name
from zscir.data.synth.make import MakeTripletsConfig, count_variant_triplets, make_triplets
from zscir.data.synth.variants import (ATTRIBUTES, PHRASES, VariantCollector, VariantConfig, describe,
                                       edit_text, tone_change)

NOTO = "fonts-noto-color-emoji"


def _emoji(key, caption, tone=None, style=None, source=NOTO, emoji_id=None):
    concept, _, name = caption.partition(":")
    variant = {"name": name.strip()} if name else {}
    if tone:
        variant["skin_tone"] = tone
    meta = {"caption": caption, "source": source, "concept": concept.strip(), "variant": variant,
            "emoji": "x" + key}
    if style:
        meta["style"] = style
    if emoji_id:
        meta["emoji_id"] = emoji_id
    return key, meta


def _stamp(key, tint=None, file="stamps/animals/frog.png"):
    cap = f"A {tint} frog." if tint else "A frog."
    return key, {"caption": cap, "source": "tuxpaint-stamps-default", "concept": "frog",
                 "variant": {"tint": tint} if tint else {}, "file": file}


#: the fake corpus: key -> json metadata (None: a sample with a .txt caption only)
ITEMS = dict([
    # A: thumbs up, noto (default, light, dark) + twemoji (default, dark): tone 2*3 + 2, style 2*2
    _emoji("tu", "thumbs up"), _emoji("tu-l", "thumbs up: light skin tone", "light"),
    _emoji("tu-d", "thumbs up: dark skin tone", "dark"),
    _emoji("tw-tu", "thumbs up", style="twemoji", source="npm-twemoji", emoji_id="1f44d"),
    _emoji("tw-tu-d", "thumbs up: dark skin tone", "dark", style="twemoji", source="npm-twemoji",
           emoji_id="1f44d-1f3ff"),
    _emoji("tu-d-copy", "thumbs up: dark skin tone", "dark"),  # a duplicate variant: dropped
    # B: {g} frowning, 3 genders x (default, dark): gender 6*2, tone 2*3
    *[_emoji(f"{g}-fr{s}", f"{g} frowning" + (": dark skin tone" if s else ""), "dark" if s else None)
      for g in ("person", "man", "woman") for s in ("", "-d")],
    # C: people holding hands, two people's tones: one person's tone changes (4); the single-tone one pairs
    # with none of them
    _emoji("ph-ld", "people holding hands: light skin tone, dark skin tone", "light+dark"),
    _emoji("ph-lm", "people holding hands: light skin tone, medium skin tone", "light+medium"),
    _emoji("ph-md", "people holding hands: medium skin tone, dark skin tone", "medium+dark"),
    _emoji("ph-l", "people holding hands: light skin tone", "light"),
    # D: {g} with hair: man x (none, red, curly, bald) -> hair 4*3; man/woman red hair -> gender 2
    _emoji("man", "man"), _emoji("man-r", "man: red hair"), _emoji("man-c", "man: curly hair"),
    _emoji("man-b", "man: bald"), _emoji("wo-r", "woman: red hair"),
    # E: a stamp and two tints -> tint 3*2; another frog drawing (no file in common) is a negative only
    _stamp("frog"), _stamp("frog-red", "red"), _stamp("frog-blue", "blue"),
    ("oc-frog", {"caption": "A frog.", "source": "openclipart-png", "concept": "frog", "variant": {}}),
    # F: colour words -> colour 2
    _emoji("heart-r", "red heart"), _emoji("heart-b", "blue heart"),
    # hostile: a family of one, no metadata, metadata without concept or variant
    _emoji("rocket", "rocket"), ("plain", None), ("junk", {"caption": "something", "foo": 1}),
    ("orange", {"caption": "An orange.", "concept": "orange", "variant": {}}),  # a colour word alone: its own family
    ("blank", {"caption": "a thing", "concept": " ", "variant": {}}),  # no family name at all
])
EXPECTED_KINDS = {"tone": 8 + 6 + 4, "style": 4, "gender": 12 + 2, "hair": 12, "tint": 6, "colour": 2}
FAMILY_A = {("tu", "tu-l"), ("tu", "tu-d"), ("tu-l", "tu"), ("tu-l", "tu-d"), ("tu-d", "tu"), ("tu-d", "tu-l"),
            ("tw-tu", "tw-tu-d"), ("tw-tu-d", "tw-tu"),
            ("tu", "tw-tu"), ("tw-tu", "tu"), ("tu-d", "tw-tu-d"), ("tw-tu-d", "tu-d")}
FAMILY_C = {("ph-ld", "ph-lm"), ("ph-lm", "ph-ld"), ("ph-ld", "ph-md"), ("ph-md", "ph-ld")}
FAMILY_E = {(a, b) for a in ("frog", "frog-red", "frog-blue") for b in ("frog", "frog-red", "frog-blue") if a != b}


def _png(key: str) -> bytes:
    h = hashlib.sha1(key.encode()).digest()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), tuple(h[:3])).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_corpus(root, items=ITEMS, shards: int = 2) -> str:
    """WebDataset shards like build_real_corpus.py writes: ``key.png`` + ``key.json`` (or ``key.txt``)."""
    root.mkdir(parents=True, exist_ok=True)
    keys = list(items)
    for s in range(shards):
        with tarfile.open(root / f"corpus-{s:05d}.tar", "w") as tar:
            for key in keys[s::shards]:
                meta = items[key]
                _add(tar, f"{key}.png", _png(key))
                if meta is None:
                    _add(tar, f"{key}.txt", b"a plain picture")
                else:
                    _add(tar, f"{key}.json", json.dumps({"key": key, **meta}).encode())
    return f"wds:{root}/corpus-{{00000..{shards - 1:05d}}}.tar"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _cfg(spec, out, **kw):
    variants = kw.pop("variants", VariantConfig())
    return MakeTripletsConfig(data=spec, out=str(out), generators=("variants",), image_size=16,
                              variants=variants, **kw)


def _rows(out):
    return [json.loads(x) for x in (out / "triplets.jsonl").read_text().splitlines()]


def _key(name: str) -> str:  # images/tu-d.png -> tu-d
    return name.removeprefix("images/").removesuffix(".png")


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "t"
    summary = make_triplets(_cfg(corpus, out), progress=False)
    return out, summary, _rows(out)


def test_exact_triplets_per_kind_and_family(built):
    out, summary, rows = built
    assert summary["per_edit"] == dict(sorted(EXPECTED_KINDS.items()))
    assert summary["triplets"] == sum(EXPECTED_KINDS.values()) == len(rows)
    assert summary["per_generator"] == {"variants": len(rows)} and summary["per_quality"] == {"hq": len(rows)}
    pairs = Counter((_key(r["reference"]), _key(r["target"])) for r in rows)
    assert max(pairs.values()) == 1  # no triplet twice
    by_family = {}
    for r in rows:
        by_family.setdefault(r["family"], set()).add((_key(r["reference"]), _key(r["target"])))
    assert by_family["thumbs up"] == FAMILY_A
    assert by_family[family_name("people holding hands")] == FAMILY_C  # the key owner names it ("holding hands")
    assert by_family["frog"] == FAMILY_E
    assert by_family["heart"] == {("heart-r", "heart-b"), ("heart-b", "heart-r")}
    assert "rocket" not in by_family
    # skipped items are counted: no metadata (2), no family name, a duplicate variant, a family of one
    assert summary["rejected"] == {"variants:no_metadata": 2, "variants:no_family": 1,
                                   "variants:duplicate_variant": 1, "variants:family_of_one": 2}
    for r in rows:
        assert (out / r["reference"]).is_file() and (out / r["target"]).is_file()
        assert all((out / n).is_file() for n in r["hard_negatives"])


def test_every_row_changes_exactly_what_its_edit_says(built):
    _, _, rows = built
    attrs = {}
    for key, meta in ITEMS.items():
        it = describe(key, "", meta)
        if it is not None:
            attrs[key] = it
    for r in rows:
        ref, tgt = attrs[_key(r["reference"])], attrs[_key(r["target"])]
        diff = [ATTRIBUTES[i] for i, (a, b) in enumerate(zip(ref.attrs, tgt.attrs)) if a != b]
        assert diff == [r["edit"]["kind"]], r
        assert ref.base == tgt.base and ref.family == tgt.family == r["family"]
        k = r["edit"]["kind"]
        assert r["edit"]["from"] == {k: ref.attrs[ATTRIBUTES.index(k)]}
        assert r["edit"]["to"] == {k: tgt.attrs[ATTRIBUTES.index(k)]}
        assert r["generator"] == "variants" and r["quality"] == "hq" and r["source"] == "make-triplets"


def test_negatives_are_same_family_non_targets(built):
    _, _, rows = built
    fam = {key: describe(key, "", m).family for key, m in ITEMS.items() if describe(key, "", m)}
    for r in rows:
        negs = [_key(n) for n in r["hard_negatives"]]
        tgt = _key(r["target"])
        assert tgt not in negs and len(set(negs)) == len(negs)
        assert all(fam[n] == r["family"] for n in negs)
        assert "tu-d-copy" not in negs  # the dropped duplicate is nobody's negative
        members = sum(1 for k, f in fam.items() if f == r["family"] and k != "tu-d-copy")
        assert len(negs) == min(8, members - 1)  # every other member when the family is small
    # nearest first: the same stamp in another tint before the other frog drawing
    frog = next(r for r in rows if _key(r["reference"]) == "frog" and _key(r["target"]) == "frog-red")
    assert [_key(n) for n in frog["hard_negatives"]][-1] == "oc-frog"
    assert set(_key(n) for n in frog["hard_negatives"][:2]) == {"frog", "frog-blue"}


def test_deterministic_and_seeded(corpus, built, tmp_path):
    out, _, rows = built
    make_triplets(_cfg(corpus, tmp_path / "again"), progress=False)
    assert (tmp_path / "again" / "triplets.jsonl").read_bytes() == (out / "triplets.jsonl").read_bytes()
    make_triplets(_cfg(corpus, tmp_path / "s1", seed=1), progress=False)
    other = _rows(tmp_path / "s1")
    assert {(r["reference"], r["target"]) for r in other} == {(r["reference"], r["target"]) for r in rows}
    assert [r["modification"] for r in other] != [r["modification"] for r in rows]  # another seed, other texts


def _benchmark_instances() -> set[str]:
    from zscir.data.real.benchmark import GENDER_WORDS, PHRASINGS
    from zscir.data.real.split import COLOURS, HAIR, TONES

    values = list(TONES) + list(GENDER_WORDS.values()) + list(HAIR) + list(COLOURS) + ["purple", ""]
    return {p.format(v=v) for ps in PHRASINGS.values() for p in ps for v in values}


def test_texts_never_use_the_benchmark_phrasings(built):
    _, _, rows = built
    bench = _benchmark_instances()
    assert not {r["modification"] for r in rows} & bench
    # and no benchmark phrasing is an instance of one of our templates (any value)
    ours = [re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(t)) + "$") for ts in PHRASES.values()
            for t in ts]
    clashes = sorted(b for b in bench if any(r.match(b) for r in ours))
    assert not clashes, clashes
    assert any(r.match("make it red") for r in ours)  # the check can fail


@pytest.mark.parametrize("old,new,want", [
    (None, "dark", ("all", None)), ("light", "dark", ("all", None)), ("dark", None, ("default", None)),
    ("light+dark", "light+medium", ("one", 1)), ("light+dark", "medium+dark", ("one", 0)),
    ("light+medium", "medium+dark", None), ("light", "light+dark", None), ("light+dark", "light", None),
    ("dark", "dark", None), ("multi", "dark", None), ("light", "greenish", None)])
def test_tone_change(old, new, want):
    assert tone_change(old, new) == want


def test_multi_tone_text_names_the_person(built):
    _, _, rows = built
    r = next(r for r in rows if _key(r["reference"]) == "ph-ld" and _key(r["target"]) == "ph-md")
    assert "first" in r["modification"] and "medium" in r["modification"]


def test_style_text_is_a_description(built):
    _, _, rows = built
    texts = {r["modification"] for r in rows if r["edit"]["kind"] == "style"}
    assert texts and all("flat cartoon" in t or "glossy rounded" in t for t in texts)


def test_manifest_reads_with_the_triplet_reader(built):
    from zscir.data import get_triplet_data

    out, _, rows = built
    td = get_triplet_data(str(out / "triplets.jsonl"))
    assert len(td) == len(rows) and td.text_target_count == 0
    recs = list(td)
    assert all(t.quality == "hq" for t in recs)
    assert [t.meta["hard_negatives"] for t in recs] == [r["hard_negatives"] for r in rows]


def test_caps_per_reference_and_per_generator(corpus, built, tmp_path):
    s = make_triplets(_cfg(corpus, tmp_path / "a", variants=VariantConfig(per_reference=1)), progress=False)
    refs = Counter(r["reference"] for r in _rows(tmp_path / "a"))
    assert max(refs.values()) == 1 and s["triplets"] == len(refs)
    s = make_triplets(_cfg(corpus, tmp_path / "b", max_per_generator=10), progress=False)
    assert s["triplets"] == 10
    full = {json.dumps({k: v for k, v in r.items() if k != "id"}, sort_keys=True) for r in built[2]}
    sample = [json.dumps({k: v for k, v in r.items() if k != "id"}, sort_keys=True) for r in _rows(tmp_path / "b")]
    assert set(sample) <= full and len(set(sample)) == 10  # a sample of the very rows, not other ones
    make_triplets(_cfg(corpus, tmp_path / "b2", max_per_generator=10), progress=False)
    assert (tmp_path / "b2" / "triplets.jsonl").read_bytes() == (tmp_path / "b" / "triplets.jsonl").read_bytes()
    s = make_triplets(_cfg(corpus, tmp_path / "c", variants=VariantConfig(kinds=("style",), negatives=0)),
                      progress=False)
    assert s["per_edit"] == {"style": 4}
    assert all(r["hard_negatives"] == [] for r in _rows(tmp_path / "c"))


def test_several_attributes_at_once(corpus):
    c = count_variant_triplets(_cfg(corpus, "unused", variants=VariantConfig(max_diff=2)), progress=False)
    combos = {k: v for k, v in c["per_kind"].items() if "+" in k}
    # thumbs up: tone+style across styles with other tones (8); frowning: gender+tone (12);
    # hair: woman red hair <-> man without red hair (6)
    assert combos == {"tone+style": 8, "tone+gender": 12, "gender+hair": 6}
    assert {k: v for k, v in c["per_kind"].items() if "+" not in k} == EXPECTED_KINDS


def test_dry_run_counts_and_writes_nothing(corpus, tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app

    c = count_variant_triplets(_cfg(corpus, tmp_path / "none"), progress=False)
    assert c["per_kind"] == dict(sorted(EXPECTED_KINDS.items())) and c["total"] == 56
    assert not (tmp_path / "none").exists()
    r = CliRunner().invoke(app, ["data", "make-triplets", corpus, "--out", str(tmp_path / "o"), "-g", "variants",
                                 "--dry-run", "--no-progress", "--max-per-generator", "20"])
    assert r.exit_code == 0, r.output
    assert "56 triplets (20 after" in r.output and not (tmp_path / "o").exists()


def test_cli_writes_the_variant_triplets(corpus, tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app

    r = CliRunner().invoke(app, ["data", "make-triplets", corpus, "--out", str(tmp_path / "o"), "-g", "variants",
                                 "--no-progress", "--image-size", "16", "--variant-kinds", "tint,colour"])
    assert r.exit_code == 0, r.output
    assert len(_rows(tmp_path / "o")) == 8 and "'tint': 6" in r.output


@pytest.mark.parametrize("args,needle", [
    (["--variant-kinds", "tone,mood"], "--variant-kinds"),
    (["--variant-kinds", ","], "--variant-kinds"),
    (["--variant-max-diff", "0"], "--variant-max-diff"),
    (["--variant-max-diff", "7"], "--variant-max-diff"),
    (["--variant-per-reference", "0"], "--variant-per-reference"),
    (["--variant-negatives", "-1"], "--variant-negatives"),
    (["--max-per-generator", "0"], "--max-per-generator"),
    (["-g", "mine", "--dry-run"], "-g variants"),
    (["-g", "bogus"], "unknown generator"),
])
def test_bad_options_give_one_error_line(corpus, tmp_path, args, needle):
    from typer.testing import CliRunner

    from zscir.cli import app

    base = ["data", "make-triplets", corpus, "--out", str(tmp_path / "o"), "--no-progress"]
    if "-g" not in args:
        base += ["-g", "variants"]
    r = CliRunner().invoke(app, base + args)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], r.output
    assert "Traceback" not in r.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("items,what", [
    ({"a": None, "b": None}, "no metadata at all"),
    ({"a": {"concept": "x", "caption": "x"}, "b": {"concept": "y", "caption": "y"}}, "families of one"),
    ({"a": {"caption": "x", "concept": "", "variant": {"tint": {"r": 1}}},
      "b": {"caption": "y", "variant": "oops", "concept": 3}}, "bad metadata"),
    ({"a": _stamp("a", "red")[1], "b": _stamp("b", "red")[1]}, "two copies of one variant"),
])
def test_inputs_that_give_no_triplet_are_one_error(tmp_path, items, what):
    from zscir.data import DataError

    spec = write_corpus(tmp_path / "c", items, shards=1)
    with pytest.raises(DataError, match="no triplet was generated"):
        make_triplets(_cfg(spec, tmp_path / "o"), progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("meta", [
    None, {}, {"json": "not a dict"}, {"json": {"variant": {"tint": ["red"]}}}, {"json": {"concept": ""}}])
def test_collector_skips_items_without_usable_metadata(meta):
    from zscir.data.synth.variants import record_metadata

    c = VariantCollector(VariantConfig())
    c.add("k", "cap", record_metadata(meta))
    assert c.rows() == [] and sum(c.stats.skipped.values()) == 1


@pytest.mark.parametrize("attr,old,new", [
    ("gender", "man", None), ("colour", "red", None), ("style", None, "twemoji"), ("style", "noto", None)])
def test_unphrasable_edits_are_not_made(attr, old, new):
    import random

    assert edit_text(attr, old, new, random.Random(0)) is None


# --- TSCIR Stage II consumes the manifest's hard negatives ---------------------------------------------
def test_stage2_miner_puts_the_listed_negatives_first():
    """The manifest's ``hard_negatives`` lead each pool, ahead of the look-alikes (which alone fill it
    when nothing is listed: the original behaviour)."""
    from types import SimpleNamespace

    import torch

    from zscir.methods.tscir.hard_negatives import HardNegativeMiner

    # gallery image j is less and less like image 0 as j grows
    angles = torch.linspace(0, 1.5, 6)
    glob = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    row = SimpleNamespace(id="r0", reference=SimpleNamespace(id="g1"))
    other = SimpleNamespace(id="r1", reference=SimpleNamespace(id="g2"))
    data = SimpleNamespace(gallery_bank=SimpleNamespace(glob=glob),
                           gallery=SimpleNamespace(keys=[f"g{j}" for j in range(6)]),
                           train=[row, other], tgt_idx={"r0": 0, "r1": 3})
    cfg = SimpleNamespace(hard_negatives=2, hn_pool=3)
    assert HardNegativeMiner(data, cfg).pool[0].tolist() == [1, 2, 3]  # nothing listed: the look-alikes
    data.given_negatives = {"r0": [5, 4, 0]}  # the target itself is never its own negative
    m = HardNegativeMiner(data, cfg)
    assert m.pool[0].tolist() == [5, 4, 1] and m.current[0].tolist() == [5, 4]
    assert set(m.pool[1].tolist()[:2]) == {2, 4}  # another row's pool is its look-alikes, as before


def test_stage2_trains_on_the_variant_manifest(corpus, built, tmp_path, caplog):
    from zscir.backbones import create_backbone
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.methods.tscir.stage2 import TripletData, given_negatives, train_stage2
    from zscir.train.data_options import DataOptions

    out, _, rows = built
    path = tmp_path / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    tiny = f"local-dir:{path}"
    train_stage1(Stage1Config(model=tiny, mapping=MappingConfig(vsi_layers=[0], phi_hidden=32), steps=2,
                              batch_size=8, n_val=4, bf16=False, data=DataOptions(data=corpus, workers=0)),
                 tmp_path / "s1", progress=False)
    cfg = Stage2Config(stage1=str(tmp_path / "s1"), model=tiny, adapter=AdapterConfig(bottleneck=8), steps=3,
                       batch_size=8, lr=1e-2, warmup=1, eval_every=1000, n_val=4, bf16=False, hard_negatives=2,
                       hn_pool=4, hn_refresh=2, data=DataOptions(data=str(out / "triplets.jsonl")))
    s2 = train_stage2(cfg, tmp_path / "s2", progress=False)
    assert len(s2["losses"]) == 3 and all(x == x for x in s2["losses"])
    assert given_negatives({"hard_negatives": ["a", 3, "", None, "b"]}) == ["a", "b"]
    assert given_negatives({"hard_negatives": "a"}) == [] and given_negatives({}) == []
    backbone = create_backbone("tiny-clip-test")
    data = TripletData(cfg, backbone, False, False)
    listed = {r["id"]: r["hard_negatives"] for r in rows}
    for t in data.train:
        assert [data.gallery.ids[j] for j in data.given_negatives[t.id]] == listed[t.id]


def test_styles_that_look_alike_are_no_edit_and_no_negative():
    """Google's emoji set is Noto's drawings: noto <-> google is no style edit, and the Google twin of a
    target is never listed as its negative (it would be a right answer)."""
    c = VariantCollector(VariantConfig())
    for key, meta in [_emoji("n", "thumbs up"), _emoji("n-d", "thumbs up: dark skin tone", "dark"),
                      _emoji("g", "thumbs up", style="google", source="emoji-datasource-google", emoji_id="1f44d"),
                      _emoji("t", "thumbs up", style="twemoji", source="npm-twemoji", emoji_id="1f44d")]:
        c.add(key, meta["caption"], meta)
    rows = c.rows()
    pairs = {(r["reference"], r["target"]) for r in rows}
    assert ("n", "g") not in pairs and ("g", "n") not in pairs
    assert {("n", "t"), ("t", "n"), ("g", "t"), ("t", "g"), ("n", "n-d"), ("n-d", "n")} <= pairs
    for r in rows:
        if r["target"] == "n":
            assert "g" not in r["hard_negatives"]
        if r["target"] == "g":
            assert "n" not in r["hard_negatives"]


@pytest.mark.parametrize("match", ["ids", "concept"])
def test_held_out_items_are_never_reference_target_or_negative(corpus, tmp_path, match):
    """The held-out filter sits in the one reading loop, so it reaches every part of a variants row."""
    held = tmp_path / "heldout"
    held.mkdir()
    (held / "emoji-ids.txt").write_text("1f44d\n")  # thumbs up (the twemoji items carry this id)
    (held / "tuxpaint-stamps.txt").write_text("stamps/animals/frog.png\n")  # the frog stamp and its tints
    out = tmp_path / "t"
    summary = make_triplets(_cfg(corpus, out, heldout=str(held), heldout_match=match), progress=False)
    rows = _rows(out)
    named = {_key(n) for r in rows for n in [r["reference"], r["target"], *r.get("hard_negatives", [])]}
    gone = {"tw-tu", "frog", "frog-red", "frog-blue"}
    assert rows and not named & gone
    assert summary["heldout"] is not None
    from zscir.data.real.sources import RealSources

    if match == "concept" and Path(RealSources().emoji_test).is_file():  # names from unicode-data: by name too: every thumbs-up and every frog picture, whatever its source
        assert not any(k.startswith(("tu", "tw-tu", "oc-frog")) for k in named)
