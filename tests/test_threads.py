"""The thread choice (`zscir.threads`): usable cores from affinity and cgroup files, idle cores from /proc/stat,
one thread per query, never more batch threads than idle usable cores, ``--threads`` always wins, and every
command that runs torch takes ``--threads`` and records its choice. Properties only, on made-up files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from zscir import threads as T


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    """Each test starts without OMP_NUM_THREADS, a pinned count or a cached idle measurement, and leaves
    torch's thread count as it found it."""
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    T.reset_pinned()
    T.forget_idle_measurement()
    yield
    torch.set_num_threads(before)
    T.reset_pinned()
    T.forget_idle_measurement()


def _cgroup(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            p.mkdir()  # a folder where a file is expected: unreadable
        else:
            p.write_text(text)
    pc = tmp_path / "proc-self-cgroup"
    pc.write_text(proc)
    return root, pc


# ------------------------------------------------------------------------------------------ cgroup quota
V2 = "0::/user.slice/job\n"
V1 = "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n"


@pytest.mark.parametrize("proc, files, expected", [
    (V2, {"cpu.max": "max 100000\n"}, None),
    (V2, {"cpu.max": "150000 100000\n"}, 1.5),
    (V2, {"user.slice/job/cpu.max": "400000 100000", "user.slice/cpu.max": "200000 100000"}, 2.0),  # parent wins
    (V2, {"user.slice/job/cpu.max": "50000 100000", "cpu.max": "max 100000"}, 0.5),
    (V1, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "250000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}, 2.5),
    (V1, {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    (V1, {"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3.0),  # container view: root
    ("", {"cpu.max": "200000 100000"}, 2.0),  # no /proc/self/cgroup lines: the root's file still counts
])
def test_cgroup_quota_is_read_from_the_process_cgroup_and_its_ancestors(tmp_path, proc, files, expected):
    root, pc = _cgroup(tmp_path, proc, files)
    got = T.cgroup_cpu_limit(root, pc)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("text", [
    "", "garbage", "max", "0 100000", "-5 100000", "100000 0", "abc def", "1e400 1", "nan 100000",
    "100000 -1", "\x00\x01", "   ", "100000", "200000 100000 extra"[:6],
])
def test_malformed_cpu_max_counts_as_no_limit(tmp_path, text):
    root, pc = _cgroup(tmp_path, V2, {"user.slice/job/cpu.max": text})
    assert T.cgroup_cpu_limit(root, pc) is None
    assert T.usable_cores({0, 1, 2}, root, pc) == 3


@pytest.mark.parametrize("quota, period", [("", "100000"), ("x", "100000"), ("100000", ""), ("100000", "0"),
                                           ("0", "100000"), ("-1", "-1"), ("1e999", "1")])
def test_malformed_v1_quota_counts_as_no_limit(tmp_path, quota, period):
    root, pc = _cgroup(tmp_path, V1, {"cpu/docker/abc/cpu.cfs_quota_us": quota,
                                      "cpu/docker/abc/cpu.cfs_period_us": period})
    assert T.cgroup_cpu_limit(root, pc) is None


@pytest.mark.parametrize("proc", [
    "", "garbage\n", "0::\n", "0::/../../etc\n", "::::\n", "4:cpu:/../..\n", "\x00:cpu:/x\n",
    "0::/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p\n",
])
def test_hostile_proc_self_cgroup_never_raises_or_leaves_the_root(tmp_path, proc):
    root, pc = _cgroup(tmp_path, proc, {"cpu.max": "100000 100000"})
    (tmp_path / "cpu.max").write_text("1000 100000")  # outside the root: must never be read
    assert T.cgroup_cpu_limit(root, pc) == pytest.approx(1.0)


def test_unreadable_files_count_as_no_limit(tmp_path):
    root, pc = _cgroup(tmp_path, V2, {"cpu.max": None})  # a folder, not a file
    assert T.cgroup_cpu_limit(root, pc) is None
    assert T.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing-proc") is None


@pytest.mark.parametrize("affinity, quota, expected", [
    ({0, 1, 2, 3, 4, 5, 6, 7}, "250000 100000", 2), ({0, 1}, "800000 100000", 2), ({0}, None, 1),
    (set(), None, 1), ({0, 1, 2}, "10000 100000", 1), (set(range(64)), None, 64),
])
def test_usable_cores_is_affinity_reduced_to_the_quota_and_at_least_one(tmp_path, affinity, quota, expected):
    root, pc = _cgroup(tmp_path, V2, {"cpu.max": quota} if quota else {})
    assert T.usable_cores(affinity, root, pc) == expected


def test_usable_cores_of_this_process_is_within_its_affinity():
    import os

    n = T.usable_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))


# ------------------------------------------------------------------------------------------ idle cores
def _stat(*cpus: tuple[int, int]) -> str:
    """/proc/stat text with per-CPU (busy, idle) jiffies."""
    lines = ["cpu  1 2 3 4 5 6 7 8 9 10"]
    for i, (busy, idle) in enumerate(cpus):
        lines.append(f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0")
    return "\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n"


@pytest.mark.parametrize("first, second, affinity, expected", [
    (((0, 0), (0, 0)), ((10, 90), (90, 10)), {0, 1}, 1.0),
    (((0, 0), (0, 0)), ((10, 90), (90, 10)), {0}, 0.9),
    (((0, 0), (0, 0)), ((0, 100), (0, 100)), {0, 1}, 2.0),
    (((0, 0), (0, 0)), ((100, 0), (100, 0)), {0, 1}, 0.0),
    (((5, 5), (5, 5)), ((5, 5), (5, 5)), {0, 1}, None),  # no time passed: unknown
    (((0, 0),), ((0, 100), (0, 100)), {0, 1}, 1.0),  # a CPU that appeared meanwhile is skipped
])
def test_idle_cores_from_two_snapshots(tmp_path, monkeypatch, first, second, affinity, expected):
    stat = tmp_path / "stat"
    stat.write_text(_stat(*first))
    monkeypatch.setattr(T.time, "sleep", lambda s: stat.write_text(_stat(*second)))
    got = T.idle_cores(stat=stat, affinity=affinity, reuse_s=0)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("text", ["", "garbage", "cpu0 a b c d e\n", "cpuX 1 2 3 4 5\n", "cpu0 1 2\n"])
def test_malformed_proc_stat_gives_unknown(tmp_path, monkeypatch, text):
    stat = tmp_path / "stat"
    stat.write_text(text)
    monkeypatch.setattr(T.time, "sleep", lambda s: None)
    assert T.idle_cores(stat=stat, affinity={0}, reuse_s=0) is None
    assert T.idle_cores(stat=tmp_path / "missing", affinity={0}, reuse_s=0) is None


def test_idle_measurement_is_reused_then_forgotten(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    state = {"second": _stat((0, 100))}
    stat.write_text(_stat((0, 0)))
    monkeypatch.setattr(T.time, "sleep", lambda s: stat.write_text(state["second"]))
    assert T.idle_cores(stat=stat, affinity={0}) == pytest.approx(1.0)
    stat.write_text(_stat((0, 0)))
    state["second"] = _stat((100, 0))
    assert T.idle_cores(stat=stat, affinity={0}) == pytest.approx(1.0)  # reused within IDLE_REUSE_S
    T.forget_idle_measurement()
    assert T.idle_cores(stat=stat, affinity={0}) == pytest.approx(0.0)


# ------------------------------------------------------------------------------------------ the choice
GRID = [(u, i, c) for u in (1, 2, 4, 16, 64) for i in (None, 0.0, 0.5, 0.85, 1.9, 3.0, 70.0) for c in (1, 2, 8, 64)]


@pytest.mark.parametrize("usable, idle, cap", GRID)
def test_batch_threads_never_exceed_idle_usable_cores_or_the_cap(usable, idle, cap):
    c = T.choose_threads("batch", usable=usable, idle=idle, cap=cap, measure_idle=False)
    assert c.kind == "batch" and c.source == "default" and c.usable_cores == usable
    assert 1 <= c.threads <= min(usable, cap, T.MAX_BATCH_THREADS)
    if idle is not None:
        assert c.threads <= max(1, math.floor(idle + 1 - T.IDLE_SHARE))  # only cores that were mostly idle
        if idle >= usable and cap >= usable:
            assert c.threads == min(usable, T.MAX_BATCH_THREADS)  # an idle machine: every usable core
    elif cap >= usable:
        assert c.threads == min(usable, T.MAX_BATCH_THREADS)


@pytest.mark.parametrize("local, world, usable, expected", [
    ("2", None, 8, 4), (None, "4", 8, 2), ("3", "6", 8, 2), (None, "16", 8, 1), ("0", "2", 8, 4),
    ("x", None, 8, 8), ("", "", 8, 8), ("-2", None, 8, 8), ("2", None, 1, 1),
])
def test_data_parallel_processes_share_the_cores(monkeypatch, local, world, usable, expected):
    """Every process of a torchrun launch chooses at the same moment: together they must not oversubscribe."""
    for var, value in (("LOCAL_WORLD_SIZE", local), ("WORLD_SIZE", world)):
        if value is not None:
            monkeypatch.setenv(var, value)
    c = T.choose_threads("batch", usable=usable, idle=float(usable), cap=64)
    assert c.threads == expected
    assert T.choose_threads("query", usable=usable).threads == 1


@pytest.mark.parametrize("usable", [1, 2, 8, 128])
def test_a_single_query_gets_one_thread(usable):
    c = T.choose_threads("query", usable=usable)
    assert (c.threads, c.source) == (1, "default")


@pytest.mark.parametrize("kind", T.KINDS)
@pytest.mark.parametrize("requested", [1, 3, 17])
def test_requested_threads_always_win(kind, requested, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    c = T.choose_threads(kind, requested, usable=2, idle=0.0)
    assert (c.threads, c.source) == (requested, "--threads")


@pytest.mark.parametrize("kind", T.KINDS)
def test_zero_leaves_torchs_default_and_negative_is_refused(kind):
    assert T.choose_threads(kind, 0, usable=4).threads is None
    with pytest.raises(ValueError, match="--threads"):
        T.choose_threads(kind, -1)
    with pytest.raises(ValueError, match="kind"):
        T.choose_threads("bulk")


@pytest.mark.parametrize("env, expected", [("3", 3), (" 2 ", 2), ("4,2", 4), ("0", None), ("-2", None),
                                           ("", None), ("abc", None), ("1.5", None), ("\x7f", None)])
@pytest.mark.parametrize("kind", T.KINDS)
def test_omp_num_threads_is_an_explicit_choice_when_valid(monkeypatch, env, expected, kind):
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    c = T.choose_threads(kind, usable=8, idle=8.0, cap=8)
    if expected is None:
        assert c.source == "default"
    else:
        assert (c.threads, c.source) == (expected, "OMP_NUM_THREADS")


def test_use_threads_sets_torch_and_faiss_and_returns_what_it_set():
    c = T.use_threads("batch", 2)
    assert torch.get_num_threads() == c.threads == 2 and c.as_dict()["source"] == "--threads"
    faiss = pytest.importorskip("faiss")
    T.use_threads("query", 1)
    assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1


def test_query_threads_runs_with_one_thread_and_restores_the_callers_setting():
    torch.set_num_threads(2)
    with T.query_threads() as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with T.query_threads(2) as n:
        assert n == 2
    T.use_threads("query", 2)  # --threads 2 pins the count: a query keeps it
    torch.set_num_threads(2)
    with T.query_threads() as n:
        assert n == 2
    with pytest.raises(RuntimeError):  # restored on errors too
        with T.query_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_trainers_record_the_count_they_use():
    from zscir.train.common import set_threads

    assert set_threads(1) == 1 == torch.get_num_threads()
    n = set_threads(None)
    assert isinstance(n, int) and 1 <= n <= T.usable_cores() and torch.get_num_threads() == n


# ------------------------------------------------------------------------------------------ the commands
def _params(cmd) -> set[str]:
    import typer

    return {o for p in typer.main.get_command(cmd).params for o in getattr(p, "opts", [])}


@pytest.mark.parametrize("path", [
    ["search"], ["index"], ["serve"], ["eval"], ["demo"], ["submit"], ["viz", "fused"], ["sweep"],
    ["data", "make-triplets"], ["train", "clip"], ["train", "lit"], ["train", "tscir-stage1"],
    ["train", "tscir-stage2"], ["train", "fusiondiff-prior"], ["train", "fusiondiff-adapter"], ["bench"],
])
def test_every_command_that_runs_torch_takes_threads(path):
    import typer

    from zscir.cli import app

    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert "--threads" in opts, path


def _photos(folder: Path, n: int = 6) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 32), (40 * i, 255 - 30 * i, 90)).save(folder / f"p{i}.png")


def test_index_records_its_thread_choice_and_search_answers_with_threads(tmp_path):
    from typer.testing import CliRunner

    from zscir.cli import app

    _photos(tmp_path / "photos")
    r = CliRunner().invoke(app, ["index", str(tmp_path / "photos"), "-o", str(tmp_path / "idx"),
                                 "--model", "tiny-clip-test", "--threads", "1"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "idx" / "manifest.json").read_text())["indexer"]["threads"]
    assert rec["torch"] == rec["threads"] == 1 and rec["source"] == "--threads" and rec["kind"] == "batch"
    for extra in ([], ["--threads", "2"]):
        r = CliRunner().invoke(app, ["search", str(tmp_path / "idx"), "--image", "p0.png", "--text", "red",
                                     "-k", "3", *extra])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["search", str(tmp_path / "idx"), "--image", "p0.png", "--text", "red",
                                 "--threads", "-1"])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "Traceback" not in r.output


def test_eval_records_its_thread_choice(tmp_path, small_world_root):
    from typer.testing import CliRunner

    from zscir.cli import app

    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["eval", "--benchmark", "cirr", "--data-root", str(small_world_root / "cirr"),
                                 "-m", "image", "--model", "tiny-clip-test", "--limit", "3", "--no-progress",
                                 "--threads", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())["threads"]
    assert (rec["threads"], rec["source"], rec["kind"]) == (1, "--threads", "batch") and rec["usable_cores"] >= 1


def test_python_api_search_leaves_the_callers_thread_count(tmp_path):
    """A program that imports zscir keeps its own torch setting; the query itself runs on one thread."""
    from zscir.index.build import IndexConfig, build_index
    from zscir.index.retriever import Retriever
    from zscir.index.store import EmbeddingStore
    from zscir.methods import create_composer

    _photos(tmp_path / "photos")
    composer = create_composer("sum", model="tiny-clip-test")
    build_index(tmp_path / "photos", tmp_path / "idx", composer, model="tiny-clip-test",
                config=IndexConfig(progress=False))
    seen = []
    real = composer.encode_queries

    def spy(*a, **kw):
        seen.append(torch.get_num_threads())
        return real(*a, **kw)

    composer.encode_queries = spy
    torch.set_num_threads(2)
    hits = Retriever(EmbeddingStore.load(tmp_path / "idx"), composer).search(tmp_path / "photos" / "p1.png", "x", k=3)
    assert len(hits) == 3 and seen == [1] and torch.get_num_threads() == 2
