"""The GPU check (`python -m benchmarks gpu`) and the one owner of device placement, tested without a GPU.

What can be tested on a CPU: the item's no-CUDA exit, its table / exit-code logic (fake checks), the same
checks run end to end on the CPU (``--dry-run``: every trainer, DDP with gloo, index, eval, the embedding
comparison), `zscir.backbones.devices`, and the rule that no ``.cuda()`` call or CUDA device literal appears
outside that module.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu
from zscir.backbones.devices import DeviceError, ddp_device, pin_memory, resolve_device

ROOT = Path(__file__).resolve().parents[1]
OWNER = ROOT / "src" / "zscir" / "backbones" / "devices.py"
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}


# --- the item without CUDA ---------------------------------------------------------------------------------

@no_cuda
def test_gpu_item_without_cuda_says_so_and_exits_0():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "gpu"], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == gpu.NO_CUDA


def test_gpu_is_not_a_default_suite_item():
    from benchmarks.suite import ITEMS

    assert "gpu" not in ITEMS


# --- table and exit code (fake checks) ---------------------------------------------------------------------

def _ok(numbers: str = "x=1"):
    return lambda: {"numbers": numbers}


def _boom():
    raise RuntimeError("CUDA error: device-side assert\ntriggered")


@pytest.mark.parametrize("checks,code", [
    ([("a", _ok()), ("b", _ok())], 0),
    ([("a", _ok()), ("b", _boom)], 1),
    ([("a", _boom), ("b", _ok())], 1),
    ([("a", lambda: {"status": "skip", "numbers": "not here"})], 0),
    ([("a", lambda: None)], 0),
    ([("a", lambda: 1 / 0)], 1),
    ([], 1),
])
def test_exit_code_is_non_zero_when_any_check_fails(checks, code):
    rows = gpu.run_checks(checks, budget_s=60, device="cpu")
    assert [r["check"] for r in rows] == [n for n, _ in checks]
    assert gpu.exit_code(rows) == code
    table = gpu.format_table(rows)
    for r in rows:
        assert f"| {r['check']} | {r['status']} |" in table


def test_a_failing_check_gives_one_line_and_the_next_check_still_runs():
    rows = gpu.run_checks([("bad", _boom), ("good", _ok("n=3"))], budget_s=60)
    assert rows[0]["status"] == "fail" and "\n" not in rows[0]["numbers"]
    assert rows[0]["numbers"].startswith("RuntimeError: CUDA error: device-side assert triggered")
    assert rows[1] == {**rows[1], "status": "ok", "numbers": "n=3"}


def test_checks_after_the_budget_are_failed_rows_not_run():
    import time

    ran = []
    rows = gpu.run_checks([("first", lambda: ran.append(1) or time.sleep(0.2)),
                           ("late", lambda: ran.append(2) or {})], budget_s=0.1)
    assert ran == [1]  # the second would start after the budget
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "fail" and "budget" in rows[1]["numbers"] and rows[1]["seconds"] == 0.0
    assert gpu.exit_code(rows) == 1


# --- the check list ----------------------------------------------------------------------------------------

def test_every_trainer_has_a_check():
    import typer

    from zscir.cli import app

    train = typer.main.get_command(app).commands["train"]
    assert set(train.commands) == set(gpu.TRAINER_CHECKS)
    assert {f"train-{t}" for t in gpu.TRAINER_CHECKS} <= set(gpu.CHECKS)
    assert {"ddp", "index", "eval", "cpu-vs-cuda"} <= set(gpu.CHECKS)
    assert gpu.GPUCheckConfig().checks == list(gpu.CHECKS)


def test_the_cuda_run_has_the_issue_sizes():
    c = gpu.GPUCheckConfig()
    assert c.device == "cuda" and c.ddp_backend == "nccl" and c.ddp_world is None  # every visible GPU
    assert c.hard_limit_s <= 480 and c.budget_s < c.hard_limit_s
    assert c.min_cosine == 0.999 and c.index_model == "bench-vitb32-random"
    from benchmarks.realistic import VITB32

    assert VITB32["image_size"] == 224 and VITB32["patch_size"] == 32 and VITB32["vision_width"] == 768


# --- the same checks on the CPU (dry run) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def dry_rows():
    torch.set_num_threads(1)
    return gpu.run_gpu_check(gpu.dry_run_config())


def test_dry_run_passes_every_check(dry_rows):
    assert [r["check"] for r in dry_rows] == list(gpu.CHECKS)
    assert [r for r in dry_rows if r["status"] != "ok"] == []
    assert gpu.exit_code(dry_rows) == 0


@pytest.mark.parametrize("check,words", [
    ("train-clip", ["bf16=True", "steps=1", "last_loss="]),
    ("train-tscir-stage1", ["bf16=True", "steps=1"]),
    ("train-tscir-stage2", ["bf16=True", "steps=1"]),
    ("train-fusiondiff-prior", ["bf16=True", "steps=1"]),
    ("train-fusiondiff-adapter", ["bf16=True", "steps=1"]),
    ("train-lit", ["bf16=False", "steps=1"]),
    ("ddp", ["backend=gloo", "world=2"]),
    ("index", ["images=8", "img_per_s="]),
    ("eval", ["model=world-clip", "R@1="]),
    ("cpu-vs-cuda", ["min_cos_image=1", "min_cos_text=1"]),
])
def test_dry_run_rows_report_their_numbers(dry_rows, check, words):
    row = next(r for r in dry_rows if r["check"] == check)
    for w in words:
        assert w in row["numbers"], row


def test_every_trainer_row_says_the_device_its_run_recorded(dry_rows):
    trainers = [r for r in dry_rows if r["check"].startswith("train-")]
    assert len(trainers) == len(gpu.TRAINER_CHECKS)
    assert {r["device"] for r in trainers} == {"cpu"}  # each read from its run's train_log.json
    assert next(r for r in dry_rows if r["check"] == "ddp")["device"] == "cpu x2"


def test_embedding_mismatch_fails_the_run():
    cfg = gpu.dry_run_config()
    cfg.checks, cfg.min_cosine = ["cpu-vs-cuda"], 1.5  # no cosine reaches it: the comparison must fail
    rows = gpu.run_gpu_check(cfg)
    assert rows[0]["status"] == "fail" and "embeddings differ" in rows[0]["numbers"]
    assert gpu.exit_code(rows) == 1


def test_dry_run_entry_point_prints_one_table_and_exits_0():
    r = subprocess.run([sys.executable, "-m", "benchmarks", "gpu", "--dry-run", "--checks", "index", "cpu-vs-cuda"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("| check | status | seconds | device | numbers |") == 1
    assert "| index | ok |" in r.stdout and "| cpu-vs-cuda | ok |" in r.stdout


# --- the device owner --------------------------------------------------------------------------------------

@no_cuda
@pytest.mark.parametrize("spec", ["auto", None, "cpu", torch.device("cpu")])
def test_resolve_device_is_the_cpu_here(spec):
    assert resolve_device(spec) == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3", torch.device("cuda", 1)])
def test_cuda_without_cuda_is_one_clear_error(spec):
    with pytest.raises(DeviceError, match="no CUDA device is available on this machine") as e:
        resolve_device(spec)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec", ["gpu", "", "CPU", " cpu", "cuda:-1", "cuda:x", "cuda:0:1", "tpu", "auto:0",
                                  "cpu,cuda", "cuda 0"])
def test_not_a_device_is_one_clear_error(spec):
    with pytest.raises(DeviceError) as e:
        resolve_device(spec)
    assert repr(spec) in str(e.value) and "\n" not in str(e.value)


@no_cuda
def test_ddp_device_under_gloo_is_the_cpu_and_nccl_needs_cuda():
    assert ddp_device(0, "gloo") == torch.device("cpu") and ddp_device(3, None) == torch.device("cpu")
    with pytest.raises(DeviceError, match="no CUDA device"):
        ddp_device(0, "nccl")


@pytest.mark.parametrize("device,requested", [("cpu", True), ("cpu", False), ("cuda", False),
                                              (torch.device("cpu"), True)])
def test_pin_memory_is_off_unless_asked_for_cuda(device, requested):
    assert pin_memory(device, requested) is False


@no_cuda
def test_pin_memory_asked_for_cuda_without_cuda_is_off():
    assert pin_memory("cuda", True) is False


# --- no `.cuda()` or CUDA literal outside the owner ---------------------------------------------------------

def cuda_literals(source: str) -> list[int]:
    """Lines with a ``.cuda()`` call, or a call (``torch.device``, ``.to``, any ``device=``) given a string
    literal that starts with ``cuda``."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "cuda":  # x.cuda(...) (torch.cuda.* calls end in another name)
            bad.append(node.lineno)
            continue
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        args = list(node.args) if name in ("device", "to") else []
        args += [k.value for k in node.keywords if k.arg == "device"]
        if any(isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("cuda") for a in args):
            bad.append(node.lineno)
    return bad


