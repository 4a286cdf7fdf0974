"""Partitioned indexing (issue 24 §1), engine-independent: fixed partition ids, done markers, resume, atomicity.

The local engine (this process, or `--jobs K` processes) and the Slurm door (`--partition I`,
``SLURM_ARRAY_TASK_ID``) go through the same `embed_partition`; the Ray engine is tested in
tests/test_index_ray.py. Equality with the single-process index: same ids, float32 embeddings within 1e-5
(partitions batch the pictures differently from one run over the folder, so bit-identity is not promised).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from test_cli_errors import assert_one_error_line, zscir
from test_indexer import MODEL, cfg, make_photos
from zscir.index.build import build_index
from zscir.index.folder_source import FolderSource
from zscir.index.merge import merge_indexes
from zscir.index.partitions import (PartitionJob, embed_partition, parse_partition, prepare_out, run_partitions,
                                    slurm_partition)
from zscir.index.shards import PLAN_FILE, ShardSet, done_marker_name, open_index, partition_name, shard_of
from zscir.index.sources import SourceError, SourceRecord, open_index_source
from zscir.index.store import EmbeddingStore, StoreError
from zscir.methods import create_composer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def composer():
    torch.manual_seed(0)
    return create_composer("sum", model=MODEL)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """24 pictures, a broken one and an unsupported one; plus the single-process index of the folder."""
    root = tmp_path_factory.mktemp("partitions")
    folder = root / "photos"
    ids = make_photos(folder, n=24)
    (folder / "sub0" / "broken.png").write_bytes(b"\x89PNG but not really")
    (folder / "drawing.svg").write_text("<svg/>")
    return folder, ids


@pytest.fixture(scope="module")
def single(photos, composer, tmp_path_factory):
    folder, _ = photos
    out = tmp_path_factory.mktemp("single") / "idx"
    build_index(folder, out, composer, model=MODEL, config=cfg())
    return EmbeddingStore.load(out)


def job_for(folder, out, n, **kw) -> PartitionJob:
    return PartitionJob(str(folder), str(out), n, model=MODEL, batch_size=kw.pop("batch_size", 4), **kw)


def assert_equals_single(out: Path, single: EmbeddingStore) -> None:
    got = open_index(out)
    assert sorted(got.ids) == sorted(single.ids) and len(set(got.ids)) == len(got.ids)  # each id exactly once
    stores = got.stores if isinstance(got, ShardSet) else [got]
    emb = np.concatenate([np.asarray(s.embeddings, dtype=np.float32) for s in stores])
    ref = np.asarray(single.embeddings, dtype=np.float32)[[single.index_of(x) for x in got.ids]]
    np.testing.assert_allclose(emb, ref, atol=1e-5, rtol=0)
    assert sorted(s["id"] for s in got.manifest["skipped"]) == sorted(s["id"] for s in single.manifest["skipped"])


# ------------------------------------------------------------------------------------------ the folder source
@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_folder_partitions_are_deterministic_disjoint_and_complete(photos, n):
    folder, ids = photos
    src = open_index_source(str(folder))
    assert src.kind == "folder" and isinstance(src, FolderSource)
    parts = [[r.id for r in src.iter_partition(i, n)] for i in range(n)]
    again = [[r.id for r in FolderSource(folder).iter_partition(i, n)] for i in range(n)]
    assert parts == again  # same ids, same order, every call and every process
    flat = [x for p in parts for x in p]
    assert len(flat) == len(set(flat)) and set(flat) == set(ids) | {"sub0/broken.png", "drawing.svg"}
    for i, p in enumerate(parts):
        assert all(shard_of(x, n) == i for x in p)


@pytest.mark.parametrize("i,n", [(0, 3), (1, 3), (2, 3), (1, 2)])
def test_partition_i_of_n_is_the_shard_i_of_n(photos, composer, tmp_path, i, n):
    folder, _ = photos
    shard = build_index(folder, tmp_path / "shard", composer, model=MODEL, config=cfg(shard=(i, n)))
    assert shard.indexed == len(EmbeddingStore.load(tmp_path / "shard"))
    job = job_for(folder, tmp_path / "out", n)
    rep = run_partitions(job, only=[i], composers=[composer])
    assert rep.embedded == [i] and not rep.complete
    part = EmbeddingStore.load(tmp_path / "out" / partition_name(i))
    assert sorted(part.ids) == sorted(EmbeddingStore.load(tmp_path / "shard").ids)
    assert part.manifest["shard"] == [i, n] and part.manifest["partition"] == [i, n]


def test_unreadable_pictures_are_listed_not_indexed(photos, composer, tmp_path):
    folder, ids = photos
    run_partitions(job_for(folder, tmp_path / "out", 3), composers=[composer])
    got = open_index(tmp_path / "out")
    codes = {s["id"]: s["code"] for s in got.manifest["skipped"]}
    assert codes == {"sub0/broken.png": "not_an_image", "drawing.svg": "unsupported_format"}
    assert sorted(got.ids) == ids


# ------------------------------------------------------------------------------------------ markers, resume
def test_local_run_equals_the_single_process_index_and_rerun_does_nothing(photos, composer, single, tmp_path):
    folder, _ = photos
    out = tmp_path / "out"
    rep = run_partitions(job_for(folder, out, 4), composers=[composer])
    assert rep.complete and rep.embedded == [0, 1, 2, 3] and rep.indexed == len(single)
    for i in range(4):
        marker = json.loads((out / done_marker_name(i)).read_text())
        assert marker["partition"] == i and marker["of"] == 4
        assert marker["indexed"] == len(EmbeddingStore.load(out / partition_name(i)))
    assert not (out / ".work").exists()
    assert_equals_single(out, single)
    again = run_partitions(job_for(folder, out, 4), composers=[composer])
    assert again.embedded == [] and again.already_done == [0, 1, 2, 3] and again.indexed == 0


def test_resume_embeds_only_the_partitions_without_a_marker(photos, composer, single, tmp_path):
    folder, _ = photos
    out = tmp_path / "out"
    run_partitions(job_for(folder, out, 5), composers=[composer])
    (out / done_marker_name(1)).unlink()  # killed between the rename and the marker: redone, not doubled
    import shutil

    shutil.rmtree(out / partition_name(3))  # never written
    (out / done_marker_name(3)).unlink()
    with pytest.raises(StoreError, match="not indexed yet"):
        open_index(out)  # an unfinished run is not searched as if it were complete
    rep = run_partitions(job_for(folder, out, 5), composers=[composer])
    assert rep.embedded == [1, 3] and rep.already_done == [0, 2, 4] and rep.complete
    assert_equals_single(out, single)


def test_a_failing_partition_leaves_no_trace_and_the_rest_is_kept(photos, composer, single, tmp_path, monkeypatch):
    folder, _ = photos
    out = tmp_path / "out"
    real = FolderSource.iter_partition

    def broken(self, i, n):
        for k, rec in enumerate(real(self, i, n)):
            if i == 2 and k == 2:
                raise OSError("disk went away")
            yield rec

    monkeypatch.setattr(FolderSource, "iter_partition", broken)
    with pytest.raises(OSError, match="disk went away"):
        run_partitions(job_for(folder, out, 4), composers=[composer])
    assert (out / done_marker_name(0)).is_file() and (out / done_marker_name(1)).is_file()
    assert not (out / partition_name(2)).exists() and not (out / done_marker_name(2)).exists()
    assert not any((out / ".work").iterdir())  # the work folder of the failed partition is gone
    monkeypatch.setattr(FolderSource, "iter_partition", real)
    rep = run_partitions(job_for(folder, out, 4), composers=[composer])
    assert rep.embedded == [2, 3] and rep.complete
    assert_equals_single(out, single)


def test_a_partition_published_without_its_marker_is_redone_once(photos, composer, tmp_path):
    folder, _ = photos
    job = job_for(folder, tmp_path / "out", 2)
    prepare_out(job, job.open_source())
    first = embed_partition(job, 0, [composer])
    (tmp_path / "out" / done_marker_name(0)).unlink()  # the first writer "died" before its marker
    second = embed_partition(job, 0, [composer])  # redoes it, replacing the unmarked copy
    assert not first.already_done and not second.already_done and first.indexed == second.indexed
    assert embed_partition(job, 0, [composer]).already_done
    assert set(os.listdir(tmp_path / "out")) == {".work", done_marker_name(0), partition_name(0), PLAN_FILE}


def test_two_writers_of_one_partition_publish_one_copy(photos, composer, tmp_path):
    """A Ray retry racing its original: the writer that finishes second drops its own copy."""
    folder, _ = photos
    job = job_for(folder, tmp_path / "out", 2)
    prepare_out(job, job.open_source())
    inner = []

    class Racing(FolderSource):
        def iter_partition(self, i, n):
            yield from super().iter_partition(i, n)
            inner.append(embed_partition(job, i, [composer]))  # the other writer publishes first

    outer = embed_partition(job, 1, [composer], Racing(folder))
    assert not inner[0].already_done and outer.already_done
    assert EmbeddingStore.load(tmp_path / "out" / partition_name(1)).count == inner[0].indexed
    assert not any((tmp_path / "out" / ".work").iterdir())


def test_local_processes_equal_the_single_process_index(photos, single, tmp_path):
    folder, _ = photos
    rep = run_partitions(job_for(folder, tmp_path / "out", 3, torch_threads=1), jobs=2)
    assert rep.complete and sorted(rep.embedded) == [0, 1, 2]
    assert_equals_single(tmp_path / "out", single)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_driver_rerun_finishes_the_rest(photos, single, tmp_path, sig):
    """SIGKILL (or Ctrl-C) the `zscir index --partitions` process mid-run; the re-run embeds only the rest."""
    folder, _ = photos
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zscir", "index", str(folder), "--out", str(out), "--partitions", "6",
           "--model", MODEL, "--batch-size", "1", "--throttle", "0.15"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / done_marker_name(1)).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, sig)
    finally:
        proc.wait(60)
    done = {i for i in range(6) if (out / done_marker_name(i)).exists()}
    assert 2 <= len(done) < 6, done  # killed mid-run
    assert {p.name for p in out.glob("part-?????")} == {partition_name(i) for i in done}  # nothing half-published
    if sig == signal.SIGINT:  # Ctrl-C: the partition being written leaves no work folder behind
        assert proc.returncode != 0 and not list((out / ".work").iterdir())
    res = zscir("index", folder, "--out", out, "--partitions", "6", "--report", tmp_path / "rep.json")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert set(rep["embedded"]) == set(range(6)) - done and set(rep["already_done"]) == done
    assert "all 6 partitions done" in res.output
    assert_equals_single(out, single)
    assert not (out / ".work").exists()  # the killed writer's work folder is cleared at the end


# ------------------------------------------------------------------------------------------ Slurm, the CLI
def test_shard_is_a_front_door_to_the_same_partitions(photos, composer, single, tmp_path):
    """`--shard I/N` with a partition option (here --jobs 1) writes partition I of N into the same OUT."""
    folder, _ = photos
    out = tmp_path / "out"
    for i in range(3):
        res = zscir("index", folder, "--out", out, "--shard", f"{i}/3", "--jobs", "1", "--model", MODEL)
        assert res.exit_code == 0, res.output
        assert (out / done_marker_name(i)).is_file() and ("all 3 partitions done" in res.output) == (i == 2)
    assert_equals_single(out, single)


@pytest.mark.parametrize("value,expected", [("0", 0), ("3", 3), (" 2 ", 2), ("", None), (None, None)])
def test_slurm_array_task_id(value, expected):
    env = {} if value is None else {"SLURM_ARRAY_TASK_ID": value}
    assert slurm_partition(4, env) == expected


@pytest.mark.parametrize("value", ["4", "-1", "99", "x", "1.5", "0x1", "1/4", "nan", "٣"])
def test_slurm_array_task_id_out_of_range_is_one_clear_error(value):
    with pytest.raises(ValueError, match="SLURM_ARRAY_TASK_ID.*--array=0-3"):
        slurm_partition(4, {"SLURM_ARRAY_TASK_ID": value})


def test_slurm_array_tasks_build_the_index_one_partition_each(photos, single, tmp_path, monkeypatch):
    folder, _ = photos
    out = tmp_path / "out"
    for i in (2, 0, 1):
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(i))
        res = zscir("index", folder, "--out", out, "--partitions", "3", "--model", MODEL)
        assert res.exit_code == 0, res.output
        assert f"embedded 1 partition(s) of 3" in res.output
        assert (out / done_marker_name(i)).is_file()
        assert ("all 3 partitions done" in res.output) == (i == 1)
    assert_equals_single(out, single)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    res = zscir("index", folder, "--out", out, "--partitions", "3")  # a requeued task: nothing to do
    assert res.exit_code == 0 and "embedded 0 partition(s)" in res.output
    rep = merge_indexes(sorted(out.glob("part-?????")), tmp_path / "merged")  # `zscir index merge` still works
    assert rep.indexed == len(single)


@pytest.mark.parametrize("value", ["-1", "3", "100", "a", "", "1/3", "1.0", "2**2"])
def test_partition_id_out_of_range(photos, tmp_path, value):
    folder, _ = photos
    res = zscir("index", folder, "--out", tmp_path / "out", "--partitions", "3", "--partition", value,
                "--model", MODEL)
    assert_one_error_line(res, "partition")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [0, -1, 10**7, True, "3", 2.5, None])
def test_bad_partition_count_in_python(photos, tmp_path, value):
    folder, _ = photos
    with pytest.raises(ValueError, match="partitions"):
        PartitionJob(str(folder), str(tmp_path / "out"), value)


@pytest.mark.parametrize("methods", [(), [], ("sum", ""), (None,), ("sum", 3)])
def test_bad_methods_in_python(tmp_path, methods):
    with pytest.raises(ValueError, match="method"):
        PartitionJob(str(tmp_path), str(tmp_path / "out"), 2, methods=methods)


def test_one_method_name_is_a_tuple_of_one(tmp_path):
    assert PartitionJob(str(tmp_path), str(tmp_path / "out"), 2, methods="sum").methods == ("sum",)


@pytest.mark.parametrize("value", ["0", "-2", "abc", "1.5", "", "10000000"])
def test_bad_partitions_on_the_command_line(photos, tmp_path, value):
    folder, _ = photos
    res = zscir("index", folder, "--out", tmp_path / "out", "--partitions", value, "--model", MODEL)
    text = res.output + (res.stderr or "")
    assert res.exit_code == 2 and "Traceback" not in text and "partitions" in text.lower()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,needle", [
    (["--shard", "0/3"], "give either --shard or --partition/--partitions"),
    (["--shard", "1/2", "--partition", "1"], "give either --shard or --partition/--partitions"),
    (["--shard", "2/2"], "--shard '2/2': expected I/N"),
    (["--shard", "x"], "--shard 'x': expected I/N"),
    (["--ann", "ivfpq"], "--ann is not for a partitioned run"),
    (["--hash"], "--hash is not for a partitioned run"),
    (["--overwrite"], "--overwrite is not for a partitioned run"),
    (["--engine", "spark"], "--engine 'spark'"),
    (["--ray-address", "auto"], "--ray-address is for --engine ray"),
    (["--jobs", "2", "--partition", "7"], "out of range"),
])
def test_refused_option_mixes(photos, tmp_path, args, needle):
    folder, _ = photos
    extra = [] if "--partition" in args else ["--partitions", "2"]
    res = zscir("index", folder, "--out", tmp_path / "out", *extra, *args, "--model", MODEL)
    assert_one_error_line(res, needle)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ hostile OUT
def _user_folder(tmp_path: Path) -> Path:
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    return user


@pytest.mark.parametrize("case", ["user-folder", "file", "plain-index", "other-plan-format", "corrupt-plan",
                                  "plan-is-a-folder", "other-model", "other-methods", "other-count", "other-source",
                                  "same-as-source", "dangling-link", "foreign-part-folder"])
def test_a_foreign_out_is_refused_and_untouched(photos, composer, tmp_path, case):
    folder, _ = photos
    out = tmp_path / "out"
    n, model, methods, src = 3, MODEL, ("sum",), folder
    if case == "user-folder":
        out = _user_folder(tmp_path)
    elif case == "file":
        out.write_text("a file")
    elif case == "plain-index":
        build_index(folder, out, composer, model=MODEL, config=cfg(shard=(0, 3)))
    elif case == "other-plan-format":
        out.mkdir()
        (out / PLAN_FILE).write_text(json.dumps({"format": "something-else", "partitions": 3}))
    elif case == "corrupt-plan":
        out.mkdir()
        (out / PLAN_FILE).write_text("{not json")
    elif case == "plan-is-a-folder":
        (out / PLAN_FILE).mkdir(parents=True)
    elif case in ("other-model", "other-methods", "other-count", "other-source", "foreign-part-folder"):
        run_partitions(job_for(folder, out, 3), only=[0], composers=[composer])
        if case == "other-model":
            model = "tiny-clip-test-4l"
        elif case == "other-methods":
            methods = ("sum", "image")
        elif case == "other-count":
            n = 4
        elif case == "other-source":
            src = tmp_path / "elsewhere"
            make_photos(src, n=3)
        else:  # a folder the user put where partition 1 goes: never deleted
            (out / partition_name(1)).mkdir()
            (out / partition_name(1) / "mine.txt").write_text("mine")
    elif case == "same-as-source":
        out = folder
    elif case == "dangling-link":
        out.symlink_to(tmp_path / "nowhere" / "deeper")
    before = {p: p.read_bytes() for p in (out.rglob("*") if out.is_dir() else [out]) if p.is_file()}
    job = PartitionJob(str(src), str(out), n, model=model, methods=methods, batch_size=4)
    with pytest.raises((StoreError, SourceError, ValueError)):
        run_partitions(job, composers=[composer] if model == MODEL and methods == ("sum",) else None)
    after = {p: p.read_bytes() for p in (out.rglob("*") if out.is_dir() else [out]) if p.is_file()}
    assert after == before


def test_an_empty_out_and_a_new_nested_out_are_fine(photos, composer, tmp_path):
    folder, _ = photos
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "a" / "b" / "c"):
        assert run_partitions(job_for(folder, out, 2), composers=[composer]).complete


def test_out_inside_the_source_folder_is_not_indexed(tmp_path, composer):
    folder = tmp_path / "photos"
    ids = make_photos(folder, n=6)
    out = folder / "index.zscir"
    run_partitions(job_for(folder, out, 2), composers=[composer])
    again = run_partitions(job_for(folder, out, 2), composers=[composer])
    assert again.embedded == [] and sorted(open_index(out).ids) == ids


def test_a_source_with_a_duplicate_id_is_refused(tmp_path, composer, monkeypatch):
    folder = tmp_path / "photos"
    make_photos(folder, n=4)
    png = (folder / "p000.png").read_bytes()

    def twice(self, i, n):
        yield SourceRecord("same", png)
        yield SourceRecord("same", png)

    monkeypatch.setattr(FolderSource, "iter_partition", twice)
    with pytest.raises(SourceError, match="twice"):
        run_partitions(job_for(folder, tmp_path / "out", 1), composers=[composer])
    assert not (tmp_path / "out" / partition_name(0)).exists()


@pytest.mark.parametrize("value", ["-1", "4", "x", "", "1e3"])
def test_parse_partition_rejects(value):
    with pytest.raises(ValueError, match="partition"):
        parse_partition(value, 4)


# ------------------------------------------------------------------------------------------ Ray stays optional
def test_zscir_index_never_imports_ray(photos, tmp_path):
    folder, _ = photos
    code = ("import sys\nfrom zscir.cli import main\nsys.argv = ['zscir', 'index', sys.argv[1], '--out', sys.argv[2], "
            "'--partitions', '2', '--model', 'tiny-clip-test']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "import zscir.index.partitions, zscir.index.sources\n"
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


def test_missing_ray_is_one_error_line_with_the_install_command(photos, tmp_path, monkeypatch):
    folder, _ = photos
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    res = zscir("index", folder, "--out", tmp_path / "out", "--engine", "ray", "--model", MODEL)
    assert_one_error_line(res, "pip install -c constraints.txt", '".[ray]"')
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ more hostile cases
@pytest.mark.parametrize("i,n", [(-1, 3), (3, 3), (0, 0), (True, 2), (0, True), ("0", 2), (1.0, 2), (0, -4)])
def test_folder_source_rejects_bad_partition_ids(photos, i, n):
    folder, _ = photos
    with pytest.raises(ValueError, match="partition"):
        list(FolderSource(folder).iter_partition(i, n))


@pytest.mark.parametrize("what", ["missing", "file", "fifo"])
def test_a_source_that_is_not_a_folder_is_one_error_line(tmp_path, what):
    src = tmp_path / "src"
    if what == "file":
        src.write_text("just notes")
    elif what == "fifo":
        os.mkfifo(src)
    res = zscir("index", src, "--out", tmp_path / "out", "--partitions", "2", "--model", MODEL)
    assert_one_error_line(res)
    assert not (tmp_path / "out").exists()


def test_searching_an_unfinished_partitioned_index_is_refused(photos, composer, tmp_path):
    folder, _ = photos
    run_partitions(job_for(folder, tmp_path / "out", 3), only=[0, 2], composers=[composer])
    res = zscir("search", tmp_path / "out", "--text", "red")
    assert_one_error_line(res, "1 partition(s) not indexed yet (e.g. 1)")
    assert len(open_index(tmp_path / "out" / partition_name(0))) > 0  # a done partition alone is searchable


@pytest.mark.parametrize("plan", ['{"format": "zscir-partitions", "partitions": "many"}', "[]", "",
                                  '{"format": "zscir-partitions"}'])
def test_a_broken_plan_makes_search_refuse(tmp_path, plan):
    out = tmp_path / "out"
    out.mkdir()
    (out / PLAN_FILE).write_text(plan)
    with pytest.raises(StoreError, match="partition plan"):
        open_index(out)


def test_a_deleted_partition_folder_is_redone(photos, composer, single, tmp_path):
    import shutil

    folder, _ = photos
    out = tmp_path / "out"
    run_partitions(job_for(folder, out, 3), composers=[composer])
    shutil.rmtree(out / partition_name(2))  # the marker stays, the index is gone
    with pytest.raises(StoreError, match="not indexed yet"):
        open_index(out)
    rep = run_partitions(job_for(folder, out, 3), composers=[composer])
    assert rep.embedded == [2] and rep.complete
    assert_equals_single(out, single)


@pytest.mark.parametrize("kind", ["symlink-to-user-folder", "user-file"])
def test_something_in_the_way_of_a_partition_is_never_deleted(photos, composer, tmp_path, kind):
    folder, _ = photos
    out = tmp_path / "out"
    run_partitions(job_for(folder, out, 2), only=[0], composers=[composer])
    user = _user_folder(tmp_path)
    if kind == "symlink-to-user-folder":
        (out / partition_name(1)).symlink_to(user, target_is_directory=True)
    else:
        (out / partition_name(1)).write_text("mine")
    with pytest.raises((StoreError, OSError)):
        run_partitions(job_for(folder, out, 2), composers=[composer])
    assert (user / "thesis.tex").read_text() == "precious"
    assert (out / partition_name(1)).exists() and not (out / done_marker_name(1)).exists()


def test_source_metadata_is_made_safe_and_cannot_change_the_id(tmp_path, composer, monkeypatch):
    folder = tmp_path / "photos"
    make_photos(folder, n=2)
    png = (folder / "p000.png").read_bytes()

    def records(self, i, n):
        yield SourceRecord("k1", png, meta={"id": "evil", "caption": b"\xff\x00bytes", "url": "http://x/1.png",
                                            "nested": {"a": [1]}})
        yield SourceRecord("k2", None, error="fetch failed\x1b[31m", meta={"width": "huge"})

    monkeypatch.setattr(FolderSource, "iter_partition", records)
    run_partitions(job_for(folder, tmp_path / "out", 1), composers=[composer])
    store = open_index(tmp_path / "out")
    item = store.items[0]
    assert item["id"] == "k1" and item["path"] == "http://x/1.png" and isinstance(item["caption"], str)
    assert isinstance(item["nested"], str) and item["width"] > 0
    (bad,) = store.manifest["skipped"]
    assert bad["id"] == "k2" and bad["path"] == "k2" and bad["code"] == "unreadable" and "\x1b" not in bad["reason"]
    hits = store.search(np.asarray(store.embeddings[:1], dtype=np.float32), k=1)
    assert hits[0][0].path == "http://x/1.png"
