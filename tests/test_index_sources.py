"""Index sources beyond folders: WebDataset shards and parquet/CSV tables (issue 24 §1).

Each source kind is checked for the partition contract (disjoint, union = all, deterministic, the documented
assignment), for its ids and metadata, for fsspec URLs, and against hostile input: commands and URLs in specs
and rows, brace bombs, FIFOs/devices/folders, corrupt tars and tables, non-UTF-8, oversize cells, bad
partition numbers. Every refusal is either one `SourceError` line (the source as a whole) or an error record
with a reason code (one picture), never a hang, a command run, or a silent drop.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from zscir.index import table_source
from zscir.index.source_rules import check_partition, split_error, source_options_help
from zscir.index.sources import IndexSource, SourceError, open_index_source
from zscir.index.table_source import BATCH_ROWS, TableIndexSource
from zscir.index.wds_index_source import WebDatasetIndexSource

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
fsspec = pytest.importorskip("fsspec")

POSIX = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only (FIFOs, devices)")


# -- builders ----------------------------------------------------------------------------------------------

def jpg(seed: int) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", (8, 8), (seed * 37 % 256, seed * 11 % 256, 99)).save(b, "JPEG")
    return b.getvalue()


def write_tar(path: Path, members: list[tuple], end_marker: bool = True) -> Path:
    """A tar of ``(name, bytes)`` members (``(name, None, type)`` for a link/folder member)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for m in members:
            name, data = m[0], m[1]
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = m[2]
                info.linkname = "elsewhere.jpg" if m[2] == tarfile.SYMTYPE else ""
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    if not end_marker:  # cut at the last member boundary: no end-of-archive blocks
        data = data.rstrip(b"\0")
        data += b"\0" * (-len(data) % 512)
    path.write_bytes(data)
    return path


def sample(key: str, seed: int, txt: str | None = "cap", js: dict | None = None, ext: str = "jpg") -> list[tuple]:
    out = [(f"{key}.{ext}", jpg(seed))]
    if txt is not None:
        out.append((f"{key}.txt", txt.encode()))
    if js is not None:
        out.append((f"{key}.json", json.dumps(js).encode()))
    return out


def img2dataset(root: Path, shards: int = 5, per: int = 3) -> tuple[str, dict[str, bytes]]:
    """Shards as img2dataset writes them: keys SSSSSKKKK, jpg + txt + json (url, caption, key)."""
    root.mkdir(parents=True, exist_ok=True)
    images = {}
    for s in range(shards):
        members = []
        for k in range(per):
            key = f"{s:05d}{k:04d}"
            images[key] = jpg(s * per + k)
            members += [(f"{key}.jpg", images[key]), (f"{key}.txt", f"caption {key}".encode()),
                        (f"{key}.json", json.dumps({"url": f"https://img.example/{key}.jpg", "key": key,
                                                    "caption": f"json {key}"}).encode())]
        write_tar(root / f"{s:05d}.tar", members)
    return str(root / f"{{00000..{shards - 1:05d}}}.tar"), images


def records(src, i: int = 0, n: int = 1) -> list:
    return list(src.iter_partition(i, n))


def ok_ids(recs) -> list[str]:
    return [r.id for r in recs if r.error is None]


def codes(recs) -> dict[str, str]:
    return {r.id: split_error(r.error)[0] for r in recs if r.error}


