"""clip-retrieval's folder layout both ways (issue 24, part 2): `zscir index export --layout clip-retrieval`
and `zscir search` on a clip-retrieval / autofaiss output folder in place, read-only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from tests.test_cli_errors import assert_one_error_line, zscir  # noqa: E402
from tests.test_indexer import NegatedGallery, cfg, make_photos  # noqa: E402
from zscir.index.build import build_index  # noqa: E402
from zscir.index.clip_layout import EXPORT_FILE, export_clip_retrieval, load_clip_retrieval  # noqa: E402
from zscir.index.retriever import Retriever  # noqa: E402
from zscir.index.store import EmbeddingStore, StoreError  # noqa: E402
from zscir.methods import create_composer  # noqa: E402

MODEL = "tiny-clip-test"
TEXTS = ["a red square", "something blue", "dark"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """14 photos indexed twice (float32 and float16 embeddings)."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("cliplayout")
    photos = tmp / "photos"
    ids = make_photos(photos, n=14)
    comp = create_composer("sum", model=MODEL)
    build_index(photos, tmp / "idx32", [comp], model=MODEL, config=cfg())
    build_index(photos, tmp / "idx16", [comp], model=MODEL, config=cfg(fp16=True))
    return tmp, photos, ids


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def ranking(index, text, k=14, **kw):
    r = Retriever.load(index, **kw)
    return [(h.id, h.score) for h in r.search(text=text, k=k)]


def write_partition(folder: Path, tag: str, emb: np.ndarray, columns: dict) -> None:
    (folder / "img_emb").mkdir(parents=True, exist_ok=True)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    np.save(folder / "img_emb" / f"img_emb_{tag}.npy", emb)
    pq.write_table(pa.table(columns), folder / "metadata" / f"metadata_{tag}.parquet")


# ------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("size", [1, 3, 5, 13, 14, 100])
def test_export_partitions_keep_ids_and_rows_aligned(world, tmp_path, size):
    tmp, photos, ids = world
    out = tmp_path / "exp"
    rep = export_clip_retrieval(tmp / "idx32", out, partition_size=size)
    store = EmbeddingStore.load(tmp / "idx32")
    parts = -(-14 // size)
    digits = len(str(parts))
    assert rep["partitions"] == parts and rep["count"] == 14 and rep["model"] == MODEL
    assert json.loads((out / EXPORT_FILE).read_text())["model"] == MODEL
    embs, keys, paths = [], [], []
    for i in range(parts):
        e = np.load(out / "img_emb" / f"img_emb_{str(i).zfill(digits)}.npy")
        t = pq.read_table(out / "metadata" / f"metadata_{str(i).zfill(digits)}.parquet")
        assert e.dtype == np.float16 and e.shape[0] == t.num_rows == min(size, 14 - i * size)
        assert {"image_path", "key"} <= set(t.column_names)
        embs.append(e)
        keys += t.column("key").to_pylist()
        paths += t.column("image_path").to_pylist()
    assert sorted(p.name for p in (out / "img_emb").iterdir()) == \
        sorted(f"img_emb_{str(i).zfill(digits)}.npy" for i in range(parts))
    assert keys == store.ids  # ids <-> rows stay aligned across partitions
    assert [Path(p) for p in paths] == [photos / i for i in store.ids]
    np.testing.assert_array_equal(np.concatenate(embs), np.asarray(store.embeddings, np.float16))


@pytest.mark.parametrize("size", [1, 4, 14])
def test_round_trip_fp16_index_gives_identical_results(world, tmp_path, size):
    tmp, _, _ = world
    export_clip_retrieval(tmp / "idx16", tmp_path / "exp", partition_size=size)
    for text in TEXTS:
        assert ranking(tmp_path / "exp", text) == ranking(tmp / "idx16", text)


def test_round_trip_fp32_index_within_fp16_rounding(world, tmp_path):
    tmp, _, _ = world
    export_clip_retrieval(tmp / "idx32", tmp_path / "exp", partition_size=5)
    for text in TEXTS:
        a, b = ranking(tmp / "idx32", text), ranking(tmp_path / "exp", text)
        sa, sb = dict(a), dict(b)
        assert sa.keys() == sb.keys()
        assert all(abs(sa[i] - sb[i]) < 4e-3 for i in sa)
        pos = {i: r for r, (i, _) in enumerate(a)}
        for x, y in zip(b, b[1:]):  # any swap against the fp32 order is between near-equal scores
            if pos[x[0]] > pos[y[0]]:
                assert abs(sa[x[0]] - sa[y[0]]) < 8e-3


def test_export_via_cli_and_search_via_cli(world, tmp_path):
    tmp, photos, ids = world
    out = tmp_path / "exp"
    res = zscir("index", "export", "--from", tmp / "idx16", "-o", out, "--layout", "clip-retrieval",
                "--partition-size", "6")
    assert res.exit_code == 0, res.output
    assert "14 items exported in 3 partitions" in res.output
    before = snapshot(out)
    a = zscir("search", tmp / "idx16", "--text", "red", "-k", "5", "--json")
    b = zscir("search", out, "--text", "red", "-k", "5", "--json")
    assert a.exit_code == b.exit_code == 0, b.output
    assert [h["id"] for h in json.loads(b.stdout)] == [h["id"] for h in json.loads(a.stdout)]
    c = zscir("search", out, "--image", ids[3], "--text", "darker", "-k", "3", "--json")  # reference by id
    assert c.exit_code == 0, c.output
    assert ids[3] not in [h["id"] for h in json.loads(c.stdout)]  # the reference itself is left out
    assert snapshot(out) == before


@pytest.mark.parametrize("case", ["file", "foreign", "hidden-file", "dangling-link"])
def test_export_refuses_a_folder_it_does_not_own(world, tmp_path, case):
    tmp, _, _ = world
    out = tmp_path / "out"
    if case == "file":
        out.write_text("mine")
    elif case == "dangling-link":
        out.symlink_to(tmp_path / "nowhere")
    else:
        out.mkdir()
        (out / ("notes.txt" if case == "foreign" else ".keep")).write_text("mine")
        (out / "img_emb").mkdir()
    before = snapshot(tmp_path)
    res = zscir("index", "export", "--from", tmp / "idx16", "-o", out, "--layout", "clip-retrieval")
    assert_one_error_line(res, str(out))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, needle", [
    (["--layout", "clip-retrieval"], "--from"),
    (["--from", "IDX", "--layout", "clip-retrieval"], "--out"),
    (["--from", "IDX", "-o", "OUT"], "--layout clip-retrieval"),
    (["--from", "IDX", "-o", "OUT", "--layout", "faiss"], "only layout"),
    (["--from", "IDX", "-o", "OUT", "--layout", "clip-retrieval", "--partition-size", "0"], "partition-size"),
    (["--from", "NOPE", "-o", "OUT", "--layout", "clip-retrieval"], "NOPE"),
])
def test_export_argument_errors(world, tmp_path, args, needle):
    tmp, _, _ = world
    args = [str(tmp / "idx16") if a == "IDX" else str(tmp_path / "o") if a == "OUT" else a for a in args]
    res = zscir("index", "export", *args)
    if needle == "partition-size":  # typer's own range check
        assert res.exit_code == 2 and "Traceback" not in res.output
    else:
        assert_one_error_line(res, needle)
    assert not (tmp_path / "o").exists()


