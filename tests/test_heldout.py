"""Held-out concepts (issue 22): the lists of `zscir.data.real.heldout`, the normaliser, every matching rule,
the corpus builder / make-triplets exclusions and their counts, ``zscir data check-heldout``, and hostile
held-out folders. Everything runs on tiny fake package layouts made here; the tests on the project's real
lists (``../shared/heldout``) skip cleanly without them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from zscir.data.real.heldout import (EMOJI_LIST, STAMP_LIST, HeldoutError, HeldoutLists, RemovalReport,
                                     emoji_id, filter_items, load_heldout)
from zscir.data.real.item import RealItem, make_key
from zscir.data.real.sources import RealSources

REAL_HELDOUT = Path(__file__).resolve().parents[1].parent / "shared" / "heldout"
NOTO = "fonts-noto-color-emoji"
TUX = "tuxpaint-stamps-default"
OC = "openclipart-png"
runner = CliRunner()


def zscir(*args):
    from zscir.cli import app

    return runner.invoke(app, [str(a) for a in args])


# --- the normaliser ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value,expected", [
    ("1f44c-1f3fb", "1f44c-1f3fb"),
    ("1F44C-1F3FB", "1f44c-1f3fb"),  # npm emoji-datasource `unified`
    ("0023-FE0F-20E3", "0023-20e3"),  # fe0f dropped
    ("23-20e3", "0023-20e3"),  # Twemoji file names: no padding, no fe0f
    ("  1f600 \n", "1f600"),
    ("U+1F44C U+1F3FB", "1f44c-1f3fb"),
    ("1f44c_1f3fb", "1f44c-1f3fb"),
    ("1f44c 1f3fb", "1f44c-1f3fb"),
    ("1F9B8-200D-2642-FE0F", "1f9b8-200d-2642"),
    ("\U0001F44C\U0001F3FB", "1f44c-1f3fb"),  # the emoji text itself
    ("#\ufe0f\u20e3", "0023-20e3"),
    ("#\u20e3", "0023-20e3"),
    ("\u2764\ufe0f", "2764"),
    ("\u2764", "2764"),
    ((0x1F44C, 0x1F3FB), "1f44c-1f3fb"),
    ([0x2764, 0xFE0F], "2764"),
])
def test_emoji_id_normalises(value, expected):
    assert emoji_id(value) == expected


@pytest.mark.parametrize("value", ["", "   ", "fe0f", "\ufe0f", "110000", [], [-1], ["x"], [0x110000], "FE0F-FE0F",
                                   "smiley", "1f600;", "#"])
def test_emoji_id_refuses(value):
    with pytest.raises(ValueError):
        emoji_id(value)


# --- fake held-out folders and packages -----------------------------------------------------------------
IDS = ["1f44c-1f3fb", "0023-fe0f-20e3", "1f9b8-200d-2642-fe0f"]
STAMPS = ["animals/insects/bee.png"]
EMOJI_TEST = """# group: Smileys & Emotion
# subgroup: face-smiling
1F600                                  ; fully-qualified     # \U0001F600 E1.0 grinning face
1F44C 1F3FB                            ; fully-qualified     # \U0001F44C\U0001F3FB E1.0 OK hand: light skin tone
1F44C                                  ; fully-qualified     # \U0001F44C E0.6 OK hand
1F9B8 200D 2642 FE0F                   ; fully-qualified     # \U0001F9B8\u200d\u2642\ufe0f E11.0 man superhero
1F9B8                                  ; fully-qualified     # \U0001F9B8 E11.0 superhero
1F41D                                  ; fully-qualified     # \U0001F41D E1.0 honeybee
0023 FE0F 20E3                         ; fully-qualified     # #\ufe0f\u20e3 E0.6 keycap: #
"""


def write_heldout(folder: Path, ids=IDS, stamps=STAMPS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EMOJI_LIST).write_text("\n".join(ids) + "\n")
    (folder / STAMP_LIST).write_text("\n".join(stamps) + "\n")
    return folder


def _png(path: Path, colour=(0, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", (12, 12), colour + (255,)).save(path)


def fake_packages(root: Path) -> RealSources:
    """A Tux Paint stamps folder (a tintable held-out bee, a frog, a T-shirt), an openclipart folder (a bee
    and a lamp) and an emoji-test.txt (the names); the emoji themselves come from `fake_emoji`."""
    tux = root / "tux"
    for rel, caption, flags, colour in (("animals/insects/bee.png", "A bee.", "tintable", (200, 200, 0)),
                                        ("animals/frog.png", "A frog.", "", (0, 150, 0)),
                                        ("clothes/t_shirt.png", "A T-shirt.", "", (9, 9, 200))):
        _png(tux / rel, colour)
        (tux / rel).with_suffix(".txt").write_text(caption + "\n")
        if flags:
            (tux / rel).with_suffix(".dat").write_text(flags + "\n")
    oc = root / "oc"
    _png(oc / "animals" / "bee_01.png", (250, 250, 0))
    _png(oc / "household" / "lamp_01.png", (90, 90, 90))
    (root / "emoji-test.txt").write_text(EMOJI_TEST, encoding="utf-8")
    return RealSources(emoji_font=str(root / "none.ttf"), emoji_test=str(root / "emoji-test.txt"),
                       tuxpaint_dir=str(tux), openclipart_dir=str(oc))


#: (text, CLDR name) of the fake emoji source; 👌🏻 is listed, the others only share a name with the lists
FAKE_EMOJI = [("\U0001F44C\U0001F3FB", "OK hand: light skin tone"), ("\U0001F44C", "OK hand"),
              ("\U0001F41D", "bee"), ("\U0001F600", "grinning face"), ("\U0001F9B8", "superhero")]


def fake_emoji(sources=None):
    for i, (text, name) in enumerate(FAKE_EMOJI):
        yield RealItem(make_key("emoji", *(f"{ord(c):x}" for c in text)), name, NOTO, "OFL-1.1",
                       name.split(":")[0], lambda i=i: Image.new("RGB", (10, 10), (i * 40, 0, 0)), {},
                       {"emoji": text, "base_emoji": text[0]})


@pytest.fixture
def world(tmp_path, monkeypatch):
    from zscir.data.real import corpus

    monkeypatch.setitem(corpus.READERS, "emoji", lambda sources: fake_emoji())
    return tmp_path, fake_packages(tmp_path / "pkg"), write_heldout(tmp_path / "heldout")


def lists_of(world, match="concept") -> HeldoutLists:
    _, src, folder = world
    return load_heldout(folder, match, src.emoji_test, src.tuxpaint_dir)


# --- every rule -------------------------------------------------------------------------------------------
MATCHES = [  # (metadata, ids mode, concept mode); a value is (list, by)
    ({"emoji_id": "1F44C-1F3FB"}, (EMOJI_LIST, "id"), (EMOJI_LIST, "id")),
    ({"emoji_id": "1f44c-1f3fb-fe0f"}, (EMOJI_LIST, "id"), (EMOJI_LIST, "id")),
    ({"emoji_id": "23-20e3", "source": "emoji-datasource-twitter"}, (EMOJI_LIST, "id"), (EMOJI_LIST, "id")),
    ({"emoji": "\U0001F44C\U0001F3FB", "source": NOTO, "caption": "OK hand: light skin tone"},
     (EMOJI_LIST, "id"), (EMOJI_LIST, "id")),
    ({"emoji": "#\u20e3", "source": NOTO}, (EMOJI_LIST, "id"), (EMOJI_LIST, "id")),
    ({"emoji": "\U0001F9B8\u200d\u2642", "source": NOTO}, (EMOJI_LIST, "id"), (EMOJI_LIST, "id")),
    ({"emoji": "\U0001F44C", "source": NOTO, "caption": "OK hand"}, None, (EMOJI_LIST, "name")),
    ({"emoji": "\U0001F9B8\U0001F3FF\u200d\u2640", "source": NOTO, "caption": "woman superhero: dark skin tone"},
     None, (EMOJI_LIST, "name")),
    ({"emoji": "\U0001F600", "source": NOTO, "caption": "grinning face"}, None, None),
    ({"source": TUX, "file": "animals/insects/bee.png", "concept": "bee"}, (STAMP_LIST, "file"), (STAMP_LIST, "file")),
    ({"source": TUX, "file": "animals/insects/bee.png", "variant": {"tint": "red"}, "caption": "A red bee."},
     (STAMP_LIST, "file"), (STAMP_LIST, "file")),
    ({"source": TUX, "file": "./animals/insects/bee.png"}, (STAMP_LIST, "file"), (STAMP_LIST, "file")),
    ({"source": TUX, "file": "animals\\insects\\bee.png"}, (STAMP_LIST, "file"), (STAMP_LIST, "file")),
    ({"source": TUX, "file": "animals/frog.png", "concept": "frog"}, None, None),
    ({"source": TUX, "file": "../animals/insects/bee.png", "concept": "x"}, None, None),
    ({"source": OC, "file": "animals/insects/bee.png", "concept": "insect"}, None, None),  # not a stamp path
    ({"source": OC, "concept": "bee", "caption": "bee"}, None, (STAMP_LIST, "name")),
    ({"source": OC, "concept": "superhero"}, None, (EMOJI_LIST, "name")),
    ({"source": OC, "concept": "ok hand"}, None, (EMOJI_LIST, "name")),
    ({"source": OC, "concept": "bees"}, None, None),  # plurals are not folded (documented)
    ({"caption": "A bee."}, None, (STAMP_LIST, "name")),  # no metadata but the caption
    ({"emoji_id": "zz", "emoji": "\U0001F44C\U0001F3FB"}, (EMOJI_LIST, "id"), (EMOJI_LIST, "id")),
    ({"emoji_id": 12, "source": OC, "concept": "lamp"}, None, None),
    ({}, None, None),
]


@pytest.mark.parametrize("meta,ids_mode,concept_mode", MATCHES, ids=[json.dumps(m, ensure_ascii=True)[:60]
                                                                     for m, _, _ in MATCHES])
def test_every_rule(world, meta, ids_mode, concept_mode):
    for mode, want in (("ids", ids_mode), ("concept", concept_mode)):
        m = lists_of(world, mode).match(meta)
        assert (None if m is None else (m.list, m.by)) == want, mode
        assert (lists_of(world, mode).reason(meta) is None) == (want is None)


def test_tints_of_a_held_out_stamp_are_removed(world):
    from zscir.data.real.tuxpaint import read_stamps

    _, src, _ = world
    items = list(read_stamps(Path(src.tuxpaint_dir)))
    assert len(items) == 1 + 6 + 1 + 1  # the bee and its six tints, the frog, the T-shirt
    report = RemovalReport()
    kept = filter_items(items, lists_of(world, "ids"), report)
    assert sorted(it.extra["file"] for it in kept) == ["animals/frog.png", "clothes/t_shirt.png"]
    assert report.as_dict() == {"removed": 7, "per_list": {STAMP_LIST: {"exact": {TUX: 7}}}}


def test_names_are_learnt_from_the_packages(world):
    lists = lists_of(world)
    assert {"ok hand", "superhero", "bee", "keycap: #"} <= set(lists.names)
    assert lists.describe()["match"] == "concept"
    _, src, folder = world
    bare = load_heldout(folder, "concept")  # no package files: stamp names from the listed paths only
    assert "bee" in bare.names and "ok hand" not in bare.names


# --- the corpus builder -------------------------------------------------------------------------------------
def _build(world, match: str | None, name: str):
    from zscir.data.real.corpus import CorpusConfig, build_corpus

    tmp, src, folder = world
    cfg = CorpusConfig(out=str(tmp / name), max_per_source=0, image_size=16, packages=src, write_images=False,
                       heldout=str(folder) if match else None, heldout_match=match or "concept")
    summary = build_corpus(cfg, progress=False)
    with open(tmp / name / "manifest.csv", newline="", encoding="utf-8") as f:
        keys = {r["key"] for r in csv.DictReader(f)}
    return summary, keys


@pytest.mark.parametrize("match,removed,per_list,kept", [
    ("ids", 8, {EMOJI_LIST: {"exact": {NOTO: 1}}, STAMP_LIST: {"exact": {TUX: 7}}},
     {"emoji-1f44c", "emoji-1f41d", "emoji-1f600", "emoji-1f9b8", "tux-animals-frog", "tux-clothes-t_shirt",
      "oc-animals-bee_01", "oc-household-lamp_01"}),
    ("concept", 12, {EMOJI_LIST: {"exact": {NOTO: 1}, "name": {NOTO: 2}},
                     STAMP_LIST: {"exact": {TUX: 7}, "name": {NOTO: 1, OC: 1}}},
     {"emoji-1f600", "tux-animals-frog", "tux-clothes-t_shirt", "oc-household-lamp_01"}),
])
def test_corpus_build_removes_exactly_the_listed_items(world, match, removed, per_list, kept):
    summary, keys = _build(world, match, f"corpus-{match}")
    assert keys == kept
    assert summary["heldout"]["removed"] == removed and summary["heldout"]["per_list"] == per_list
    assert summary["heldout"]["match"] == match
    assert sum(c["heldout_removed"]["removed"] for c in summary["counts"].values()) == removed
    on_disk = json.loads((Path(summary["config"]["out"]) / "corpus.json").read_text())
    assert on_disk["heldout"]["per_list"] == per_list


def test_corpus_build_without_lists_warns_and_records_none(world, caplog):
    summary, keys = _build(world, None, "corpus-none")
    assert summary["heldout"] is None and len(keys) == 5 + 9 + 2
    assert "no --heldout folder" in caplog.text


def test_script_prints_the_removals(world, capsys):
    import importlib.util

    tmp, src, folder = world
    spec = importlib.util.spec_from_file_location("brc", Path(__file__).parents[1] / "scripts" / "build_real_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--out", str(tmp / "s"), "--sources", "tuxpaint", "--no-progress", "--no-images",
            "--tuxpaint-dir", src.tuxpaint_dir, "--heldout", str(folder), "--heldout-match", "ids"]
    assert mod.main(args) == 0
    assert "held out (ids match" in capsys.readouterr().out
    assert mod.main(["--out", str(tmp / "s2"), "--sources", "tuxpaint", "--heldout", str(tmp / "nope")]) == 2
    assert "held-out folder not found" in capsys.readouterr().err and not (tmp / "s2").exists()


# --- check-heldout -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("what,match,code,count", [
    ("leaky", "ids", 1, 8), ("leaky", "concept", 1, 12), ("clean", "concept", 0, 0), ("clean", "ids", 0, 0),
    ("leaky-manifest", "ids", 1, 8), ("leaky-shards", "ids", 1, 8),
])
def test_check_heldout_exit_codes(world, what, match, code, count):
    tmp, src, folder = world
    if what.startswith("leaky"):
        _build(world, None, "leaky")
        target = {"leaky": tmp / "leaky", "leaky-manifest": tmp / "leaky" / "manifest.csv",
                  "leaky-shards": f"wds:{tmp / 'leaky' / 'shards' / 'corpus-00000.tar'}"}[what]
    else:
        _build(world, "concept", "clean")
        target = tmp / "clean"
    res = zscir("data", "check-heldout", target, "--heldout", folder, "--heldout-match", match,
                "--emoji-test", src.emoji_test, "--tuxpaint-dir", src.tuxpaint_dir)
    assert res.exit_code == code, res.output
    assert f"{count} held-out items" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("target,heldout,needle", [
    ("missing", "ok", "not found"),
    ("empty-dir", "ok", "without shards"),
    ("ok", "missing", "held-out folder not found"),
    ("pipe:cat x.tar", "ok", "only local"),
    ("ok", "bad-mode", "match mode"),
    ("broken-tar", "ok", "no item found"),
])
def test_check_heldout_bad_input_is_one_error_line(world, target, heldout, needle):
    tmp, src, folder = world
    _build(world, None, "ok")
    (tmp / "empty-dir").mkdir()
    (tmp / "broken-dir").mkdir()
    (tmp / "broken-dir" / "a.tar").write_bytes(b"\0garbage" * 10)
    t = {"missing": tmp / "nope", "empty-dir": tmp / "empty-dir", "ok": tmp / "ok",
         "broken-tar": tmp / "broken-dir"}.get(target, target)
    args = ["data", "check-heldout", t, "--heldout", folder if heldout != "missing" else tmp / "nope"]
    if heldout == "bad-mode":
        args += ["--heldout-match", "fuzzy"]
    res = zscir(*args)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.output


# --- make-triplets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec_kind", ["shards", "manifest"])
def test_make_triplets_drops_held_out_pairs(world, spec_kind):
    from zscir.data.synth.make import MakeTripletsConfig, make_triplets

    tmp, src, folder = world
    from zscir.data.real.corpus import CorpusConfig, build_corpus

    build_corpus(CorpusConfig(out=str(tmp / "c"), max_per_source=0, image_size=16, packages=src), progress=False)
    data = (f"wds:{tmp / 'c' / 'shards' / 'corpus-00000.tar'}" if spec_kind == "shards"
            else str(tmp / "c" / "manifest.csv"))
    cfg = MakeTripletsConfig(data=data, out=str(tmp / "t"), generators=("substitute",), heldout=str(folder),
                             heldout_match="ids", image_size=16, image_root=str(tmp / "c"))
    r = make_triplets(cfg, progress=False)
    assert r["pairs"] == 16 - 8 and r["heldout"]["removed"] == 8
    assert r["heldout"]["per_list"] == {EMOJI_LIST: {"exact": {NOTO: 1}}, STAMP_LIST: {"exact": {TUX: 7}}}
    rows = [json.loads(x) for x in (tmp / "t" / "triplets.jsonl").read_text().splitlines()]
    assert rows and not any("bee" in r_["reference_caption"].lower() for r_ in rows)
    assert json.loads((tmp / "t" / "make-triplets.json").read_text())["heldout"]["removed"] == 8


def test_make_triplets_refuses_a_bad_heldout_folder(world):
    from zscir.data import DataError
    from zscir.data.synth.make import MakeTripletsConfig, make_triplets

    tmp, _, _ = world
    with pytest.raises(DataError, match="held-out folder not found"):
        make_triplets(MakeTripletsConfig(data="world", out=str(tmp / "t"), heldout=str(tmp / "none")), progress=False)
    with pytest.raises(DataError, match="heldout-match"):
        MakeTripletsConfig(data="world", out=str(tmp / "t"), heldout_match="some").check()
    assert not (tmp / "t").exists()


# --- hostile held-out folders ------------------------------------------------------------------------------------
def _mutate(folder: Path, how: str) -> Path:
    e, s = folder / EMOJI_LIST, folder / STAMP_LIST
    if how == "no-folder":
        return folder / "nope"
    if how == "folder-is-file":
        f = folder / "file"
        f.write_text("x")
        return f
    actions = {
        "no-emoji-list": lambda: e.unlink(),
        "no-stamp-list": lambda: s.unlink(),
        "emoji-list-is-dir": lambda: (e.unlink(), e.mkdir()),
        "binary": lambda: e.write_bytes(b"1f600\n\0\0\0\x89PNG"),
        "not-utf8": lambda: e.write_bytes(b"1f600\n\xff\xfe\xfa\n"),
        "huge": lambda: e.write_bytes(b"1f600\n" * 800_000),
        "too-many": lambda: e.write_text("1f600\n" * 100_001),
        "bad-id-word": lambda: e.write_text("1f600\nsmiley\n"),
        "bad-id-semicolon": lambda: e.write_text("1F600 ; fully-qualified\n"),
        "bad-id-big": lambda: e.write_text("110000\n"),
        "bad-id-only-fe0f": lambda: e.write_text("fe0f\n"),
        "bad-id-emoji-text": lambda: e.write_text("\U0001F600\n", encoding="utf-8"),
        "stamp-escapes": lambda: s.write_text("../../etc/passwd.png\n"),
        "stamp-absolute": lambda: s.write_text("/usr/share/tuxpaint/stamps/bee.png\n"),
        "stamp-not-png": lambda: s.write_text("animals/bee.svg\n"),
        "both-empty": lambda: (e.write_text("# nothing\n\n"), s.write_text("")),
    }
    actions[how]()
    return folder


@pytest.mark.parametrize("how,needle", [
    ("no-folder", "held-out folder not found"), ("folder-is-file", "held-out folder not found"),
    ("no-emoji-list", "held-out list not found"), ("no-stamp-list", "held-out list not found"),
    ("emoji-list-is-dir", "held-out list not found"), ("binary", "binary file"), ("not-utf8", "not UTF-8"),
    ("huge", "is not a held-out list"), ("too-many", "entries is not a held-out list"),
    ("bad-id-word", "entry 2"), ("bad-id-semicolon", "not an emoji id"), ("bad-id-big", "not an emoji id"),
    ("bad-id-only-fe0f", "variation selector"), ("bad-id-emoji-text", "not an emoji id"),
    ("stamp-escapes", "not a stamp path"), ("stamp-absolute", "not a stamp path"),
    ("stamp-not-png", "not a .png stamp path"), ("both-empty", "both held-out lists are empty"),
])
def test_hostile_heldout_folders(tmp_path, how, needle):
    folder = _mutate(write_heldout(tmp_path / "h"), how)
    with pytest.raises(HeldoutError, match=needle) as e:
        load_heldout(folder, "ids")
    assert "\n" not in str(e.value) and len(str(e.value)) < 400
    res = zscir("data", "check-heldout", tmp_path, "--heldout", folder)
    assert res.exit_code == 2 and "Traceback" not in res.output


def test_unknown_match_mode(tmp_path):
    with pytest.raises(HeldoutError, match="match mode"):
        load_heldout(write_heldout(tmp_path / "h"), "fuzzy")


def test_tolerated_formatting(tmp_path):
    h = tmp_path / "h"
    h.mkdir()
    (h / EMOJI_LIST).write_bytes("\ufeff# held out\r\n\r\n1F44C-1F3FB  \r\n0023-20E3 # keycap\r\n\n".encode("utf-8"))
    (h / STAMP_LIST).write_text("# stamps\n./animals/insects/bee.png\n\n")
    lists = load_heldout(h, "ids")
    assert lists.emoji_ids == {"1f44c-1f3fb", "0023-20e3"}
    assert lists.stamps == {"animals/insects/bee.png"}
    assert lists.describe() == {"folder": str(h), "match": "ids", EMOJI_LIST: 2, STAMP_LIST: 1, "names": 0}


# --- the project's real lists ------------------------------------------------------------------------------------
needs_real = pytest.mark.skipif(not (REAL_HELDOUT / EMOJI_LIST).is_file(), reason="no ../shared/heldout here")


@needs_real
def test_real_lists_load_and_are_normal():
    lists = load_heldout(REAL_HELDOUT, "ids")
    assert len(lists.emoji_ids) == 1862 and len(lists.stamps) == 121
    raw = [ln.strip() for ln in (REAL_HELDOUT / EMOJI_LIST).read_text().splitlines() if ln.strip()]
    assert {emoji_id(x) for x in raw} == set(lists.emoji_ids)
    assert all("fe0f" not in i and i == i.lower() for i in lists.emoji_ids)


@needs_real
@pytest.mark.parametrize("meta", [{}, {"source": OC, "concept": ""}, {"caption": "  "}, {"source": TUX, "file": ""},
                                  {"emoji": ""}, {"emoji_id": None, "caption": None}])
def test_items_without_a_name_are_not_matched_by_name(meta):
    from zscir.data.real.emoji import EMOJI_TEST as ET

    lists = load_heldout(REAL_HELDOUT, "concept", ET, None)
    assert lists.match(meta) is None


@needs_real
def test_real_stamps_and_tints_all_removed():
    from zscir.data.real.tuxpaint import ROOT, read_stamps

    if not ROOT.is_dir():
        pytest.skip("no tuxpaint-stamps-default")
    lists = load_heldout(REAL_HELDOUT, "ids")
    items = list(read_stamps(ROOT))
    listed = [it for it in items if it.extra["file"] in lists.stamps]
    assert {it.extra["file"] for it in listed} == set(lists.stamps)  # every listed stamp exists
    report = RemovalReport()
    kept = filter_items(items, lists, report)
    assert report.total == len(listed) and len(kept) == len(items) - len(listed)
    assert any(it.variant.get("tint") for it in listed)  # tints went with their stamps


# --- the Fusion-Diff caption bank -----------------------------------------------------------------------------
@pytest.mark.parametrize("match,gone,left", [
    ("ids", {"OK hand: light skin tone", "A bee.", "A red bee."}, {"OK hand", "bee", "A frog.", "superhero"}),
    ("concept", {"OK hand: light skin tone", "A bee.", "OK hand", "bee", "superhero"}, {"A frog.", "grinning face"}),
])
def test_caption_bank_leaves_out_held_out_items(world, match, gone, left):
    from zscir.data.real.corpus import CorpusConfig, build_corpus
    from zscir.methods.fusiondiff.captioner import bank_from_data

    tmp, src, _ = world
    build_corpus(CorpusConfig(out=str(tmp / "c"), max_per_source=0, image_size=16, packages=src,
                              write_images=False), progress=False)
    spec = f"wds:{tmp / 'c' / 'shards' / 'corpus-00000.tar'}"
    full = set(bank_from_data(spec))
    bank = set(bank_from_data(spec, heldout=lists_of(world, match)))
    assert gone <= full and left <= full
    assert not (gone & bank) and left <= bank


@pytest.mark.parametrize("with_heldout,code", [(False, 1), (True, 0)])
def test_check_heldout_reads_a_triplet_manifest(world, with_heldout, code):
    from zscir.data.real.corpus import CorpusConfig, build_corpus
    from zscir.data.synth.make import MakeTripletsConfig, make_triplets

    tmp, src, folder = world
    build_corpus(CorpusConfig(out=str(tmp / "c"), max_per_source=0, image_size=16, packages=src,
                              write_images=False), progress=False)
    make_triplets(MakeTripletsConfig(data=f"wds:{tmp / 'c' / 'shards' / 'corpus-00000.tar'}", out=str(tmp / "t"),
                                     generators=("substitute",), image_size=16,
                                     heldout=str(folder) if with_heldout else None, heldout_match="ids"),
                  progress=False)
    res = zscir("data", "check-heldout", tmp / "t" / "triplets.jsonl", "--heldout", folder,
                "--emoji-test", src.emoji_test, "--tuxpaint-dir", src.tuxpaint_dir)
    assert res.exit_code == code, res.output
    assert ("bee" in res.output) == (code == 1)