def photos(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(n):
        (folder / f"p{k:03d}.jpg").write_bytes(jpg(k))
        names.append(f"p{k:03d}.jpg")
    return names


def write_csv(path: Path, header: list[str], rows: list[list[str]], sep: str = ",") -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def alarm():
    """Fail a test that blocks (a FIFO read) instead of hanging the suite."""
    def boom(*_):
        raise TimeoutError("blocked: a source waited on a FIFO or device")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture
def memfs():
    fs = fsspec.filesystem("memory")
    root = f"/zscir-test-{os.getpid()}-{id(fs)}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


# -- WebDataset: partitions, ids, metadata ----------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_shard_partitions_are_disjoint_whole_shards_and_deterministic(tmp_path, n):
    spec, images = img2dataset(tmp_path / "wds", shards=5, per=3)
    src = open_index_source(spec)
    assert isinstance(src, WebDatasetIndexSource) and isinstance(src, IndexSource)
    parts = [records(src, i, n) for i in range(n)]
    ids = [r.id for p in parts for r in p]
    assert sorted(ids) == sorted(images) and len(ids) == len(set(ids))  # disjoint, union = all
    assert all(r.error is None for p in parts for r in p)
    for i, p in enumerate(parts):  # shard j is in partition j % n, whole
        assert {int(r.meta["shard"][:5]) % n for r in p} <= {i}
        assert [r.id for r in p] == [r.id for r in records(src, i, n)]  # same order every call
        assert src.partition_shards(i, n) == src.shards[i::n]
    assert src.default_partitions() == 5
    assert src.describe() == {"kind": "webdataset", "spec": spec, "shards": 5, "ids": "key"}


def test_shard_records_carry_key_caption_url_and_the_image_bytes(tmp_path):
    spec, images = img2dataset(tmp_path / "wds", shards=2, per=2)
    recs = {r.id: r for r in records(open_index_source(spec))}
    r = recs["000010001"]
    assert r.data == images["000010001"] and r.error is None
    assert r.meta["key"] == "000010001" and r.meta["caption"] == "caption 000010001"
    assert r.meta["url"] == "https://img.example/000010001.jpg"
    assert r.meta["image_path"] == f"{tmp_path / 'wds' / '00001.tar'}/000010001.jpg"


def test_caption_from_json_when_no_txt_and_first_image_extension_wins(tmp_path):
    members = [("a.png", jpg(1)), ("a.jpg", jpg(2)), ("a.json", json.dumps({"caption": "from json"}).encode()),
               ("b.webp", jpg(3))]
    src = WebDatasetIndexSource(str(write_tar(tmp_path / "s.tar", members)))
    recs = {r.id: r for r in records(src)}
    assert recs["a"].data == jpg(2) and recs["a"].meta["caption"] == "from json"  # jpg before png
    assert recs["b"].data == jpg(3) and "caption" not in recs["b"].meta and "url" not in recs["b"].meta


def test_shard_ids_prefix_the_shard_and_keep_repeated_keys_apart(tmp_path):
    write_tar(tmp_path / "a.tar", sample("k", 1))
    write_tar(tmp_path / "b.tar", sample("k", 2))
    plain = records(WebDatasetIndexSource(f"{tmp_path}/{{a,b}}.tar"))
    assert ok_ids(plain) == ["k"]
    dup = [r for r in plain if r.error]
    assert len(dup) == 1 and split_error(dup[0].error)[0] == "duplicate_key" and dup[0].id == "b.tar/k#dup1"
    assert "first in a.tar" in dup[0].error
    prefixed = WebDatasetIndexSource(f"{tmp_path}/{{a,b}}.tar", shard_ids=True)
    assert ok_ids(records(prefixed)) == ["a/k", "b/k"]


def test_shards_of_one_name_in_two_folders_get_distinct_labels(tmp_path):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        write_tar(tmp_path / d / "0.tar", sample(f"k{d}", 1))
    src = WebDatasetIndexSource(f"{tmp_path}/x/0.tar::{tmp_path}/y/0.tar", shard_ids=True)
    assert ok_ids(records(src)) == ["x/0/kx", "y/0/ky"]


def test_gzipped_shards_and_a_folder_after_wds(tmp_path):
    raw = write_tar(tmp_path / "plain.tar", sample("g", 5)).read_bytes()
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "s.tar.gz").write_bytes(gzip.compress(raw))
    assert ok_ids(records(open_index_source(str(tmp_path / "z" / "s.tar.gz")))) == ["g"]
    assert ok_ids(records(open_index_source(f"wds:{tmp_path}"))) == ["g"]  # the folder's *.tar


def test_fsspec_memory_and_file_urls_for_shards(tmp_path, memfs):
    fs, root = memfs
    spec, images = img2dataset(tmp_path / "wds", shards=2, per=2)
    for s in range(2):
        fs.pipe(f"{root}/{s:05d}.tar", (tmp_path / "wds" / f"{s:05d}.tar").read_bytes())
    url = f"memory://{root}/{{00000..00001}}.tar"
    with pytest.raises(SourceError, match="--allow-remote"):
        open_index_source(url)
    for opt in ({"allow_remote": True}, {"allow_pipe": True}):
        got = [r for i in range(2) for r in records(open_index_source(url, **opt), i, 2)]
        assert sorted(r.id for r in got) == sorted(images) and all(r.data == images[r.id] for r in got)
    local = f"file://{tmp_path}/wds/00001.tar"
    assert ok_ids(records(open_index_source(local))) == ["000010000", "000010001"]


def test_pipe_shards_run_only_with_allow_pipe(tmp_path):
    write_tar(tmp_path / "s.tar", sample("p", 1))
    marker = tmp_path / "ran"
    spec = f"wds:pipe:touch {marker} && cat {tmp_path}/s.tar"
    with pytest.raises(SourceError, match="--allow-pipe") as e:
        open_index_source(spec)
    assert "\n" not in str(e.value) and not marker.exists()
    src = open_index_source(spec, allow_pipe=True)
    assert ok_ids(records(src)) == ["p"] and marker.exists()


def test_a_failing_pipe_command_is_an_error_record(tmp_path):
    src = open_index_source("wds:pipe:exit 3", allow_pipe=True)
    recs = records(src)
    assert [r.data for r in recs] == [None] and split_error(recs[0].error)[0] == "bad_shard"