@pytest.mark.parametrize("snippet,found", [
    ("model.cuda()", True),
    ("x = batch.cuda(non_blocking=True)", True),
    ("torch.device('cuda')", True),
    ("torch.device('cuda:1')", True),
    ("x.to('cuda')", True),
    ("create_backbone(name, device='cuda')", True),
    ("torch.cuda.is_available()", False),
    ("torch.cuda.synchronize(dev)", False),
    ("x.to(dev)", False),
    ("torch.device(value)", False),
    ("torch.device('cpu')", False),
])
def test_the_rule_finds_cuda_literals(snippet, found):
    assert bool(cuda_literals(snippet)) is found


def test_no_cuda_call_or_literal_outside_the_device_owner():
    offenders = []
    for top in (ROOT / "src" / "zscir", ROOT / "benchmarks"):
        for path in sorted(top.rglob("*.py")):
            if path == OWNER:
                continue
            lines = cuda_literals(path.read_text(encoding="utf-8"))
            offenders += [f"{path.relative_to(ROOT)}:{n}" for n in lines]
    assert offenders == []


# --- pinned-memory loaders: behind a flag, off without CUDA --------------------------------------------------

@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    from tests.data_fixtures import corpus, write_wds
    from zscir.data import get_pair_data

    return get_pair_data(write_wds(tmp_path_factory.mktemp("pairs"), corpus(8), per_shard=4))


def _dataloader_kwargs(monkeypatch, loader) -> dict:
    import zscir.data.loader as mod

    seen: dict = {}
    real = mod.DataLoader

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(mod, "DataLoader", spy)
    batches = list(loader.epoch_batches(0))
    assert sum(len(b) for b in batches) == 8  # the loader still delivers every pair
    return seen


@pytest.mark.parametrize("flag,cuda,pinned", [(None, 0, False), (False, 0, False), (True, 0, False),
                                              (False, 1, False), (True, 1, True)])
def test_pair_loader_pins_only_when_asked_and_cuda_is_there(monkeypatch, pair_data, flag, cuda, pinned):
    import zscir.backbones.devices as devices

    monkeypatch.setattr(devices, "cuda_count", lambda: cuda)
    kw = {} if flag is None else {"pin_memory": flag}
    loader = pair_data.loader(4, 16, shuffle=False, workers=0, rank=0, world_size=1, **kw)
    assert loader.pin_memory is pinned
    if not pinned:  # pinning itself needs a CUDA build; the choice is what is tested here
        assert _dataloader_kwargs(monkeypatch, loader)["pin_memory"] is False
