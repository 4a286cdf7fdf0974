"""The index folder life cycle: zscir writes only into folders it owns and deletes only files it recorded.

Regression tests for the hostile pass (issue: data loss through `--out` and `merge -o`, silent replacement of
another index, GC by file-name pattern) and for the index-folder owner module.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.test_indexer import MODEL, cfg, make_photos
from zscir.cli import app
from zscir.index.build import build_index
from zscir.index.folder import check_claimable
from zscir.index.merge import merge_indexes
from zscir.index.store import EmbeddingStore, StoreError
from zscir.methods import create_composer

#: names the old pattern-based garbage collector deleted in any --out folder
LOOKALIKES = ["segments/photo.jpg", "segments/abc-000000.npz", "embeddings.npy", "items.jsonl", "embeddings-g1.npy",
              "items-g3.jsonl", "gallery-1-g2.npy", "ann-0123456789-89abcdef.faiss", "ann-foo.faiss", ".x.tmp",
              ".embeddings-g1.npy.abcdefgh.tmp", ".manifest.json.zz.tmp", "notes.txt"]


@pytest.fixture(scope="module")
def composer():
    torch.manual_seed(0)
    return create_composer("sum", model=MODEL)


def user_folder(folder: Path, names=LOOKALIKES) -> dict[str, str]:
    """A folder of the user's own files with index-like names; returns {name: sha256 of its bytes}."""
    out = {}
    for i, name in enumerate(names):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        data = f"user data {i} {name}".encode() * (i + 1)
        p.write_bytes(data)
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def unchanged(folder: Path, digests: dict[str, str]) -> bool:
    return all((folder / n).is_file() and hashlib.sha256((folder / n).read_bytes()).hexdigest() == d
               for n, d in digests.items())


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_cli_refuses_a_user_folder_as_out_and_every_byte_survives(tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, n=4)
    user = tmp_path / "mine"
    digests = user_folder(user)
    before = listing(user)
    runner = CliRunner()
    res = runner.invoke(app, ["index", str(photos), "--out", str(user), "--model", MODEL])
    assert res.exit_code == 2 and "not empty and holds no zscir index" in res.output, res.output
    assert unchanged(user, digests) and listing(user) == before  # not even a .lock was created
    # the photo folder itself as --out (photos in a `segments/` sub-folder were deleted before)
    digests_p = user_folder(photos, ["segments/a.png", "segments/b.jpg"])
    before_p = listing(photos)
    res = runner.invoke(app, ["index", str(photos), "--out", str(photos), "--model", MODEL])
    assert res.exit_code == 2 and "cannot be the folder of images itself" in res.output
    assert unchanged(photos, digests_p) and listing(photos) == before_p


def test_merge_and_ann_refuse_a_user_folder(tmp_path, composer):
    photos = tmp_path / "photos"
    make_photos(photos, n=6)
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, d in enumerate(shards):
        build_index(photos, d, composer, model=MODEL, config=cfg(shard=(i, 2)))
    user = tmp_path / "mine"
    digests = user_folder(user)
    before = listing(user)
    with pytest.raises(StoreError, match="not empty and holds no zscir index"):
        merge_indexes(shards, user)
    res = CliRunner().invoke(app, ["index", "merge", "-o", str(user), "--from", str(shards[0]), "--from",
                                   str(shards[1])])
    assert res.exit_code == 2 and "not empty" in res.output
    from zscir.index.ann import build_ann, remove_ann

    for call in (build_ann, remove_ann):
        with pytest.raises(StoreError, match="no manifest.json"):
            call(user)
    assert unchanged(user, digests) and listing(user) == before


def test_user_files_inside_an_index_folder_survive_every_writer(tmp_path, composer):
    """Files zscir did not record are never collected, even in its own folder and with index-like names."""
    photos = tmp_path / "photos"
    ids = make_photos(photos, n=8)
    idx = tmp_path / "idx"
    build_index(photos, idx, composer, model=MODEL, config=cfg())
    planted = ["segments/photo.jpg", "segments/abc-000000.npz", "embeddings.npy", "items.jsonl", "gallery-1-g2.npy",
               "ann-0123456789-89abcdef.faiss", "ann-foo.faiss", ".x.tmp", ".notes.abc.tmp", "notes.txt"]
    digests = user_folder(idx, planted)
    make_photos(photos, n=3, start=50)  # a new generation: the old one is collected, the user's files are not
    (photos / ids[0]).unlink()
    assert build_index(photos, idx, composer, model=MODEL, config=cfg()).generation == 2
    assert unchanged(idx, digests)
    assert build_index(photos, idx, composer, model=MODEL, config=cfg()).up_to_date
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, d in enumerate(shards):
        build_index(photos, d, composer, model=MODEL, config=cfg(shard=(i, 2)))
    merge_indexes(shards, idx)  # same model and folder: an update of the index, no --overwrite needed
    assert len(EmbeddingStore.load(idx)) == 10 and unchanged(idx, digests)
    manifest = json.loads((idx / "manifest.json").read_text())
    live = {manifest["embeddings_file"], manifest["items_file"], "manifest.json", ".lock"}
    zscir_files = [n for n in listing(idx) if n not in digests and n != "segments"]
    assert sorted(zscir_files) == sorted(live)  # every earlier generation was collected


