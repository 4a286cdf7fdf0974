"""Hostile data through the data layer (issue 21 §3, §4, §5): no hang, bounded work, one error line, and
bad values counted and skipped instead of silently trained on.

Each case is a file or an option a user may really hand zscir: a FIFO named like a shard or a manifest,
a brace range of ten million shards, JSON rows that are not objects or nest 100,000 deep, ``~user`` paths
of unknown users, hostile ``--id-template`` strings, impossible ``make-triplets`` options, a data set
smaller than the batch, HF-style parquet with image bytes, a UTF-8-BOM CSV, captions that are not text,
shards cut at a member boundary, multi-megabyte captions and text that is not UTF-8.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.data_fixtures import corpus, write_csv, write_images, write_triplets, write_wds
from zscir.data import DataError, get_pair_data, get_triplet_data

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only (FIFOs)")


@pytest.fixture(scope="module")
def items():
    return corpus(12)


def zscir(*args):
    from zscir.cli import app

    return CliRunner().invoke(app, [a if isinstance(a, str) else os.fspath(a) for a in args])


def one_error_line(res, *needles: str) -> str:
    """Exit 2, exactly one ``error:`` line on stderr (warnings aside), no traceback; returns the line."""
    text = res.output + (res.stderr or "")
    assert "Traceback" not in text, text[-3000:]
    assert res.exit_code == 2, (res.exit_code, text[-3000:], res.exception)
    lines = [ln for ln in res.stderr.splitlines()
             if ln.strip() and " WARNING " not in ln and not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _unblock(fifo: Path) -> None:
    """Open ``fifo`` for writing and close it at once: a reader blocked on it gets end-of-file."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def finishes(fn, seconds: float = 20.0, fifo: Path | None = None) -> dict:
    """Run ``fn`` in a thread: {"value": ...} or {"error": ...}; fails if it takes longer than ``seconds``
    (a reader blocked on ``fifo`` is released first, so no thread stays stuck)."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    hung = t.is_alive()
    while fifo is not None and t.is_alive():
        _unblock(fifo)
        t.join(0.2)
    assert not hung, f"did not finish within {seconds} s" + (f" (blocked on the FIFO {fifo})" if fifo else "")
    return out


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# ================================================================================== §3 FIFOs: never a hang
def _fifo_case(tmp_path: Path, items, kind: str) -> tuple[str, Path, bool]:
    """(spec, the FIFO, read as triplets?)"""
    if kind == "shard":
        fifo = tmp_path / "x.tar"
        os.mkfifo(fifo)
        return str(fifo), fifo, False
    if kind == "wds-prefix":
        fifo = tmp_path / "x.tar"
        os.mkfifo(fifo)
        return f"wds:{fifo}", fifo, False
    if kind == "shard-in-folder":
        (tmp_path / "shards").mkdir()
        fifo = tmp_path / "shards" / "00000.tar"
        os.mkfifo(fifo)
        return str(tmp_path / "shards"), fifo, False
    if kind == "shard-among-good":
        write_wds(tmp_path / "w", items, per_shard=6)
        fifo = tmp_path / "w" / "00002.tar"
        os.mkfifo(fifo)
        return f"wds:{tmp_path}/w/{{00000..00002}}.tar", fifo, False
    suffix = {"jsonl": ".jsonl", "csv": ".csv", "tsv": ".tsv", "json": ".json", "parquet": ".parquet",
              "triplets-jsonl": ".jsonl", "imagefolder": ""}[kind]
    if kind == "imagefolder":
        (tmp_path / "folder").mkdir()
        fifo = tmp_path / "folder" / "metadata.jsonl"
        os.mkfifo(fifo)
        return str(tmp_path / "folder"), fifo, False
    fifo = tmp_path / f"train{suffix}"
    os.mkfifo(fifo)
    return str(fifo), fifo, kind.startswith("triplets")


FIFO_KINDS = ["shard", "wds-prefix", "shard-in-folder", "shard-among-good", "jsonl", "csv", "tsv", "json",
              "parquet", "triplets-jsonl", "imagefolder"]


@pytest.mark.parametrize("kind", FIFO_KINDS)
def test_a_fifo_named_like_data_is_refused_not_waited_on(tmp_path, items, kind):
    spec, fifo, triplets = _fifo_case(tmp_path, items, kind)

    def read():
        if triplets:
            return len(get_triplet_data(spec))
        return len(list(get_pair_data(spec)))

    out = finishes(read, fifo=fifo)
    err = out.get("error")
    assert isinstance(err, DataError), out
    assert "FIFO" in str(err) and "\n" not in str(err)


def test_cli_inspect_of_a_fifo_shard_ends_at_once_with_one_error(tmp_path):
    """The issue's case, as a user runs it: a separate process with a timeout."""
    os.mkfifo(tmp_path / "x.tar")
    try:  # the child inherits PYTHONPATH and the working folder (tests run with PYTHONPATH=src)
        r = subprocess.run([sys.executable, "-m", "zscir", "data", "inspect", str(tmp_path / "x.tar"), "--grid",
                            str(tmp_path / "g.png")], capture_output=True, text=True, timeout=120)
    finally:
        _unblock(tmp_path / "x.tar")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stderr.count("error:") == 1 and "FIFO" in r.stderr


