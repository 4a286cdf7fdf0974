"""The Debian real-picture readers and scripts/build_real_corpus.py (skip cleanly without the packages)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zscir.data.real.item import SourceMissing

ROOT = Path(__file__).resolve().parents[1]


def _items(reader, **kw):
    try:
        return list(reader(**kw))
    except SourceMissing as e:
        pytest.skip(str(e))


def _colourful(im: Image.Image) -> bool:
    a = np.asarray(im.convert("RGB")).astype(int)
    return a.std() > 10 and (np.abs(a[..., 0] - a[..., 2]) > 30).mean() > 0.01


def test_emoji_reader_names_concepts_and_skin_tones():
    from zscir.data.real.emoji import read_emoji

    items = {it.caption: it for it in _items(read_emoji)}
    assert len(items) > 3000
    it = items["thumbs up: dark skin tone"]
    assert it.concept == "thumbs up" and it.variant == {"name": "dark skin tone", "skin_tone": "dark"}
    assert it.extra["base_emoji"] == "\U0001F44D" and it.licence == "OFL-1.1"
    assert it.key == "emoji-1f44d-1f3ff"
    im = it.load()
    assert 90 <= im.width <= 140 and 90 <= im.height <= 140 and _colourful(im)
    # the dark-skinned thumb is darker than the light-skinned one: the variant is in the pixels
    light = np.asarray(items["thumbs up: light skin tone"].load().convert("RGBA")).astype(float)
    dark = np.asarray(im.convert("RGBA")).astype(float)
    lum = lambda a: (a[..., :3].mean(-1) * (a[..., 3] > 128)).sum() / (a[..., 3] > 128).sum()  # noqa: E731
    assert lum(dark) < lum(light) - 30


def test_tuxpaint_reader_captions_and_tints():
    from zscir.data.real.tuxpaint import read_stamps, tinted_caption

    items = _items(read_stamps, tint_colours=("red", "orange"))
    by_file = {}
    for it in items:
        by_file.setdefault(it.extra["file"], []).append(it)
    frog = by_file["animals/amphibians/frog.png"][0]
    assert frog.caption == "A frog." and frog.concept == "frog" and frog.licence.startswith("GPL")
    assert _colourful(frog.load())
    tinted = [v for v in items if v.variant]
    assert tinted and {v.variant["tint"] for v in tinted} == {"red", "orange"}
    one = tinted[0]
    base = by_file[one.extra["file"]][0]
    assert one.caption != base.caption and one.variant["tint"] in one.caption
    assert np.abs(np.asarray(one.load(), float) - np.asarray(base.load().convert("RGB"), float)).mean() > 1
    assert tinted_caption("A heart.", "red") == "A red heart."
    assert tinted_caption("An owl.", "orange") == "An orange owl."
    assert tinted_caption("Dollar sign.", "red") == "Dollar sign, coloured red."


def test_openclipart_reader_titles_without_authors():
    from zscir.data.real.openclipart import read_openclipart, title_of

    items = {it.extra["file"]: it for it in _items(read_openclipart)}
    assert len(items) > 5000
    assert items["animals/bison_leif_lodahl_01.png"].caption == "bison"
    assert items["animals/armadillo_architetto_fra_01.png"].caption == "armadillo"  # cut inside the author
    assert items["animals/az-lizard_benji_park_01.png"].caption == "az lizard"
    assert all(not f.startswith("special/") for f in items)
    assert title_of("jigsaw_red_08", set()) == "jigsaw red"
    im = items["animals/bison_leif_lodahl_01.png"].load()
    assert im.mode == "RGB" and max(im.size) <= 512


def _build(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_real_corpus.py"), "--out", str(out),
                           "--max-per-source", "6", "--image-size", "32", "--shard-size", "7", "--no-progress",
                           *extra], capture_output=True, text=True, env={**__import__("os").environ,
                                                                         "OMP_NUM_THREADS": "1"})


def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in ("corpus.json", "corpus.files.jsonl")}


def test_build_real_corpus_shards_csv_deterministic(tmp_path):
    import webdataset as wds

    r = _build(tmp_path / "a")
    if r.returncode != 0 and "no source is available" in r.stderr:
        pytest.skip("no Debian picture package installed")
    assert r.returncode == 0, r.stderr
    info = json.loads((tmp_path / "a" / "corpus.json").read_text())
    available = [s for s, c in info["counts"].items() if c.get("selected")]
    if not available:
        pytest.skip("no Debian picture package installed")
    n = info["written"]
    assert n == 6 * len(available) and not info["skipped"]
    rows = list(csv.DictReader(open(tmp_path / "a" / "manifest.csv", encoding="utf-8")))
    assert len(rows) == n and set(rows[0]) >= {"filepath", "title", "source", "licence", "concept", "variant"}
    assert info["n_shards"] == -(-n // 7)
    urls = str(tmp_path / "a" / info["shards"])  # brace-expanded by webdataset
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [r["key"] for r in rows]
    for s, row in zip(samples, rows):
        assert s["txt"].decode() == row["title"] and row["title"]
        meta = json.loads(s["json"])
        assert meta["source"] == row["source"] and meta["concept"] == row["concept"]
        im = Image.open(io.BytesIO(s["png"]))
        assert im.size == (32, 32)
        assert s["png"] == (tmp_path / "a" / row["filepath"]).read_bytes()
    # deterministic: a second build elsewhere (in-process, same options) is byte-identical
    from zscir.data.real.corpus import CorpusConfig, build_corpus

    cfg = dict(max_per_source=6, image_size=32, shard_size=7)
    build_corpus(CorpusConfig(out=str(tmp_path / "b"), **cfg), progress=False)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    # rebuilding over its own corpus is allowed (its recorded files cleared) and gives the same files again;
    # a file it did not write survives, even inside a folder the builder created
    (tmp_path / "a" / "images" / "mine.png").write_bytes(b"x")
    build_corpus(CorpusConfig(out=str(tmp_path / "a"), **cfg), progress=False)
    assert (tmp_path / "a" / "images" / "mine.png").read_bytes() == b"x"
    (tmp_path / "a" / "images" / "mine.png").unlink()
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")


def _script_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_real_corpus", ROOT / "scripts" / "build_real_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_build_real_corpus_refuses_foreign_folder(tmp_path, capsys):
    main = _script_main()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"precious")
    assert main(["--out", str(out), "--sources", "emoji", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not created by" in err
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
    assert main(["--out", str(tmp_path / "x"), "--sources", "emoji,nope"]) == 2
    assert "nope" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_missing_packages_are_reported_not_crashed(tmp_path, monkeypatch):
    from zscir.data.real import corpus
    from zscir.data.real.emoji import read_emoji
    from zscir.data.real.openclipart import read_openclipart
    from zscir.data.real.tuxpaint import read_stamps

    for reader, kw in ((read_emoji, {"font_path": tmp_path / "none.ttf"}), (read_stamps, {"root": tmp_path / "no"}),
                       (read_openclipart, {"root": tmp_path / "no"})):
        with pytest.raises(SourceMissing, match="install the Debian package"):
            list(reader(**kw))

    def missing(*a):
        raise SourceMissing("x not found (install the Debian package y)")

    monkeypatch.setattr(corpus, "READERS", {"emoji": missing, "tuxpaint": missing, "openclipart": missing})
    with pytest.raises(corpus.CorpusError, match="no source is available"):
        corpus.build_corpus(corpus.CorpusConfig(out=str(tmp_path / "out")), progress=False)
    assert not (tmp_path / "out").exists()
