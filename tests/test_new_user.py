"""A new user's first day, scripted (default suite, so CI runs it): what the README and docs tell a user to do.

1. ``zscir --help`` and an argument error answer fast, and importing the CLI imports no torch;
2. the demo runs (on the small world, the placeholder for the full one, which takes a minute to render);
3. README's "Search your own photos" runs *as written* in a placeholder home: ``~/Pictures`` holds world
   images rendered by zscir, among them ``beach.jpg``, the reference of the README's search, which is itself
   indexed; the same query then goes through the CLI, the HTTP server and the Python API, with identical
   results;
4. every ``zscir`` command in README.md and docs/*.md parses (no unknown option, no missing argument), and a
   few run as written with placeholder data (``/data/cirr`` → the small world's CIRR-format files);
5. ``--output`` writes the JSON layout docs/BENCHMARKS.md shows; docs link only files that exist and speak of
   features, not of tracker numbers.

The installation itself is CI's ``.ci/run`` (README's set-up commands).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SMALL_WORLD

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# ------------------------------------------------------------------------------------------- 1. start-up
def _subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def _best_wall(args: list[str], repeats: int = 3) -> tuple[float, subprocess.CompletedProcess]:
    """Best of ``repeats`` wall times (other load on a shared machine only ever adds time)."""
    best, last = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = subprocess.run([sys.executable, "-m", "zscir", *args], capture_output=True, text=True,
                              env=_subprocess_env(), timeout=60)
        best = min(best, time.perf_counter() - t0)
    return best, last


@pytest.mark.parametrize("args, status", [(["--help"], 0), (["eval", "--help"], 0), (["search"], 2)])
def test_help_and_argument_errors_are_fast(args, status):
    wall, r = _best_wall(args)
    assert r.returncode == status, r.stderr
    assert wall < 2.0, f"zscir {' '.join(args)} took {wall:.2f}s (was 11-12 s when every call imported torch)"


def test_importing_the_cli_imports_no_heavy_library():
    code = ("import sys, zscir.cli; "
            "print([m for m in ('torch', 'transformers', 'numpy', 'PIL', 'fastapi') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_subprocess_env(),
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------- 2. the demo
@pytest.fixture
def small_world(monkeypatch, small_world_root):
    """Every world benchmark the CLI asks for becomes the session's small world (placeholder data)."""
    import zscir.data.world.cache as ew

    real = ew.ensure_world_benchmark
    monkeypatch.setattr(ew, "ensure_world_benchmark",
                        lambda world_seed=0, root=None, **kw: real(world_seed, root, **{**SMALL_WORLD, **kw}))
    return small_world_root


def test_demo(tmp_path, small_world, monkeypatch):
    from zscir.cli import app

    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["demo", "--queries", "3"])
    assert r.exit_code == 0, r.output
    hits = re.search(r"(\d+)/3 targets in the top 5", r.output)
    assert hits and int(hits.group(1)) >= 1, r.output  # the shipped model finds world targets
    assert (tmp_path / "zscir-demo" / "results.png").stat().st_size > 0
    assert (tmp_path / "zscir-demo" / "results.html").is_file()
    assert {"zscir-demo/", "zscir-demo-real/"} <= set((REPO / ".gitignore").read_text().splitlines())  # not committed
    from zscir.backbones.lit import default_towers_installed

    assert ("zscir demo --real" in r.output) == default_towers_installed()  # pointed to real pictures when possible


def test_demo_never_overwrites_a_users_files(tmp_path, small_world, monkeypatch):
    """The demo used to write results.png / results.html into any folder, over a user's files of those names."""
    from zscir.cli import app

    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "pictures"
    mine.mkdir()
    (mine / "results.png").write_bytes(b"my own picture")
    (tmp_path / "a-file").write_text("mine")
    for target in (mine, tmp_path / "a-file"):
        r = CliRunner().invoke(app, ["demo", "--queries", "1", "-o", str(target)])
        assert r.exit_code == 2 and r.output.count("error:") == 1 and "Traceback" not in r.output, r.output
    assert (mine / "results.png").read_bytes() == b"my own picture" and sorted(os.listdir(mine)) == ["results.png"]
    assert (tmp_path / "a-file").read_text() == "mine"
    for _ in range(2):  # its own folder: the second run replaces the first run's files
        r = CliRunner().invoke(app, ["demo", "--queries", "1", "-o", "out"])
        assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / "out")) == [".zscir-demo.files.jsonl", ".zscir-demo.json", "results.html",
                                                    "results.png"]
    r = CliRunner().invoke(app, ["demo", "--model", "no-such-model", "-o", "out2"])
    assert r.exit_code == 2 and r.output.count("unknown model 'no-such-model'") == 1, r.output  # said once


