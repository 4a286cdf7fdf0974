"""`--device` of `zscir train clip / fusiondiff-prior / fusiondiff-adapter`, the GPU check's coverage of every
trainer, and `zscir bench gpu` (issue 24 §4), tested without a GPU.

What a CPU can show: each of the three trainers takes ``--device cpu``, trains a step on a tiny model and
records the resolved device in its train_log.json; a CUDA / MPS device this machine lacks and a string that
is no device give one ``error:`` line before any folder is made (CLI and Python API); a trainer rank under
``torchrun`` takes its own GPU (`train_device`, with CUDA faked); every `zscir train` command has a row in
`benchmarks.gpu` (the test fails when a trainer is added without one); `zscir bench gpu` runs from any folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from benchmarks import gpu
from zscir.backbones import devices
from zscir.backbones.devices import DeviceError, train_device

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
no_mps = pytest.mark.skipif(bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
                            reason="checks the behaviour without MPS")
TRAINERS = ("clip", "fusiondiff-prior", "fusiondiff-adapter")


def zscir(*args: str):
    from zscir.cli import app

    return runner.invoke(app, [str(a) for a in args])


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **extra}


def assert_one_error_line(res, *needles: str) -> str:
    """Exit 2, exactly one ``error:`` line, no traceback; returns the line."""
    text = res.output + (res.stderr or "")
    assert "Traceback" not in text, text
    assert res.exit_code == 2, (res.exit_code, text, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _trainer_args(trainer: str, out: Path, prior: Path | None = None) -> list[str]:
    """The smallest run of each trainer (tiny-clip-test; the world's 500 validation pairs / triplets are
    fixed by the CLI, so the pools are just above them)."""
    common = ["--steps", "1", "--batch-size", "8", "--threads", "1", "-o", str(out)]
    if trainer == "clip":
        return ["train", "clip", "--model", "tiny-clip-test", "--n-pairs", "32", *common]
    if trainer == "fusiondiff-prior":
        return ["train", "fusiondiff-prior", "--model", "tiny-clip-test", "--bank-pairs", "560", "--width", "32",
                "--layers", "1", "--no-progress", *common]
    return ["train", "fusiondiff-adapter", "--prior", str(prior or out.parent / "missing-prior"),
            "--n-triplets", "540", "--blocks", "1", "--no-progress", *common]


# --- each trainer trains a step on the CPU and records it ---------------------------------------------------

@pytest.fixture(scope="module")
def cpu_runs(tmp_path_factory):
    """The three trainers, one step each with ``--device cpu`` (the adapter on the prior just trained)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("device-runs")
    results = {}
    for trainer in TRAINERS:
        out = root / trainer
        res = zscir(*_trainer_args(trainer, out, root / "fusiondiff-prior"), "--device", "cpu")
        results[trainer] = (res, out)
    return results


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_runs_a_step_on_the_cpu_and_records_the_device(cpu_runs, trainer):
    res, out = cpu_runs[trainer]
    assert res.exit_code == 0, res.output + str(res.exception)
    log = json.loads((out / "train_log.json").read_text(encoding="utf-8"))
    assert log["config"]["device"] == "cpu"
    assert log["config"]["bf16"] is False  # the default precision of these three: fp32 (the shipped recipes)
    assert [h["step"] for h in log["history"]] == [1]
    assert math.isfinite(log["history"][0]["loss"])
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_help_offers_the_device_option(trainer):
    from zscir.cli import app

    res = runner.invoke(app, ["train", trainer, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--device" in res.output and "cuda:N" in res.output


@pytest.mark.parametrize("trainer", TRAINERS)
def test_the_option_reaches_the_trainer_config(tmp_path, monkeypatch, trainer):
    """``--device`` (default cpu) becomes the config's ``device``, as in the TSCIR stages."""
    from zscir.methods.fusiondiff import train_adapter, train_prior
    from zscir.train import clip

    seen = []

    def fake(cfg, out, resume=False, progress=True):
        seen.append(cfg.device)
        return {"out": str(out), "history": [], "trainable_params": 0, "n_train_triplets": 0, "train_seconds": 0.0,
                "metrics": {}}

    module, name = {"clip": (clip, "train_clip"), "fusiondiff-prior": (train_prior, "train_prior"),
                    "fusiondiff-adapter": (train_adapter, "train_adapter")}[trainer]
    monkeypatch.setattr(module, name, fake)
    base = ["train", trainer, "-o", str(tmp_path / "o")]
    assert zscir(*base).exit_code == 0
    assert zscir(*base, "--device", "cpu").exit_code == 0
    assert seen == ["cpu", "cpu"]


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 8, 8, 3), (0, 4, 4, 3)])
def test_pixels_are_normalised_on_the_batchs_device(shape):
    """A trainer sends the uint8 batch to its device first (4x fewer bytes than floats); the normalisation
    then runs there ("meta" stands in for a GPU: no CPU tensor may enter the arithmetic)."""
    from zscir.train.common import uint8_to_pixels

    out = uint8_to_pixels(torch.zeros(shape, dtype=torch.uint8, device="meta"))
    assert out.device.type == "meta" and tuple(out.shape) == (shape[0], 3, shape[1], shape[2])
    cpu = uint8_to_pixels(torch.full(shape, 255, dtype=torch.uint8))
    assert cpu.dtype == torch.float32 and (shape[0] == 0 or float(cpu.max()) > 1.5)  # (1 - mean) / std


