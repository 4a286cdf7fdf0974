"""The indexer (incremental, atomic, multi-gallery) and the `Retriever` Python API / CLI on tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zscir.index.build import IndexConfig, IndexLockedError, build_index, index_lock, load_image
from zscir.index.retriever import MethodUnavailable, Retriever, RetrieverConfig
from zscir.index.store import EmbeddingStore, StoreError
from zscir.methods import create_composer
from zscir.methods.baselines import ImageGalleryComposer

MODEL = "tiny-clip-test"
COLORS = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (20, 230, 230), (230, 20, 230),
          (128, 128, 128), (250, 250, 250), (10, 10, 10), (250, 128, 0), (128, 0, 250), (0, 128, 64)]


def make_photos(folder: Path, n: int = 12, start: int = 0) -> list[str]:
    """``n`` distinct small images (colour + a square at a varying place), some in sub-folders."""
    ids = []
    for i in range(start, start + n):
        im = Image.new("RGB", (48, 40), COLORS[i % len(COLORS)])
        im.paste((255 - i * 7 % 255, i * 13 % 255, 90), (4 + i % 20, 4 + i % 15, 20 + i % 20, 20 + i % 15))
        rel = f"sub{i % 3}/p{i:03d}.png" if i % 2 else f"p{i:03d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(folder / rel)
        ids.append(rel)
    return sorted(ids)


@pytest.fixture(scope="module")
def composer():
    torch.manual_seed(0)
    return create_composer("sum", model=MODEL)


def cfg(**kw) -> IndexConfig:
    return IndexConfig(batch_size=kw.pop("batch_size", 4), progress=False, **kw)


class NegatedGallery(ImageGalleryComposer):
    """A test method whose gallery embedding differs from the plain image embedding (like Fusion-Diff's)."""

    name = "test-negated-gallery"

    @torch.no_grad()
    def encode_queries(self, reference_images, texts):
        return -self.backbone.encode_images(list(reference_images))

    @torch.no_grad()
    def encode_gallery(self, images):
        return -self.backbone.encode_images(list(images))

    def gallery_cache_key(self) -> str:
        return "negated:" + super().gallery_cache_key()


@pytest.fixture()
def negated_method():
    from zscir.methods import registry

    registry._load_builtin_methods()
    registry.register_method(NegatedGallery.name, "test only")(lambda backbone, checkpoint=None, **o: NegatedGallery(backbone))
    yield NegatedGallery.name
    registry._METHODS.pop(NegatedGallery.name, None)


def test_build_store_compatible_and_embeddings_exact(tmp_path, composer):
    photos = tmp_path / "photos"
    ids = make_photos(photos)
    rep = build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    assert (rep.indexed, rep.encoded, rep.generation, rep.skipped) == (12, 12, 1, [])
    store = EmbeddingStore.load(tmp_path / "idx")  # the plain v1 reader understands the index
    assert store.ids == ids and store.manifest["model"] == MODEL and store.manifest["normalized"]
    direct = composer.encode_gallery([load_image(photos / i) for i in ids]).numpy()
    np.testing.assert_allclose(np.asarray(store.embeddings), direct, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "embeddings-g1.npy", "items-g1.jsonl",
                                                                    "manifest.json"]


def test_incremental_add_change_delete(tmp_path, composer):
    photos = tmp_path / "photos"
    ids = make_photos(photos)
    build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    before = EmbeddingStore.load(tmp_path / "idx")
    row_before = np.asarray(before.embeddings[before.index_of(ids[0])]).copy()
    manifest_mtime = (tmp_path / "idx/manifest.json").stat().st_mtime_ns
    rep = build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    assert rep.up_to_date and rep.encoded == 0
    assert (tmp_path / "idx/manifest.json").stat().st_mtime_ns == manifest_mtime  # nothing rewritten

    new = make_photos(photos, n=3, start=100)
    Image.new("RGB", (30, 30), (0, 0, 0)).save(photos / ids[0])  # changed content (size/mtime change)
    os.utime(photos / ids[0], ns=(1, 10**9))
    for gone in ids[1:3]:
        (photos / gone).unlink()
    rep = build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    assert (rep.encoded, rep.reused, rep.removed, rep.generation) == (4, 9, 2, 2)
    after = EmbeddingStore.load(tmp_path / "idx")
    assert after.ids == sorted(set(ids) - set(ids[1:3]) | set(new))
    assert not np.allclose(np.asarray(after.embeddings[after.index_of(ids[0])]), row_before)
    for i in ids[3:]:
        np.testing.assert_array_equal(after.embeddings[after.index_of(i)], before.embeddings[before.index_of(i)])
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert names == [".lock", "embeddings-g2.npy", "items-g2.jsonl", "manifest.json"]  # old generation collected


def test_hash_detects_same_size_same_mtime_change(tmp_path, composer):
    photos = tmp_path / "photos"
    ids = make_photos(photos, n=4)
    p = photos / ids[0]
    for use_hash, expected in ((False, 0), (True, 1)):
        out = tmp_path / f"idx-{use_hash}"
        build_index(photos, out, composer, model=MODEL, config=cfg(hash_content=use_hash))
        st = p.stat()
        data = bytearray(p.read_bytes())
        im = Image.open(p).convert("RGB")
        im.putpixel((0, 0), (1, 2, 3))
        im.save(p)
        if p.stat().st_size != st.st_size:  # keep the size equal so only a hash can tell
            p.write_bytes(bytes(data[:-1]) + bytes([data[-1] ^ 1]))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        rep = build_index(photos, out, composer, model=MODEL, config=cfg(hash_content=use_hash))
        assert rep.encoded == expected


def test_fp16_and_faiss_agree_with_exact(tmp_path, composer):
    pytest.importorskip("faiss")
    photos = tmp_path / "photos"
    ids = make_photos(photos)
    build_index(photos, tmp_path / "f32", composer, model=MODEL, config=cfg())
    build_index(photos, tmp_path / "f16", composer, model=MODEL, config=cfg(fp16=True))
    s16 = EmbeddingStore.load(tmp_path / "f16")
    assert s16.embeddings.dtype == np.float16 and (tmp_path / "f16/embeddings-g1.npy").stat().st_size < \
        (tmp_path / "f32/embeddings-g1.npy").stat().st_size
    exact = Retriever(EmbeddingStore.load(tmp_path / "f32"), composer).search(ids[0], "more blue", k=5)
    half = Retriever(s16, composer).search(ids[0], "more blue", k=5)
    faiss_r = Retriever(EmbeddingStore.load(tmp_path / "f32"), composer, RetrieverConfig(backend="faiss"))
    fa = faiss_r.search(ids[0], "more blue", k=5)
    assert [h.id for h in exact] == [h.id for h in fa]
    np.testing.assert_allclose([h.score for h in exact], [h.score for h in half], atol=5e-3)


def test_retriever_search_semantics(tmp_path, composer):
    photos = tmp_path / "photos"
    ids = make_photos(photos)
    build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    r = Retriever.load(tmp_path / "idx")
    assert r.default_method == "sum" and len(r) == 12
    hits = r.search(ids[5], "a darker one", k=11)
    assert len(hits) == 11 and ids[5] not in [h.id for h in hits]  # an indexed reference is excluded
    assert [h.score for h in hits] == sorted([h.score for h in hits], reverse=True)
    # the indexed file given by path is excluded too; kept, the image-only method finds it first
    assert ids[5] not in [h.id for h in r.search(str(photos / ids[5]), "ignored", k=3, method="image")]
    img_hits = r.search(str(photos / ids[5]), "ignored", k=3, method="image", exclude_reference=False)
    assert img_hits[0].id == ids[5] and img_hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [(h.path, h.score) for h in hits][0] == (hits[0].path, hits[0].score)
    with pytest.raises(FileNotFoundError):
        r.search("no/such/file.png", "x")
    with pytest.raises(MethodUnavailable):
        r.search(ids[0], "x", method="no-such-method")


def test_extra_gallery_indexed_and_on_demand_agree(tmp_path, composer, negated_method):
    photos = tmp_path / "photos"
    ids = make_photos(photos)
    neg = NegatedGallery(composer.backbone)
    build_index(photos, tmp_path / "both", [composer, neg], model=MODEL, config=cfg())
    build_index(photos, tmp_path / "sum", composer, model=MODEL, config=cfg())
    m = json.loads((tmp_path / "both/manifest.json").read_text())
    assert len(m["galleries"]) == 2 and m["method"] == "sum"
    indexed = Retriever.load(tmp_path / "both").search(ids[2], "x", k=4, method=negated_method)
    on_demand_r = Retriever.load(tmp_path / "sum")
    on_demand = on_demand_r.search(ids[2], "x", k=4, method=negated_method)
    assert [h.id for h in indexed] == [h.id for h in on_demand]
    np.testing.assert_allclose([h.score for h in indexed], [h.score for h in on_demand], atol=1e-5)
    assert {m["name"]: m.get("gallery") for m in on_demand_r.methods()}[negated_method] == "on-demand"
    capped = Retriever.load(tmp_path / "sum", config=RetrieverConfig(max_ondemand_items=5))
    with pytest.raises(MethodUnavailable, match="--method"):
        capped.search(ids[2], "x", method=negated_method)
    assert sorted(p.name for p in (tmp_path / "sum").iterdir()) == [".lock", "embeddings-g1.npy", "items-g1.jsonl",
                                                                     "manifest.json"]  # retriever wrote nothing


def test_kill_during_finalize_then_resume(tmp_path, composer, monkeypatch):
    import zscir.index.folder as b  # the owner of every manifest commit

    photos = tmp_path / "photos"
    ids = make_photos(photos)
    real = b.atomic_write_json

    def crash_on_final_commit(path, obj, **kw):
        if isinstance(obj, dict) and obj.get("build") is None and obj.get("generation", 0) >= 1:
            raise KeyboardInterrupt("simulated kill before the generation switch")
        return real(path, obj, **kw)

    monkeypatch.setattr(b, "atomic_write_json", crash_on_final_commit)
    with pytest.raises(KeyboardInterrupt):
        build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    with pytest.raises(StoreError, match="did not finish"):
        Retriever.load(tmp_path / "idx")
    monkeypatch.setattr(b, "atomic_write_json", real)
    rep = build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    assert (rep.encoded, rep.resumed, rep.indexed) == (0, 12, 12)
    assert EmbeddingStore.load(tmp_path / "idx").ids == ids
    assert not (tmp_path / "idx/segments").exists()


def test_concurrent_indexers_are_refused(tmp_path, composer):
    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    with index_lock(tmp_path / "idx"):
        with pytest.raises(IndexLockedError):
            build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())