# -- tables: partitions, ids, metadata ---------------------------------------------------------------------

def table_rows(tmp_path: Path, n: int = 10) -> list[list[str]]:
    names = photos(tmp_path / "img", n)
    return [[f"img/{x}", f"caption {k}"] for k, x in enumerate(names)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 13])
def test_table_partitions_are_contiguous_row_ranges_in_csv_and_parquet(tmp_path, n):
    rows = table_rows(tmp_path)
    csv_src = open_index_source(str(write_csv(tmp_path / "t.csv", ["image_path", "caption"], rows)))
    pq.write_table(pa.table({"image_path": [r[0] for r in rows], "caption": [r[1] for r in rows]}),
                   tmp_path / "t.parquet", row_group_size=3)
    pq_src = open_index_source(str(tmp_path / "t.parquet"))
    assert isinstance(csv_src, TableIndexSource) and isinstance(pq_src, TableIndexSource)
    for src in (csv_src, pq_src):
        parts = [records(src, i, n) for i in range(n)]
        flat = [r.id for p in parts for r in p]
        assert flat == [r[0] for r in rows]  # disjoint, union = all, in table order
        for i, p in enumerate(parts):
            assert [r.id for r in p] == [r[0] for r in rows[10 * i // n:10 * (i + 1) // n]]
            assert [r.id for r in records(src, i, n)] == [r.id for r in p]
        assert all(r.error is None for p in parts for r in p)


def test_table_records_ids_meta_and_relative_paths_resolve_beside_the_table(tmp_path, monkeypatch):
    rows = table_rows(tmp_path, 3)
    rows[1][0] = str(tmp_path / "img" / "p001.jpg")  # an absolute path stays as given
    table = write_csv(tmp_path / "t.tsv", ["URL", "filepath", "Title"],
                      [[f"https://e/{k}", r[0], r[1]] for k, r in enumerate(rows)], sep="\t")
    monkeypatch.chdir(tmp_path / "img")  # relative paths are not read from the working folder
    src = open_index_source(str(table), image_column="filepath")
    recs = records(src)
    assert [r.id for r in recs] == [r[0] for r in rows]
    assert [r.data for r in recs] == [jpg(k) for k in range(3)]
    assert recs[0].meta == {"image_path": "img/p000.jpg", "caption": "caption 0", "url": "https://e/0"}
    assert src.describe()["caption_column"] == "Title" and src.describe()["image_column"] == "filepath"


def test_default_column_and_named_columns(tmp_path):
    names = photos(tmp_path, 2)
    t = write_csv(tmp_path / "t.csv", ["id", "url", "alt"], [[str(k), x, f"alt {k}"] for k, x in enumerate(names)])
    src = open_index_source(str(t), caption_column="alt")
    assert src.image_column == "url" and [r.meta["caption"] for r in records(src)] == ["alt 0", "alt 1"]
    assert "url" not in records(src)[0].meta  # a local path in the url column is no URL
    with pytest.raises(SourceError, match="no column 'nope'"):
        open_index_source(str(t), image_column="nope")
    with pytest.raises(SourceError, match="no column 'nope'"):
        open_index_source(str(t), caption_column="nope")


def test_default_partitions_follow_the_row_count(tmp_path, monkeypatch):
    t = write_csv(tmp_path / "t.csv", ["image_path"], [[f"x{k}.jpg"] for k in range(10)])
    monkeypatch.setattr(table_source, "ROWS_PER_PARTITION", 3)
    src = open_index_source(str(t))
    assert src.default_partitions() == 4 and src.rows == 10 and src.describe()["rows"] == 10


def test_a_parquet_partition_reads_only_its_row_groups_and_columns(tmp_path, monkeypatch):
    n_rows = 40
    pq.write_table(pa.table({"image_path": [f"x{k}.jpg" for k in range(n_rows)], "blob": ["z" * 100] * n_rows}),
                   tmp_path / "t.parquet", row_group_size=10)
    calls = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *a, **kw):
        calls.append(kw)
        return real(self, *a, **kw)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    src = open_index_source(str(tmp_path / "t.parquet"))
    recs = records(src, 1, 4)  # rows 10..19: row group 1 only
    assert [r.id for r in recs] == [f"x{k}.jpg" for k in range(10, 20)]
    assert [c["row_groups"] for c in calls] == [[1]]
    assert calls[0]["columns"] == ["image_path"] and calls[0]["batch_size"] == BATCH_ROWS


def test_fsspec_memory_and_file_urls_for_tables(tmp_path, memfs):
    fs, root = memfs
    fs.pipe(f"{root}/img/a.jpg", jpg(1))
    buf = io.BytesIO()
    pq.write_table(pa.table({"image_path": ["img/a.jpg", f"memory://{root}/img/a.jpg"]}), buf)
    fs.pipe(f"{root}/t.parquet", buf.getvalue())
    fs.pipe(f"{root}/t.csv", b"image_path\nimg/a.jpg\n")
    for name in ("t.parquet", "t.csv"):
        with pytest.raises(SourceError, match="--allow-remote"):
            open_index_source(f"memory://{root}/{name}")
        recs = records(open_index_source(f"memory://{root}/{name}", allow_remote=True))
        assert recs and all(r.data == jpg(1) for r in recs)  # relative rows: beside the table
    names = photos(tmp_path, 1)
    t = write_csv(tmp_path / "t.csv", ["image_path"], [[names[0]]])
    assert [r.data for r in records(open_index_source(f"file://{t}"))] == [jpg(0)]


def test_remote_rows_are_fetched_only_with_allow_remote(tmp_path, memfs):
    fs, root = memfs
    fs.pipe(f"{root}/r.jpg", jpg(4))
    t = write_csv(tmp_path / "t.csv", ["url"], [[f"memory://{root}/r.jpg"], [f"memory://{root}/missing.jpg"]])
    refused = records(open_index_source(str(t)))
    assert [split_error(r.error)[0] for r in refused] == ["remote_refused", "remote_refused"]
    got = records(open_index_source(str(t), allow_remote=True))
    assert got[0].data == jpg(4) and got[0].meta["url"] == f"memory://{root}/r.jpg"
    assert split_error(got[1].error)[0] == "unreadable"


def test_header_only_table_is_an_empty_source(tmp_path):
    src = open_index_source(str(write_csv(tmp_path / "t.csv", ["image_path"], [])))
    assert src.rows == 0 and src.default_partitions() == 1 and records(src) == [] and records(src, 1, 3) == []
    pq.write_table(pa.table({"image_path": pa.array([], pa.string())}), tmp_path / "e.parquet")
    assert records(open_index_source(str(tmp_path / "e.parquet"))) == []


# -- hostile: table rows (error records, never a crash, a hang or a command) ---------------------------------

def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "fifo.jpg")
    return str(tmp / "fifo.jpg")