# ============================================================================ §3 brace patterns: bounded work
@pytest.mark.parametrize("pattern, count", [
    ("x{0..9999999}.tar", 10_000_000),
    ("x{0..100000}.tar", 100_001),  # one over the cap
    ("{0..999}/{0..999}.tar", 1_000_000),
    ("a{1,2}{0..99999}.tar", 200_000),
    ("{a..z}{0..9999}.tar", 260_000),
    ("s{0..60000}.tar::t{0..60000}.tar", 120_002),
    ("x{00000000..99999999..1}.tar", 100_000_000),
    ("x{0..99999999999999999999999}.tar", 10**23),
])
def test_a_huge_brace_range_fails_fast_with_the_count(tmp_path, pattern, count):
    from zscir.data.spec import MAX_SHARDS

    t0 = time.perf_counter()
    out = finishes(lambda: get_pair_data(f"wds:{tmp_path}/{pattern}"), 30)
    took = time.perf_counter() - t0
    err = out.get("error")
    assert isinstance(err, DataError), out
    assert f"{count:,}" in str(err) and f"{MAX_SHARDS:,}" in str(err)
    assert took < 5, took


def test_cli_brace_range_is_one_error_line(tmp_path):
    res = zscir("data", "inspect", f"wds:{tmp_path}/x{{0..9999999}}.tar", "--grid", tmp_path / "g.png")
    one_error_line(res, "10,000,000", "shards")


@pytest.mark.parametrize("pattern", ["item{1..3}", "{a..c}", "index.html{,.backup}", "python{2.{5..7},3.{2,3}}",
                                     "{07..10}", "{a..g..2}", "{4..1}", "{2..-1}", "{x}", "a{b{c,d},e}f", "{a,}",
                                     r"{1\{2,3}", "{1..10..3}{a,b}", "{Z..a}", "plain"])
def test_brace_count_is_exactly_what_braceexpand_yields(pattern):
    import braceexpand

    from zscir.data.spec import count_braces

    assert count_braces(pattern) == len(list(braceexpand.braceexpand(pattern)))


def test_shards_under_the_cap_still_expand_lazily(tmp_path, items):
    from zscir.data.spec import iter_shards

    spec = write_wds(tmp_path, items, per_shard=4)  # 3 shards
    names = iter_shards(spec[4:])
    assert next(names).endswith("00000.tar")  # a generator: the first name without the rest
    assert len(list(get_pair_data(spec))) == 12