def test_a_failed_export_removes_what_it_wrote(world, tmp_path, monkeypatch):
    tmp, _, _ = world
    calls = []

    def broken(table, where, *a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(table, where, *a, **kw)

    real = pq.write_table
    monkeypatch.setattr(pq, "write_table", broken)
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new", tmp_path / "empty"):
        calls.clear()
        with pytest.raises(OSError):
            export_clip_retrieval(tmp / "idx16", out, partition_size=5)
        assert len(calls) == 2
    assert not (tmp_path / "new").exists() and list((tmp_path / "empty").iterdir()) == []


def test_export_of_an_index_without_the_plain_gallery_is_refused(world, tmp_path):
    tmp, photos, _ = world
    neg = NegatedGallery(create_composer("sum", model=MODEL).backbone)
    build_index(photos, tmp_path / "neg", [neg], model=MODEL, config=cfg())
    assert_one_error_line(zscir("index", "export", "--from", tmp_path / "neg", "-o", tmp_path / "o",
                                "--layout", "clip-retrieval"), "plain image-embedding gallery")
    assert not (tmp_path / "o").exists()


def test_layout_option_outside_export_is_refused(world, tmp_path):
    tmp, photos, _ = world
    res = zscir("index", photos, "-o", tmp_path / "i", "--layout", "clip-retrieval")
    assert_one_error_line(res, "index export")


# ------------------------------------------------------------------------------------ search in place
@pytest.fixture()
def handmade(world, tmp_path):
    """The float16 index's rows as a clip-retrieval folder made by hand: 2 partitions, image_path only."""
    tmp, photos, _ = world
    store = EmbeddingStore.load(tmp / "idx16")
    emb = np.asarray(store.embeddings, np.float16)
    paths = [str(photos / i) for i in store.ids]
    d = tmp_path / "cr"
    write_partition(d, "0", emb[:9], {"image_path": paths[:9], "caption": [f"c{i}" for i in range(9)]})
    write_partition(d, "1", emb[9:], {"image_path": paths[9:], "caption": [f"c{i}" for i in range(9, 14)]})
    return d, store, paths


def test_handmade_folder_is_searched_in_place_and_left_untouched(world, handmade):
    tmp, photos, _ = world
    d, store, paths = handmade
    before = snapshot(d)
    got = ranking(d, "a red square", model=MODEL)
    want = ranking(tmp / "idx16", "a red square")
    to_path = dict(zip(store.ids, paths))
    assert [i for i, _ in got] == [to_path[i] for i, _ in want]
    assert [s for _, s in got] == [s for _, s in want]
    r = Retriever.load(d, model=MODEL)
    assert len(r) == 14 and r.model == MODEL
    r.search(text="red", k=3)
    assert set(r.describe()["search"].values()) == {"exact"}  # the folder's matrices, not a re-encoding
    assert r.store.items[10]["caption"] == "c10" and r.store.items[10]["id"] == paths[10]
    res = zscir("search", d, "--model", MODEL, "--image", paths[4], "--text", "brighter", "-k", "4", "--json")
    assert res.exit_code == 0, res.output
    assert paths[4] not in [h["id"] for h in json.loads(res.stdout)]  # found by its image_path: excluded
    res = zscir("search", d, "--model", MODEL, "--text", "red", "-k", "2")
    assert res.exit_code == 0, res.output
    assert snapshot(d) == before  # nothing added, nothing changed


def test_zero_padded_partitions_are_taken_in_numeric_order(world, tmp_path):
    tmp, photos, _ = world
    store = EmbeddingStore.load(tmp / "idx16")
    emb = np.asarray(store.embeddings, np.float16)
    d = tmp_path / "cr"
    for n, (a, b) in enumerate([(0, 2), (2, 3), (3, 14)]):  # clip-retrieval pads: 00, 01, ... ; 10 after 9
        tag = "10" if n == 2 else str(n).zfill(2)
        write_partition(d, tag, emb[a:b], {"image_path": [f"x/{i}.png" for i in range(a, b)]})
    s = load_clip_retrieval(d, model=MODEL)
    assert [it["id"] for it in s.items] == [f"x/{i}.png" for i in range(14)]


def test_search_without_a_model_is_one_error_line(handmade):
    d, _, _ = handmade
    before = snapshot(d)
    assert_one_error_line(zscir("search", d, "--text", "red"), "--model")
    assert snapshot(d) == before


def test_search_in_place_with_ann_is_refused(handmade):
    d, _, _ = handmade
    assert_one_error_line(zscir("search", d, "--model", MODEL, "--text", "red", "--ann"), "--ann")


def test_search_with_another_model_than_the_index_is_refused(world):
    tmp, _, _ = world
    assert_one_error_line(zscir("search", tmp / "idx16", "--text", "red", "--model", "world-clip"), "tiny-clip-test")


HOSTILE = ["extra-npy-row", "extra-metadata-row", "no-metadata-file", "no-npy-file", "bad-parquet", "bad-npy",
           "3d-npy", "int-npy", "no-id-column", "duplicate-id", "dim-mismatch", "empty-img-emb", "null-path",
           "same-partition-twice"]


@pytest.mark.parametrize("case", HOSTILE)
def test_broken_clip_retrieval_folder_is_one_error_line(tmp_path, case):
    rng = np.random.default_rng(0)
    d = tmp_path / "cr"
    dim = 64
    e = rng.standard_normal((4, dim)).astype(np.float16)
    cols = {"image_path": [f"a{i}.png" for i in range(4)]}
    write_partition(d, "0", e, cols)
    write_partition(d, "1", e, {"image_path": [f"b{i}.png" for i in range(4)]})
    meta, img = d / "metadata" / "metadata_1.parquet", d / "img_emb" / "img_emb_1.npy"
    if case == "extra-npy-row":
        np.save(img, np.concatenate([e, e[:1]]))
    elif case == "extra-metadata-row":
        pq.write_table(pa.table({"image_path": [f"b{i}.png" for i in range(5)]}), meta)
    elif case == "no-metadata-file":
        meta.unlink()
    elif case == "no-npy-file":
        img.unlink()
    elif case == "bad-parquet":
        meta.write_bytes(b"not parquet")
    elif case == "bad-npy":
        img.write_bytes(b"\x93NUMPY garbage")
    elif case == "3d-npy":
        np.save(img, e.reshape(2, 2, dim))
    elif case == "int-npy":
        np.save(img, np.ones((4, dim), np.int32))
    elif case == "no-id-column":
        pq.write_table(pa.table({"caption": ["x"] * 4}), meta)
    elif case == "duplicate-id":
        pq.write_table(pa.table(cols), meta)
    elif case == "dim-mismatch":
        np.save(img, e[:, :32])
    elif case == "empty-img-emb":
        img.unlink()
        (d / "img_emb" / "img_emb_0.npy").unlink()
    elif case == "null-path":
        pq.write_table(pa.table({"image_path": ["b0.png", None, "b2.png", "b3.png"]}), meta)
    elif case == "same-partition-twice":
        np.save(d / "img_emb" / "img_emb_01.npy", e)
    before = snapshot(d)
    with pytest.raises(StoreError) as ei:
        load_clip_retrieval(d, model=MODEL)
    msg = str(ei.value)
    assert "\n" not in msg
    if case.startswith("extra"):
        assert "partition 1 is misaligned" in msg and "has 4" in msg and "has 5" in msg
    res = zscir("search", d, "--model", MODEL, "--text", "red")
    line = assert_one_error_line(res)
    assert str(d) in line or "metadata" in line or "img_emb" in line
    assert snapshot(d) == before