def _link(tmp: Path, target: str, name: str = "link.jpg") -> str:
    os.symlink(target, tmp / name)
    return str(tmp / name)


def _loop(tmp: Path) -> str:
    os.symlink(tmp / "l2.jpg", tmp / "l1.jpg")
    os.symlink(tmp / "l1.jpg", tmp / "l2.jpg")
    return str(tmp / "l1.jpg")


def _file(tmp: Path, data: bytes, name: str = "f.jpg") -> str:
    (tmp / name).write_bytes(data)
    return name


ROW_CASES = {
    "pipe": (lambda t, m: f"pipe:touch {m}", "pipe_refused"),
    "pipe-upper": (lambda t, m: f"PIPE:touch {m}", "pipe_refused"),
    "pipe-spaced": (lambda t, m: f"pipe: touch {m}; echo", "pipe_refused"),
    "pipe-cat": (lambda t, m: f"pipe:cat /etc/passwd > {m}", "pipe_refused"),
    "https": (lambda t, m: "https://example.invalid/x.jpg", "remote_refused"),
    "http": (lambda t, m: "http://127.0.0.1:9/x.jpg", "remote_refused"),
    "s3": (lambda t, m: "s3://bucket/x.jpg", "remote_refused"),
    "gs": (lambda t, m: "gs://bucket/x.jpg", "remote_refused"),
    "memory": (lambda t, m: "memory://x.jpg", "remote_refused"),
    "ssh": (lambda t, m: "ssh://host/x.jpg", "unsupported_url"),
    "dask": (lambda t, m: "dask://scheduler:8786/x", "unsupported_url"),
    "reference": (lambda t, m: "reference://x.json", "unsupported_url"),
    "ftp": (lambda t, m: "ftp://host/x.jpg", "unsupported_url"),
    "missing": (lambda t, m: "nope.jpg", "unreadable"),
    "file-url-missing": (lambda t, m: "file:///nonexistent/x.jpg", "unreadable"),
    "folder": (lambda t, m: (t / "sub.jpg").mkdir() or "sub.jpg", "not_a_file"),
    "fifo": (lambda t, m: _fifo(t), "not_a_file"),
    "dev-zero": (lambda t, m: "/dev/zero", "not_a_file"),
    "dev-null": (lambda t, m: "/dev/null", "not_a_file"),
    "link-to-fifo": (lambda t, m: _link(t, _fifo(t)), "not_a_file"),
    "link-to-dev-zero": (lambda t, m: _link(t, "/dev/zero"), "not_a_file"),
    "dangling-link": (lambda t, m: _link(t, str(t / "gone.jpg")), "unreadable"),
    "link-loop": (lambda t, m: _loop(t), "unreadable"),
    "empty-file": (lambda t, m: _file(t, b""), "empty"),
    "huge-file": (lambda t, m: _file(t, b"x" * 5000), "file_too_large"),
    "nul-in-path": (lambda t, m: "a\0b.jpg", "unreadable"),
    "name-too-long": (lambda t, m: "a" * 300 + ".jpg", "unreadable"),
    "path-over-cap": (lambda t, m: "d/" * 2100 + "x.jpg", "bad_path"),
    "empty-cell": (lambda t, m: "", "no_path"),
    "blank-cell": (lambda t, m: "   ", "no_path"),
    "newline-name": (lambda t, m: "a\nb\x1b[31m.jpg", "unreadable"),
}