def test_clip_sends_each_batch_to_its_device(tmp_path, monkeypatch):
    """The CLIP trainer's batches go to the device `train_device` gave it (spied on the CPU)."""
    from zscir.train import clip

    moved = []
    real = clip.uint8_to_pixels

    def spy(batch, *a, **kw):
        moved.append((type(batch).__name__, getattr(batch, "dtype", None), getattr(batch, "device", None)))
        return real(batch, *a, **kw)

    monkeypatch.setattr(clip, "uint8_to_pixels", spy)
    cfg = clip.CLIPTrainConfig(model="tiny-clip-test", steps=2, batch_size=4, n_pairs=16, n_val=4, threads=1,
                               eval_every=1000)
    r = clip.train_clip(cfg, tmp_path / "clip", progress=False)
    assert len(r["losses"]) == 2
    steps = moved[:2]  # the two training batches (evaluation converts its own afterwards)
    assert steps == [("Tensor", torch.uint8, torch.device("cpu"))] * 2


# --- a device this machine lacks, or no device at all: one line, no folder ----------------------------------

@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:7"])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_cuda_without_cuda_is_one_error_line_and_no_folder(tmp_path, trainer, spec):
    out = tmp_path / "run"
    res = zscir(*_trainer_args(trainer, out), "--device", spec)
    assert_one_error_line(res, repr(spec), "no CUDA device is available on this machine")
    assert not out.exists()


@no_mps
@pytest.mark.parametrize("trainer", TRAINERS)
def test_mps_without_mps_is_one_error_line(tmp_path, trainer):
    res = zscir(*_trainer_args(trainer, tmp_path / "run"), "--device", "mps")
    assert_one_error_line(res, "'mps'", "MPS is not available")
    assert not (tmp_path / "run").exists()


BAD_DEVICES = ["gpu", "", "CPU", " cpu", "cuda:-1", "cuda:x", "cuda:0:1", "cuda 0", "tpu", "cpu,cuda", "auto:0",
               "../cuda", "cuda\x1b[31m", "cuda\n0", "cüda", "meta"]


@pytest.mark.parametrize("spec", BAD_DEVICES)
@pytest.mark.parametrize("trainer", TRAINERS)
def test_not_a_device_is_one_error_line_and_no_folder(tmp_path, trainer, spec):
    out = tmp_path / "run"
    line = assert_one_error_line(zscir(*_trainer_args(trainer, out), "--device", spec),
                                 "Invalid value for '--device'")  # the option exists and checked the value
    assert "\x1b" not in line  # a control character in the user's string is escaped, not echoed
    assert not out.exists()


def _configs(tmp_path: Path, device: str):
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
    from zscir.train.clip import CLIPTrainConfig, train_clip

    return [(train_clip, CLIPTrainConfig(model="tiny-clip-test", steps=1, n_pairs=16, n_val=8, device=device)),
            (train_prior, PriorTrainConfig(model="tiny-clip-test", steps=1, device=device)),
            (train_adapter, AdapterTrainConfig(prior=str(tmp_path / "no-prior"), steps=1, device=device))]


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:1", "gpu", "cuda:-1", "meta"])
@pytest.mark.parametrize("which", range(3))
def test_the_python_api_refuses_the_device_before_any_folder(tmp_path, which, spec):
    """Called from Python (no CLI check in front), each trainer stops with `DeviceError` (a ValueError: the
    CLI's one-line kind) before it makes its run folder or reads any data."""
    fn, cfg = _configs(tmp_path, spec)[which]
    with pytest.raises(DeviceError) as e:
        fn(cfg, tmp_path / "run", progress=False)
    assert isinstance(e.value, ValueError) and repr(spec) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


