"""An indexed reference is never its own best match, whichever way it is given, through every door.

By item id, by path (as given, through a symlink, or via the index's source root) and by content (a copy of
an indexed file elsewhere, an upload), in the Python API, the CLI and the server, for indexes that record
size + mtime (every older index) and for `--hash` indexes that record a SHA-256. A reference that is not
in the index excludes nothing. Also: what the default model is for (the `zscir index` note, `/health`).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from test_indexer import MODEL, make_photos
from zscir.index.build import IndexConfig, build_index
from zscir.index.retriever import Retriever
from zscir.methods import create_composer


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """12 photos plus a byte-identical copy of p004.png as dup/p004-copy.png, indexed with `sum`."""
    tmp = tmp_path_factory.mktemp("ref")
    photos = tmp / "photos"
    ids = make_photos(photos)
    (photos / "dup").mkdir()
    shutil.copyfile(photos / "p004.png", photos / "dup" / "p004-copy.png")
    torch.manual_seed(0)
    composer = create_composer("sum", model=MODEL)
    build_index(photos, tmp / "idx", composer, model=MODEL, config=IndexConfig(batch_size=8, progress=False))
    build_index(photos, tmp / "idx-hash", composer, model=MODEL,
                config=IndexConfig(batch_size=8, progress=False, hash_content=True))
    return tmp, photos, ids


def _ids(hits):
    return [h.id for h in hits]


@pytest.mark.parametrize("index", ["idx", "idx-hash"])
def test_path_id_and_content_forms_are_excluded(indexed, index, tmp_path):
    tmp, photos, ids = indexed
    r = Retriever.load(tmp / index)
    ref = "sub1/p001.png"
    # kept in, the image-only method finds the reference itself first with score 1
    kept = r.search(str(photos / ref), "x", k=3, method="image", exclude_reference=False)
    assert kept[0].id == ref and kept[0].score == pytest.approx(1.0, abs=1e-4)
    for given, how in [(ref, "id"), (str(photos / ref), "path"), (photos / "sub1" / ".." / ref, "path")]:
        img, found = r.resolve_reference(given)
        assert found is not None and found.rows == (r.store.index_of(ref),) and found.matched_by == how
        assert found.describe() == f"reference is indexed item {ref}: excluded"
        hits = r.search(given, "x", k=5, method="image")
        assert ref not in _ids(hits) and len(hits) == 5
    link = tmp_path / "link.png"
    link.symlink_to(photos / ref)
    assert r.resolve_reference(str(link))[1].matched_by == "path"
    # a copy elsewhere: recognised by content (lazily hashed same-size files, or the stored digest)
    copy = tmp_path / "elsewhere.png"
    shutil.copyfile(photos / ref, copy)
    found = r.resolve_reference(str(copy))[1]
    assert found is not None and found.ids == (ref,) and found.matched_by == "content"
    assert ref not in _ids(r.search(str(copy), "x", k=12, method="image"))
    assert r.resolve_reference((photos / ref).read_bytes())[1].ids == (ref,)  # encoded bytes (an upload)


def test_identical_copies_are_excluded_together(indexed):
    tmp, photos, _ = indexed
    r = Retriever.load(tmp / "idx")
    found = r.resolve_reference(str(photos / "p004.png"))[1]
    assert found.ids == ("p004.png", "dup/p004-copy.png") and found.matched_by == "path"
    assert found.describe() == ("reference is indexed item p004.png (and 1 identical copy: dup/p004-copy.png): "
                                "excluded")
    assert not {"p004.png", "dup/p004-copy.png"} & set(_ids(r.search("dup/p004-copy.png", "x", k=12)))


def test_reference_not_in_the_index_excludes_nothing(indexed, tmp_path):
    tmp, photos, ids = indexed
    r = Retriever.load(tmp / "idx")
    other = tmp_path / "new.png"
    Image.new("RGB", (48, 40), (1, 2, 3)).save(other)
    assert r.resolve_reference(str(other))[1] is None
    assert r.resolve_reference(Image.open(photos / "p004.png"))[1] is None  # a PIL image: no bytes, no path
    assert len(r.search(str(other), "x", k=13)) == 13  # every item can come back
    # a file changed since indexing is never hashed (its bytes are no longer what was indexed): no match
    changed = tmp_path / "changed"
    shutil.copytree(photos, changed)
    build_index(changed, tmp_path / "idx2", create_composer("sum", model=MODEL), model=MODEL,
                config=IndexConfig(batch_size=8, progress=False))
    r2 = Retriever.load(tmp_path / "idx2")
    data = (changed / "p000.png").read_bytes()
    (changed / "p000.png").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert r2.resolve_reference(data)[1] is None


def test_cli_and_server_exclude_and_say_so(indexed):
    tmp, photos, _ = indexed
    from typer.testing import CliRunner

    from zscir.cli import app

    ref = "sub0/p003.png"
    res = CliRunner().invoke(app, ["search", str(tmp / "idx"), "--image", str(photos / ref), "--text", "x",
                                   "-k", "12", "-m", "image"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == f"reference is indexed item {ref}: excluded"
    assert str(photos / ref) not in res.stdout.split("excluded", 1)[1]
    res = CliRunner().invoke(app, ["search", str(tmp / "idx"), "--image", str(photos / ref), "--text", "x",
                                   "--json", "-m", "image"])
    assert res.exit_code == 0 and ref not in [h["id"] for h in json.loads(res.output)]  # JSON only

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from zscir.serve import create_app

    client = TestClient(create_app(Retriever.load(tmp / "idx")))
    body = client.post("/search", data={"text": "x", "k": "12", "method": "image"},
                       files={"image": ("mine.png", (photos / ref).read_bytes(), "image/png")}).json()
    assert ref not in [x["id"] for x in body["results"]]
    assert body["reference"]["indexed"] == {"id": ref, "matched_by": "content", "excluded": [ref]}
    assert body["reference"]["note"] == f"reference is indexed item {ref} (same content): excluded"
    body = client.post("/search", data={"text": "x", "k": "12", "item_id": "p004.png"}).json()
    assert body["reference"]["indexed"]["excluded"] == ["p004.png", "dup/p004-copy.png"]
    assert not {"p004.png", "dup/p004-copy.png"} & {x["id"] for x in body["results"]}
    other = Image.new("RGB", (30, 30), (9, 9, 9))
    import io

    buf = io.BytesIO()
    other.save(buf, "PNG")
    body = client.post("/search", data={"text": "x", "k": "13"}, files={"image": ("o.png", buf.getvalue())}).json()
    assert body["reference"]["indexed"] is None and len(body["results"]) == 13
    # an item id that names no item is never tried as a server-side path
    assert client.post("/search", data={"text": "x", "item_id": str(photos / ref)}).status_code == 404


# ---------------------------------------------------------------------------------- what the model is for
def test_index_with_the_world_model_says_what_it_is_for(tmp_path):
    from typer.testing import CliRunner

    from zscir.backbones.registry import REAL_MODEL_HINT, model_info, real_images_note
    from zscir.cli import app

    note = real_images_note("world-clip")
    assert note.startswith("note: model world-clip is a small CLIP trained only on zscir's procedural world")
    assert "at chance" in note and "--model hf-hub:openai/clip-vit-base-patch32" in note and "local-dir:" in note
    assert real_images_note("hf-hub:openai/clip-vit-base-patch32") is None and model_info("local-dir:/x") is None
    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    res = CliRunner().invoke(app, ["index", str(photos), "--out", str(tmp_path / "idx"), "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    assert [line for line in res.stderr.splitlines() if line.startswith("note:")] == [note]
    assert REAL_MODEL_HINT in res.stderr
    listed = CliRunner().invoke(app, ["list", "models"]).output
    assert any(line.startswith("world-clip") and "at chance" in line for line in listed.splitlines())

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from zscir.serve import create_app

    health = TestClient(create_app(Retriever.load(tmp_path / "idx"))).get("/health").json()
    assert health["model_info"] == {"name": "world-clip", "purpose": model_info("world-clip").purpose,
                                    "real_images": False, "hint": REAL_MODEL_HINT, "version": None}
    from zscir.serve.app import static_dir

    assert "model_info" in (static_dir() / "app.js").read_text()  # the page shows it under the summary


def test_sharded_index_recognises_path_and_content(indexed):
    tmp, photos, _ = indexed
    composer = create_composer("sum", model=MODEL)
    for i in range(2):
        build_index(photos, tmp / f"shard{i}", composer, model=MODEL,
                    config=IndexConfig(batch_size=8, progress=False, shard=(i, 2)))
    r = Retriever.load([tmp / "shard0", tmp / "shard1"])
    for ref in ("sub1/p001.png", "p010.png", "dup/p004-copy.png"):
        found = r.resolve_reference(str(photos / ref))[1]
        assert found is not None and found.id == ref and found.matched_by == "path"
        assert ref not in _ids(r.search(str(photos / ref), "x", k=13, method="image"))
    assert set(r.resolve_reference((photos / "p004.png").read_bytes())[1].ids) == {"p004.png", "dup/p004-copy.png"}


def test_odd_file_names_are_recognised_by_path(tmp_path):
    """Item ids escape odd names (backslash, tab); a path reference maps to the escaped id."""
    from zscir.index.names import escape_name

    assert escape_name("back\\slash.png") != "back\\slash.png"  # the ids below really are escaped
    photos = tmp_path / "odd"
    photos.mkdir()
    names = ["back\\slash.png", "tab\tname.png", "plain.png"]
    for i, name in enumerate(names):
        Image.new("RGB", (20, 20), (40 * i, 90, 200 - 50 * i)).save(photos / name)
    build_index(photos, tmp_path / "idx", create_composer("sum", model=MODEL), model=MODEL,
                config=IndexConfig(batch_size=4, progress=False))
    r = Retriever.load(tmp_path / "idx")
    for name in names:
        found = r.resolve_reference(str(photos / name))[1]
        assert found is not None and found.matched_by == "path" and found.id == escape_name(name)
        assert found.id not in _ids(r.search(str(photos / name), "x", k=3, method="image"))