# ------------------------------------------------------------------------ 3. your own photos, every door
def _bash_blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def _commands(block: str) -> list[str]:
    """The zscir commands of a bash block: continuations joined, comments dropped, `&&` chains split, and
    shell variables set in the block (``B32="--model ... -m searle"``) expanded as the shell would."""
    out: list[str] = []
    variables: dict[str, str] = {}
    for line in block.replace("\\\n", " ").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("#"):
            continue
        assignment = re.fullmatch(r"([A-Za-z_]\w*)=(.*)", line)
        if assignment:
            variables[assignment.group(1)] = " ".join(shlex.split(assignment.group(2)))
            continue
        line = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: variables.get(m.group(1), m.group(0)), line)
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("zscir "):
                out.append(part)
            elif "-m zscir " in part:  # torchrun ... -m zscir train ...
                out.append("zscir " + part.split("-m zscir ", 1)[1])
    return out


def _readme_section_commands(title: str) -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return [c for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S) for c in _commands(block)]


def _argv(command: str, home: Path) -> list[str]:
    """A documented command line as the shell would pass it, with ``~`` in a placeholder home."""
    return [os.path.join(str(home), a[2:]) if a.startswith("~/") else a for a in shlex.split(command)][1:]


def _photos(home: Path) -> Path:
    """~/Pictures: world scenes rendered by zscir as JPEG photos in two folders, one of them beach.jpg."""
    from zscir.data import world

    pics = home / "Pictures"
    (pics / "trip").mkdir(parents=True)
    pairs = world.generate_pairs(world.WorldConfig(seed=3, image_size=96), n=24, split="train")
    for i, img in enumerate(world.render_batch([p.scene for p in pairs], 96)):
        from PIL import Image

        name = "beach.jpg" if i == 0 else (f"trip/img_{i:02d}.jpg" if i % 2 else f"img_{i:02d}.jpg")
        Image.fromarray(img).save(pics / name, quality=92)
    (pics / "notes.txt").write_text("not an image")
    return pics


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory):
    """README's "Search your own photos" commands, executed as written (the server one is checked below)."""
    from zscir.cli import app

    home = tmp_path_factory.mktemp("home")
    pics = _photos(home)
    commands = _readme_section_commands("Search your own photos")
    index_cmd, search_cmd = commands[0], commands[1]
    assert index_cmd.startswith("zscir index ~/Pictures") and search_cmd.startswith("zscir search ")
    r = CliRunner().invoke(app, _argv(index_cmd, home))
    assert r.exit_code == 0, r.output
    idx = Path(_argv(index_cmd, home)[_argv(index_cmd, home).index("--out") + 1])
    assert "24 images" in r.output, r.output
    return home, pics, idx, _argv(search_cmd, home), commands


def _norm(hits: list[dict]) -> list[tuple[str, float]]:
    return [(h["id"], round(float(h["score"]), 4)) for h in hits]


def test_readme_search_runs_as_written(photo_index):
    from zscir.cli import app

    home, pics, idx, search_argv, _ = photo_index
    r = CliRunner().invoke(app, search_argv)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stdout.splitlines() if re.match(r"\s*\d+\. ", ln)]
    assert len(lines) == 10 and all(str(pics) in ln for ln in lines), r.output


@pytest.fixture(scope="module")
def doors(photo_index) -> dict[str, list[tuple[str, float]]]:
    """The README query (reference = the indexed ~/Pictures/beach.jpg) through the CLI, server and API."""
    from fastapi.testclient import TestClient

    from zscir.cli import app
    from zscir.index.retriever import Retriever
    from zscir.serve import create_app

    home, pics, idx, search_argv, _ = photo_index
    text = search_argv[search_argv.index("--text") + 1]
    cli = CliRunner().invoke(app, [*search_argv, "--json"])
    assert cli.exit_code == 0, cli.output
    doors = {"cli": _norm(json.loads(cli.stdout))}
    client = TestClient(create_app(Retriever.load([idx])))
    assert client.get("/methods").status_code == 200  # what the web page asks first
    with open(pics / "beach.jpg", "rb") as f:
        up = client.post("/search", data={"text": text, "k": "10"}, files={"image": ("beach.jpg", f, "image/jpeg")})
    assert up.status_code == 200, up.text
    doors["server upload"] = _norm(up.json()["results"])
    by_id = client.post("/search", data={"text": text, "k": "10", "item_id": "beach.jpg"})
    assert by_id.status_code == 200, by_id.text
    doors["server item id"] = _norm(by_id.json()["results"])
    api = Retriever.load([idx]).search(pics / "beach.jpg", text, k=10)
    doors["python api"] = [(h.id, round(h.score, 4)) for h in api]
    return doors


