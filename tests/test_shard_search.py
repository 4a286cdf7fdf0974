"""Searching shard indexes without merging them (issue 7): same results as `zscir index merge`, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.test_indexer import NegatedGallery, cfg, make_photos  # noqa: F401 - shared helpers
from tests.test_search_topk import brute
from zscir.index.build import build_index
from zscir.index.merge import merge_indexes
from zscir.index.retriever import Retriever
from zscir.index.search import ExactSearcher
from zscir.index.shards import ShardedSearcher, ShardSet, resolve_index_paths
from zscir.index.store import EmbeddingStore, StoreError
from zscir.methods import create_composer

MODEL = "tiny-clip-test"


@pytest.fixture(scope="module")
def composer():
    torch.manual_seed(0)
    return create_composer("sum", model=MODEL)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, composer):
    """14 photos in 3 shards (with a second gallery key), their merge, and the ids."""
    tmp = tmp_path_factory.mktemp("shards")
    photos = tmp / "photos"
    ids = make_photos(photos, n=14)
    neg = NegatedGallery(composer.backbone)
    dirs = []
    for i in range(3):
        d = tmp / "set" / f"shard-{i}"
        build_index(photos, d, [composer, neg], model=MODEL, config=cfg(shard=(i, 3)))
        dirs.append(d)
    merge_indexes(dirs, tmp / "merged")
    return tmp, dirs, ids


def test_sharded_searcher_equals_exact_search_of_the_concatenation():
    rng = np.random.default_rng(3)
    g = rng.standard_normal((300, 8)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[200:210] = g[5]  # ties across shards: the lower global row must come first, as in the merged index
    q = rng.standard_normal((7, 8)).astype(np.float32)
    q[0] = g[5]
    parts = [g[:90], g[90:91], g[91:91], g[91:220], g[220:]]  # includes a 1-row and an empty shard
    sh = ShardedSearcher([ExactSearcher(p, chunk_size=16) for p in parts])
    assert len(sh) == 300 and sh.dim == 8
    exclude = [[5, 200], None, [0], [299, 90], [], None, list(range(0, 300, 2))]
    for k, exc in [(1, None), (10, None), (25, exclude), (400, exclude), (400, None)]:
        s, i = sh.search(q, k, exclude=exc)
        sets = None if exc is None else [set(e or ()) for e in exc]
        rs, ri = brute(q, g, k, sets)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_allclose(s, rs, rtol=1e-5, atol=1e-5)
    assert sh.search(q, 3)[1][0].tolist() == [5, 200, 201]


def test_shard_set_search_equals_merged_index(sharded, composer):
    tmp, dirs, ids = sharded
    one = Retriever.load(tmp / "merged")
    many = Retriever.load(dirs)
    assert isinstance(many.store, ShardSet) and len(many) == len(one) == 14
    assert many.store.ids == one.store.ids  # rows numbered shard after shard, like the merge
    for ref in ids[:6]:
        for k, method in ((5, None), (14, None), (20, "image")):
            a = one.search(ref, "more red", k=k, method=method)
            b = many.search(ref, "more red", k=k, method=method)
            assert [h.id for h in a] == [h.id for h in b] and ref not in [h.id for h in b]
            np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
            assert [h.index for h in a] == [h.index for h in b]
    d = many.describe()
    assert d["shards"] == 3 and d["items"] == 14 and d["search"] == {composer.gallery_cache_key(): "exact"}
    # the extra gallery key present in every shard stays "indexed" (per-shard matrices, no on-demand encode)
    neg = NegatedGallery(composer.backbone)
    assert neg.gallery_cache_key() in many._indexed_keys()
    s_one = one.searcher_for(neg).search(np.ones((1, one.store.dim), np.float32), 14)
    s_many = many.searcher_for(neg).search(np.ones((1, one.store.dim), np.float32), 14)
    np.testing.assert_array_equal(s_one[1], s_many[1])


def test_shard_set_folder_glob_and_cli(sharded):
    from zscir.cli import app

    tmp, dirs, ids = sharded
    assert resolve_index_paths(tmp / "set") == dirs  # a folder of shard indexes, in shard order
    assert resolve_index_paths(str(tmp / "set" / "shard-*")) == dirs
    assert len(Retriever.load(tmp / "set")) == 14
    with pytest.raises(StoreError, match="no index folder matches"):
        resolve_index_paths(str(tmp / "nope-*"))

    run = CliRunner().invoke

    def search(*where):
        res = run(app, ["search", *map(str, where), "--image", ids[2], "--text", "darker", "-k", "6", "--json"])
        assert res.exit_code == 0, res.output
        return [(h["id"], round(h["score"], 4)) for h in json.loads(res.output)]

    merged = search(tmp / "merged")
    assert search(*dirs) == merged and search(tmp / "set") == merged and len(merged) == 6


def test_incompatible_shards_are_refused(sharded, tmp_path):
    tmp, dirs, ids = sharded
    with pytest.raises(StoreError, match="given twice"):
        ShardSet.load([dirs[0], dirs[0]])
    with pytest.raises(StoreError, match=r"item id .* is in both .*merged"):
        ShardSet.load([dirs[0], tmp / "merged"])
    # another model / method: different gallery key (it embeds the backbone fingerprint)
    other = EmbeddingStore.load(dirs[1])
    m = {"model": other.manifest["model"]}
    m["gallery_key"] = "image-embedding:other-model:0000"
    EmbeddingStore.save(tmp_path / "other", np.asarray(other.embeddings), other.items, m)
    with pytest.raises(StoreError, match="gallery key .* differs"):
        ShardSet.load([dirs[0], tmp_path / "other"])
    m["gallery_key"] = EmbeddingStore.load(dirs[0]).manifest["gallery_key"]
    EmbeddingStore.save(tmp_path / "wide", np.zeros((len(other), 7), np.float32), other.items, m)
    with pytest.raises(StoreError, match="7-d embeddings"):
        ShardSet.load([dirs[0], tmp_path / "wide"])
    json_m = json.loads((tmp_path / "other" / "manifest.json").read_text())
    json_m.update(gallery_key=m["gallery_key"], shard=[0, 3])
    (tmp_path / "other" / "manifest.json").write_text(json.dumps(json_m))
    with pytest.raises(StoreError, match="both shard 0/3"):
        ShardSet.load([dirs[0], tmp_path / "other"])


def test_server_serves_a_shard_set(sharded):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from tests.test_serve_api import running_server
    from zscir.serve import create_app

    tmp, dirs, ids = sharded
    with running_server(create_app(Retriever.load(dirs))) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/health").json()["shards"] == 3
        assert c.get("/items", params={"limit": 100}).json()["total"] == 14
        ref = ids[7]
        res = c.post("/search", data={"text": "lighter", "k": "5", "item_id": ref}).json()
        assert len(res["results"]) == 5 and ref not in [r["id"] for r in res["results"]]
        assert c.get(f"/items/{ids[9]}/thumbnail").status_code == 200
