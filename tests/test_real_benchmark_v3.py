"""The real benchmark v3 (issue 22 §3): every emoji style, attribute edits within a style, style edits.

Most tests build the benchmark from tiny fake npm packages in their real layouts (Twemoji, OpenMoji colour
and black, Fluent colour and flat; no Noto font, no Tux Paint: those sources are skipped), where every count
is small enough to work out by hand. One test plans the benchmark on the installed packages (skip without).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from zscir.data.real.sources import RealSources

try:  # the SVG renderer: pip install cairosvg (the [real]/[dev] extras) + Debian's libcairo2
    import cairosvg  # noqa: F401
except (ImportError, OSError) as e:  # cairocffi raises OSError without libcairo2
    pytest.skip(f"cairosvg is not usable: {e}", allow_module_level=True)

from zscir.data.real.benchmark import (  # noqa: E402
    BENCHMARK_VERSION, DEFAULT_SOURCES, PHRASINGS, STYLE_PHRASES, V2_SOURCES, BenchmarkBuildError,
    RealBenchmarkConfig, build_benchmark, gallery_items, plan, style_of)
from zscir.data.real.split import item_family, read_split  # noqa: E402

EMOJI_TEST = """\
# group: People & Body
# subgroup: hand-fingers-closed
1F44D                                                  ; fully-qualified     # 👍 E0.6 thumbs up
1F44D 1F3FB                                            ; fully-qualified     # 👍🏻 E1.0 thumbs up: light skin tone
1F44D 1F3FF                                            ; fully-qualified     # 👍🏿 E1.0 thumbs up: dark skin tone
# subgroup: person
1F468                                                  ; fully-qualified     # 👨 E0.6 man
1F469                                                  ; fully-qualified     # 👩 E0.6 woman
# group: Objects
# subgroup: science
1F9EE                                                  ; fully-qualified     # 🧮 E11.0 abacus
"""
#: emoji id → (twemoji file stem, fluent file stem)
EMOJI = {"1f44d": "thumbs-up-default", "1f44d-1f3fb": "thumbs-up-light", "1f44d-1f3ff": "thumbs-up-dark",
         "1f468": "man", "1f469": "woman", "1f9ee": "abacus"}
SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect x="{x}" y="4" width="20" height="24" ' \
      'fill="#{c}"/></svg>'
STYLES = ("twemoji", "openmoji", "openmoji-black", "fluent-color", "fluent-flat")
SOURCES = ("twemoji", "openmoji", "fluent-emoji")
BIG = dict(per_family=100, per_family_style=100)


def _svg(path: Path, n: int) -> None:
    """A picture distinct for each ``n`` (colour and position)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SVG.format(x=2 + n % 9, c=f"{(37 * n) % 256:02x}{(91 * n) % 256:02x}{(53 * n) % 256:02x}"))


