"""The data layer (issue 11): every pair source, triplet adapters, bad data, the rank x worker split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.data_fixtures import corpus, write_csv, write_hf, write_imagefolder, write_triplets, write_wds
from zscir.data import DataError, get_pair_data, get_triplet_data, parse_spec


@pytest.fixture(scope="module")
def items():
    return corpus(36)


def test_spec_kinds(tmp_path, items):
    assert parse_spec("world").kind == "world" and parse_spec("world:val").split == "val"
    assert parse_spec("data/{00000..00003}.tar").kind == "wds"
    assert parse_spec("hf:user/set:train").split == "train"
    csv = write_csv(tmp_path / "c", items[:3])
    assert parse_spec(str(csv)).kind == "manifest"
    with pytest.raises(DataError, match="cannot tell"):
        parse_spec("nothing-here")


def _parquet(root: Path, items) -> str:
    import pandas as pd

    df = pd.read_csv(write_csv(root, items), sep="\t").rename(columns={"filepath": "image_path", "title": "caption"})
    df.to_parquet(root / "m.parquet")
    return str(root / "m.parquet")


@pytest.mark.parametrize("kind", ["wds", "wds_json", "csv", "imagefolder", "hf", "parquet"])
def test_every_pair_source_reads_the_same_corpus(tmp_path, items, kind):
    spec = {"wds": lambda: write_wds(tmp_path, items),
            "wds_json": lambda: write_wds(tmp_path, items, json_only=True),
            "csv": lambda: str(write_csv(tmp_path, items)),
            "imagefolder": lambda: str(write_imagefolder(tmp_path, items)),
            "hf": lambda: "hf:" + str(write_hf(tmp_path / "hf", items)),
            "parquet": lambda: _parquet(tmp_path, items)}[kind]()
    data = get_pair_data(spec)
    recs = list(data)
    assert sorted(r.caption for r in recs) == sorted(c for _, _, c in items)
    assert data.problems.total == 0
    table = data.table(16)
    assert table.images.shape == (36, 16, 16, 3) and table.images.dtype.name == "uint8"


def test_missing_column_names_found_and_expected(tmp_path, items):
    path = tmp_path / "bad.csv"
    path.write_text("path_to_img,label\na.png,x\n")
    with pytest.raises(DataError) as e:
        get_pair_data(str(path))
    assert "path_to_img, label" in str(e.value) and "filepath" in str(e.value)


def test_corrupt_and_missing_images_are_counted_and_skipped(tmp_path, items):
    data = get_pair_data(write_wds(tmp_path / "w", items, corrupt={"000003", "000020"}))
    assert len(list(data)) == 34 and data.problems.total == 2
    assert {p.where.rsplit("/", 1)[1] for p in data.problems.items} == {"000003", "000020"}
    csv = write_csv(tmp_path / "c", items)
    (tmp_path / "c" / "images" / "000001.png").unlink()
    data = get_pair_data(str(csv))
    assert len(list(data)) == 35 and data.problems.counts["missing"] == 1


def test_decompression_bomb_refused_from_the_header(tmp_path, items):
    from PIL import Image

    big = tmp_path / "c" / "images" / "big.png"
    write_csv(tmp_path / "c", items[:2])
    Image.new("1", (12000, 9000)).save(big)  # 108 MP, a few kB on disk
    (tmp_path / "c" / "train.csv").open("a").write("images/big.png\ta huge clip-art\n")
    data = get_pair_data(str(tmp_path / "c" / "train.csv"))
    assert len(list(data)) == 2 and data.problems.counts["too_many_pixels"] == 1


def test_truncated_shard_loses_only_records_after_the_break(tmp_path, items):
    spec = write_wds(tmp_path, items, per_shard=12)
    shard = tmp_path / "00001.tar"
    raw = shard.read_bytes()
    shard.write_bytes(raw[: len(raw) // 2])  # shard 1 ends in the middle
    data = get_pair_data(spec)
    keys = [r.key for r in data]
    assert all(f"{i:06d}" in keys for i in list(range(12)) + list(range(24, 36)))  # other shards intact
    got = [int(k) for k in keys if 12 <= int(k) < 24]
    assert got == list(range(12, 12 + len(got))) and 3 <= len(got) < 12  # a prefix of the broken shard
    assert data.problems.total >= 1


def test_loader_splits_by_rank_and_worker_each_sample_once(tmp_path, items):
    spec = write_wds(tmp_path, items, per_shard=6)  # 6 shards
    data = get_pair_data(spec)
    seen = []
    for rank in range(2):
        loader = data.loader(4, 16, shuffle=True, workers=2, rank=rank, world_size=2, seed=3)
        seen += [k for b in loader.epoch_batches(0) for k in b.keys]
    assert sorted(seen) == sorted(k for k, _, _ in items)
    few = get_pair_data(write_wds(tmp_path / "one", items, per_shard=36))  # 1 shard < 4 readers: split by sample
    seen = [k for r in range(2) for b in few.loader(5, 16, workers=2, rank=r, world_size=2).epoch_batches(0)
            for k in b.keys]
    assert sorted(seen) == sorted(k for k, _, _ in items)


def test_canonical_triplets_text_targets_and_refusal(tmp_path, items):
    path = write_triplets(tmp_path, items, n=20, text_targets=3)
    data = get_triplet_data(str(path), id_template="images/{id}.png")
    assert len(data) == 20 and data.text_target_count == 3
    recs = list(data)
    assert len(recs) == 20 and recs[5].target_image is not None and recs[5].scores == {"clip": 0.5}
    with pytest.raises(DataError, match="target caption but no target image"):
        data.require_target_images("TSCIR Stage II")
    unresolved = get_triplet_data(str(path))  # ids without --id-template: files not found, counted, named
    ids, imgs = unresolved.images([r.reference_id for r in unresolved.rows], 16)
    assert ids == [] and unresolved.problems.counts["missing"] > 0
    assert "missing" in unresolved.problem_note() and str(tmp_path) in unresolved.problem_note()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"ref": "a", "text": "b"}) + "\n")
    with pytest.raises(DataError, match="columns found: ref, text"):
        get_triplet_data(str(bad))


def test_published_triplet_formats(tmp_path, items):
    (tmp_path / "cirr" / "captions").mkdir(parents=True)
    (tmp_path / "cirr" / "image_splits").mkdir()
    (tmp_path / "cirr" / "captions" / "cap.rc2.train.json").write_text(json.dumps(
        [{"pairid": 7, "reference": "r1", "caption": "make it red", "target_hard": "t1"}]))
    (tmp_path / "cirr" / "image_splits" / "split.rc2.train.json").write_text(json.dumps(
        {"r1": "./train/0/r1.png", "t1": "./train/0/t1.png"}))
    c = get_triplet_data(str(tmp_path / "cirr" / "captions" / "cap.rc2.train.json"))
    assert (c.rows[0].reference_id, c.rows[0].target_id, c.rows[0].modification) == \
        ("./train/0/r1.png", "./train/0/t1.png", "make it red")
    fiq = tmp_path / "cap.dress.train.json"
    fiq.write_text(json.dumps([{"candidate": "a", "target": "b", "captions": ["is red.", "has sleeves"]}]))
    f = get_triplet_data(str(fiq))
    assert [r.modification for r in f.rows] == ["is red and has sleeves", "has sleeves and is red"]
    f = get_triplet_data(str(fiq), fiq_caption_mode="join")
    assert [r.modification for r in f.rows] == ["is red and has sleeves"]
    lasco = tmp_path / "lasco_train.json"
    lasco.write_text(json.dumps([{"qid": 1, "query-image": [5, "train2014/a.jpg"], "query-text": "two dogs",
                                  "target-image": [6, "train2014/b.jpg"]}]))
    lrow = get_triplet_data(str(lasco)).rows[0]
    assert (lrow.reference_id, lrow.target_id) == ("train2014/a.jpg", "train2014/b.jpg")
    covr = tmp_path / "covr.csv"
    covr.write_text("pth1,edit,pth2,txt1,txt2\nv/1,make it snow,v/2,a street,a snowy street\n")
    crow = get_triplet_data(str(covr)).rows[0]
    assert (crow.reference_caption, crow.target_caption, crow.modification) == ("a street", "a snowy street", "make it snow")


def test_instructpix2pix_style_hf_triplets(tmp_path, items):
    import datasets

    feats = datasets.Features({"input_image": datasets.Image(), "edit_prompt": datasets.Value("string"),
                               "edited_image": datasets.Image()})
    ds = datasets.Dataset.from_dict({"input_image": [items[0][1], items[1][1]], "edit_prompt": ["make it green", "x"],
                                     "edited_image": [items[1][1], items[2][1]]}, features=feats)
    ds.save_to_disk(str(tmp_path / "ip2p"))
    data = get_triplet_data(f"hf:{tmp_path / 'ip2p'}")
    recs = list(data)
    assert len(recs) == 2 and recs[0].modification == "make it green" and recs[0].target_image.size == items[1][1].size
    ids, imgs = data.images([r.reference_id for r in data.rows], 16)
    assert imgs.shape == (2, 16, 16, 3)


def test_cli_inspect_prints_counts_problems_and_writes_a_grid(tmp_path, items):
    from typer.testing import CliRunner

    from zscir.cli import app

    spec = write_wds(tmp_path / "w", items, corrupt={"000004"})
    res = CliRunner().invoke(app, ["data", "inspect", spec, "--grid", str(tmp_path / "g.png"), "--samples", "3"])
    assert res.exit_code == 0, res.output
    assert "pairs: 35 usable" in res.output and "1 not_an_image" in res.output and "000004" in res.output
    assert (tmp_path / "g.png").stat().st_size > 1000
    res = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / "none.csv")])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("command", [["tscir-stage1"], ["clip"]])
def test_trainer_cli_bad_data_is_one_error_line(tmp_path, command):
    from typer.testing import CliRunner

    from zscir.cli import app

    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    res = CliRunner().invoke(app, ["train", *command, "--data", str(bad), "--out", str(tmp_path / "o"),
                                   "--steps", "1"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and "columns found: foo, bar" in res.output and "Traceback" not in res.output
