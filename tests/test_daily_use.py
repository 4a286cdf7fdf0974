"""Daily use on an ordinary machine: real pictures from package files given as options (errors name the package
and the option), demo outputs that do not overwrite each other, the model note that names lit-clipart, quiet
library bars, progress for long phases, the benchmark suite from any folder and its busy-machine item."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def _invoke(args: list[str]):
    from zscir.cli import app

    return CliRunner().invoke(app, args)


def _one_error_line(r) -> str:
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output
    return errors[0]


# ------------------------------------------------------------------------------------- real package files
def fake_stamps(root: Path, names=("cloud", "dog", "kite", "car", "frog", "heart")) -> Path:
    """A folder laid out like Debian's tuxpaint-stamps-default: PNG stamps, caption .txt, tintable .dat."""
    from PIL import Image, ImageDraw

    for i, n in enumerate(names):
        d = root / ("animals" if i % 2 else "things")
        d.mkdir(parents=True, exist_ok=True)
        im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
        dr = ImageDraw.Draw(im)
        dr.ellipse((8 + i, 8, 56, 56 - i), fill=(90 + 20 * i, 90, 90, 255))
        dr.rectangle((24, 24 + i, 40, 40), fill=(20, 20, 20, 255))
        im.save(d / f"{n}.png")
        (d / f"{n}.txt").write_text(f"A {n}.\nfr.utf8=Un {n}.\n")
        (d / f"{n}.dat").write_text("tintable\n")
    return root


@pytest.mark.parametrize("field, package, option", [
    ("emoji_font", "fonts-noto-color-emoji", "--emoji-font"), ("emoji_test", "unicode-data", "--emoji-test"),
    ("tuxpaint_dir", "tuxpaint-stamps-default", "--tuxpaint-dir"),
    ("openclipart_dir", "openclipart-png", "--openclipart-dir"),
])
def test_a_missing_package_file_names_the_package_and_the_option(tmp_path, field, package, option):
    from zscir.data.real.emoji import read_emoji
    from zscir.data.real.item import SourceMissing
    from zscir.data.real.openclipart import read_openclipart
    from zscir.data.real.sources import RealSources, missing_message
    from zscir.data.real.tuxpaint import read_stamps

    font = tmp_path / "font.ttf"
    font.write_bytes(b"not a font, but present")
    test = tmp_path / "emoji-test.txt"
    test.write_text("# group: x\n")
    missing = tmp_path / "missing"
    readers = {"emoji_font": lambda: read_emoji(missing, test), "emoji_test": lambda: read_emoji(font, missing),
               "tuxpaint_dir": lambda: read_stamps(missing), "openclipart_dir": lambda: read_openclipart(missing)}
    with pytest.raises(SourceMissing) as info:
        list(readers[field]())
    msg = str(info.value)
    assert package in msg and option in msg and str(missing) in msg and msg == missing_message(field, missing)
    assert getattr(RealSources(), field).startswith("/usr/share/")  # Debian's path stays the default


@pytest.mark.parametrize("command", [
    ["eval", "--benchmark", "real", "-m", "image", "--model", "tiny-clip-test"],
    ["demo", "--real", "--model", "tiny-clip-test", "--method", "sum"],
    ["data", "build-benchmark"],
])
@pytest.mark.parametrize("hostile", ["missing", "a-folder-as-font", "newline\nand\x1b[31mansi"])
def test_real_commands_without_packages_fail_in_one_line_naming_packages_and_options(tmp_path, monkeypatch,
                                                                                     command, hostile):
    monkeypatch.chdir(tmp_path)
    font = tmp_path / hostile
    if hostile == "a-folder-as-font":
        font.mkdir()
    args = [*command, "--emoji-font", str(font), "--emoji-test", str(tmp_path / "none.txt"),
            "--tuxpaint-dir", str(tmp_path / "no-stamps")]
    if command[0] == "data":
        args += ["--out", str(tmp_path / "bench")]
    t0 = time.perf_counter()
    line = _one_error_line(_invoke(args))
    for needle in ("fonts-noto-color-emoji", "--emoji-font", "tuxpaint-stamps-default", "--tuxpaint-dir"):
        assert needle in line, line
    assert "\x1b" not in line and time.perf_counter() - t0 < 60  # no model trained, nothing rendered
    assert not (tmp_path / "zscir-demo-real").exists() and not (tmp_path / "bench").exists()