def _packages(root: Path, same_abacus: bool = False, one_outline: bool = False) -> RealSources:
    """Fake @twemoji/svg, openmoji and fluentui-emoji (six emoji in five styles: 30 pictures, all distinct,
    unless ``same_abacus``: then Twemoji's and OpenMoji's abacus are the same file, or ``one_outline``: then
    OpenMoji's black line art is one picture for all six)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "emoji-test.txt").write_text(EMOJI_TEST, encoding="utf-8")
    npm = root / "node_modules"
    rows = []
    for i, (eid, fluent) in enumerate(EMOJI.items()):
        _svg(npm / "@twemoji/svg" / f"{eid}.svg", 10 + i)
        hexcode = eid.upper()
        rows.append({"hexcode": hexcode, "annotation": "x", "group": "people-body", "tags": "", "openmoji_tags": ""})
        _svg(npm / "openmoji/color/svg" / f"{hexcode}.svg", 10 + i if same_abacus and eid == "1f9ee" else 20 + i)
        _svg(npm / "openmoji/black/svg" / f"{hexcode}.svg", 30 if one_outline else 30 + i)
        _svg(npm / "fluentui-emoji/icons/modern" / f"{fluent}.svg", 40 + i)
        _svg(npm / "fluentui-emoji/icons/flat" / f"{fluent}.svg", 50 + i)
    (npm / "openmoji/data").mkdir(parents=True)
    (npm / "openmoji/data/openmoji.json").write_text(json.dumps(rows))
    return RealSources(emoji_font=str(root / "no-font.ttf"), emoji_test=str(root / "emoji-test.txt"),
                       tuxpaint_dir=str(root / "no-stamps"), npm_dir=str(npm))


@pytest.fixture
def fake(tmp_path) -> RealSources:
    return _packages(tmp_path / "pkgs")


def _items(src: RealSources):
    return gallery_items(src, warn=False, names=SOURCES)


def _kinds(queries) -> dict[str, int]:
    out: dict[str, int] = {}
    for q in queries:
        out[q.kind] = out.get(q.kind, 0) + 1
    return out


def test_fake_gallery_has_every_style(fake):
    items = _items(fake)
    assert len(items) == 30
    assert sorted({style_of(it) for it in items}) == sorted(STYLES)


def test_families_span_styles(fake):
    """One family per emoji concept in every style (through the CLDR caption each style's item carries)."""
    items = _items(fake)
    fams: dict[str, set[str]] = {}
    for it in items:
        fams.setdefault(item_family(it.metadata()), set()).add(style_of(it))
    assert set(fams) == {"thumbs up", "person", "abacus"}
    assert all(styles == set(STYLES) for styles in fams.values())


@pytest.mark.parametrize("seed", range(6))
def test_families_never_straddle_splits(fake, seed):
    items = _items(fake)
    split, queries = plan(RealBenchmarkConfig(seed=seed, test=0.4, val=0.3, sources=SOURCES, **BIG), items)
    assert not (split.test & split.val) and not (split.test & split.train) and not (split.val & split.train)
    for it in items:  # every picture of a family (whatever its style) is in the family's one split
        assert item_family(it.metadata()) in split.test | split.val | split.train
    for s, qs in queries.items():
        assert all(split.split_of(q.family) == s for q in qs)


def test_per_kind_counts_by_hand(fake):
    """Per style: tone 4 (untoned → light, dark; light → dark; dark → light), any_tone 1 (untoned → either),
    gender 2 (man ↔ woman); style: 6 emoji × 5 styles × 4 other looks = 120, any_style 6 × 5 = 30."""
    _, queries = plan(RealBenchmarkConfig(test=1.0, val=0.0, sources=SOURCES, **BIG), _items(fake))
    assert _kinds(queries["test"]) == {"tone": 20, "any_tone": 5, "gender": 10, "style": 120, "any_style": 30}
    assert queries["val"] == []


def test_attribute_edits_stay_within_one_style(fake):
    items = {it.key: it for it in _items(fake)}
    _, queries = plan(RealBenchmarkConfig(test=1.0, val=0.0, sources=SOURCES, **BIG), list(items.values()))
    attr = [q for q in queries["test"] if q.kind not in ("style", "any_style")]
    assert attr
    for q in attr:
        assert all(style_of(items[t]) == style_of(items[q.reference]) for t in q.targets), q


def test_style_edits_same_emoji_other_style(fake):
    items = {it.key: it for it in _items(fake)}
    _, queries = plan(RealBenchmarkConfig(test=1.0, val=0.0, sources=SOURCES, **BIG), list(items.values()))
    style = [q for q in queries["test"] if q.kind in ("style", "any_style")]
    assert len(style) == 150
    for q in style:
        ref = items[q.reference]
        for t in q.targets:
            assert items[t].extra["emoji_id"] == ref.extra["emoji_id"]
            assert style_of(items[t]) != style_of(ref)
        if q.kind == "style":  # the caption names the target's style
            assert STYLE_PHRASES[style_of(items[q.targets[0]])] in q.caption
        else:
            assert len(q.targets) == 4


@pytest.mark.parametrize("per_family,per_style,want", [
    # thumbs up: tone 20, any_tone 5, style 60, any_style 15; person: gender 10, style 40, any_style 10;
    # abacus: style 20, any_style 5 — each (family, kind) capped
    (3, 6, {"tone": 3, "any_tone": 3, "gender": 3, "style": 18, "any_style": 6 + 6 + 5}),
    (1, 2, {"tone": 1, "any_tone": 1, "gender": 1, "style": 6, "any_style": 6}),
    (5, 0, {"tone": 5, "any_tone": 5, "gender": 5}),
    (12, 30, {"tone": 12, "any_tone": 5, "gender": 10, "style": 30 + 30 + 20, "any_style": 30}),
])
def test_caps_per_family_and_kind(fake, per_family, per_style, want):
    cfg = RealBenchmarkConfig(test=1.0, val=0.0, sources=SOURCES, per_family=per_family,
                              per_family_style=per_style)
    _, queries = plan(cfg, _items(fake))
    assert _kinds(queries["test"]) == want


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_build_is_byte_identical_for_any_worker_count(fake, tmp_path):
    cfg = RealBenchmarkConfig(image_size=32, test=0.5, val=0.3, sources=SOURCES)
    a = build_benchmark(tmp_path / "a", cfg, progress=False, sources=fake)
    cfg2 = RealBenchmarkConfig(image_size=32, test=0.5, val=0.3, sources=SOURCES, workers=2)
    build_benchmark(tmp_path / "b", cfg2, progress=False, sources=fake)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and len(fa) > 60
    assert [k for k in fa if fa[k] != fb[k]] == []
    marker = json.loads((tmp_path / "a" / "benchmark.json").read_text())
    assert marker["version"] == BENCHMARK_VERSION == "real-v3" and "workers" not in marker["config"]
    assert a["n_gallery"] == 30 and a["render_seconds"] >= 0
    n = sum(a["queries"][s]["cirr"] for s in ("test", "val"))
    assert n == sum(v for s in ("test", "val") for k, v in a["queries"][s]["kinds"].items()
                    if not k.startswith("any_"))
    # another seed: another split
    c = build_benchmark(tmp_path / "c", RealBenchmarkConfig(image_size=32, seed=1, test=0.5, val=0.3,
                                                             sources=SOURCES), progress=False, sources=fake)
    assert read_split(tmp_path / "c" / "split.json").to_json() != read_split(tmp_path / "a" / "split.json").to_json() \
        or c["queries"] == a["queries"]


def test_pixel_identical_pictures_across_styles_are_merged(tmp_path):
    src = _packages(tmp_path / "pkgs", same_abacus=True)
    info = build_benchmark(tmp_path / "b", RealBenchmarkConfig(image_size=32, test=1.0, val=0.0, sources=SOURCES,
                                                               **BIG), progress=False, sources=src)
    assert info["identical"] == [["twemoji-1f9ee", "openmoji-1f9ee"]]
    assert info["n_gallery"] == 29 and "openmoji-1f9ee" not in info["ids"]
    caps = json.loads((tmp_path / "b/test/captions/cap.rc2.val.json").read_text())
    circo = json.loads((tmp_path / "b/test/annotations/val.json").read_text())
    assert all(c["reference"] != c["target_hard"] for c in caps)
    assert not any("openmoji-1f9ee" in (c["reference"], c["target_hard"]) for c in caps)
    assert all(c["reference_img_id"] not in c["gt_img_ids"] for c in circo)
    # abacus style queries: twemoji→openmoji and openmoji→twemoji are gone (the same picture); the
    # openmoji references become twemoji ones: 120 - 2 exact style queries
    assert info["queries"]["test"]["kinds"]["style"] == 118


def test_a_picture_shared_by_three_families_is_in_no_query(tmp_path):
    """OpenMoji's black line art draws every flag as one outline: such a picture (here: one for all six emoji
    of three families) identifies no family, so it is in no query and ties no families into one split."""
    src = _packages(tmp_path / "pkgs", one_outline=True)
    info = build_benchmark(tmp_path / "b", RealBenchmarkConfig(image_size=32, test=1.0, val=0.0, sources=SOURCES,
                                                               **BIG), progress=False, sources=src)
    assert info["n_gallery"] == 25 and len(info["generic"]) == 1 and len(info["generic"][0]) == 6
    caps = json.loads((tmp_path / "b/test/captions/cap.rc2.val.json").read_text())
    assert caps and not any("openmoji-black" in c["reference"] + c["target_hard"] for c in caps)
    # four styles left: tone 4, any_tone 1, gender 2 each; style 6 emoji × 4 styles × 3 others, any_style 6 × 4
    assert info["queries"]["test"]["kinds"] == {"tone": 16, "any_tone": 4, "gender": 8, "style": 72,
                                                 "any_style": 24}
    # the three families are not tied: with a split, each goes where its own hash says
    sp, _ = plan(RealBenchmarkConfig(test=0.34, val=0.33, seed=4, sources=SOURCES), _items(src), info["generic"])
    want = {f: sp.split_of(f) for f in ("thumbs up", "person", "abacus")}
    free, _ = plan(RealBenchmarkConfig(test=0.34, val=0.33, seed=4, sources=SOURCES), _items(src))
    assert want == {f: free.split_of(f) for f in want}


@pytest.mark.parametrize("n_families,generic", [(1, False), (2, False), (3, True), (6, True)])
def test_generic_group_threshold(n_families, generic):
    from zscir.data.real.benchmark import generic_groups

    group = [f"k{i}" for i in range(6)]
    family = {k: f"fam{i % n_families}" for i, k in enumerate(group)}
    assert (generic_groups([group], family) == [group]) is generic


def test_phrasing_disjoint_from_make_triplets():
    """No benchmark phrasing (the style kind included) is an instance of a make-triplets template
    (`zscir.data.synth.variants` and `zscir.data.synth.templates`), and none of theirs is one of ours."""
    from zscir.data.real.benchmark import GENDER_WORDS
    from zscir.data.real.split import COLOURS, HAIR, TONES
    from zscir.data.synth import templates, variants

    def regex(t: str) -> re.Pattern:
        return re.compile("^" + re.sub(r"\\\{\w+\\\}", ".+", re.escape(t)) + "$")

    theirs = [regex(t) for table in (variants.PHRASES, templates.PHRASES) for ts in table.values() for t in ts]
    values = (list(TONES) + list(GENDER_WORDS.values()) + list(HAIR) + list(COLOURS) + list(STYLE_PHRASES.values())
              + ["purple", ""])
    ours = {p.format(v=v) for ps in PHRASINGS.values() for p in ps for v in values}
    assert len(ours) > 100
    clashes = sorted(m for m in ours if any(r.match(m) for r in theirs))
    assert not clashes, clashes
    # the other way: their style texts never fit one of our templates
    their_texts = {t.format(v=w, n="first") for ts in variants.PHRASES.values() for t in ts
                   for w in list(variants.STYLE_WORDS.values()) + list(TONES) + ["red"]}
    mine = [regex(t) for ts in PHRASINGS.values() for t in ts]
    assert not sorted(x for x in their_texts if any(r.match(x) for r in mine))
    assert not set(STYLE_PHRASES.values()) & set(variants.STYLE_WORDS.values())
    assert any(r.match("draw it in a flat style") for r in theirs)  # the check can fail


@pytest.mark.parametrize("kw,needle", [
    (dict(sources=("emoji", "nope")), "unknown benchmark source"),
    (dict(sources=()), "unknown benchmark source"),
    (dict(sources=("flags",)), "unknown benchmark source"),
    (dict(per_family=0), "per-family caps"),
    (dict(per_family_style=-1), "per-family caps"),
    (dict(test=0.8, val=0.5), "split fractions"),
    (dict(test=-0.1), "split fractions"),
])
def test_bad_config_is_one_error(kw, needle):
    with pytest.raises(BenchmarkBuildError, match=needle):
        RealBenchmarkConfig(**kw)


@pytest.mark.parametrize("args,needle", [
    (["--sources", "emoji,bogus"], "unknown benchmark source"),
    (["--sources", ","], "unknown benchmark source"),
    (["--test", "0.9", "--val", "0.5"], "split fractions"),
    (["--per-family", "0"], "per-family caps"),
])
def test_cli_bad_options_one_line(tmp_path, args, needle):
    from typer.testing import CliRunner

    from zscir.cli import app

    r = CliRunner().invoke(app, ["data", "build-benchmark", "--out", str(tmp_path / "b"), *args])
    assert r.exit_code != 0
    assert needle in r.output and "Traceback" not in r.output
    assert not (tmp_path / "b").exists()


def test_cli_small_build_on_fake_packages(fake, tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app

    r = CliRunner().invoke(app, ["data", "build-benchmark", "--out", str(tmp_path / "b"), "--no-progress",
                                 "--sources", ",".join(SOURCES), "--npm-dir", fake.npm_dir, "--emoji-test",
                                 fake.emoji_test, "--families", "2", "--test", "1", "--val", "0"])
    assert r.exit_code == 0, r.output
    assert "real-v3" in r.output and "exact queries from 2 families" in r.output
    info = json.loads((tmp_path / "b/benchmark.json").read_text())
    assert info["config"]["families"] == ["abacus", "person"] and info["n_gallery"] == 15
    # the same folder with other options is rebuilt, not silently reused
    r = CliRunner().invoke(app, ["data", "build-benchmark", "--out", str(tmp_path / "b"), "--no-progress",
                                 "--sources", ",".join(SOURCES), "--npm-dir", fake.npm_dir, "--emoji-test",
                                 fake.emoji_test, "--families", "1", "--test", "1", "--val", "0"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "b/benchmark.json").read_text())["n_gallery"] == 5


# --- the installed packages --------------------------------------------------------------------------
def _installed() -> bool:
    try:
        names = {style_of(it) for it in gallery_items(warn=False, names=DEFAULT_SOURCES)}
    except BenchmarkBuildError:
        return False
    return {"noto", "twemoji", "openmoji", "fluent-color"} <= names


@pytest.mark.skipif(not _installed(), reason="needs the Noto font and the npm emoji packages")
def test_installed_packages_give_2000_test_queries_from_300_families():
    """The issue's size target, planned on the installed packages (the plan is the build without pixels:
    ~20 s; the full render takes minutes, its counts are in docs/BENCHMARKS.md §8)."""
    cfg = RealBenchmarkConfig()
    split, queries = plan(cfg, gallery_items(warn=False, names=cfg.sources))
    exact = [q for q in queries["test"] if not q.kind.startswith("any_")]
    assert len(exact) >= 2000 and len({q.family for q in exact}) >= 300
    assert {"style", "tone", "gender", "tint"} <= {q.kind for q in exact}
    # the Noto-only v2 stays buildable: no style edit, a few hundred queries
    _, v2 = plan(RealBenchmarkConfig(sources=V2_SOURCES), gallery_items(warn=False, names=V2_SOURCES))
    assert not any(q.kind in ("style", "any_style") for q in v2["test"]) and 150 < len(v2["test"]) < 800
