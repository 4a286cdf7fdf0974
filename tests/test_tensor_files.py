"""The one reader of tensor files (`zscir.backbones.tensor_files`, issue 21 §1 and §4): damaged files and
non-finite weights give one error naming the file, for every kind of model folder zscir loads.

Before: a damaged ``model.safetensors`` (truncated, empty, random bytes, a huge or non-JSON header, offsets
past the end) surfaced as a raw ``SafetensorError`` traceback from whichever loader met it, and weights with
NaN / inf / 1e30 loaded silently — a peer φ, LiT heads, a TSCIR or Fusion-Diff checkpoint, a CLIP folder —
and turned into ``-inf`` scores or NaN indexes.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from zscir.backbones.tensor_files import (MAX_ABS_WEIGHT, TensorFileError, check_finite, load_safetensors,
                                          load_torch_tensors)

runner = CliRunner()


def _shipped(name: str) -> Path:
    from zscir.backbones.assets import shipped_model_dir

    return shipped_model_dir(name)


# ------------------------------------------------------------------------------------------ hostile files
def damage(path: Path, kind: str) -> None:
    """Rewrite the safetensors file ``path`` into one of the damaged shapes of issue 21 §4."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    if kind == "truncated":
        out = data[: len(data) - max(7, (len(data) - 8 - n) // 2)]
    elif kind == "empty":
        out = b""
    elif kind == "random":
        out = random.Random(0).randbytes(4096)
    elif kind == "huge-header":
        out = struct.pack("<Q", 2 ** 60) + data[8:]
    elif kind == "non-json":
        out = data[:8] + b"x" * n + data[8 + n:]
    elif kind == "past-end":
        header = json.loads(data[8:8 + n])
        name = next(k for k in header if k != "__metadata__")
        begin, end = header[name]["data_offsets"]
        header[name]["data_offsets"] = [begin, end + 10 ** 6]
        raw = json.dumps(header).encode()
        out = struct.pack("<Q", len(raw)) + raw + data[8 + n:]
    else:  # pragma: no cover
        raise AssertionError(kind)
    path.write_bytes(out)


DAMAGES = ["truncated", "empty", "random", "huge-header", "non-json", "past-end"]
VALUES = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf, "1e30": 1e30}


def poison(path: Path, value: float) -> str:
    """Set one element of the largest floating tensor of the safetensors file ``path`` to ``value``."""
    state = load_file(str(path))
    name = max((k for k, v in state.items() if v.is_floating_point()), key=lambda k: state[k].numel())
    t = state[name].clone()
    t.view(-1)[0] = value
    state[name] = t
    save_file(state, str(path), metadata={"format": "pt"})
    return name


# ------------------------------------------------------------------------------------------ model folders
@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from zscir.backbones import create_backbone

    path = tmp_path_factory.mktemp("tensor-files") / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def world_clip():
    from zscir.backbones import create_backbone

    return create_backbone("world-clip")


def _lit_available() -> bool:
    from zscir.backbones.lit import default_towers_installed

    return default_towers_installed()


def make_folder(kind: str, tmp: Path, tiny_clip_dir: Path) -> tuple[Path, Path]:
    """(folder to load, the safetensors file inside it to damage) for one model kind."""
    if kind == "raw":
        tmp.mkdir(parents=True, exist_ok=True)
        save_file({"w": torch.randn(4, 3), "b": torch.zeros(3)}, str(tmp / "t.safetensors"))
        return tmp, tmp / "t.safetensors"
    if kind == "hf-clip":
        shutil.copytree(tiny_clip_dir, tmp)
        return tmp, tmp / "model.safetensors"
    if kind == "fusiondiff":
        shutil.copytree(_shipped("fusiondiff") / "joint", tmp)
        return tmp, tmp / "model.safetensors"
    if kind == "tscir":
        shutil.copytree(_shipped("tscir"), tmp)
        return tmp, tmp / "stage1" / "model.safetensors"
    if kind == "tscir-adapters":
        shutil.copytree(_shipped("tscir"), tmp)
        return tmp, tmp / "adapters.safetensors"
    if kind == "lit":
        if not _lit_available():
            pytest.skip("LiT towers ([real] extra) not installed")
        shutil.copytree(_shipped("lit-clipart"), tmp, ignore=shutil.ignore_patterns("methods"))
        return tmp, tmp / "model.safetensors"
    raise AssertionError(kind)


def load_kind(kind: str, folder: Path, file: Path, world_clip=None):
    if kind == "raw":
        return load_safetensors(file)
    if kind == "hf-clip":
        from zscir.backbones import create_backbone

        return create_backbone(f"local-dir:{folder}")
    if kind == "fusiondiff":
        from zscir.methods.fusiondiff.checkpoint import load_checkpoint

        return load_checkpoint(folder)
    if kind.startswith("tscir"):
        from zscir.methods.tscir.checkpoint import load_checkpoint

        return load_checkpoint(folder, world_clip)
    if kind == "lit":
        from zscir.backbones.lit import LiTBackbone

        return LiTBackbone.from_pretrained(folder)
    raise AssertionError(kind)


KINDS = ["raw", "hf-clip", "fusiondiff", "tscir", "tscir-adapters", "lit"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_safetensors_is_one_error_naming_the_file(kind, how, tmp_path, tiny_clip_dir, request):
    folder, file = make_folder(kind, tmp_path / "m", tiny_clip_dir)
    damage(file, how)
    bb = request.getfixturevalue("world_clip") if kind.startswith("tscir") else None
    with pytest.raises(TensorFileError) as info:
        load_kind(kind, folder, file, bb)
    msg = str(info.value)
    assert str(file) in msg and "\n" not in msg, msg


@pytest.mark.parametrize("kind", ["hf-clip", "fusiondiff", "tscir", "lit"])
@pytest.mark.parametrize("value", list(VALUES))
def test_non_finite_weights_are_refused(kind, value, tmp_path, tiny_clip_dir, request):
    folder, file = make_folder(kind, tmp_path / "m", tiny_clip_dir)
    name = poison(file, VALUES[value])
    bb = request.getfixturevalue("world_clip") if kind.startswith("tscir") else None
    with pytest.raises(TensorFileError) as info:
        load_kind(kind, folder, file, bb)
    msg = str(info.value)
    assert str(file) in msg and "\n" not in msg, msg
    if kind != "hf-clip":  # transformers renames a few keys on load; the file and the reason are what matter
        assert name in msg, msg
    assert ("NaN" in msg) if value == "nan" else ("infinite" in msg or "magnitude" in msg), msg


def _peer_state(seed: int = 1) -> dict[str, torch.Tensor]:
    """A SEARLE-layout φ for tiny-clip-test (projection dim 24, token width 32)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"layers.0": (40, 24), "layers.3": (40, 40), "layers.6": (32, 40)}
    state = {}
    for k, (o, i) in shapes.items():
        state[f"{k}.weight"] = torch.randn(o, i, generator=g) / math.sqrt(i)
        state[f"{k}.bias"] = torch.zeros(o)
    return state


@pytest.mark.parametrize("value", list(VALUES))
def test_peer_phi_with_non_finite_weights_is_refused(value, tmp_path, tiny_backbone):
    from zscir.methods.peers import PEERS, PeerCheckpointError, load_phi

    state = _peer_state()
    state["layers.3.weight"][5, 7] = VALUES[value]
    torch.save({"Phi": state}, tmp_path / "phi.pt")
    with pytest.raises(PeerCheckpointError) as info:
        load_phi(tmp_path / "phi.pt", PEERS["searle"], tiny_backbone)
    msg = str(info.value)
    assert "layers.3.weight" in msg and str(tmp_path / "phi.pt") in msg and "\n" not in msg, msg


def test_peer_phi_with_finite_weights_still_loads(tmp_path, tiny_backbone):
    from zscir.methods.peers import PEERS, load_phi

    torch.save({"Phi": _peer_state(), "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "phi.pt")
    phi, info = load_phi(tmp_path / "phi.pt", PEERS["searle"], tiny_backbone)
    assert info["phi_dims"]["in_dim"] == 24 and torch.isfinite(phi(torch.randn(3, 24))).all()


# ------------------------------------------------------------------------------------------ the CLI: one line
def _one_error_line(res, *needles: str) -> str:
    text = res.output + (res.stderr or "")
    assert "Traceback" not in text, text
    assert res.exit_code == 2, (res.exit_code, text)
    lines = [ln for ln in res.stderr.splitlines()
             if ln.strip() and " WARNING " not in ln and not ln.startswith(("note:", "warning:"))
             and not ln.startswith("Loading weights")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("tf-photos") / "photos"
    root.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 40), (60 * i, 20, 200)).save(root / f"{i}.png")
    return root


@pytest.mark.parametrize("how", DAMAGES)
def test_cli_damaged_model_folder_is_one_error_line(how, tmp_path, tiny_clip_dir, photos):
    from zscir.cli import app

    folder, file = make_folder("hf-clip", tmp_path / "m", tiny_clip_dir)
    damage(file, how)
    res = runner.invoke(app, ["index", str(photos), "--out", str(tmp_path / "idx"), "--model", f"local-dir:{folder}"])
    _one_error_line(res, str(file))
    assert not (tmp_path / "idx").exists() or not any((tmp_path / "idx").glob("*.npy"))


@pytest.mark.parametrize("value", ["nan", "1e30"])
def test_cli_peer_checkpoint_with_non_finite_weights_is_one_error_line(value, tmp_path, photos):
    from zscir.cli import app

    state = _peer_state()
    state["layers.0.bias"][0] = VALUES[value]
    torch.save({"Phi": state}, tmp_path / "phi.pt")
    res = runner.invoke(app, ["index", str(photos), "--out", str(tmp_path / "idx"), "--model", "tiny-clip-test",
                              "-m", "searle", "--checkpoint", str(tmp_path / "phi.pt")])
    _one_error_line(res, str(tmp_path / "phi.pt"), "layers.0.bias")


# ------------------------------------------------------------------------------------------ the loader itself
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


def test_a_pickle_that_runs_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"w": torch.zeros(2), "x": _RunsCode(marker)}, f)
    with pytest.raises(TensorFileError, match="arbitrary pickled objects") as info:
        load_torch_tensors(tmp_path / "evil.pt")
    assert str(tmp_path / "evil.pt") in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 20, b"PK\x03\x04 not really a zip"])
def test_unreadable_torch_file_is_one_error(content, tmp_path):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(TensorFileError) as info:
        load_torch_tensors(tmp_path / "x.pt")
    assert str(tmp_path / "x.pt") in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    for load in (load_safetensors, load_torch_tensors):
        with pytest.raises(FileNotFoundError, match="not found"):
            load(tmp_path / "nope")


def test_torch_file_round_trip_with_plain_containers(tmp_path):
    obj = {"w": torch.randn(3, 2), "step": 7, "name": "x", "items": [1, 2.5, None, ("a", "b")]}
    torch.save(obj, tmp_path / "ok.pt")
    back = load_torch_tensors(tmp_path / "ok.pt")
    assert torch.equal(back["w"], obj["w"]) and back["items"] == obj["items"] and back["step"] == 7


@pytest.mark.parametrize("value,ok", [(1e19, True), (-1e19, True), (MAX_ABS_WEIGHT * 10, False),
                                      (-MAX_ABS_WEIGHT * 10, False)])
def test_the_magnitude_bound(value, ok):
    t = {"a": {"b": [torch.zeros(3), torch.tensor([0.0, value])]}}
    if ok:
        check_finite(t, "src")
    else:
        with pytest.raises(TensorFileError, match=r"a\.b\[1\]"):
            check_finite(t, "src")


def test_integer_tensors_and_disabled_bound_are_not_checked():
    check_finite({"rng": torch.full((4,), 2 ** 40, dtype=torch.int64)}, "src")
    check_finite({"m": torch.tensor([1e30])}, "src", bound=None)
    with pytest.raises(TensorFileError, match="NaN"):
        check_finite({"m": torch.tensor([float("nan")], dtype=torch.bfloat16)}, "src", bound=None)