# =============================================================== §4 JSON rows that are not objects, or too deep
DEEP = "[" * 100_000 + "]" * 100_000
NON_OBJECT_JSONL = {"int": "42\n", "null": "null\n", "list": "[1, 2]\n", "string": '"a"\n', "bool": "true\n",
                    "object-then-int": json.dumps({"filepath": "a.png", "title": "x", "reference": "a",
                                                   "modification": "m", "target": "b"}) + "\n42\n",
                    "deep-object": '{"a":' * 100_000 + "1" + "}" * 100_000 + "\n"}
NON_OBJECT_ARRAY = {"ints": "[1, 2]", "nulls": "[null]", "lists": '[["a"]]', "strings": '["x", "y"]',
                    "deep": DEEP}


@pytest.mark.parametrize("triplets", [False, True], ids=["pairs", "triplets"])
@pytest.mark.parametrize("name", sorted(NON_OBJECT_JSONL))
def test_jsonl_rows_that_are_not_objects_are_one_error_line(tmp_path, name, triplets):
    path = tmp_path / "rows.jsonl"
    path.write_text(NON_OBJECT_JSONL[name])
    args = ["data", "inspect", path, "--grid", tmp_path / "g.png"] + (["--triplets"] if triplets else [])
    one_error_line(zscir(*args), "rows.jsonl", "deeply" if name.startswith("deep") else "must be a JSON object")


@pytest.mark.parametrize("triplets", [False, True], ids=["pairs", "triplets"])
@pytest.mark.parametrize("name", sorted(NON_OBJECT_ARRAY))
def test_json_arrays_of_non_objects_are_one_error_line(tmp_path, name, triplets):
    path = tmp_path / "rows.json"
    path.write_text(NON_OBJECT_ARRAY[name])
    args = ["data", "inspect", path, "--grid", tmp_path / "g.png"] + (["--triplets"] if triplets else [])
    one_error_line(zscir(*args), "rows.json", "deeply" if name == "deep" else "must be a JSON object")


@pytest.mark.parametrize("scores", ['{"a":' * 100_000 + "1" + "}" * 100_000, "{not json"])
def test_bad_scores_json_is_one_error_line_naming_the_row(tmp_path, scores):
    path = tmp_path / "t.csv"
    path.write_text("reference\tmodification\ttarget\tscores\n" + f"a\tmake it red\tb\t{scores}\n")
    res = zscir("data", "inspect", path, "--triplets", "--grid", tmp_path / "g.png")
    one_error_line(res, "row 1")


@pytest.mark.parametrize("rows, needle", [
    ([{"candidate": "a", "target": "b", "captions": 5}], "bad_modification"),  # FashionIQ captions not a list
    ([{"candidate": "a", "target": "b", "captions": ["only one"]}], "row 1"),  # searle needs two
    ([{"query-image": [], "query-text": "x", "target-image": [1, "b.jpg"]}], "row 1"),  # LaSCo empty cell
])
def test_published_format_rows_of_the_wrong_shape_are_one_error_line(tmp_path, rows, needle):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(rows))
    one_error_line(zscir("data", "inspect", path, "--triplets", "--grid", tmp_path / "g.png"), needle)


@pytest.mark.parametrize("splits", ["[1, 2]", "{bad json", '"a string"'])
def test_a_bad_cirr_image_splits_file_is_one_error_line(tmp_path, splits):
    (tmp_path / "captions").mkdir()
    (tmp_path / "image_splits").mkdir()
    (tmp_path / "captions" / "cap.rc2.train.json").write_text(json.dumps(
        [{"pairid": 1, "reference": "r", "caption": "make it red", "target_hard": "t"}]))
    (tmp_path / "image_splits" / "split.rc2.train.json").write_text(splits)
    res = zscir("data", "inspect", tmp_path / "captions" / "cap.rc2.train.json", "--triplets", "--grid",
                tmp_path / "g.png")
    one_error_line(res, "split.rc2.train.json")


