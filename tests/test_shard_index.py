"""Sharded indexing (issue 7): `--shard i/n` writes independent shards, `merge` equals a one-shot index."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.test_indexer import NegatedGallery, cfg, make_photos  # noqa: F401 - shared helpers
from zscir.index.build import build_index, shard_of
from zscir.index.merge import merge_indexes
from zscir.index.store import EmbeddingStore, StoreError
from zscir.methods import create_composer

MODEL = "tiny-clip-test"


@pytest.fixture(scope="module")
def composer():
    torch.manual_seed(0)
    return create_composer("sum", model=MODEL)


def test_shard_of_is_stable_and_balanced():
    ids = [f"d{i % 7}/img{i:05d}.jpg" for i in range(4000)]
    counts = np.bincount([shard_of(x, 4) for x in ids], minlength=4)
    assert counts.sum() == 4000 and counts.min() > 850  # roughly a quarter each
    assert [shard_of(x, 4) for x in ids[:50]] == [shard_of(x, 4) for x in ids[:50]]
    assert shard_of("a.png", 1) == 0


def test_shards_partition_the_folder_and_merge_equals_one_index(tmp_path, composer):
    photos = tmp_path / "photos"
    ids = make_photos(photos, n=14)
    full = build_index(photos, tmp_path / "full", composer, model=MODEL, config=cfg())
    shard_dirs = []
    seen: list[str] = []
    for i in range(3):
        d = tmp_path / f"shard{i}"
        rep = build_index(photos, d, composer, model=MODEL, config=cfg(shard=(i, 3)))
        man = json.loads((d / "manifest.json").read_text())
        assert man["shard"] == [i, 3]
        store = EmbeddingStore.load(d)
        assert all(shard_of(x, 3) == i for x in store.ids) and rep.indexed == len(store)
        seen += store.ids
        shard_dirs.append(d)
    assert sorted(seen) == ids and full.indexed == len(ids)  # a partition: nothing lost, nothing twice

    rep = merge_indexes(shard_dirs, tmp_path / "merged")
    assert rep.indexed == len(ids)
    merged, one = EmbeddingStore.load(tmp_path / "merged"), EmbeddingStore.load(tmp_path / "full")
    order = [merged.index_of(x) for x in one.ids]
    np.testing.assert_allclose(np.asarray(merged.embeddings)[order], np.asarray(one.embeddings), atol=1e-6)
    q = np.asarray(one.embeddings[:3], dtype=np.float32)
    hits_one, hits_m = one.search(q, k=5), merged.search(q, k=5)
    assert [[h.id for h in r] for r in hits_one] == [[h.id for h in r] for r in hits_m]
    assert hits_m[0][0].id == one.ids[0]  # a gallery item is its own best match

    with pytest.raises(StoreError, match="twice|share item ids"):
        merge_indexes([shard_dirs[0], shard_dirs[0]], tmp_path / "bad")
    with pytest.raises(ValueError):
        merge_indexes([shard_dirs[0]], shard_dirs[0])


def test_merge_keeps_extra_galleries(tmp_path, composer):
    photos = tmp_path / "photos"
    make_photos(photos, n=8)
    neg = NegatedGallery(composer.backbone)
    dirs = []
    for i in range(2):
        d = tmp_path / f"s{i}"
        build_index(photos, d, [composer, neg], model=MODEL, config=cfg(shard=(i, 2)))
        dirs.append(d)
    merge_indexes(dirs, tmp_path / "m")
    man = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert len(man["galleries"]) == 2 and man["count"] == 8
    a = np.load(tmp_path / "m" / man["galleries"][neg.gallery_cache_key()]["file"])
    b = np.load(tmp_path / "m" / man["embeddings_file"])
    np.testing.assert_allclose(a, -b, atol=1e-6)


def test_cli_shard_and_merge(tmp_path):
    from zscir.cli import app

    photos = tmp_path / "photos"
    make_photos(photos, n=6)
    r = CliRunner()
    for i in range(2):
        res = r.invoke(app, ["index", str(photos), "-o", str(tmp_path / f"s{i}"), "--model", MODEL,
                             "--shard", f"{i}/2", "--batch-size", "4"])
        assert res.exit_code == 0, res.output
    res = r.invoke(app, ["index", "--shard", "2/2", str(photos), "-o", str(tmp_path / "x"), "--model", MODEL])
    assert res.exit_code == 2
    res = r.invoke(app, ["index", "merge", "-o", str(tmp_path / "m"), "--from", str(tmp_path / "s0"),
                         "--from", str(tmp_path / "s1")])
    assert res.exit_code == 0, res.output
    assert "6 images merged from 2 shards" in res.output
    assert len(EmbeddingStore.load(tmp_path / "m")) == 6