@POSIX
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("case", sorted(ROW_CASES))
def test_hostile_row_is_one_error_record_and_the_good_rows_survive(tmp_path, alarm, case, fmt):
    make, code = ROW_CASES[case]
    marker = tmp_path / "MARKER"
    (tmp_path / "good.jpg").write_bytes(jpg(7))
    value = make(tmp_path, marker)
    values = ["good.jpg", value, "good2.jpg"]
    (tmp_path / "good2.jpg").write_bytes(jpg(8))
    if fmt == "csv":
        if "\0" in value:  # the csv module writes NUL bytes as they are: a table may carry them
            (tmp_path / "t.csv").write_text("image_path\ngood.jpg\n" + f'"{value}"\ngood2.jpg\n')
        else:
            write_csv(tmp_path / "t.csv", ["image_path"], [[v] for v in values])
        table = tmp_path / "t.csv"
    else:
        pq.write_table(pa.table({"image_path": values}), tmp_path / "t.parquet")
        table = tmp_path / "t.parquet"
    # allow_pipe changes nothing for rows; remote refusals are checked without allow_remote
    src = TableIndexSource(str(table), max_bytes=4096, allow_pipe=True,
                           allow_remote=code not in ("remote_refused",))
    recs = records(src)
    assert [r.data for r in recs] == [jpg(7), None, jpg(8)]
    bad = recs[1]
    assert split_error(bad.error)[0] == code, bad.error
    assert "\n" not in bad.id and "\x1b" not in bad.id and "\0" not in bad.id
    assert not marker.exists()  # no command ran


@pytest.mark.parametrize("cell", [7, b"bytes.jpg", ["a.jpg"], 3.5, True])
def test_parquet_cells_that_are_not_text_are_error_records(tmp_path, cell):
    (tmp_path / "good.jpg").write_bytes(jpg(1))
    pq.write_table(pa.table({"image_path": pa.array([cell, cell])}), tmp_path / "t.parquet")
    recs = records(open_index_source(str(tmp_path / "t.parquet")))
    assert [split_error(r.error)[0] for r in recs] == ["bad_path", "bad_path"]
    assert [r.id for r in recs] == ["<row 1>", "<row 2>"]


def test_a_repeated_path_is_an_error_record_not_a_second_item(tmp_path):
    photos(tmp_path, 2)
    t = write_csv(tmp_path / "t.csv", ["image_path"], [["p000.jpg"], ["p001.jpg"], ["p000.jpg"]])
    recs = records(open_index_source(str(t)))
    assert ok_ids(recs) == ["p000.jpg", "p001.jpg"]
    assert codes(recs) == {"<row 3>": "duplicate_path"} and "first in row 1" in recs[2].error


def test_csv_with_nul_bytes_and_odd_quoting_reads_per_row(tmp_path):
    photos(tmp_path, 1)
    (tmp_path / "t.csv").write_bytes(b'image_path,caption\np000.jpg,"a,\nb"\nx\0y.jpg,c\n')
    recs = records(open_index_source(str(tmp_path / "t.csv")))
    assert recs[0].data == jpg(0) and recs[0].meta["caption"] == "a,\nb"
    assert split_error(recs[1].error)[0] == "unreadable"


# -- hostile: whole tables (one SourceError line) --------------------------------------------------------------