@no_cuda
def test_auto_is_recorded_as_the_device_it_chose(tmp_path):
    """``auto`` (Python API) resolves to this machine's device, and the log records that, not "auto"."""
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
    from zscir.methods.fusiondiff.config import JointConfig, PriorConfig

    cfg = PriorTrainConfig(model="tiny-clip-test", steps=1, batch_size=8, n_val=8, threads=1, device="auto",
                           cache_dir=str(tmp_path / "cache"), joint=JointConfig(bank_pairs=40),
                           prior=PriorConfig(width=32, layers=1, heads=2, num_train_timesteps=100))
    r = train_prior(cfg, tmp_path / "prior", progress=False)
    assert len(r["losses"]) == 1
    assert json.loads((tmp_path / "prior" / "train_log.json").read_text())["config"]["device"] == "cpu"


# --- a torchrun rank takes its own GPU (CUDA faked: nothing touches a real device) ---------------------------

@pytest.fixture
def two_gpus(monkeypatch):
    current = []
    monkeypatch.setattr(devices, "cuda_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: current.append(torch.device(d)))
    return current


@pytest.mark.parametrize("spec,rank,want", [
    ("cuda", None, torch.device("cuda", 0)), ("cuda:1", None, torch.device("cuda", 1)),
    ("cuda", 0, torch.device("cuda", 0)), ("cuda", 1, torch.device("cuda", 1)),
    ("cuda:0", 1, torch.device("cuda", 1)),  # under torchrun the rank's GPU wins over the spec's index
    ("auto", 1, torch.device("cuda", 1)), ("cpu", 1, torch.device("cpu")), ("cpu", None, torch.device("cpu")),
])
def test_train_device_gives_each_rank_its_own_gpu(two_gpus, spec, rank, want):
    assert train_device(spec, rank) == want
    assert two_gpus == ([want] if rank is not None and want.type == "cuda" else [])  # made current under torchrun


@pytest.mark.parametrize("spec,rank", [("cuda", 2), ("cuda", 5), ("cuda:2", None), ("gpu", 0)])
def test_train_device_refuses_a_rank_without_a_gpu(two_gpus, spec, rank):
    with pytest.raises(DeviceError) as e:
        train_device(spec, rank)
    assert "\n" not in str(e.value)
    assert two_gpus == []


# --- the GPU check covers every trainer --------------------------------------------------------------------

def train_commands(app=None) -> list[str]:
    """The sub-commands `zscir train --help` lists (read from the help text, as a user sees them)."""
    if app is None:
        from zscir.cli import app
    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    names, indent, in_commands = [], None, False
    for line in res.output.splitlines():
        body = line.strip().strip("│").rstrip()  # rich draws a box; click's plain help has none
        if "Commands" in line and line.lstrip().startswith(("╭", "Commands")):
            in_commands = True
            continue
        if not in_commands or not body.strip():
            continue
        if line.lstrip().startswith("╰"):
            break
        lead = len(body) - len(body.lstrip())
        indent = lead if indent is None else indent
        if lead == indent:  # a wrapped description continues further right
            names.append(body.split()[0])
    return names


def uncovered(commands: list[str]) -> list[str]:
    """Trainers without a row (or a run folder) in the GPU check, or not run by its CUDA/dry-run plans."""
    planned = set(gpu.GPUCheckConfig().checks) & set(gpu.dry_run_config().checks)
    return [c for c in commands if c not in gpu.TRAINER_CHECKS or c not in gpu.TRAINER_FOLDERS
            or f"train-{c}" not in planned]


def test_help_lists_the_trainers_typer_has():
    from zscir.cli import app

    listed = train_commands()
    assert set(listed) == set(typer.main.get_command(app).commands["train"].commands)
    assert set(TRAINERS) <= set(listed) and len(listed) >= 6


def test_every_trainer_in_zscir_train_help_is_covered_by_the_gpu_check():
    assert uncovered(train_commands()) == []
    assert set(gpu.TRAINER_FOLDERS) == set(gpu.TRAINER_CHECKS)


def test_the_coverage_check_fails_for_a_new_trainer():
    """A `zscir train` command added without a GPU check row is reported (so the test above can fail)."""
    from zscir.cli import app
    from zscir.cli.train import train_app

    @train_app.command("brand-new-trainer")
    def _new() -> None:
        """A trainer the GPU check does not know."""

    try:
        assert "brand-new-trainer" in train_commands(app)
        assert uncovered(train_commands(app)) == ["brand-new-trainer"]
    finally:
        train_app.registered_commands[:] = [c for c in train_app.registered_commands
                                            if c.name != "brand-new-trainer"]
    assert "brand-new-trainer" not in train_commands(app)


def test_a_trainer_that_ignores_the_device_fails_its_row(tmp_path):
    """The row reads the device from the run's train_log.json: a run on another device is a failed row."""
    checks = gpu._Checks(gpu.dry_run_config(), tmp_path)
    for trainer, device in (("clip", "cuda:0"), ("fusiondiff-prior", "mps"), ("fusiondiff-adapter", "cpu")):
        folder = tmp_path / gpu.TRAINER_FOLDERS[trainer]
        folder.mkdir()
        (folder / "train_log.json").write_text(json.dumps({"config": {"device": device, "bf16": True}}))
    with pytest.raises(AssertionError, match="trained on 'cuda:0', not on cpu"):
        checks.recorded("clip")
    with pytest.raises(AssertionError, match="trained on 'mps'"):
        checks.recorded("fusiondiff-prior")
    assert checks.recorded("fusiondiff-adapter") == ("cpu", True)
    rows = gpu.run_checks([("train-clip", lambda: checks.recorded("clip"))], budget_s=60, device="cpu")
    assert rows[0]["status"] == "fail" and gpu.exit_code(rows) == 1


# --- zscir bench gpu ---------------------------------------------------------------------------------------

@no_cuda
def test_bench_gpu_from_any_folder_without_cuda_says_so_and_exits_0(tmp_path):
    r = subprocess.run([sys.executable, "-m", "zscir", "bench", "gpu"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == gpu.NO_CUDA
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_bench_gpu_tiny_runs_the_dry_run_from_any_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "zscir", "bench", "gpu", "--tiny", "cpu-vs-cuda"], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("| check | status | seconds | device | numbers |") == 1
    assert "| cpu-vs-cuda | ok |" in r.stdout and "| index |" not in r.stdout


@pytest.mark.parametrize("code", [0, 1, 3])
def test_bench_gpu_exits_with_the_checks_status(monkeypatch, code):
    seen = []
    monkeypatch.setattr(gpu, "main", lambda argv=None: seen.append(argv) or code)
    res = zscir("bench", "gpu", "index", "ddp", "--tiny")
    assert res.exit_code == code, res.output
    assert seen == [["--dry-run", "--checks", "index", "ddp"]]


@pytest.mark.parametrize("items,needle", [
    (["search", "gpu"], "gpu runs on its own"),
    (["gpu", "bogus"], "unknown gpu check(s) ['bogus']"),
    (["gpu", "search"], "unknown gpu check(s) ['search']"),
    (["gpu", "gpu"], "unknown gpu check(s) ['gpu']"),
    (["gpu", "train-nothing"], "choose from train-clip"),
])
def test_bench_gpu_mistakes_are_one_error_line(monkeypatch, items, needle):
    monkeypatch.setattr(gpu, "main", lambda argv=None: pytest.fail("the check must not start"))
    assert_one_error_line(zscir("bench", *items), needle)


def test_bench_gpu_without_the_checkout_says_how_to_run_it(tmp_path):
    """An installed zscir with no benchmarks/ beside it: one line naming the command, exit 2."""
    site = tmp_path / "install" / "src"
    shutil.copytree(ROOT / "src" / "zscir", site / "zscir",
                    ignore=shutil.ignore_patterns("__pycache__", "assets", "*.so"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "zscir", "bench", "gpu"], cwd=work,
                       env={**_env(), "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
    assert "source checkout" in lines[0] and "python -m benchmarks gpu" in lines[0]
    assert list(work.iterdir()) == []
