"""EmbeddingStore and atomic-write tests."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from zscir.index import (
    FORMAT,
    FORMAT_VERSION,
    EmbeddingStore,
    StoreError,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    exact_topk,
)


def _items(n):
    return [{"id": f"img{i:04d}", "path": f"images/{i}.jpg", "caption": f"c{i}"} for i in range(n)]


def _emb(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mmap", [True, False])
def test_round_trip(tmp_path, dtype, mmap):
    emb = _emb(37, 12).astype(dtype)
    d = tmp_path / "store"
    saved = EmbeddingStore.save(d, emb, _items(37), {"dataset": "toy"}, model="clip-b32", method="tscir",
                                preprocessing={"size": 224})
    assert sorted(os.listdir(d)) == ["embeddings.npy", "items.jsonl", "manifest.json"]
    st = EmbeddingStore.load(d, mmap=mmap)
    assert isinstance(st.embeddings, np.memmap) == mmap
    assert st.embeddings.dtype == dtype and st.embeddings.shape == (37, 12)
    np.testing.assert_array_equal(np.asarray(st.embeddings), emb)
    assert st.items == _items(37) == saved.items
    m = st.manifest
    assert m["format"] == FORMAT == "zscir-index" and m["format_version"] == FORMAT_VERSION == 1
    assert (m["count"], m["dim"], m["dtype"]) == (37, 12, np.dtype(dtype).name)
    assert (m["model"], m["method"], m["preprocessing"], m["dataset"]) == ("clip-b32", "tscir", {"size": 224}, "toy")
    assert m["normalized"] is True and isinstance(m["created"], str)
    assert len(st) == 37 and st.dim == 12 and st.index_of("img0005") == 5
    # manifest on disk is the same dict
    assert json.loads((d / "manifest.json").read_text()) == m


def test_search_returns_items_and_scores(tmp_path):
    emb = _emb(50, 8, seed=1).astype(np.float16)
    st = EmbeddingStore.save(tmp_path / "s", emb, _items(50))
    st = EmbeddingStore.load(tmp_path / "s")
    q = _emb(3, 8, seed=2)
    hits = st.search(q, k=4)
    rs, ri = exact_topk(q, emb, 4)
    assert len(hits) == 3 and all(len(h) == 4 for h in hits)
    for r in range(3):
        assert [h.index for h in hits[r]] == ri[r].tolist()
        assert [h.id for h in hits[r]] == [f"img{i:04d}" for i in ri[r]]
        assert [h.rank for h in hits[r]] == [1, 2, 3, 4]  # 1-based, as the CLI and HTTP show it
        np.testing.assert_allclose([h.score for h in hits[r]], rs[r], rtol=1e-6)
        assert hits[r][0].path == f"images/{ri[r, 0]}.jpg" and hits[r][0].item["caption"] == f"c{ri[r, 0]}"
    # 1-D query, exclusion and padding dropped
    one = st.search(torch.from_numpy(q[0]), k=60, exclude=[[int(ri[0, 0])]])
    assert len(one) == 1 and len(one[0]) == 49 and one[0][0].index == ri[0, 1]
    assert st.searcher() is st.searcher()  # cached
    pytest.importorskip("faiss")
    fh = st.search(q, k=4, backend="faiss")
    assert [[h.index for h in row] for row in fh] == ri.tolist()


def test_load_rejects_missing_manifest(tmp_path):
    d = tmp_path / "s"
    EmbeddingStore.save(d, _emb(5, 4), _items(5))
    (d / "manifest.json").unlink()
    with pytest.raises(StoreError, match=r"manifest\.json: manifest missing.*incomplete") as ei:
        EmbeddingStore.load(d)
    assert str(d) in str(ei.value) and isinstance(ei.value, ValueError)
    with pytest.raises(StoreError, match="not a directory"):
        EmbeddingStore.load(tmp_path / "nope")


def test_load_rejects_mismatched_counts(tmp_path):
    d = tmp_path / "s"
    EmbeddingStore.save(d, _emb(5, 4), _items(5))
    # fewer items than the manifest says
    lines = (d / "items.jsonl").read_text().splitlines()
    (d / "items.jsonl").write_text("\n".join(lines[:4]) + "\n")
    with pytest.raises(ValueError, match=r"items\.jsonl: expected 5 items from manifest, found 4"):
        EmbeddingStore.load(d)
    # embeddings with the wrong shape
    EmbeddingStore.save(d, _emb(5, 4), _items(5))
    np.save(d / "embeddings.npy", _emb(6, 4))
    with pytest.raises(ValueError, match=r"embeddings\.npy: expected shape \(5, 4\) from manifest, got \(6, 4\)"):
        EmbeddingStore.load(d)
    # dtype mismatch
    np.save(d / "embeddings.npy", _emb(5, 4).astype(np.float16))
    with pytest.raises(ValueError, match="expected dtype float32 from manifest, got float16"):
        EmbeddingStore.load(d)


def test_load_rejects_bad_manifest(tmp_path):
    d = tmp_path / "s"
    EmbeddingStore.save(d, _emb(3, 4), _items(3))
    m = json.loads((d / "manifest.json").read_text())
    for bad, msg in [({**m, "format_version": 2}, "newer than supported"),
                     ({**m, "format": "other"}, "expected format 'zscir-index'"),
                     ({k: v for k, v in m.items() if k != "dim"}, "missing required field 'dim'")]:
        (d / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(StoreError, match=msg):
            EmbeddingStore.load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        EmbeddingStore.load(d)
    (d / "manifest.json").write_text(json.dumps(m))
    (d / "items.jsonl").write_text('{"id": "a", "path": "x"}\n{"id": 3}\n{"id": "c", "path": "z"}\n')
    with pytest.raises(StoreError, match=r"items\.jsonl:2: expected an object"):
        EmbeddingStore.load(d)


def test_save_validation_and_overwrite(tmp_path):
    d = tmp_path / "s"
    with pytest.raises(ValueError, match="3 items for 4 embedding rows"):
        EmbeddingStore.save(d, _emb(4, 4), _items(3))
    with pytest.raises(ValueError, match="duplicate id"):
        EmbeddingStore.save(d, _emb(2, 4), [{"id": "a", "path": "p"}, {"id": "a", "path": "q"}])
    with pytest.raises(ValueError, match="missing required key 'path'"):
        EmbeddingStore.save(d, _emb(1, 4), [{"id": "a"}])
    with pytest.raises(ValueError, match="reserved keys"):
        EmbeddingStore.save(d, _emb(1, 4), _items(1), {"count": 7})
    assert not d.exists() or not (d / "manifest.json").exists()
    EmbeddingStore.save(d, _emb(2, 4), _items(2))
    with pytest.raises(FileExistsError):
        EmbeddingStore.save(d, _emb(3, 4), _items(3), overwrite=False)
    st = EmbeddingStore.save(d, torch.from_numpy(_emb(3, 4)).double(), _items(3))  # float64 -> float32
    assert EmbeddingStore.load(d).manifest["count"] == 3 and st.embeddings.dtype == np.float32
    EmbeddingStore.save(d, _emb(3, 4) * 2, _items(3))
    assert EmbeddingStore.load(d).manifest["normalized"] is False


@pytest.mark.parametrize("first_save", [False, True])
def test_interrupted_save_reads_as_incomplete_and_can_be_saved_again(tmp_path, monkeypatch, first_save):
    d = tmp_path / "s"
    if not first_save:
        EmbeddingStore.save(d, _emb(4, 4), _items(4))

    def boom(*a, **kw):
        raise RuntimeError("disk full")

    monkeypatch.setattr("zscir.index.store.atomic_write_json", boom)
    with pytest.raises(RuntimeError):
        EmbeddingStore.save(d, _emb(6, 4), _items(6))
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore.load(d)
    assert not [f for f in os.listdir(d) if f.endswith(".tmp")]
    monkeypatch.undo()
    EmbeddingStore.save(d, _emb(3, 4), _items(3), overwrite=False)  # an incomplete store may be replaced
    assert EmbeddingStore.load(d).manifest["count"] == 3


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"hello")
    assert p.read_bytes() == b"hello"
    atomic_write_bytes(p, b"world")
    assert p.read_bytes() == b"world"
    atomic_write_json(tmp_path / "sub" / "m.json", {"a": [1, 2], "é": "ü"})
    assert json.loads((tmp_path / "sub" / "m.json").read_text(encoding="utf-8")) == {"a": [1, 2], "é": "ü"}
    assert sorted(os.listdir(tmp_path / "sub")) == ["f.bin", "m.json"]
    # a failure inside the block leaves the old file and no temp file
    with pytest.raises(RuntimeError):
        with atomic_open(p, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("crash")
    assert p.read_bytes() == b"world"
    # unserialisable JSON fails before touching disk
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "sub" / "m.json", {"x": object()})
    assert sorted(os.listdir(tmp_path / "sub")) == ["f.bin", "m.json"]


@pytest.mark.parametrize("name", ["manifest.json", "embeddings.npy", "items.jsonl", "photo.jpg"])
def test_save_never_writes_into_a_users_folder(tmp_path, name):
    """A non-empty folder that is not a store is the user's (a photo folder, or one with a manifest.json of
    its own): refused, untouched (bytes and listing)."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / name).write_bytes(b'{"my": "own file"}')
    with pytest.raises(FileExistsError, match="not empty and not a zscir store"):
        EmbeddingStore.save(d, _emb(2, 4), _items(2))
    assert os.listdir(d) == [name]
    assert (d / name).read_bytes() == b'{"my": "own file"}'