def _corrupt_parquet(t: Path) -> Path:
    (t / "t.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    return t / "t.parquet"


def _cut_parquet(t: Path) -> Path:
    pq.write_table(pa.table({"image_path": ["a.jpg"] * 100}), t / "full.parquet")
    (t / "t.parquet").write_bytes((t / "full.parquet").read_bytes()[:-30])
    return t / "t.parquet"


def _fifo_table(t: Path) -> Path:
    os.mkfifo(t / "t.csv")
    return t / "t.csv"


def _dev_table(t: Path) -> Path:
    os.symlink("/dev/zero", t / "t.csv")
    return t / "t.csv"


TABLE_CASES = {
    "empty-csv": (lambda t: (t / "t.csv").write_bytes(b"") and None or t / "t.csv", "empty table"),
    "no-path-column": (lambda t: write_csv(t / "t.csv", ["a", "b"], [["1", "2"]]), "no image path column"),
    "corrupt-parquet": (_corrupt_parquet, "not a readable parquet"),
    "cut-parquet": (_cut_parquet, "not a readable parquet"),
    "not-utf8-header": (lambda t: (t / "t.csv").write_bytes(b"image_path\xff\xfe\n") and t / "t.csv",
                        "not UTF-8"),
    "fifo": (_fifo_table, "FIFO"),
    "device-link": (_dev_table, "character device"),
    "folder": (lambda t: (t / "t.csv").mkdir() or t / "t.csv", "folder"),
    "missing": (lambda t: t / "none.parquet", "cannot read"),
    "unknown-suffix": (lambda t: f"table:{t}/t.txt", "expected .parquet"),
    "pipe-spec": (lambda t: f"table:pipe:touch {t}/MARKER; cat x.csv", "never a command"),
    "remote-spec": (lambda t: "https://example.invalid/t.csv", "--allow-remote"),
}


@POSIX
@pytest.mark.parametrize("case", sorted(TABLE_CASES))
def test_hostile_table_is_one_source_error_line(tmp_path, alarm, case):
    make, words = TABLE_CASES[case]
    spec = str(make(tmp_path))
    with pytest.raises(SourceError) as e:
        open_index_source(spec)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "MARKER").exists()


@pytest.mark.parametrize("body", [
    "image_path\n" + "a" * (2 << 20) + "\n",  # one huge field on one line
    'image_path\n"' + ("x" * 1000 + "\n") * 1100 + '"\n',  # a quoted field over many lines
])
def test_a_row_over_the_cap_stops_the_table_with_one_line(tmp_path, body):
    (tmp_path / "t.csv").write_text(body)
    src = open_index_source(str(tmp_path / "t.csv"))
    with pytest.raises(SourceError, match="a row of more than") as e:
        src.default_partitions()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("rows", [1, 20000])
def test_non_utf8_rows_are_one_error_line_before_any_record(tmp_path, rows):
    (tmp_path / "t.csv").write_bytes(b"image_path\n" + b"a.jpg\n" * rows + b"caf\xe9.jpg\n")
    with pytest.raises(SourceError, match="not UTF-8") as e:
        src = open_index_source(str(tmp_path / "t.csv"))  # a short table fails here (decoded by blocks)
        src.default_partitions()  # a long one in the row count, before any partition is read
    assert "\n" not in str(e.value)


def test_a_utf8_bom_header_is_read(tmp_path):
    photos(tmp_path, 1)
    (tmp_path / "t.csv").write_bytes("\ufeffimage_path\np000.jpg\n".encode())
    assert ok_ids(records(open_index_source(str(tmp_path / "t.csv")))) == ["p000.jpg"]


@pytest.mark.parametrize("version", ["12.0.1", "14.0.0", "13.0.0.dev5"])
def test_a_pyarrow_that_unpickles_file_metadata_is_refused(tmp_path, monkeypatch, version):
    pq.write_table(pa.table({"image_path": ["a.jpg"]}), tmp_path / "t.parquet")
    monkeypatch.setattr(pa, "__version__", version)
    with pytest.raises(SourceError, match="can run code stored in a parquet file"):
        open_index_source(str(tmp_path / "t.parquet"))
    monkeypatch.setattr(pa, "__version__", "14.0.1")
    assert open_index_source(str(tmp_path / "t.parquet")).rows == 1


def test_an_unknown_remote_scheme_is_refused_at_open(tmp_path):
    with pytest.raises(SourceError, match="fsspec cannot open"):
        open_index_source("nosuchproto://bucket/t.csv", allow_remote=True)


# -- hostile: shards ---------------------------------------------------------------------------------------

def _fifo_shard(t: Path) -> str:
    os.mkfifo(t / "x.tar")
    return str(t / "x.tar")


SPEC_CASES = {
    "pipe": (lambda t: f"wds:pipe:touch {t}/MARKER", "--allow-pipe"),
    "pipe-brace": (lambda t: f"pipe:touch {t}/MARKER{{0..3}}.tar", "--allow-pipe"),
    "https": (lambda t: "https://example.invalid/{0..3}.tar", "--allow-remote"),
    "s3": (lambda t: "wds:s3://bucket/shard-{000..009}.tar", "--allow-remote"),
    "brace-bomb": (lambda t: f"{t}/x{{0..9999999}}.tar", "at most 100,000"),
    "nested-bomb": (lambda t: f"{t}/{{0..999}}{{0..999}}.tar", "at most 100,000"),
    "list-bomb": (lambda t: "::".join([f"{t}/{{0..99999}}.tar"] * 2), "at most 100,000"),
    "unbalanced": (lambda t: f"{t}/x{{0..3.tar", "unbalanced"),
    "none-exists": (lambda t: f"{t}/missing-{{0..3}}.tar", "none of the 4 shards exists"),
    "fifo": (_fifo_shard, "FIFO"),
    "device-link": (lambda t: os.symlink("/dev/zero", t / "x.tar") or str(t / "x.tar"), "character device"),
    "folder": (lambda t: (t / "x.tar").mkdir() or str(t / "x.tar"), "names no shard"),  # read as a folder of shards
    "twice": (lambda t: write_tar(t / "a.tar", sample("k", 1)) and f"{t}/a.tar::{t}/a.tar", "more than once"),
    "empty": (lambda t: "wds:", "names no shard"),
}