# ================================================================================== §4 ~user of no one
def test_a_manifest_row_naming_an_unknown_users_home_is_a_counted_missing_image(tmp_path, items):
    csv = write_csv(tmp_path, items[:3])
    with open(csv, "a") as f:
        f.write("~nosuchuser/x.png\ta red circle\n")
    data = get_pair_data(str(csv))
    assert len(list(data)) == 3 and data.problems.counts["missing"] == 1
    assert "~nosuchuser/x.png" in data.problems.items[0].where


def test_an_image_root_of_an_unknown_user_is_reported_not_a_traceback(tmp_path, items):
    csv = write_csv(tmp_path, items[:3])
    res = zscir("data", "inspect", csv, "--image-root", "~nosuchuser/imgs", "--grid", tmp_path / "g.png")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert "3 missing" in res.output


@pytest.mark.parametrize("template", [None, "~nosuchuser/{id}.png"])
def test_triplet_ids_under_an_unknown_users_home_are_counted_missing(tmp_path, items, template):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"reference": "~nosuchuser/a.png", "modification": "make it red",
                                "target": "~nosuchuser/b.png"}) + "\n")
    data = get_triplet_data(str(path), id_template=template)
    assert list(data) == [] and data.problems.counts["missing"] >= 1


@pytest.mark.parametrize("spec", ["~nosuchuser/x.csv", "~nosuchuser/x.png", "~nosuchuser/shards"])
def test_a_spec_under_an_unknown_users_home_is_one_error_line(tmp_path, spec):
    one_error_line(zscir("data", "inspect", spec, "--grid", tmp_path / "g.png"), "~nosuchuser")


# ============================================================================== §4 --id-template
@pytest.mark.parametrize("template", ["{0}", "{foo}", "{id:>99999999999}", "{id.__class__.__mro__}", "{id[0]}",
                                      "{id!r}", "{id.upper}", "{}", "images/{", "images/}", "images/x.png",
                                      "{id:{id}}", "x" * 5000 + "{id}"])
def test_a_hostile_id_template_is_refused_before_anything_is_read(tmp_path, items, template):
    path = write_triplets(tmp_path, items, n=4)
    res = zscir("data", "inspect", path, "--triplets", "--id-template", template, "--grid", tmp_path / "g.png")
    line = one_error_line(res, "--id-template")
    assert "class" not in line.replace("{id.__class__.__mro__}", "")  # nothing was evaluated
    assert len(line) < 600


@pytest.mark.parametrize("template, expect", [("images/{id}.png", "images/{}.png"),
                                              ("{{x}}/{id}/{id}.png", "{{x}}/{}/{}.png")])
def test_an_allowed_id_template_substitutes_only_the_id(template, expect):
    from zscir.data.triplets import IdTemplate

    assert IdTemplate(template)("a.b") == expect.replace("{}", "a.b").replace("{{", "{").replace("}}", "}")


# ======================================================================= §4/§5 make-triplets options up front
def _pairs_csv(tmp_path: Path, items, caption=None) -> Path:
    if caption is None:
        return write_csv(tmp_path / "p", items)
    names = write_images(tmp_path / "p", items)
    path = tmp_path / "p" / "train.csv"
    path.write_text("filepath\ttitle\n" + "".join(f"{n}\t{caption}\n" for n in names))
    return path


@pytest.mark.parametrize("option, value", [
    ("--k", "-5"), ("--k", "0"), ("--max-per-generator", "-1"), ("--max-per-generator", "0"),
    ("--min-similarity", "nan"), ("--min-similarity", "2"), ("--min-similarity", "-1.5"),
    ("--image-size", "0"), ("--image-size", "8"), ("--image-size", "20000"), ("--limit", "-1"), ("--limit", "0"),
    ("--per-reference", "0"), ("--max-edits", "0"),
])
def test_make_triplets_refuses_impossible_options_before_any_work(tmp_path, items, option, value):
    csv = _pairs_csv(tmp_path, items)
    out = tmp_path / "out"
    res = zscir("data", "make-triplets", csv, "--out", out, "--model", "tiny-clip-test", "--no-progress",
                option, value)
    one_error_line(res, option)
    assert not out.exists()