def test_same_query_same_answer_through_every_door(doors):
    assert len(doors["cli"]) == 10
    for name, hits in doors.items():
        assert hits == doors["cli"], f"{name} differs from the CLI:\n{hits}\n{doors['cli']}"


def test_indexed_reference_is_not_its_own_best_match(doors):
    for name, hits in doors.items():
        assert "beach.jpg" not in [i for i, _ in hits], f"{name} returned the reference itself: {hits}"


# ------------------------------------------------------------------------------------- 4. docs commands
def _documented_commands() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for block in _bash_blocks(path):
            out += [(path.name, c) for c in _commands(block)]
    return out


def _parse(argv: list[str]) -> None:
    """Parse ``zscir <argv>`` exactly as the CLI would (typer's click), without running the command."""
    import typer

    from zscir.cli import app

    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("zscir", list(argv))
    while hasattr(cmd, "resolve_command"):  # a group: the sub-command name is held back from ctx.args
        held = getattr(ctx, "protected_args", None) or getattr(ctx, "_protected_args", [])
        name, sub, rest = cmd.resolve_command(ctx, [*held, *ctx.args])
        cmd, ctx = sub, sub.make_context(name, rest, parent=ctx)


def _is_usage_error(e: BaseException) -> bool:
    return any(c.__name__ == "UsageError" for c in type(e).__mro__)


def test_every_documented_command_parses(monkeypatch):
    import torch

    # The docs' GPU commands (`--device cuda`) are written for a machine with a GPU; this one has none. The
    # device check is a property of the machine, not of the command line, so pretend a GPU is there.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    commands = _documented_commands()
    assert len(commands) >= 30, commands  # the extraction found the docs' commands
    bad = []
    for where, command in commands:
        try:
            _parse(_argv(command, Path("/home/user")))
        except Exception as e:  # noqa: BLE001 - click's UsageError family: report them all at once
            assert _is_usage_error(e), f"{command}: {e!r}"  # anything else is a bug of this check
            bad.append(f"{where}: {command}\n    {type(e).__name__}: {getattr(e, 'message', e)}")
    assert not bad, "documented commands that do not parse:\n" + "\n".join(bad)


def test_parser_check_catches_what_the_old_docs_had():
    """The check above can fail: the commands the user tripped over are rejected by it."""
    for argv in (["search", "idx", "--image", "a.jpg", "--text", "t", "--bogus"],  # unknown option
                 ["search", "--text", "t"],  # missing index folder (--text alone is a text search now)
                 ["train", "tscir-stage1", "--precision", "fp16"]):  # bad value
        with pytest.raises(Exception) as info:
            _parse(argv)
        assert _is_usage_error(info.value), info.value
    _parse(["submit", "--benchmark", "cirr", "--data-root", "/d", "-m", "sum", "-o", "submissions/"])


def test_readme_serve_command_serves_the_readme_index(photo_index):
    """`zscir serve ~/pictures-index` parses and finds the index the README's own commands wrote."""
    home, pics, idx, _, commands = photo_index
    serve = [c for c in commands if c.startswith("zscir serve ")][0]
    argv = _argv(serve, home)
    _parse(argv)
    assert Path(argv[1]) == idx and (idx / "manifest.json").is_file()