@POSIX
@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_hostile_shard_spec_is_one_source_error_line(tmp_path, alarm, case):
    make, words = SPEC_CASES[case]
    with pytest.raises(SourceError) as e:
        open_index_source(make(tmp_path))
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not list(tmp_path.glob("MARKER*"))


def _cut_mid_member(t: Path) -> Path:
    data = write_tar(t / "full.tar", sample("a", 1) + sample("b", 2)).read_bytes()
    (t / "s.tar").write_bytes(data[:512 * 3 + 100])  # inside b's first member
    return t / "s.tar"


def _with_stats(t: Path, successes: int) -> Path:
    """A shard of one sample beside img2dataset's stats file stating ``successes`` samples."""
    (t / "s_stats.json").write_text(json.dumps({"successes": successes}))
    return write_tar(t / "s.tar", sample("a", 1))


SHARD_CASES = {
    # name: (writer, good ids, {error id: code})
    "garbage": (lambda t: (t / "s.tar").write_bytes(b"not a tar" * 300) and t / "s.tar", [], {"s.tar": "bad_shard"}),
    "zero-bytes": (lambda t: (t / "s.tar").write_bytes(b"") or t / "s.tar", [], {"s.tar": "bad_shard"}),
    "gzip-garbage": (lambda t: (t / "s.tar.gz").write_bytes(b"\x1f\x8b" + b"junk" * 200) and t / "s.tar.gz", [],
                     {"s.tar.gz": "bad_shard"}),
    "cut-mid-member": (_cut_mid_member, ["a"], {"s.tar": "truncated_shard"}),
    "cut-at-boundary": (lambda t: write_tar(t / "s.tar", sample("a", 1), end_marker=False), ["a"],
                        {"s.tar": "truncated_shard"}),
    "no-image": (lambda t: write_tar(t / "s.tar", sample("a", 1) + [("b.txt", b"only text")]), ["a"],
                 {"b": "no_image"}),
    "empty-image": (lambda t: write_tar(t / "s.tar", [("a.jpg", b""), *sample("b", 2)]), ["b"], {"a": "empty"}),
    "huge-image": (lambda t: write_tar(t / "s.tar", [("a.jpg", b"x" * 9000), *sample("b", 2)]), ["b"],
                   {"a": "file_too_large"}),
    "symlink-member": (lambda t: write_tar(t / "s.tar", [("a.jpg", None, tarfile.SYMTYPE), ("a.txt", b"t")]), [],
                       {"a": "no_image"}),
    "folder-member": (lambda t: write_tar(t / "s.tar", [("d.jpg", None, tarfile.DIRTYPE), *sample("b", 2)]),
                      ["b"], {}),
    "fifo-member": (lambda t: write_tar(t / "s.tar", [("a.jpg", None, tarfile.FIFOTYPE), *sample("b", 2)]),
                    ["b"], {}),
    "repeat-key": (lambda t: write_tar(t / "s.tar", sample("a", 1) + sample("b", 2) + sample("a", 3)),
                   ["a", "b"], {"s.tar/a#dup1": "duplicate_key"}),
    "traversal-name": (lambda t: write_tar(t / "s.tar", sample("../../etc/x", 1)), ["../../etc/x"], {}),
    "newline-name": (lambda t: write_tar(t / "s.tar", sample("a\nb\x1b", 1)), ["a\\nb\\u001b"], {}),
    "non-utf8-name": (lambda t: write_tar(t / "s.tar", sample("caf\udce9", 1)), ["caf\\xe9"], {}),
    "hidden-meta": (lambda t: write_tar(t / "s.tar", [("__meta__.jpg", jpg(1)), *sample("b", 2)]), ["b"], {}),
    "huge-caption": (lambda t: write_tar(t / "s.tar", [("a.jpg", jpg(1)), ("a.txt", b"c" * (2 << 20))]), ["a"], {}),
    "bad-json": (lambda t: write_tar(t / "s.tar", [("a.jpg", jpg(1)), ("a.json", b"\xff{[")]), ["a"], {}),
    "deep-json": (lambda t: write_tar(t / "s.tar", [("a.jpg", jpg(1)), ("a.json", b"[" * 100000)]), ["a"], {}),
    "json-not-object": (lambda t: write_tar(t / "s.tar", [("a.jpg", jpg(1)), ("a.json", b"[1, 2]")]), ["a"], {}),
    "stats-mismatch": (lambda t: _with_stats(t, 5), ["a"], {"s.tar": "size_mismatch"}),
    "stats-match": (lambda t: _with_stats(t, 1), ["a"], {}),
}