def test_help_of_real_commands_names_the_packages():
    for args in (["demo", "--help"], ["eval", "--help"], ["data", "build-benchmark", "--help"]):
        flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", _invoke(args).output).split())
        for needle in ("--emoji-font", "--tuxpaint-dir", "fonts-noto-color-emoji", "tuxpaint-stamps-default"):
            assert needle in flat, (args, needle)


def test_option_help_names_the_defaults_of_real_sources():
    from zscir.cli import options
    from zscir.data.real.sources import RealSources

    d = RealSources()
    assert d.emoji_font in options.EMOJI_FONT.help and d.emoji_test in options.EMOJI_TEST.help
    assert d.tuxpaint_dir in options.TUXPAINT_DIR.help


def test_real_benchmark_from_package_files_given_as_options(tmp_path):
    stamps = fake_stamps(tmp_path / "stamps")
    out = tmp_path / "r.json"
    r = _invoke(["eval", "--benchmark", "real", "-m", "image", "--model", "tiny-clip-test", "--no-progress",
                 "--emoji-font", str(tmp_path / "none.ttf"), "--tuxpaint-dir", str(stamps), "--threads", "1",
                 "--npm-dir", str(tmp_path / "no-npm"),
                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["benchmark"] == "real" and res["n_queries"]["cirr"] > 0 and res["threads"]["threads"] == 1


def test_a_build_from_other_package_files_is_rebuilt(tmp_path):
    from zscir.data.real.benchmark import RealBenchmarkConfig, build_benchmark, is_built
    from zscir.data.real.sources import RealSources

    a = RealSources.from_options(tuxpaint_dir=fake_stamps(tmp_path / "a"), emoji_font=tmp_path / "none",
                                 npm_dir=tmp_path / "no-npm")
    b = RealSources.from_options(tuxpaint_dir=fake_stamps(tmp_path / "b", names=("cloud", "dog", "kite")),
                                 emoji_font=tmp_path / "none",
                                 npm_dir=tmp_path / "no-npm")
    root, cfg, seen = tmp_path / "root", RealBenchmarkConfig(), []
    for sources in (a, b, b):
        if not is_built(root, cfg, sources):
            build_benchmark(root, cfg, progress=False, sources=sources)
        marker = json.loads((root / "benchmark.json").read_text())
        seen.append((marker["n_gallery"], marker["sources"]["tuxpaint_dir"], (root / "split.json").stat().st_mtime_ns))
    assert seen[0][:2] == (42, str(tmp_path / "a")) and seen[1][:2] == (21, str(tmp_path / "b"))
    assert seen[2] == seen[1]  # the same files: the build is reused, not redone


def test_demo_and_demo_real_write_to_their_own_folders(tmp_path, monkeypatch, small_world_root):
    import zscir.data.world.cache as ew
    from conftest import SMALL_WORLD

    real_ensure = ew.ensure_world_benchmark
    monkeypatch.setattr(ew, "ensure_world_benchmark",
                        lambda world_seed=0, root=None, **kw: real_ensure(world_seed, root, **{**SMALL_WORLD, **kw}))
    monkeypatch.chdir(tmp_path)
    r = _invoke(["demo", "--queries", "1", "--model", "tiny-clip-test", "--method", "sum"])
    assert r.exit_code == 0, r.output
    first = (tmp_path / "zscir-demo" / "results.png").read_bytes()
    stamps = fake_stamps(tmp_path / "stamps")
    r = _invoke(["demo", "--real", "--queries", "1", "--model", "tiny-clip-test", "--method", "sum",
                 "--tuxpaint-dir", str(stamps), "--emoji-font", str(tmp_path / "none.ttf"),
                 "--npm-dir", str(tmp_path / "no-npm")])
    assert r.exit_code == 0, r.output
    assert "zscir-demo-real/results.png" in r.output
    assert (tmp_path / "zscir-demo-real" / "results.html").is_file()
    assert (tmp_path / "zscir-demo" / "results.png").read_bytes() == first  # the world demo's result is kept
    assert "zscir-demo-real/" in (REPO / ".gitignore").read_text().splitlines()


def test_the_world_clip_note_names_lit_clipart_for_icons_and_clip_art(tmp_path):
    from PIL import Image

    from zscir.backbones.registry import real_images_note

    note = real_images_note("world-clip")
    assert "lit-clipart" in note and "clip-art" in note and "hf-hub:" in note
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("RGB", (16, 16), "red").save(pics / "a.png")
    r = _invoke(["index", str(pics), "-o", str(tmp_path / "idx")])
    assert r.exit_code == 0, r.output
    assert "--model lit-clipart" in r.output


# ------------------------------------------------------------------------------------- quiet library bars
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.parametrize("verbose, shown", [([], False), (["-v"], True)])
def test_loading_a_model_prints_no_library_bar_unless_verbose(small_world_root, verbose, shown):
    """`zscir eval` loads the shipped world-clip (a transformers model): no "Loading weights" bar without -v."""
    r = subprocess.run([sys.executable, "-m", "zscir", *verbose, "eval", "--benchmark", "cirr", "--data-root",
                        str(small_world_root / "cirr"), "-m", "image", "--limit", "2", "--no-progress"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert ("Loading weights" in r.stderr) == shown, r.stderr[-2000:]


def test_quiet_bars_apply_when_transformers_loads_later():
    code = ("import sys; from zscir.progress import quiet_library_bars, library_bars_quiet; "
            "assert 'transformers' not in sys.modules; quiet_library_bars(); q = library_bars_quiet(); "
            "import transformers.utils.logging as tl; print(q, tl.is_progress_bar_enabled())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False"]


# ------------------------------------------------------------------------------------- progress of long phases
def test_world_rendering_with_a_bar_gives_the_same_pixels(capsys):
    import numpy as np

    from zscir.data.pairs import get_pair_data

    data = get_pair_data("world", world_seed=1, world_n=620)
    quiet = data.table(32).images
    shown = data.table(32, progress=True).images
    assert np.array_equal(quiet, shown)
    err = capsys.readouterr().err
    assert "render world pairs" in err and "620/620" in err


def test_the_world_benchmark_write_shows_its_progress(tmp_path, capsys):
    from conftest import SMALL_WORLD
    from zscir.data.world.cache import ensure_world_benchmark

    ensure_world_benchmark(5, tmp_path / "w", progress=True, **SMALL_WORLD)
    err = capsys.readouterr().err
    assert "first run only" in err and "write world benchmark" in err
    ensure_world_benchmark(5, tmp_path / "w", progress=True, **SMALL_WORLD)
    assert "write world benchmark" not in capsys.readouterr().err  # cached: nothing to say


# ------------------------------------------------------------------------------------- the benchmark suite
def test_zscir_bench_runs_from_any_folder(tmp_path):
    """`python -m benchmarks` needs the repository root (docs say so); `zscir bench` finds the suite itself."""
    env = _env(PYTHONPATH=str(SRC))  # only src/: the checkout's benchmarks/ is not importable from here
    r = subprocess.run([sys.executable, "-m", "zscir", "bench", "memory", "--tiny", "-o", "out"], cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "memory.json").read_text())["n"] == 20_000
    assert "[1/1] memory" in r.stderr
    perf = (REPO / "docs" / "PERFORMANCE.md").read_text()
    assert "repository root" in perf and "any folder" in perf


def test_zscir_bench_takes_the_suites_options(tmp_path, monkeypatch):
    from benchmarks import suite

    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        (cfg.out_dir / "report.md").write_text("report")

    tmp_path.mkdir(exist_ok=True)
    monkeypatch.setattr(suite, "run_suite", fake_run)
    r = _invoke(["bench", "faiss", "--ann-noise", "1.5", "--ann-indexes", "ivf-flat", "--ann-indexes", "hnsw",
                 "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.items, cfg.ann_noise, cfg.ann_indexes) == (["faiss"], 1.5, ["ivf-flat", "hnsw"])
    r = _invoke(["bench", "faiss", "--tiny", "--ann-indexes", "flat"])
    assert r.exit_code == 2 and "ivf-flat" in r.output


@pytest.mark.parametrize("items, n, elapsed, done, expect", [
    (["search", "busy"], 1, 0.0, 0.0, r"\[1/2\] search \(about 60 s; the suite ends in about 3\.0 min\)"),
    (["search", "busy"], 2, 120.0, 60.0, r"\[2/2\] busy \(about 240 s; the suite ends in about 4\.0 min\)"),
    (["busy"], 1, 5.0, 0.0, r"\[1/1\] busy \(about 120 s; the suite ends in about 2\.0 min\)"),
])
def test_progress_line_scales_the_expected_durations(monkeypatch, items, n, elapsed, done, expect):
    from benchmarks import suite

    monkeypatch.setattr(suite, "EXPECTED_S", {"search": 60, "busy": 120})
    cfg = suite.SuiteConfig(items=items)
    assert re.fullmatch(expect, suite.progress_line(cfg, n, items[n - 1], elapsed, done))
    cfg.tiny = True
    assert suite.progress_line(cfg, n, items[n - 1], elapsed, done) == f"[{n}/{len(items)}] {items[n - 1]}"


def test_every_item_has_an_expected_duration_and_the_docs_state_their_sum():
    from benchmarks import suite

    assert set(suite.EXPECTED_S) == set(suite.ITEMS)
    from zscir.cli.bench import ITEMS

    assert tuple(ITEMS) == tuple(suite.ITEMS)
    total_min = sum(suite.EXPECTED_S.values()) / 60
    perf = (REPO / "docs" / "PERFORMANCE.md").read_text()
    m = re.search(r"default run of all items took about (\d+) min", perf)
    assert m and abs(int(m.group(1)) - total_min) <= 1, (m and m.group(0), total_min)


def test_spinning_processes_stop_even_when_the_block_fails():
    from benchmarks.busy import spinning

    with pytest.raises(RuntimeError):
        with spinning(2, max_s=60):
            assert len(mp.active_children()) >= 2
            raise RuntimeError("interrupted")
    assert not [p for p in mp.active_children() if p.is_alive()]


def test_a_spinning_process_stops_by_itself_at_its_deadline():
    from benchmarks.busy import spin

    t0 = time.perf_counter()
    spin(mp.get_context().Event(), time.time() + 0.2)
    assert time.perf_counter() - t0 < 5


def test_busy_item_runs_in_tiny_mode(tmp_path):
    import torch

    from benchmarks.suite import SuiteConfig, run_suite

    before = torch.get_num_threads()
    out = run_suite(SuiteConfig(items=["busy"], out_dir=tmp_path, tiny=True, repeats=1, command="pytest"))
    rows = out["busy"]["rows"]
    assert {r["job"] for r in rows} == {"search", "train", "index"}
    for r in rows:
        assert r["idle_ms"] > 0 and r["busy_ms"] > 0 and len(r["ratio_per_round"]) == 1  # one round in tiny mode
        assert r["ratio"] == pytest.approx(r["busy_ms"] / r["idle_ms"])
        assert all(int(t) >= 1 for t in r["threads_idle"].split("-") + r["threads_busy"].split("-"))
    assert not [p for p in mp.active_children() if p.is_alive()]  # its spinning processes are gone
    assert torch.get_num_threads() == before
    assert "busy / idle" in (tmp_path / "busy.md").read_text()


@pytest.mark.parametrize("t_idle, t_busy, spinners, cores, bound", [
    (1, 1, 2, 2, 1.5), (2, 1, 2, 2, 3.0), (2, 2, 2, 2, 2.0), (14, 14, 2, 16, 1.0), (16, 16, 2, 16, 18 / 16), (1, 1, 0, 2, 1.0),
    (4, 1, 2, 16, 4.0), (1, 1, 2, 1, 3.0),
])
def test_fair_share_bound(t_idle, t_busy, spinners, cores, bound):
    from benchmarks.busy import fair_share_bound

    assert fair_share_bound(t_idle, t_busy, spinners, cores) == pytest.approx(bound)
