"""The CLI error rule (issue 14 §4): user mistakes and bad data give one `error:` line and exit 2.

A traceback appears only with the global ``--debug`` flag or for a real bug. Runs the real ``zscir`` app
in-process (typer's CliRunner), on tiny synthetic benchmark roots and a tiny-clip-test index.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hostile_data import make_circo, make_cirr, make_fiq
from test_indexer import MODEL, make_photos

runner = CliRunner()


def zscir(*args: str):
    from zscir.cli import app

    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(res, *needles: str) -> str:
    """Exit 2, exactly one `error:` line on stderr (log warnings aside), no traceback; returns the line."""
    text = res.output + (res.stderr or "")
    assert "Traceback" not in text, text
    assert res.exit_code == 2, (res.exit_code, text, res.exception)
    lines = [ln for ln in res.stderr.splitlines()  # log records and notes (e.g. "random weights") aside
             if ln.strip() and " WARNING " not in ln and not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-errors")
    return {"cirr": make_cirr(tmp / "cirr"), "circo": make_circo(tmp / "circo"), "fashioniq": make_fiq(tmp / "fiq"),
            "tmp": tmp}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli-index")
    photos = tmp / "photos"
    ids = make_photos(photos, n=4)
    res = zscir("index", photos, "--out", tmp / "idx", "--model", MODEL, "--batch-size", "4")
    assert res.exit_code == 0, res.output
    return photos, tmp / "idx", ids


def _eval(roots, benchmark: str, *extra: str):
    return zscir("eval", "--benchmark", benchmark, "--data-root", roots[benchmark], "--method", "image",
                 "--model", MODEL, "--no-progress", "--cache-dir", roots["tmp"] / "cache", *extra)


def test_eval_runs_on_the_tiny_roots(roots):
    for b in ("cirr", "circo", "fashioniq"):
        res = _eval(roots, b)
        assert res.exit_code == 0, (b, res.output, res.exception)


@pytest.mark.parametrize("bench, extra, needles", [
    ("fashioniq", ["--split", "test1"], ["unknown FashionIQ split 'test1'"]),
    ("circo", ["--split", "test1"], ["unknown CIRCO split 'test1'"]),
    ("cirr", ["--split", "test1"], ["no public ground truth"]),
    ("cirr", ["--limit", "0"], ["--limit"]),
    ("cirr", ["--batch-size", "0"], ["--batch-size"]),
    ("cirr", ["--flag", "bogus=1"], ["unknown protocol flag(s) for cirr: bogus"]),
    ("cirr", ["--device", "bogus"], ["'bogus' is not a device"]),
    ("cirr", ["--device", "cuda:7"], ["cuda:7"]),
    ("cirr", ["-O", "weight=abc"], ["invalid option"]),
    ("cirr", ["-o", "weight=abc"], ["names the output", "--option/-O"]),  # old habit: -o is the output now
    ("cirr", ["--output", "MISSING/r.json"], ["missing-folder", "does not exist"]),
])
def test_eval_mistakes(roots, bench, extra, needles, tmp_path):
    extra = [e.replace("MISSING", str(tmp_path / "missing-folder")) for e in extra]
    if "cuda:7" in extra:
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    if "weight=abc" in extra:
        extra = ["-m", "sum", *extra]
    assert_one_error_line(_eval(roots, bench, *extra), *needles)
    assert not (tmp_path / "missing-folder").exists()


def test_eval_output_on_a_full_disk_is_one_line(roots):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    assert_one_error_line(_eval(roots, "circo", "--output", "/dev/full"), "/dev/full", "No space left on device")


def test_debug_shows_the_traceback(roots):
    res = zscir("--debug", "eval", "--benchmark", "cirr", "--data-root", roots["cirr"], "--method", "image",
                "--model", MODEL, "--limit", "2", "--flag", "bogus=1")
    assert res.exit_code != 0 and isinstance(res.exception, ValueError)


def test_debug_shows_the_traceback_of_a_commands_own_error_line(tmp_path):
    """`zscir search` turns a missing index into one line itself (not through the group's rule); with
    ``--debug`` that error's traceback is shown instead."""
    args = ("search", tmp_path / "nothing-here", "--image", "x.jpg", "--text", "a cat")
    assert_one_error_line(zscir(*args), "nothing-here")
    res = zscir("--debug", *args)
    assert res.exit_code != 0 and res.exception is not None and not isinstance(res.exception, SystemExit)


def test_submit_and_validate_data_errors(roots, tmp_path):
    bad = tmp_path / "cirr"
    import shutil

    shutil.copytree(roots["cirr"], bad)
    p = bad / "captions" / "cap.rc2.test1.json"
    data = json.loads(p.read_text())
    data[1]["pairid"] = data[0]["pairid"]
    p.write_text(json.dumps(data))
    res = zscir("submit", "-b", "cirr", "--data-root", bad, "-m", "image", "--model", MODEL, "--out-dir",
                tmp_path / "sub", "--no-progress")
    assert_one_error_line(res, "cap.rc2.test1.json", "pairids occur more than once")
    sub = tmp_path / "s.json"
    sub.write_text("[" * 50_000 + "]" * 50_000)
    res = zscir("validate-submission", sub, "-b", "circo")
    assert res.exit_code == 1 and "nested too deeply" in res.output and "Traceback" not in res.output
    res = zscir("validate-submission", sub, "-b", "circo", "--data-root", tmp_path / "nope")
    assert res.exit_code == 1 or res.exit_code == 2
    assert "Traceback" not in res.output + res.stderr


@pytest.mark.parametrize("extra, needles", [
    (["--max-file-mb", "nan"], ["--max-file-mb", "nan"]),
    (["--max-file-mb", "inf"], ["--max-file-mb", "inf"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--device", "bogus"], ["bogus"]),
    (["--report", "MISSING/report.json"], ["missing-folder", "does not exist"]),
])
def test_index_mistakes_fail_before_writing(tmp_path, extra, needles):
    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    out = tmp_path / "idx"
    extra = [e.replace("MISSING", str(tmp_path / "missing-folder")) for e in extra]
    assert_one_error_line(zscir("index", photos, "--out", out, "--model", MODEL, *extra), *needles)
    assert not (tmp_path / "missing-folder").exists()
    assert not out.exists(), "the index was written before the mistake was reported"


def test_index_out_at_a_regular_file_or_unwritable(tmp_path):
    photos = tmp_path / "photos"
    make_photos(photos, n=2)
    f = tmp_path / "file.txt"
    f.write_text("keep me")
    assert_one_error_line(zscir("index", photos, "--out", f, "--model", MODEL), "file.txt")
    assert f.read_text() == "keep me"
    assert_one_error_line(zscir("index", photos, "--out", "/proc/zscir-idx", "--model", MODEL), "/proc")


def test_index_disk_full_is_one_line_and_the_index_stays_consistent(tmp_path, monkeypatch):
    from zscir.index.store import EmbeddingStore

    photos, out = tmp_path / "photos", tmp_path / "idx"
    make_photos(photos, n=3)
    assert zscir("index", photos, "--out", out, "--model", MODEL).exit_code == 0
    make_photos(photos, n=3, start=3)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    line = assert_one_error_line(zscir("index", photos, "--out", out, "--model", MODEL), "No space left on device")
    assert "free some space" in line
    monkeypatch.undo()
    assert len(EmbeddingStore.load(out)) == 3  # the last committed generation


@pytest.mark.parametrize("extra, needles", [
    (["-m", "fusiondiff"], ["embed_dim"]),
    (["-O", "weight=abc"], ["invalid option"]),
    (["-O", "weight"], ["KEY=VALUE"]),
    (["--device", "cuda:7"], ["cuda:7"]),
    (["--grid", "GRIDDIR/missing-folder/g.png"], ["missing-folder", "does not exist"]),
    (["--grid", "GRIDDIR/g.unknownext"], ["unknown image file extension"]),
    (["-k", "0"], ["-k"]),
])
def test_search_mistakes(index, tmp_path, extra, needles):
    photos, idx, ids = index
    extra = [e.replace("GRIDDIR", str(tmp_path)) for e in extra]
    assert_one_error_line(zscir("search", idx, "-i", ids[0], "-t", "red", *extra), *needles)
    assert not list(tmp_path.iterdir())


def test_search_missing_reference_and_index(index, tmp_path):
    _, idx, _ = index
    assert_one_error_line(zscir("search", idx, "-i", tmp_path / "nope.png", "-t", "red"), "nope.png")
    assert_one_error_line(zscir("search", tmp_path / "no-index", "-i", "x.png", "-t", "red"), "no-index")


def test_error_lines_escape_hostile_names(index, tmp_path):
    """ANSI escapes, newlines and undecodable bytes in a name are printed escaped, on one line."""
    _, idx, _ = index
    for name, escaped in (("\x1b[31mred\x1b[0m.png", "\\u001b[31mred"), ("new\nline.png", "new\\nline.png"),
                          (os.fsdecode(b"caf\xe9.png"), "caf\\xe9.png")):
        res = zscir("search", idx, "-i", str(tmp_path / name), "-t", "red")
        line = assert_one_error_line(res, escaped)
        assert "\x1b" not in res.stderr


def test_error_message_of_os_errors_names_the_file():
    from zscir.cli.common import error_message

    msg = error_message(OSError(errno.ENOSPC, "No space left on device", "/x/\x1bidx/seg.npz"))
    assert msg.startswith("/x/\\u001bidx/seg.npz: No space left on device; ") and "free some space" in msg
    assert error_message(PermissionError(errno.EACCES, "Permission denied", "/root/x")) == \
        "/root/x: Permission denied"
