"""The folder walk and file names: undecodable, control-character and deep names; unsupported formats;
an unchanged re-index that never loads the model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.test_indexer import MODEL, cfg, make_photos
from zscir.cli import app
from zscir.index.build import build_index
from zscir.index.names import escape_name, item_path, printable, unescape_name
from zscir.index.scan import scan_images
from zscir.index.store import EmbeddingStore

posix_bytes_names = pytest.mark.skipif(sys.platform != "linux", reason="needs a file system with byte names")


def test_escape_is_injective_reversible_and_leaves_ordinary_names_alone():
    names = ["p.png", "sub/ünïcödé 🎉.jpg", "a\\b.png", "a\\\\b.png", "new\nline.png", "tab\t.png", "\x1b[31mred.png",
             "caf\udce9.jpg", "caf\\xe9.jpg", "rtl\u202egnp.exe.png", "nul\x7f.png", "ls\u2028.png", "\\u001b.png"]
    escaped = [escape_name(n) for n in names]
    assert escaped[:2] == names[:2]
    assert len(set(escaped)) == len(names)  # injective: no two files share an id
    assert [unescape_name(e) for e in escaped] == names
    for e in escaped:
        e.encode("utf-8")  # valid Unicode: JSON, HTTP and terminals take it
        assert e.isprintable() and "\u202e" not in e
    assert escape_name("caf\udce9.jpg") == "caf\\xe9.jpg" and escape_name("\x1b[31m") == "\\u001b[31m"
    assert printable("bad \x1b[2J name\n") == "bad \\u001b[2J name\\n"


@posix_bytes_names
def test_undecodable_control_and_ansi_names_are_indexed_and_openable(tmp_path):
    from zscir.methods import create_composer

    photos = tmp_path / "photos"
    make_photos(photos, n=3)
    raw = os.fsencode(photos) + b"/caf\xe9"
    os.mkdir(raw)
    odd = {"caf\\xe9/na\\xefve.png": raw + b"/na\xefve.png", "new\\nline.png": os.fsencode(photos / "new\nline.png"),
           "\\u001b[31mred.png": os.fsencode(photos / "\x1b[31mred.png")}
    for i, p in enumerate(odd.values()):
        Image.new("RGB", (20, 20), (40 * i, 200, 90)).save(os.fsdecode(p))
    (photos / "bad\x1b[2J.png").write_bytes(b"not an image")
    composer = create_composer("sum", model=MODEL)
    rep = build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    assert rep.indexed == 6 and [s["id"] for s in rep.skipped] == ["bad\\u001b[2J.png"]
    store = EmbeddingStore.load(tmp_path / "idx")
    assert set(odd) <= set(store.ids)
    for item_id, raw_path in odd.items():  # the record round-trips through JSON and still opens the file
        item = store.items[store.index_of(item_id)]
        assert os.fsencode(item_path(item)) == raw_path and Path(item_path(item)).is_file()
        json.dumps(item, ensure_ascii=False).encode("utf-8")
    assert store.items[store.index_of("caf\\xe9/na\\xefve.png")]["path_escaped"] is True
    # the CLI prints every name escaped: no raw escape sequence or newline reaches the terminal
    res = CliRunner().invoke(app, ["index", str(photos), "--out", str(tmp_path / "idx2"), "--model", MODEL])
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.output and "skipped bad\\u001b[2J.png" in res.output
    res = CliRunner().invoke(app, ["search", str(tmp_path / "idx"), "--image", "new\\nline.png", "--text", "x",
                                   "-k", "6"])
    assert res.exit_code == 0 and "\x1b" not in res.output and "\udce9" not in res.output, res.output
    lines = res.output.strip().splitlines()
    # the exclusion note names the reference escaped (one line), then one line per hit without the reference
    assert lines[0] == "reference is indexed item new\\nline.png: excluded"
    assert len(lines[1:]) == 5 and not any("new" in line for line in lines[1:])


@posix_bytes_names
def test_server_serves_thumbnails_of_escaped_ids(tmp_path):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from tests.test_serve_api import running_server
    from zscir.index.retriever import Retriever
    from zscir.methods import create_composer
    from zscir.serve import create_app

    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    Image.new("RGB", (20, 20), (200, 10, 10)).save(os.fsdecode(os.fsencode(photos) + b"/caf\xe9.png"))
    Image.new("RGB", (20, 20), (10, 200, 10)).save(photos / "two\nlines.png")
    build_index(photos, tmp_path / "idx", create_composer("sum", model=MODEL), model=MODEL, config=cfg())
    with running_server(create_app(Retriever.load(tmp_path / "idx"))) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        ids = [it["id"] for it in c.get("/items", params={"limit": 10}).json()["items"]]
        assert {"caf\\xe9.png", "two\\nlines.png"} <= set(ids)
        for item_id in ("caf\\xe9.png", "two\\nlines.png"):
            r = c.get(f"/items/{quote(item_id)}/thumbnail")
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", (item_id, r.text)
        res = c.post("/search", data={"text": "x", "k": "3", "item_id": "caf\\xe9.png"})
        assert res.status_code == 200 and "caf\\xe9.png" not in [h["id"] for h in res.json()["results"]]


def test_a_1000_level_deep_tree_is_walked_without_recursion(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    depth, cwd = 1000, os.getcwd()
    try:
        os.chdir(root)  # relative mkdir/rmdir: O(1) path lookups instead of O(depth) each
        for _ in range(depth):
            os.mkdir("d")
            os.chdir("d")
        Image.new("RGB", (8, 8)).save("bottom.png")
        os.symlink(root, "loop")  # a directory symlink back to the top: not followed
        os.chdir(cwd)
        (root / "top.png").write_bytes(b"")
        entries, bad = scan_images(root)
        assert [e.id for e in entries] == ["d/" * depth + "bottom.png", "top.png"] and bad == []
    finally:  # remove bottom-up without recursion (shutil.rmtree recurses once per level)
        os.chdir(root)
        n = 0
        while os.path.isdir("d"):
            os.chdir("d")
            n += 1
        for f in os.listdir("."):
            os.unlink(f)
        for _ in range(n):
            os.chdir("..")
            os.rmdir("d")
        os.chdir(cwd)


def test_unsupported_formats_like_svg_are_reported_not_ignored(tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    (photos / "logo.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    (photos / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (photos / "notes.txt").write_text("not an image at all")
    entries, bad = scan_images(photos)
    assert len(entries) == 2
    assert {b["id"]: b["code"] for b in bad} == {"logo.svg": "unsupported_format", "phone.HEIC": "unsupported_format"}
    res = CliRunner().invoke(app, ["index", str(photos), "--out", str(tmp_path / "idx"), "--model", MODEL])
    assert res.exit_code == 0 and "skipped 2" in res.output and "skipped logo.svg: unsupported format (SVG)" \
        in res.output, res.output


def test_unchanged_reindex_does_not_load_the_model(tmp_path, monkeypatch):
    from zscir.backbones import registry

    photos = tmp_path / "photos"
    make_photos(photos, n=5)
    (photos / "broken.png").write_bytes(b"garbage")
    runner = CliRunner()
    args = ["index", str(photos), "--out", str(tmp_path / "idx"), "--model", MODEL, "--batch-size", "4"]
    assert runner.invoke(app, args).exit_code == 0
    manifest = (tmp_path / "idx" / "manifest.json").read_bytes()

    def no_model(**kw):
        raise AssertionError("the model was loaded")

    monkeypatch.setitem(registry._BUILTIN, MODEL, no_model)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "index up to date (5 items, skipped 1)" in res.output and "skipped broken.png" in res.output
    assert (tmp_path / "idx" / "manifest.json").read_bytes() == manifest  # nothing was written
    for change in ("touch", "add", "method"):  # any change needs the model (and so fails here)
        if change == "touch":
            os.utime(next(photos.glob("*.png")), ns=(1, 2))
        elif change == "add":
            make_photos(photos, n=1, start=40)
        res = runner.invoke(app, args + (["-m", "sum", "-m", "image"] if change == "method" else []))
        assert res.exit_code != 0 and isinstance(res.exception, AssertionError), (change, res.output)


def test_request_changes_when_local_model_or_checkpoint_files_change(tmp_path):
    from zscir.index.build import make_request

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "adapter.safetensors").write_bytes(b"v1")
    before = make_request(f"local-dir:{ckpt}", ["tscir"], str(ckpt))
    assert before == make_request(f"local-dir:{ckpt}", ["tscir"], str(ckpt))
    assert make_request("world-clip", ["sum"]) == {"model": "world-clip", "methods": ["sum"]}
    (ckpt / "adapter.safetensors").write_bytes(b"v2 retrained")
    after = make_request(f"local-dir:{ckpt}", ["tscir"], str(ckpt))
    assert after["model_files"] != before["model_files"] and after["checkpoint"] != before["checkpoint"]
