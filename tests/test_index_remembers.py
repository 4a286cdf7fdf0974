"""Issue 23 §3: an index that remembers.

* Re-indexing without repeating ``--model`` / ``--method`` updates the index with its own model and methods
  (before: the default model was taken, the run refused, and the suggested ``--overwrite`` would have
  replaced a working index with the world model). Only a model the user names that differs asks for it.
* Every argument is checked before a model is loaded, and a run that wrote nothing leaves no ``.lock``
  (before: a missing image folder loaded the model, failed, and left ``--out/.lock`` behind, so the next
  command reported a misleading "manifest missing ... an interrupted save?").
* ``zscir index ann`` on a small index says "skipped: N items < 1000 (exact search is used)", and
  ``zscir search --ann`` on it now agrees: it searches exactly and says so (before: "build one with
  `zscir index ann`", which would skip it again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from test_cli_errors import assert_one_error_line
from test_indexer import MODEL, make_photos
from zscir.index.remembered import index_choice, recorded_choice

OTHER_MODEL = "tiny-clip-test-4l"
runner = CliRunner()


def zscir(*args):
    from zscir.cli import app

    return runner.invoke(app, [str(a) for a in args])


def manifest(idx: Path) -> dict:
    return json.loads((idx / "manifest.json").read_text())


@pytest.fixture()
def no_model(monkeypatch):
    """Any model load fails the test: the command must decide without one."""
    import zscir.methods.registry as registry

    def refuse(*a, **kw):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(registry, "create_backbone", refuse)


@pytest.fixture()
def built(tmp_path):
    photos, idx = tmp_path / "photos", tmp_path / "idx"
    make_photos(photos, n=4)
    res = zscir("index", photos, "--out", idx, "--model", MODEL, "-m", "sum", "-m", "text", "--batch-size", "4")
    assert res.exit_code == 0, res.output
    return photos, idx


# ---------------------------------------------------------------------------------- the index remembers
def test_update_without_model_uses_the_indexs_model_and_methods(built):
    photos, idx = built
    make_photos(photos, n=2, start=4)  # new photos: there is work to do
    res = zscir("index", photos, "--out", idx, "--batch-size", "4")
    assert res.exit_code == 0, res.output
    assert "--overwrite" not in res.output and "6 images" in res.stdout and "encoded 2, reused 4" in res.stdout
    m = manifest(idx)
    assert m["model"] == MODEL and m["request"]["methods"] == ["sum", "text"] and m["generation"] == 2
    assert "updating the index with its own model 'tiny-clip-test' and method(s) sum, text" in res.stderr


def test_unchanged_index_is_recognised_without_model_and_without_a_model_load(built, no_model):
    photos, idx = built
    before = manifest(idx)
    res = zscir("index", photos, "--out", idx)
    assert res.exit_code == 0, res.output
    assert "index up to date (4 items" in res.stdout and manifest(idx) == before


def test_same_model_named_again_is_no_replacement(built, no_model):
    photos, idx = built
    res = zscir("index", photos, "--out", idx, "--model", MODEL)
    assert res.exit_code == 0 and "index up to date" in res.stdout, res.output


@pytest.mark.parametrize("extra", [["--model", OTHER_MODEL], ["--model", "world-clip"],
                                   ["--model", OTHER_MODEL, "-m", "sum"]])
def test_only_another_named_model_asks_for_overwrite(built, no_model, extra):
    photos, idx = built
    before = manifest(idx)
    line = assert_one_error_line(zscir("index", photos, "--out", idx, *extra), "--overwrite")
    assert f"holds an index of model {MODEL!r}, not {extra[1]!r}" in line and manifest(idx) == before


def test_another_model_with_overwrite_replaces_and_is_then_remembered(built):
    photos, idx = built
    res = zscir("index", photos, "--out", idx, "--model", OTHER_MODEL, "--overwrite")
    assert res.exit_code == 0, res.output
    assert manifest(idx)["model"] == OTHER_MODEL and manifest(idx)["request"]["methods"] == ["sum"]
    make_photos(photos, n=1, start=9)
    res = zscir("index", photos, "--out", idx)
    assert res.exit_code == 0 and "--overwrite" not in res.output, res.output
    assert manifest(idx)["model"] == OTHER_MODEL


@pytest.mark.parametrize("m, expect", [
    (None, (None, None)),
    ({}, (None, None)),
    ({"model": "m1", "request": {"methods": ["sum", "fusiondiff"]}}, ("m1", ["sum", "fusiondiff"])),
    ({"model": "m1", "galleries": {"k1": {"method": "sum"}, "k2": {"method": "fusiondiff"}}},
     ("m1", ["sum", "fusiondiff"])),
    ({"model": "m1", "method": "tscir"}, ("m1", ["tscir"])),
    ({"model": "m1", "request": {"methods": []}, "method": "sum"}, ("m1", ["sum"])),
    ({"model": 3, "request": {"methods": [1, 2]}, "method": None}, (None, None)),
    ({"model": "", "request": "garbage", "galleries": ["x"]}, (None, None)),
    ({"model": "m1", "request": {"methods": ["sum", ""]}, "galleries": {"k": "bad"}}, ("m1", None)),
    ({"model": None, "request": {"methods": ["image"]}}, (None, ["image"])),
])
def test_recorded_choice(m, expect):
    assert recorded_choice(m) == expect


@pytest.mark.parametrize("given_model, given_methods, expect", [
    (None, None, ("rec-model", ["sum", "text"], ("model", "methods"))),
    ("rec-model", None, ("rec-model", ["sum", "text"], ("methods",))),
    (None, ["image"], ("rec-model", ["image"], ("model",))),
    ("other", None, ("other", ["default-method"], ())),  # another model: its methods are not assumed
    ("other", ["image"], ("other", ["image"], ())),
])
def test_index_choice(tmp_path, given_model, given_methods, expect):
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "manifest.json").write_text(json.dumps({"format": "zscir-index", "model": "rec-model",
                                                   "request": {"methods": ["sum", "text"]}}))
    c = index_choice(idx, given_model, given_methods, default_model="default-model",
                     default_methods=["default-method"])
    assert (c.model, c.methods, c.remembered) == expect
    fresh = index_choice(tmp_path / "new", given_model, given_methods, default_model="dm", default_methods=["x"])
    assert fresh.remembered == () and fresh.model == (given_model or "dm")


# -------------------------------------------------------------------- arguments first, no stray lock
@pytest.mark.parametrize("case, needle", [
    ("folder-missing", "no such folder"),
    ("folder-is-a-file", "not a folder"),
    ("folder-dangling-link", "no such folder"),
    ("out-under-a-file", "is not a folder"),
    ("out-is-a-file", "not a folder"),
    ("out-foreign-manifest", "refusing to overwrite"),
    ("out-user-folder", "not empty and holds no zscir index"),
])
def test_index_arguments_are_checked_before_any_model_load(tmp_path, no_model, case, needle):
    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    folder, out = photos, tmp_path / "idx"
    if case == "folder-missing":
        folder = tmp_path / "no-such-photos"
    elif case == "folder-is-a-file":
        folder = tmp_path / "a.txt"
        folder.write_text("x")
    elif case == "folder-dangling-link":
        folder = tmp_path / "link"
        folder.symlink_to(tmp_path / "gone")
    elif case == "out-under-a-file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "idx"
    elif case == "out-is-a-file":
        out = tmp_path / "f.idx"
        out.write_text("keep")
    elif case == "out-foreign-manifest":
        out.mkdir()
        (out / "manifest.json").write_text('{"format": "something-else"}')
    elif case == "out-user-folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert_one_error_line(zscir("index", folder, "--out", out, "--model", MODEL), needle)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before  # nothing created
    assert_one_error_line(zscir("index", folder, "--out", out), needle)  # without --model too


def test_a_missing_folder_leaves_nothing_and_the_next_command_is_not_misled(tmp_path, no_model):
    out = tmp_path / "idx"
    assert_one_error_line(zscir("index", tmp_path / "nope", "--out", out), "no such folder")
    assert not out.exists()
    line = assert_one_error_line(zscir("search", out, "--text", "red"), "idx")
    assert "interrupted" not in line


@pytest.mark.parametrize("existing", ["new", "empty", "stray-lock", "nested-new"])
def test_a_run_that_wrote_nothing_leaves_no_lock(tmp_path, monkeypatch, existing):
    import zscir.index.build as build
    from zscir.index.build import IndexConfig, build_index
    from zscir.methods import create_composer

    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    out = tmp_path / ("a/b/idx" if existing == "nested-new" else "idx")
    if existing in ("empty", "stray-lock"):
        out.mkdir()
    if existing == "stray-lock":
        (out / ".lock").write_text("")

    def broken_scan(*a, **kw):
        raise OSError(5, "Input/output error", str(photos))

    monkeypatch.setattr(build, "_scan", broken_scan)  # fails inside the lock, before the first commit
    with pytest.raises(OSError):
        build_index(photos, out, create_composer("sum", model=MODEL), model=MODEL,
                    config=IndexConfig(progress=False))
    if existing in ("new", "nested-new"):
        assert not out.exists() and not (tmp_path / "a").exists()  # the folders it created are gone too
    else:
        assert out.is_dir() and os.listdir(out) == []  # the user's folder stays, without a lock
    monkeypatch.undo()
    rep = build_index(photos, out, create_composer("sum", model=MODEL), model=MODEL,
                      config=IndexConfig(progress=False))
    assert rep.indexed == 2 and (out / ".lock").exists()  # a written index keeps its lock file


def test_the_lock_still_excludes_a_second_writer(tmp_path):
    from zscir.index.folder import IndexLockedError, index_lock

    out = tmp_path / "idx"
    with index_lock(out):
        with pytest.raises(IndexLockedError):
            with index_lock(out):
                pass
        assert (out / ".lock").exists()  # the refused writer did not remove the holder's lock
    assert not out.exists()
    with index_lock(out):  # free again
        (out / "manifest.json").write_text("{}")
    assert (out / ".lock").exists()


# ------------------------------------------------------------------------------ ANN: the two agree
@pytest.fixture()
def small_index(tmp_path):
    photos, idx = tmp_path / "photos", tmp_path / "idx"
    ids = make_photos(photos, n=6)
    assert zscir("index", photos, "--out", idx, "--model", MODEL).exit_code == 0
    return idx, ids


def test_search_ann_on_an_index_too_small_for_one_falls_back_and_says_so(small_index):
    pytest.importorskip("faiss")
    idx, ids = small_index
    res = zscir("index", "ann", idx)
    assert res.exit_code == 0, res.output
    skipped = res.stdout.split("skipped: ", 1)[1].strip()
    assert skipped == "6 items < 1000 (exact search is used)"
    exact = zscir("search", idx, "--image", ids[0], "--text", "red", "--json", "--exact")
    res = zscir("search", idx, "--image", ids[0], "--text", "red", "--json", "--ann")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(exact.stdout)
    notes = [ln for ln in res.stderr.splitlines() if ln.startswith("note:")]
    assert notes == [f"note: {idx.resolve()}: no ANN index: {skipped}"]
    assert "build one" not in res.output


def test_search_ann_note_through_the_api_and_http(small_index):
    from fastapi.testclient import TestClient

    from zscir.index.ann import build_ann
    from zscir.index.retriever import Retriever, RetrieverConfig
    from zscir.serve import create_app

    idx, ids = small_index
    assert list(build_ann(idx, progress=False).values()) == ["skipped: 6 items < 1000 (exact search is used)"]
    r = Retriever.load(idx, config=RetrieverConfig(ann=True))
    hits = r.search(ids[1], "red", k=3)
    assert [h.rank for h in hits] == [1, 2, 3] and "6 items < 1000 (exact search is used)" in r.search_note()
    assert Retriever.load(idx, config=RetrieverConfig(ann=None)).search_note() is None  # nothing asked, no note
    body = TestClient(create_app(r)).post("/search", data={"text": "red", "item_id": ids[1]}).json()
    assert "6 items < 1000 (exact search is used)" in body["note"]


def test_search_ann_without_any_ann_settings_says_how_to_get_one(small_index):
    idx, ids = small_index
    line = assert_one_error_line(zscir("search", idx, "--image", ids[0], "--text", "red", "--ann"), "no ANN index")
    assert "6 items < 1000 (exact search is used): search without --ann" in line


def test_ann_error_hint_for_a_gallery_between_the_floors():
    from zscir.index.ann import open_ann_searcher
    from zscir.index.store import StoreError

    with pytest.raises(StoreError, match=r"skips galleries of fewer than 1000 items \(300 here.*--min-items 300"):
        open_ann_searcher("/x", {"count": 300}, "k", None, required=True)
    with pytest.raises(StoreError, match="build one with `zscir index ann /x`$"):
        open_ann_searcher("/x", {"count": 5000}, "k", None, required=True)