def test_cli_index_search_json_and_grid(tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app

    photos = tmp_path / "photos"
    ids = make_photos(photos, n=6)
    (photos / "broken.jpg").write_bytes(b"garbage")
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(photos), "--out", str(tmp_path / "idx"), "--model", MODEL,
                              "--batch-size", "4", "--report", str(tmp_path / "report.json")])
    assert res.exit_code == 0, res.output
    assert "6 images" in res.output and "skipped broken.jpg" in res.output
    assert json.loads((tmp_path / "report.json").read_text())["skipped"][0]["code"] == "not_an_image"
    res = runner.invoke(app, ["search", str(tmp_path / "idx"), "--image", ids[1], "--text", "redder", "-k", "3",
                              "--json", "--grid", str(tmp_path / "grid.png")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [o["rank"] for o in out] == [1, 2, 3] and ids[1] not in [o["id"] for o in out]
    assert Image.open(tmp_path / "grid.png").size[0] > 3 * 160
    res = runner.invoke(app, ["search", str(tmp_path / "idx"), "--image", "nope.png", "--text", "x"])
    assert res.exit_code == 2 and "neither an indexed item id nor an image file" in res.output


def test_plain_v1_store_loads_and_is_upgraded(tmp_path, composer):
    """An index written by `EmbeddingStore.save` (the earlier plain layout) is searchable and re-indexable."""
    photos = tmp_path / "photos"
    ids = make_photos(photos, n=5)
    emb = composer.encode_gallery([load_image(photos / i) for i in ids])
    EmbeddingStore.save(tmp_path / "idx", emb, [{"id": i, "path": str(photos / i)} for i in ids],
                        {"gallery_key": composer.gallery_cache_key()}, model=MODEL, method="sum")
    assert len(Retriever.load(tmp_path / "idx").search(ids[0], "x", k=3)) == 3
    rep = build_index(photos, tmp_path / "idx", composer, model=MODEL, config=cfg())
    assert rep.encoded == 5 and rep.generation == 1  # no signatures stored: encoded once more
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "embeddings-g1.npy", "items-g1.jsonl",
                                                                    "manifest.json"]
