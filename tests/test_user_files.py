"""No user file replaced or deleted (issue 21 §2).

* every `zscir train ...` refuses an ``--out`` that is not its own — a user's folder, another trainer's run,
  a marked folder with a file the trainer did not record — with one line, before any model or data is
  touched, and leaves the files byte-identical; a new, empty or own folder trains (and re-trains);
* make-triplets (and the corpus and benchmark builders through the same owner, `zscir.data.outdir`)
  rebuilding into its folder deletes only the unchanged files it recorded: a user's picture in
  ``images/`` survives, and forged markers delete nothing outside and nothing unrecorded;
* `zscir data inspect` writes a grid only when asked, never over an existing file, and prints the path
  it wrote.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

runner = CliRunner()

#: every trainer command, with the options that make it fail fast on its *data* (a missing file): the
#: folder check must come first, so the error names the folder, not the data
TRAINERS = {
    "clip": ["--data", "MISSING/pairs.csv", "--steps", "1"],
    "lit": ["--data", "MISSING/pairs.csv", "--steps", "1"],
    "tscir-stage1": ["--data", "MISSING/pairs.csv", "--steps", "1", "--model", "tiny-clip-test"],
    "tscir-stage2": ["--stage1", "MISSING/s1", "--steps", "1"],
    "fusiondiff-prior": ["--data", "MISSING/pairs.csv", "--steps", "1", "--model", "tiny-clip-test"],
    "fusiondiff-adapter": ["--prior", "MISSING/prior", "--steps", "1"],
}


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 120, 40)).save(buf, format="JPEG")
    return buf.getvalue()


#: what a user may have in the folder they hand a trainer: a model folder of their own, or a photo
FOREIGN = {"config.json": b'{"my": "own model"}', "model.safetensors": b"my weights, not safetensors",
           "train_log.json": b'{"history": "mine"}', "holiday.jpg": _jpeg()}


def _zscir(*args) -> "object":
    from zscir.cli import app

    return runner.invoke(app, [str(a) for a in args])


def _one_error_line(res, *needles: str) -> str:
    text = res.output + (res.stderr or "")
    assert "Traceback" not in text, text
    assert res.exit_code == 2, (res.exit_code, text, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and " WARNING " not in ln
             and not ln.startswith(("note:", "warning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _train(tmp_path: Path, command: str, out: Path, *extra: str):
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in TRAINERS[command]]
    return _zscir("train", command, *args, "--out", out, *extra)


# ------------------------------------------------------------------------------------------ trainers
def test_every_trainer_command_is_covered():
    """A new `zscir train` command must join `TRAINERS` (and go through `zscir.train.run_folder`)."""
    import typer.main

    from zscir.cli import app

    group = typer.main.get_command(app)
    train = group.get_command(None, "train")
    assert set(train.list_commands(None)) == set(TRAINERS)


@pytest.mark.parametrize("name", sorted(FOREIGN))
@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_trainer_refuses_a_users_folder(tmp_path, command, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_bytes(FOREIGN[name])
    before = _snapshot(out)
    _one_error_line(_train(tmp_path, command, out), str(out), f"not created by zscir train {command}")
    assert _snapshot(out) == before and sorted(os.listdir(out)) == [name]


@pytest.mark.parametrize("command", sorted(set(TRAINERS) - {"lit"}))  # lit trains its heads in one go
def test_trainer_resume_needs_its_own_folder(tmp_path, command):
    """``--resume`` into a user's folder that happens to hold a checkpoint's names reads nothing from it."""
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "training_state.pt"):
        (out / name).write_bytes(FOREIGN.get(name, b"pickle bytes of someone else"))
    before = _snapshot(out)
    _one_error_line(_train(tmp_path, command, out, "--resume"), f"not created by zscir train {command}")
    assert _snapshot(out) == before


@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_trainer_refuses_another_trainers_run(tmp_path, command):
    other = "tscir-stage1" if command != "tscir-stage1" else "clip"
    out = tmp_path / "run"
    out.mkdir()
    (out / ".zscir-run.json").write_text(json.dumps({"created_by": f"zscir train {other}",
                                                      "journal": ".zscir-run.files.jsonl"}))
    (out / ".zscir-run.files.jsonl").write_text('["+", "config.json"]\n')
    (out / "config.json").write_bytes(FOREIGN["config.json"])
    before = _snapshot(out)
    _one_error_line(_train(tmp_path, command, out), f"of zscir train {other}, not of zscir train {command}")
    assert _snapshot(out) == before


@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_trainer_refuses_an_unrecorded_file_in_its_own_folder(tmp_path, command):
    """A copied (or forged) marker does not make a user's config.json the trainer's to replace."""
    out = tmp_path / "run"
    out.mkdir()
    (out / ".zscir-run.json").write_text(json.dumps({"created_by": f"zscir train {command}",
                                                      "journal": ".zscir-run.files.jsonl"}))
    (out / "config.json").write_bytes(FOREIGN["config.json"])
    before = _snapshot(out)
    _one_error_line(_train(tmp_path, command, out), str(out / "config.json"), "in the way")
    assert _snapshot(out) == before


@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_trainer_refuses_a_file_as_out(tmp_path, command):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    _one_error_line(_train(tmp_path, command, f), str(f), "not a folder")
    assert f.read_text() == "mine"


# tiny runs of every trainer (library calls with the tiniest configs; the same owner as the CLI)
def _tiny_runs(tmp: Path) -> dict:
    from zscir.backbones.registry import TinyCLIPConfig, shipped_model_dir
    from zscir.methods.fusiondiff.config import JointConfig, PriorConfig
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
    from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.methods.tscir.stage2 import train_stage2
    from zscir.train.clip import CLIPTrainConfig, train_clip

    arch = TinyCLIPConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                          text_width=32, text_layers=1, text_heads=2, projection_dim=32, vocab_size=300,
                          max_text_len=32)
    small = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)
    return {
        "clip": lambda out, **kw: train_clip(CLIPTrainConfig(
            n_pairs=32, n_val=8, steps=1, batch_size=8, warmup=1, eval_every=1000, arch=arch, vocab_size=300,
            tokenizer=str(shipped_model_dir("world-clip"))), out, progress=False, **kw),
        "tscir-stage1": lambda out, **kw: train_stage1(Stage1Config(
            model="tiny-clip-test", mapping=MappingConfig(vsi_layers=[0], phi_hidden=32), n_pairs=32, n_val=8,
            steps=1, batch_size=8, eval_every=1000, threads=1, bf16=False), out, progress=False, **kw),
        "tscir-stage2": lambda out, **kw: train_stage2(Stage2Config(
            stage1=str(tmp / "stage1-src"), adapter=AdapterConfig(bottleneck=8), max_triplets=24, n_val=8,
            gallery_pairs=8, steps=1, batch_size=8, eval_every=1000, threads=1, bf16=False), out,
            progress=False, **kw),
        "fusiondiff-prior": lambda out, **kw: train_prior(PriorTrainConfig(
            model="tiny-clip-test", steps=1, batch_size=8, eval_every=1000, n_val=8, threads=1,
            cache_dir=str(tmp / "cache"), joint=JointConfig(bank_pairs=32), prior=small), out, progress=False,
            **kw),
        "fusiondiff-adapter": lambda out, **kw: train_adapter(AdapterTrainConfig(
            prior=str(tmp / "prior-src"), n_triplets=32, n_val=8, steps=1, batch_size=8, eval_every=1000,
            threads=1, cache_dir=str(tmp / "cache")), out, progress=False, **kw),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trainers")
    runs = _tiny_runs(tmp)
    runs["tscir-stage1"](tmp / "stage1-src")
    runs["fusiondiff-prior"](tmp / "prior-src")
    return runs


@pytest.mark.parametrize("command", sorted(set(TRAINERS) - {"lit"}))
def test_trainer_trains_into_a_new_or_empty_folder_and_again_into_its_own(tmp_path, tiny, command):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "new" / "run", tmp_path / "empty"):
        tiny[command](out)
        assert (out / "config.json").is_file() and (out / ".zscir-run.json").is_file()
    out = tmp_path / "empty"
    (out / "notes.txt").write_text("my notes about this run")
    first = (out / "config.json").read_bytes()
    tiny[command](out)  # re-training into its own folder: replaces its own files, leaves mine
    tiny[command](out, resume=True)
    assert (out / "notes.txt").read_text() == "my notes about this run"
    assert json.loads((out / "config.json").read_bytes()).keys() == json.loads(first).keys()


def test_lit_trains_into_a_new_folder_and_again_into_its_own(tmp_path):
    out = tmp_path / "lit"
    args = ["train", "lit", "--data", "world", "--n-pairs", "8", "--steps", "2", "--batch-size", "4",
            "--embed-dim", "16", "--head-hidden", "0", "--out", out, "--cache-dir", tmp_path / "cache",
            "--no-progress"]
    assert (r := _zscir(*args)).exit_code == 0, r.output
    (out / "notes.txt").write_text("mine")
    assert (r := _zscir(*args)).exit_code == 0, r.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------ make-triplets
CAPTIONS = ["a red square", "a blue square", "a red circle", "a green circle", "two red circles",
            "a small blue square"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("pairs")
    rows = []
    for i, cap in enumerate(CAPTIONS):
        im = Image.new("RGB", (24, 24), "white")
        ImageDraw.Draw(im).rectangle((4, 4, 20, 20), fill=(40 * i, 90, 200 - 30 * i))
        im.save(root / f"img{i}.png")
        rows.append({"filepath": f"img{i}.png", "title": cap})
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["filepath", "title"])
        w.writeheader()
        w.writerows(rows)
    return str(root / "pairs.csv")


def _make(pairs: str, out: Path) -> dict:
    from zscir.data.synth.make import MakeTripletsConfig, make_triplets

    return make_triplets(MakeTripletsConfig(data=pairs, out=str(out), generators=("substitute",), image_size=16),
                         progress=False)


def _blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def test_make_triplets_rerun_keeps_a_users_picture(tmp_path, pairs):
    out = tmp_path / "t"
    first = _make(pairs, out)
    mine = {"images/my-photo.png": _jpeg(), "images/img0.png.bak": b"backup", "notes.txt": b"mine"}
    for name, data in mine.items():
        (out / name).write_bytes(data)
    victim = out / first["files"][0]  # a picture make-triplets wrote, then edited by the user
    victim.write_bytes(b"edited by me")
    second = _make(pairs, out)
    for name, data in mine.items():
        assert (out / name).read_bytes() == data
    assert victim.read_bytes() == b"edited by me" and victim.relative_to(out).as_posix() not in second["files"]
    assert second["triplets"] == first["triplets"]
    written = {p.relative_to(out).as_posix() for p in (out / "images").iterdir()}
    assert written == set(second["files"][:-1]) | {"images/my-photo.png", "images/img0.png.bak",
                                                   victim.relative_to(out).as_posix()}


def test_make_triplets_rerun_deletes_its_own_stale_files(tmp_path, pairs):
    out = tmp_path / "t"
    _make(pairs, out)
    journal = (out / "make-triplets.files.jsonl")
    stale = b"\x89PNG stale"
    (out / "images" / "stale.png").write_bytes(stale)  # as if an earlier run had written it
    with open(journal, "a") as f:
        f.write(json.dumps(["+", "images/stale.png"]) + "\n" + json.dumps(["=", "images/stale.png", len(stale),
                                                                           _blake(stale)]) + "\n")
    _make(pairs, out)
    assert not (out / "images" / "stale.png").exists()


def _forge(out: Path, names: list[str], exact: bool) -> None:
    """A marker + journal listing ``names`` (``exact``: with the right size and hash of what is there now),
    also in the old format (``files``/``dirs``, which the old code cleared whole)."""
    (out / "images" / "my-photo.png").write_bytes(_jpeg())
    lines = []
    for n in names:
        p = Path(n) if n.startswith("/") else out / n
        lines.append(["+", n])
        if p.is_file():
            data = p.read_bytes() if exact else b"something else"
            lines.append(["=", n, len(data), _blake(data)])
        lines.append(["d", n])
    (out / "make-triplets.files.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (out / "make-triplets.json").write_text(json.dumps({
        "created_by": "zscir data make-triplets", "complete": True, "journal": "make-triplets.files.jsonl",
        "files": names, "dirs": names + ["images"]}))


#: forged journals: (names, recorded with the exact size and hash of what is there)
FORGED = {
    "parent": ([".."], True),
    "parent-file": (["../outside/precious.txt"], True),
    "deep-parent": (["images/../../outside/precious.png"], True),
    "absolute": (["OUTSIDE/precious.png", "OUTSIDE"], True),
    "etc": (["/etc/hostname", "/etc"], False),
    "itself": ([".", "", "./images"], True),
    "link-to-outside-file": (["images/link.png"], True),
    "link-to-outside-folder": (["images/linked/precious.png", "images/linked"], True),
    "users-photo-named": (["images/my-photo.png", "images"], False),
    "not-a-generator-name": (["notes.txt", "images/notes.txt"], True),
    "backslash": (["images\\..\\..\\outside\\precious.png"], True),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_make_triplets_forged_marker_deletes_nothing_outside_or_unrecorded(tmp_path, pairs, case):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("precious")
    (outside / "precious.png").write_bytes(b"precious png")
    out = tmp_path / "t"
    (out / "images").mkdir(parents=True)
    os.symlink(outside / "precious.png", out / "images" / "link.png")
    os.symlink(outside, out / "images" / "linked")
    (out / "notes.txt").write_text("mine")
    (out / "images" / "notes.txt").write_text("mine too")
    names, exact = FORGED[case]
    _forge(out, [n.replace("OUTSIDE", str(outside)) for n in names], exact)
    before_out, before_outside = _snapshot(out), _snapshot(outside)
    before_out.pop("make-triplets.json"), before_out.pop("make-triplets.files.jsonl")
    _make(pairs, out)
    assert _snapshot(outside) == before_outside
    after = _snapshot(out)
    assert all(after.get(k) == v for k, v in before_out.items()), sorted(set(before_out) - set(after))
    assert (out / "images" / "link.png").is_symlink() and (out / "images" / "linked").is_symlink()


def test_make_triplets_refuses_an_old_style_marker(tmp_path, pairs):
    """A marker without the journal (zscir before it, or a forgery) listed folders to clear whole: refused."""
    out = tmp_path / "t"
    (out / "images").mkdir(parents=True)
    (out / "images" / "my-photo.png").write_bytes(_jpeg())
    (out / "make-triplets.json").write_text(json.dumps({"created_by": "zscir data make-triplets",
                                                        "files": ["triplets.jsonl"], "dirs": ["images"]}))
    before = _snapshot(out)
    res = _zscir("data", "make-triplets", pairs, "--out", out, "-g", "substitute", "--no-progress")
    _one_error_line(res, "older zscir")
    assert _snapshot(out) == before


def test_make_triplets_writes_no_file_through_a_link(tmp_path, pairs):
    """``images`` replaced by a link to another folder (after a run): nothing is written or deleted there."""
    out, elsewhere = tmp_path / "t", tmp_path / "elsewhere"
    _make(pairs, out)
    elsewhere.mkdir()
    (elsewhere / "keep.png").write_bytes(b"keep")
    for p in (out / "images").iterdir():
        p.unlink()
    (out / "images").rmdir()
    os.symlink(elsewhere, out / "images")
    with pytest.raises(ValueError, match="not a folder zscir made"):
        _make(pairs, out)
    assert _snapshot(elsewhere) == {"keep.png": b"keep"}


# ------------------------------------------------------------------------------------------ corpus, benchmark
def _fake_items(n: int, source: str = "tuxpaint-stamps-default"):
    from zscir.data.real.item import RealItem

    colours = ("red", "blue", "green")
    for i in range(n):
        tint = colours[i % 3]
        yield RealItem(key=f"stamp{i // 3}-{tint}", caption=f"a {tint} stamp {i // 3}", source=source,
                       licence="CC0-1.0", concept=f"stamp{i // 3}",
                       load=lambda i=i: Image.new("RGB", (20, 20), (60 * (i % 4), 80 + i, 120)),  # all distinct
                       variant={"tint": tint}, extra={"file": f"stamp{i // 3}.png", "category": "things"})


def test_corpus_rebuild_keeps_a_users_files(tmp_path, monkeypatch):
    from zscir.data.real import corpus

    monkeypatch.setattr(corpus, "READERS", {"tuxpaint": lambda *a: list(_fake_items(9))})
    monkeypatch.setattr(corpus, "COPYRIGHT", {})
    cfg = dict(sources=("tuxpaint",), max_per_source=0, image_size=16, shard_size=4)
    out = tmp_path / "c"
    first = corpus.build_corpus(corpus.CorpusConfig(out=str(out), **cfg), progress=False)
    (out / "images" / "mine.png").write_bytes(b"mine")
    (out / "shards" / "notes.txt").write_text("mine")
    second = corpus.build_corpus(corpus.CorpusConfig(out=str(out), **cfg), progress=False)
    assert (out / "images" / "mine.png").read_bytes() == b"mine"
    assert (out / "shards" / "notes.txt").read_text() == "mine"
    assert first["files"] == second["files"] and second["n_shards"] == 3


def test_benchmark_rebuild_keeps_a_users_files(tmp_path, monkeypatch):
    from zscir.data.real import benchmark

    monkeypatch.setattr(benchmark, "gallery_items", lambda *a, **kw: list(_fake_items(30)))
    cfg = benchmark.RealBenchmarkConfig(image_size=16, test=0.5, val=0.3)
    root = tmp_path / "b"
    benchmark.build_benchmark(root, cfg, progress=False)
    before = _snapshot(root)
    (root / "images" / "mine.png").write_bytes(b"mine")
    (root / "test" / "dev" / "notes.txt").write_text("mine")
    benchmark.build_benchmark(root, cfg, progress=False)
    assert (root / "images" / "mine.png").read_bytes() == b"mine"
    assert (root / "test" / "dev" / "notes.txt").read_text() == "mine"
    after = _snapshot(root)
    mine_or_record = ("images/mine.png", "test/dev/notes.txt", "benchmark.files.jsonl")
    assert {k: v for k, v in after.items() if k not in mine_or_record} == \
        {k: v for k, v in before.items() if k not in mine_or_record}  # the same build again


# ------------------------------------------------------------------------------------------ data inspect
def test_inspect_writes_nothing_unasked(tmp_path, pairs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _zscir("data", "inspect", pairs)
    assert res.exit_code == 0, res.output
    assert "pairs: 6 usable" in res.output and "sample grid" not in res.output
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("existing", ["grid.png", "grid.jpg", "data-inspect.png"])
def test_inspect_never_replaces_an_existing_file(tmp_path, pairs, existing):
    target = tmp_path / existing
    target.write_bytes(b"my picture")
    _one_error_line(_zscir("data", "inspect", pairs, "--grid", target), str(target), "exists")
    assert target.read_bytes() == b"my picture" and os.listdir(tmp_path) == [existing]


def test_inspect_never_writes_through_a_link(tmp_path, pairs):
    (tmp_path / "elsewhere.png").write_bytes(b"mine")
    os.symlink(tmp_path / "elsewhere.png", tmp_path / "grid.png")
    _one_error_line(_zscir("data", "inspect", pairs, "--grid", tmp_path / "grid.png"), "exists")
    assert (tmp_path / "elsewhere.png").read_bytes() == b"mine"


def test_inspect_grid_into_a_folder_prints_the_file_written(tmp_path, pairs):
    d = tmp_path / "pics"
    d.mkdir()
    res = _zscir("data", "inspect", pairs, "--grid", d)
    assert res.exit_code == 0, res.output
    assert os.listdir(d) == ["data-inspect.png"] and not (tmp_path / "pics.png").exists()
    assert f"sample grid: {d / 'data-inspect.png'}" in res.output
    assert Image.open(d / "data-inspect.png").size[0] > 50
    _one_error_line(_zscir("data", "inspect", pairs, "--grid", d), "exists")  # the second time: refused


@pytest.mark.parametrize("name", ["grid", "grid.txt"])
def test_inspect_grid_needs_a_picture_name(tmp_path, pairs, name):
    _one_error_line(_zscir("data", "inspect", pairs, "--grid", tmp_path / name), "picture file")
    assert os.listdir(tmp_path) == []


def test_inspect_grid_is_written_where_asked(tmp_path, pairs):
    res = _zscir("data", "inspect", pairs, "--grid", tmp_path / "g.svg")
    assert res.exit_code == 0, res.output
    assert f"sample grid: {tmp_path / 'g.svg'}" in res.output and (tmp_path / "g.svg").read_bytes().startswith(b"<?xml")