@pytest.mark.parametrize("option, value", [
    ("--hq-steps", "0"), ("--hq-steps", "-3"), ("--hq-steps", "1000000000"), ("--hq-guidance", "nan"),
    ("--hq-guidance", "-1"), ("--hq-guidance", "1e9"), ("--min-clip-text-image", "nan"),
    ("--min-clip-direction", "3"), ("--min-clip-image-image", "-2"),
])
def test_make_triplets_refuses_impossible_hq_options_before_any_pipeline(tmp_path, items, option, value):
    """The HQ settings are checked before diffusers is imported or a pipeline loaded (``--hq-steps 0`` used to
    reach the pipeline; ``--hq-guidance nan`` was accepted)."""
    csv = _pairs_csv(tmp_path, items)
    out = tmp_path / "out"
    res = zscir("data", "make-triplets", csv, "--out", out, "--model", "tiny-clip-test", "--no-progress",
                "--hq", "ip2p", option, value)
    one_error_line(res, option)
    assert "diffusers" not in res.stderr and not out.exists()


def test_make_triplets_on_megabyte_captions_ends_quickly(tmp_path, items):
    csv = _pairs_csv(tmp_path, items[:10], caption="a red circle " * 80_000)  # ten ~1 MB captions
    t0 = time.perf_counter()
    res = zscir("data", "make-triplets", csv, "--out", tmp_path / "out", "--model", "tiny-clip-test",
                "--no-progress")
    one_error_line(res, "caption_too_long")
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--limit", "-1"], ["--samples", "-1"]])
def test_inspect_refuses_a_negative_limit(tmp_path, items, args):
    one_error_line(zscir("data", "inspect", write_csv(tmp_path, items), *args, "--grid", tmp_path / "g.png"),
                   args[0])


@pytest.mark.parametrize("kind, limit", [("pairs", -1), ("pairs", 0), ("triplets", -1), ("triplets", 0)])
def test_a_limit_below_one_is_a_data_error(tmp_path, items, kind, limit):
    with pytest.raises(DataError, match="limit"):
        if kind == "pairs":
            get_pair_data(str(write_csv(tmp_path, items)), limit=limit)
        else:
            get_triplet_data(str(write_triplets(tmp_path, items, n=4)), limit=limit)


# ============================================================================= §4 smaller than one batch
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    return str(write_csv(root, corpus(24)))


def test_fit_batch_uses_the_whole_set_and_says_so(caplog):
    from zscir.train.common import fit_batch

    assert fit_batch(16, 100) == 16
    with caplog.at_level("WARNING"):
        assert fit_batch(128, 48, "tscir stage I data") == 48
    assert "48" in caplog.text and "128" in caplog.text


def test_tscir_stage1_trains_on_fewer_pairs_than_the_batch(tmp_path, small, caplog):
    from zscir.methods.tscir.config import MappingConfig, Stage1Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.train.data_options import DataOptions

    cfg = Stage1Config(model="tiny-clip-test", mapping=MappingConfig(vsi_layers=[], phi_hidden=32), steps=2,
                       batch_size=128, lr=1e-3, warmup=1, eval_every=1000, n_val=4, bf16=False,
                       data=DataOptions(data=small, workers=0, cache_features=False))
    with caplog.at_level("WARNING"):
        r = train_stage1(cfg, tmp_path / "s1", progress=False)
    assert len(r["losses"]) == 2 and all(math.isfinite(x) for x in r["losses"])
    assert "fewer than the batch size 128" in caplog.text