def test_benchmark_commands_run_on_placeholder_data(small_world, tmp_path, monkeypatch):
    """docs/BENCHMARKS.md's CIRR smoke test, as written, with /data/cirr = the small world's CIRR files."""
    from zscir.cli import app

    smoke = [c for _, c in _documented_commands() if "--limit 200" in c and "--benchmark cirr" in c][0]
    argv = [a.replace("/data/cirr", str(small_world / "cirr")) for a in _argv(smoke, tmp_path)]
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results.json"
    r = CliRunner().invoke(app, [*argv, "--no-progress", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "R@1" in r.output and "LIMITED" in json.dumps(json.loads(out.read_text())["protocol"])


# ------------------------------------------------------------------------------- 5. what the docs show
def _documented_output_layout() -> dict:
    text = (REPO / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")
    block = text.split("`--output` (or `-o`) writes the result JSON", 1)[1]
    raw = re.search(r"```json\n(.*?)```", block, flags=re.S).group(1)
    raw = re.sub(r"\{\.\.\.[^}]*\}", "{}", raw)
    raw = re.sub(r",\s*\.\.\.\s*([}\]])", r"\1", raw)  # trailing "..." = more keys
    raw = re.sub(r"(?<=[:\[,])\s*\.\.\.", " null", raw)  # values shown as ...
    return json.loads(raw)


def test_output_json_has_the_documented_layout(small_world, tmp_path):
    from zscir.cli import app

    out = tmp_path / "one.json"
    r = CliRunner().invoke(app, ["eval", "--benchmark", "cirr", "--data-root", str(small_world / "cirr"),
                                 "-m", "image", "--limit", "5", "--no-progress", "--output", str(out)])
    assert r.exit_code == 0, r.output
    got, doc = json.loads(out.read_text()), _documented_output_layout()
    assert set(got) == set(doc)
    for key in ("metrics", "features"):
        assert set(got[key]) == set(doc[key]), key
    assert set(doc["protocol"]) <= set(got["protocol"]) and set(doc["method"]) <= set(got["method"])
    two = tmp_path / "two.json"
    r = CliRunner().invoke(app, ["eval", "--benchmark", "cirr", "--data-root", str(small_world / "cirr"),
                                 "-m", "image", "-m", "text", "--limit", "5", "--no-progress", "-o", str(two)])
    assert r.exit_code == 0, r.output
    several = json.loads(two.read_text())
    assert list(several) == ["results"] and [x["label"] for x in several["results"]] == ["image", "text"]


def test_docs_link_only_existing_files_and_speak_of_features():
    sources = DOCS + sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    missing, tracker = [], []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        missing += [f"{path.name}: {m}" for m in re.findall(r"docs/[\w./-]+\.md", text) if not (REPO / m).is_file()]
        if path.suffix == ".md" or path.parent.name == "cli":
            tracker += [f"{path.name}: {m}" for m in re.findall(r"\b[Ii]ssues? #?\d+", text)]
    assert not missing, missing
    assert not tracker, tracker


def test_readme_keeps_its_set_up_commands_and_documents_the_cpu_wheel():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first = _bash_blocks(REPO / "README.md")[0].splitlines()
    assert first[:2] == ['pip install -c constraints.txt -e . && zscir demo',
                         'pip install -c constraints.txt -e ".[dev]" && python -m pytest']  # .ci/run reads line 2
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text


# ------------------------------------------------------------------------------------- 6. real pictures, busy machines
def _real_packages_installed() -> bool:
    from zscir.data.real.sources import RealSources

    s = RealSources()
    return Path(s.emoji_font).is_file() and Path(s.emoji_test).is_file() and Path(s.tuxpaint_dir).is_dir()


def test_readme_says_what_the_real_picture_commands_need_where_it_shows_them():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Common commands", 1)[1].split("\n## ", 1)[0]
    assert "zscir demo --real" in section and "zscir eval --benchmark real" in section
    for needle in ("fonts-noto-color-emoji", "unicode-data", "tuxpaint-stamps-default", "--emoji-font",
                   "--emoji-test", "--tuxpaint-dir", "zscir-demo-real", '-c constraints.txt -e ".[real]"'):
        assert needle in section, needle


def test_readme_demo_real_runs_as_written(tmp_path, monkeypatch):
    """`zscir demo --real` as the README shows it: without the Debian packages one error line that names them
    and the options replacing them, before any model loads; with them the demo, into its own folder."""
    from zscir.cli import app

    demo_real = [c for c in _readme_section_commands("Common commands") if c.startswith("zscir demo --real")][0]
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, _argv(demo_real, tmp_path))
    if _real_packages_installed():
        assert r.exit_code == 0, r.output
        assert (tmp_path / "zscir-demo-real" / "results.png").is_file() and not (tmp_path / "zscir-demo").exists()
    else:
        assert r.exit_code == 2 and r.output.count("error:") == 1, r.output
        for needle in ("fonts-noto-color-emoji", "--emoji-font", "tuxpaint-stamps-default", "--tuxpaint-dir"):
            assert needle in r.output
        assert not (tmp_path / "zscir-demo-real").exists()


def test_documented_benchmark_suite_commands_say_where_they_run():
    """`python -m benchmarks` only works from the repository root; every doc that shows it says so or shows
    `zscir bench`, which runs from any folder."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        if "python -m benchmarks" in text:
            assert "repository root" in text or "zscir bench" in text, path.name


def test_search_and_index_as_written_take_threads_and_record_them(photo_index):
    """README's index and search, as written plus `--threads 1`: the index records the choice."""
    from zscir.cli import app

    home, pics, idx, search_argv, _ = photo_index
    manifest = json.loads((idx / "manifest.json").read_text())
    rec = manifest["indexer"]["threads"]
    assert rec["torch"] >= 1 and rec["kind"] == "batch" and rec["source"] in ("default", "OMP_NUM_THREADS")
    r = CliRunner().invoke(app, [*search_argv, "--threads", "1"])
    assert r.exit_code == 0, r.output