@POSIX
@pytest.mark.parametrize("case", sorted(SHARD_CASES))
def test_hostile_shard_content_becomes_error_records(tmp_path, alarm, case):
    make, good, bad = SHARD_CASES[case]
    shard = make(tmp_path)
    write_tar(tmp_path / "other.tar", sample("zz", 9))  # a sound shard beside it is read in full
    src = WebDatasetIndexSource(f"{shard}::{tmp_path}/other.tar", max_bytes=8192)
    recs = records(src)
    assert ok_ids(recs) == [*good, "zz"]
    assert codes(recs) == bad
    assert all(r.data is None for r in recs if r.error) and all(r.data for r in recs if not r.error)
    assert not (tmp_path.parent / "etc").exists()  # member names are ids, never written anywhere


def test_a_missing_shard_beside_existing_ones_is_an_error_record(tmp_path):
    write_tar(tmp_path / "0.tar", sample("a", 1))
    recs = records(open_index_source(f"{tmp_path}/{{0..1}}.tar"))
    assert ok_ids(recs) == ["a"] and codes(recs) == {"1.tar": "bad_shard"}


# -- partition numbers and options ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["wds", "table"])
@pytest.mark.parametrize("i,n", [(0, 0), (0, -1), (1, 1), (-1, 2), (2, 2), (True, 2), (0, 1.5), ("0", 1)])
def test_bad_partition_numbers_are_one_clear_error(tmp_path, kind, i, n):
    if kind == "wds":
        src = WebDatasetIndexSource(str(write_tar(tmp_path / "s.tar", sample("a", 1))))
    else:
        src = open_index_source(str(write_csv(tmp_path / "t.csv", ["image_path"], [["a.jpg"]])))
    with pytest.raises(SourceError) as e:
        list(src.iter_partition(i, n))
    assert "partition" in str(e.value) and "\n" not in str(e.value)


def test_check_partition_accepts_the_valid_range():
    for n in (1, 2, 7):
        for i in range(n):
            check_partition(i, n)


@pytest.mark.parametrize("spec_kind,option", [("wds", {"image_column": "x"}), ("wds", {"caption_column": "c"}),
                                              ("table", {"shard_ids": True}), ("table", {"bogus": 1}),
                                              ("wds", {"max_bytes": 0}), ("table", {"max_bytes": True})])
def test_an_option_that_does_not_apply_is_an_error_not_ignored(tmp_path, spec_kind, option):
    spec = str(write_tar(tmp_path / "s.tar", sample("a", 1)) if spec_kind == "wds"
               else write_csv(tmp_path / "t.csv", ["image_path"], [["a.jpg"]]))
    with pytest.raises(SourceError):
        open_index_source(spec, **option)
    # options left at their defaults are dropped: the CLI passes one set to every kind
    open_index_source(spec, allow_pipe=False, allow_remote=False, image_column=None, caption_column=None,
                      shard_ids=False)


def test_spec_routing_and_the_help_texts(tmp_path):
    write_tar(tmp_path / "s.tar", sample("a", 1))
    write_csv(tmp_path / "t.csv", ["image_path"], [["a.jpg"]])
    assert open_index_source(str(tmp_path / "s.tar")).kind == "webdataset"
    assert open_index_source(f"wds:{tmp_path}/s.tar").kind == "webdataset"
    assert open_index_source(str(tmp_path / "t.csv")).kind == "table"
    assert open_index_source(f"table:{tmp_path}/t.csv").kind == "table"
    assert set(source_options_help()) >= {"allow_pipe", "allow_remote", "image_column", "caption_column",
                                          "shard_ids"}


def test_sources_travel_to_workers_by_pickle_and_read_the_same_partition(tmp_path):
    """Ray ships the opened source to its workers: a copy must name the same items."""
    import pickle

    spec, _ = img2dataset(tmp_path / "wds", shards=3, per=2)
    rows = table_rows(tmp_path, 5)
    table = write_csv(tmp_path / "t.csv", ["image_path", "caption"], rows)
    for src in (open_index_source(spec), open_index_source(str(table))):
        copy = pickle.loads(pickle.dumps(src))
        assert [(r.id, r.data) for r in records(copy, 1, 2)] == [(r.id, r.data) for r in records(src, 1, 2)]