def test_clip_trains_on_fewer_pairs_than_the_batch(tmp_path, small, caplog):
    from zscir.backbones.registry import TinyCLIPConfig
    from zscir.train.clip import CLIPTrainConfig, train_clip
    from zscir.train.data_options import DataOptions

    arch = TinyCLIPConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                          text_width=32, text_layers=1, text_heads=2, projection_dim=32, vocab_size=300,
                          max_text_len=32)
    cfg = CLIPTrainConfig(steps=2, batch_size=128, lr=1e-3, warmup=1, eval_every=1000, vocab_size=300, n_val=4,
                          arch=arch, data=DataOptions(data=small, workers=0))
    with caplog.at_level("WARNING"):
        r = train_clip(cfg, tmp_path / "m", progress=False)
    assert len(r["losses"]) == 2 and "fewer than the batch size 128" in caplog.text


def test_a_streamed_share_smaller_than_one_batch_says_so(tmp_path, items):
    from zscir.data.records import Problems

    data = get_pair_data(write_wds(tmp_path, items, per_shard=12))
    loader = data.loader(64, 16, workers=0, rank=0, world_size=1, drop_last=True)
    with pytest.raises(DataError, match="batch size"):
        next(iter(loader))
    assert isinstance(data.problems, Problems)


# ====================================================================== §5 HF-style parquet image bytes
def _parquet_images(tmp_path: Path, items, layout: str) -> tuple[Path, list[np.ndarray]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pixels = [np.asarray(im.convert("RGB")) for _, im, _ in items]
    raw = [png_bytes(im) for _, im, _ in items]
    if layout == "bytes":
        cells = raw
    elif layout == "struct":
        cells = [{"bytes": b, "path": f"{k}.png"} for b, (k, _, _) in zip(raw, items)]
    elif layout == "struct-no-path":
        cells = [{"bytes": b, "path": None} for b in raw]
    else:  # struct holding only a path (bytes null): resolved like a path column
        names = write_images(tmp_path, items)
        cells = [{"bytes": None, "path": n} for n in names]
    table = pa.table({"image": cells, "text": [c for _, _, c in items]})
    pq.write_table(table, tmp_path / "hf.parquet")
    return tmp_path / "hf.parquet", pixels


@pytest.mark.parametrize("layout", ["bytes", "struct", "struct-no-path", "struct-path-only"])
def test_hf_style_parquet_images_are_decoded_from_their_bytes(tmp_path, items, layout):
    path, pixels = _parquet_images(tmp_path, items, layout)
    data = get_pair_data(str(path))
    recs = list(data)
    assert data.problems.total == 0, data.problems.items
    assert [r.caption for r in recs] == [c for _, _, c in items]
    for r, want in zip(recs, pixels):
        assert np.array_equal(np.asarray(r.image), want)


def test_hf_style_parquet_empty_image_cells_are_counted(tmp_path, items):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cells = [{"bytes": png_bytes(im), "path": "x.png"} for _, im, _ in items[:3]] + [{"bytes": None, "path": None}]
    pq.write_table(pa.table({"image": cells, "text": ["a", "b", "c", "d"]}), tmp_path / "m.parquet")
    data = get_pair_data(str(tmp_path / "m.parquet"))
    assert len(list(data)) == 3 and data.problems.counts["no_image"] == 1
    assert all("PNG" not in p.message and "\\x89" not in p.message for p in data.problems.items)


# =========================================================================== §5 a byte-order mark
BOM = "\ufeff"


@pytest.mark.parametrize("layout", ["comma-csv", "tab-csv", "tsv", "jsonl", "json-array", "triplets-csv"])
def test_a_utf8_bom_file_is_read(tmp_path, items, layout):
    names = write_images(tmp_path, items)
    caps = [c for _, _, c in items]
    if layout == "comma-csv":
        text, name = "filepath,title\n" + "".join(f"{n},{c}\n" for n, c in zip(names, caps)), "m.csv"
    elif layout == "tab-csv":
        text, name = "filepath\ttitle\n" + "".join(f"{n}\t{c}\n" for n, c in zip(names, caps)), "m.csv"
    elif layout == "tsv":
        text, name = "filepath\ttitle\n" + "".join(f"{n}\t{c}\n" for n, c in zip(names, caps)), "m.tsv"
    elif layout == "jsonl":
        text, name = "".join(json.dumps({"file_name": n, "text": c}) + "\n" for n, c in zip(names, caps)), "m.jsonl"
    elif layout == "json-array":
        text, name = json.dumps([{"file_name": n, "text": c} for n, c in zip(names, caps)]), "m.json"
    else:
        text = "reference,modification,target\n" + "".join(f"{n},make it red,{names[0]}\n" for n in names)
        (tmp_path / "t.csv").write_text(BOM + text, encoding="utf-8")
        data = get_triplet_data(str(tmp_path / "t.csv"))
        assert len(data) == len(names) and data.rows[0].reference_id == names[0]
        return
    (tmp_path / name).write_text(BOM + text, encoding="utf-8")
    data = get_pair_data(str(tmp_path / name))
    assert sorted(r.caption for r in data) == sorted(caps) and data.problems.total == 0


# ================================================================== §5 captions that are not text
NOT_TEXT = {"dict": {"a": 1}, "true": True, "false": False, "int": 42, "float": 3.5, "nan": float("nan"),
            "list-of-ints": [1, 2], "nested-list": [["a"]], "list-with-dict": [{"a": 1}], "mixed-list": ["ok", 5],
            "too-long": "a red circle " * 100, "megabyte": "x" * 1_000_000, "json-list-of-ints": "[1, 2]"}


@pytest.mark.parametrize("name", sorted(NOT_TEXT))
def test_non_string_and_overlong_captions_are_counted_and_skipped(tmp_path, items, name):
    names = write_images(tmp_path, items[:3])
    rows = [{"file_name": n, "text": c} for n, (_, _, c) in zip(names, items)]
    rows.append({"file_name": names[0], "text": NOT_TEXT[name]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # NaN is written as NaN
    data = get_pair_data(str(tmp_path / "m.jsonl"))
    recs = list(data)
    assert [r.caption for r in recs] == [c for _, _, c in items[:3]]
    assert data.problems.total == 1
    code = data.problems.items[0].code
    assert code in ({"no_caption"} if name == "nan" else {"bad_caption", "caption_too_long"}), code
    assert len(str(data.problems.items[0])) < 300


@pytest.mark.parametrize("caption", [{"a": 1}, [1, 2], 7, True, "x" * 5000])
def test_non_string_captions_in_shards_are_counted_and_skipped(tmp_path, items, caption):
    import webdataset as wds

    from tests.data_fixtures import jpeg

    with wds.TarWriter(str(tmp_path / "00000.tar")) as w:
        for key, im, cap in items[:3]:
            w.write({"__key__": key, "jpg": jpeg(im), "json": json.dumps({"caption": cap}).encode()})
        w.write({"__key__": "bad", "jpg": jpeg(items[3][1]), "json": json.dumps({"caption": caption}).encode()})
    data = get_pair_data(str(tmp_path / "00000.tar"))
    assert [r.caption for r in data] == [c for _, _, c in items[:3]]
    assert data.problems.total == 1 and data.problems.items[0].code in ("bad_caption", "caption_too_long")


@pytest.mark.parametrize("value", [42, {"a": 1}, True, [1], "x" * 5000])
def test_non_string_modification_texts_are_counted_and_skipped(tmp_path, items, value):
    path = write_triplets(tmp_path, items, n=4)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[1]["modification"] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = get_triplet_data(str(path), id_template="images/{id}.png")
    assert len(data) == 3 and all(isinstance(r.modification, str) for r in data.rows)
    assert data.problems.total == 1
    assert data.problems.items[0].code in ("bad_modification", "modification_too_long")


# ============================================================ §5 a shard cut at a member boundary
def _cut_shard(tmp_path: Path, items, keep_members: int, stats: int | None) -> Path:
    """One shard of 10 samples (jpg + txt each) cut after ``keep_members`` members, at a member boundary."""
    import webdataset as wds

    from tests.data_fixtures import jpeg

    shard = tmp_path / "00000.tar"
    with wds.TarWriter(str(shard)) as w:
        for key, im, cap in items[:10]:
            w.write({"__key__": key, "jpg": jpeg(im), "txt": cap.encode()})
    with tarfile.open(shard) as tf:
        members = tf.getmembers()
    raw = shard.read_bytes()
    if keep_members < len(members):
        shard.write_bytes(raw[:members[keep_members].offset])
    if stats is not None:  # as img2dataset writes it beside the shard
        (tmp_path / "00000_stats.json").write_text(json.dumps({"count": stats, "successes": stats}))
    return shard


@pytest.mark.parametrize("keep, stats", [(12, None), (12, 10), (13, None), (13, 10), (2, 10), (2, None), (18, None)])
def test_a_shard_cut_at_a_member_boundary_is_reported(tmp_path, items, keep, stats):
    shard = _cut_shard(tmp_path, corpus(10), keep, stats)
    data = get_pair_data(str(shard))
    recs = list(data)
    assert len(recs) == keep // 2
    cut = [p for p in data.problems.items if p.code == "truncated_shard"]
    assert cut and all(p.where == str(shard) for p in cut), data.problems.items
    if stats is not None:
        assert len(cut) == 1 and cut[0].message.startswith(f"read {(keep + 1) // 2} samples;"), cut
        assert "00000_stats.json states 10" in cut[0].message


@pytest.mark.parametrize("stats, code", [(10, None), (12, "truncated_shard"), (8, "size_mismatch")])
def test_a_complete_shard_is_checked_against_its_stated_size(tmp_path, stats, code):
    shard = _cut_shard(tmp_path, corpus(10), 99, stats)
    data = get_pair_data(str(shard))
    assert len(list(data)) == 10
    assert [p.code for p in data.problems.items] == ([code] if code else [])


def test_inspect_prints_samples_per_shard_and_the_cut(tmp_path):
    shard = _cut_shard(tmp_path, corpus(10), 12, 10)
    res = zscir("data", "inspect", shard, "--grid", tmp_path / "g.png")
    assert res.exit_code == 0, res.output
    assert "samples read per shard (1 of 1 shards): 00000.tar 6" in res.output
    assert "1 truncated_shard" in res.output and "states 10" in res.output


# ==================================================== §5 long captions are shortened; decode errors name files
def test_inspect_does_not_print_long_captions_in_full(tmp_path, items):
    long = "a red circle " * 70  # 910 characters: under the limit, read, but not printed in full
    csv = _pairs_csv(tmp_path, items[:3], caption=long)
    res = zscir("data", "inspect", csv, "--grid", tmp_path / "g.png")
    assert res.exit_code == 0, res.output
    assert "pairs: 3 usable" in res.output and long.strip() not in res.output
    assert max(len(x) for x in res.output.splitlines()) < 400


def test_inspect_triplets_does_not_print_long_modifications_in_full(tmp_path, items):
    path = write_triplets(tmp_path, items, n=3)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        r["modification"] = "make it red " * 80
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = zscir("data", "inspect", path, "--triplets", "--id-template", "images/{id}.png", "--grid",
                tmp_path / "g.png")
    assert res.exit_code == 0, res.output
    assert max(len(x) for x in res.output.splitlines()) < 400


@pytest.mark.parametrize("name, content", [
    ("bad.csv", b"filepath,title\n\xff\xfe\xfa,x\n"),
    ("bad-header.csv", b"file\xffpath,title\na.png,x\n"),
    ("bad.tsv", b"filepath\ttitle\na.png\t\xc3\x28\n"),
    ("bad.jsonl", b'{"file_name": "a.png", "text": "\xff"}\n'),
    ("bad.json", b'[{"file_name": "a.png", "text": "\xff"}]'),
    ("bad.parquet", b"PAR1 not really a parquet file"),
])
def test_decode_errors_name_the_file(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    one_error_line(zscir("data", "inspect", tmp_path / name, "--grid", tmp_path / "g.png"), name)
