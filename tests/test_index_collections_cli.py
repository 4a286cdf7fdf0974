"""`zscir index SRC` on WebDataset shards and tables (issue 24 §1): the CLI routes them to the partitioned
indexer, passes the source options through, and the result is searchable with the same ids as the pictures."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest

from test_cli_errors import assert_one_error_line, zscir
from test_indexer import MODEL, make_photos
from zscir.index.shards import open_index


def _tar(path: Path, samples: list[tuple[str, bytes, str]]) -> None:
    with tarfile.open(path, "w") as tf:
        for key, png, caption in samples:
            for ext, data in (("png", png), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    root = tmp_path_factory.mktemp("coll")
    ids = make_photos(root / "photos", n=10)
    return root, ids


def _ids(out: Path) -> list[str]:
    store = open_index(out)
    return sorted(it["id"] if isinstance(it, dict) else str(it) for it in store.items)


def test_webdataset_shards_are_indexed_in_partitions(pictures, tmp_path):
    root, ids = pictures
    samples = [(f"{i:05d}", (root / "photos" / rel).read_bytes(), f"picture {i}") for i, rel in enumerate(ids)]
    _tar(tmp_path / "s-0.tar", samples[:5])
    _tar(tmp_path / "s-1.tar", samples[5:])
    out = tmp_path / "idx"
    res = zscir("index", f"wds:{tmp_path}/s-{{0..1}}.tar", "--out", out, "--model", MODEL)
    assert res.exit_code == 0, res.output + str(res.exception)
    assert "all 2 partitions done" in res.output
    assert _ids(out) == sorted(f"{i:05d}" for i in range(10))


def test_a_table_is_indexed_with_its_column_option(pictures, tmp_path):
    root, ids = pictures
    table = root / "photos" / "list.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["picture", "caption"])
        for rel in ids[:6]:
            w.writerow([rel, "a photo"])
    out = tmp_path / "idx"
    res = zscir("index", table, "--out", out, "--model", MODEL, "--image-column", "picture",
                "--caption-column", "caption")
    assert res.exit_code == 0, res.output + str(res.exception)
    assert _ids(out) == sorted(ids[:6])


def test_without_the_column_option_the_table_names_what_is_missing(pictures, tmp_path):
    root, ids = pictures
    table = tmp_path / "list.csv"
    table.write_text("picture\n" + "\n".join(str(root / "photos" / r) for r in ids[:2]) + "\n")
    res = zscir("index", table, "--out", tmp_path / "idx", "--model", MODEL)
    assert_one_error_line(res)
    assert not (tmp_path / "idx" / "part-00000").exists()


@pytest.mark.parametrize("option", [["--allow-remote"], ["--image-column", "x"], ["--caption-column", "c"],
                                    ["--shard-ids"], ["--allow-pipe"]])
def test_source_options_are_refused_for_a_folder(pictures, tmp_path, option):
    root, _ = pictures
    res = zscir("index", root / "photos", "--out", tmp_path / "idx", "--model", MODEL, *option)
    assert_one_error_line(res, "not an image folder")
    assert not (tmp_path / "idx").exists()


def test_a_pipe_shard_spec_needs_allow_pipe_and_never_runs_without_it(tmp_path):
    marker = tmp_path / "PWNED"
    res = zscir("index", f"wds:pipe:touch {marker}; cat x.tar", "--out", tmp_path / "idx", "--model", MODEL)
    assert_one_error_line(res, "--allow-pipe")
    assert not marker.exists()
    assert not (tmp_path / "idx").exists()


def test_kinds_are_tried_in_source_modules_order_not_import_order(tmp_path, monkeypatch):
    """A folder named like a shard or a table is judged by that kind (and refused), even when the folder
    source module was imported first (as another test module or a user's import may do)."""
    import zscir.index.sources as sources

    sources.open_index_source(str(tmp_path))  # every kind registered
    kinds = dict(sources.SOURCE_KINDS)
    monkeypatch.setattr(sources, "SOURCE_KINDS",
                        {"folder": kinds["folder"], **{k: v for k, v in kinds.items() if k != "folder"}})
    for name in ("looks.tar", "looks.csv"):
        (tmp_path / name).mkdir()
        with pytest.raises(sources.SourceError):
            sources.open_index_source(str(tmp_path / name))