def test_empty_and_new_folders_are_claimed_and_kill_leftovers_allowed(tmp_path, composer):
    photos = tmp_path / "photos"
    make_photos(photos, n=3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / ".lock").write_text("")
    (tmp_path / "killed" / ".manifest.json.k3j4_9ab.tmp").write_text("{")
    for name in ("new/deeper", "empty", "killed"):
        check_claimable(tmp_path / name)
        assert build_index(photos, tmp_path / name, composer, model=MODEL, config=cfg()).indexed == 3
    assert not (tmp_path / "killed" / ".manifest.json.k3j4_9ab.tmp").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a folder"):
        check_claimable(tmp_path / "file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(StoreError, match="not a zscir-index manifest"):
        build_index(photos, tmp_path / "foreign", composer, model=MODEL, config=cfg())


def test_replacing_another_models_or_folders_index_needs_overwrite(tmp_path, composer):
    photos, other = tmp_path / "photos", tmp_path / "other"
    make_photos(photos, n=4)
    make_photos(other, n=5, start=20)
    idx = tmp_path / "idx"
    build_index(photos, idx, composer, model=MODEL, config=cfg())
    before = (idx / "manifest.json").read_bytes()
    with pytest.raises(StoreError, match="--overwrite"):
        build_index(other, idx, composer, model=MODEL, config=cfg())
    with pytest.raises(StoreError, match="index of model"):
        build_index(photos, idx, composer, model="another-model", config=cfg())
    assert (idx / "manifest.json").read_bytes() == before  # nothing was touched
    res = CliRunner().invoke(app, ["index", str(other), "--out", str(idx), "--model", MODEL])
    assert res.exit_code == 2 and "--overwrite" in res.output
    res = CliRunner().invoke(app, ["index", str(other), "--out", str(idx), "--model", MODEL, "--overwrite"])
    assert res.exit_code == 0, res.output
    store = EmbeddingStore.load(idx)
    assert len(store) == 5 and store.manifest["root"] == str(other.resolve())
    assert sorted(p.name for p in idx.iterdir()) == [".lock", "embeddings-g2.npy", "items-g2.jsonl", "manifest.json"]
    # a merge of shards of another folder into it needs --overwrite too
    shard = tmp_path / "s0"
    build_index(photos, shard, composer, model=MODEL, config=cfg(shard=(0, 1)))
    with pytest.raises(StoreError, match="--overwrite"):
        merge_indexes([shard], idx)
    assert len(merge_indexes([shard], idx, overwrite=True).skipped) == 0
    assert len(EmbeddingStore.load(idx)) == 4


def test_shards_and_merge_record_their_files(tmp_path, composer):
    photos = tmp_path / "photos"
    make_photos(photos, n=6)
    out = tmp_path / "merged"
    shards = [tmp_path / f"s{i}" for i in range(2)]
    for i, d in enumerate(shards):
        build_index(photos, d, composer, model=MODEL, config=cfg(shard=(i, 2)))
    merge_indexes(shards, out)
    merge_indexes(shards, out)  # a re-merge replaces the generation and collects the old one
    m = json.loads((out / "manifest.json").read_text())
    assert m["generation"] == 2 and m["recorded"] == []
    assert sorted(os.listdir(out)) == [".lock", "embeddings-g2.npy", "items-g2.jsonl", "manifest.json"]


def test_a_doctored_manifest_cannot_make_zscir_delete_outside_its_folder(tmp_path, composer):
    photos = tmp_path / "photos"
    make_photos(photos, n=3)
    idx = tmp_path / "idx"
    build_index(photos, idx, composer, model=MODEL, config=cfg())
    victims = {"victim.txt": "v1", "victim.npy": "v2", "photos-copy.png": "v3"}
    for n, text in victims.items():
        (tmp_path / n).write_text(text)
    m = json.loads((idx / "manifest.json").read_text())
    m["recorded"] = ["../victim.txt", str(tmp_path / "photos-copy.png"), "segments/../../victim.npy", "a/b/c"]
    m["embeddings_file"] = "../victim.npy"  # rejected by the next load, but must never be collected
    m["galleries"] = {k: {**g, "file": "../victim.npy"} for k, g in m["galleries"].items()}
    (idx / "manifest.json").write_text(json.dumps(m))
    make_photos(photos, n=1, start=30)
    rep = build_index(photos, idx, composer, model=MODEL, config=cfg())  # re-encodes: the old data is unreadable
    assert rep.indexed == 4 and len(EmbeddingStore.load(idx)) == 4
    assert {n: (tmp_path / n).read_text() for n in victims} == victims
