"""Model loading that fails fast and clearly without a hub (and loads from the HF cache without one).

Before: ``--model hf-hub:org/name`` without network retried for 74 s (each retry printed twice) and ended
without naming a missing file or HF_HUB_OFFLINE; a missing ``local-dir:`` folder said "Repo id must be in
the form ..."; ``open_clip:`` without its extra printed a traceback. No test here touches the real hub: the
hub endpoint is pointed at a local port that refuses connections, or at one that never answers.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from zscir.backbones import create_backbone
from zscir.backbones import hub


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> Path:
    """A complete transformers CLIP folder (the tiny random test model)."""
    path = tmp_path_factory.mktemp("tiny-model") / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    return path


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """An empty HF cache and a hub endpoint that refuses connections at once."""
    import huggingface_hub.constants as C

    with socket.socket() as s:  # a free port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(C, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hf-cache"


def _fill_cache(cache: Path, repo: str, files: Path, drop: tuple[str, ...] = ()) -> None:
    """``files`` laid out like huggingface_hub's cache: models--org--name/{refs/main,snapshots/<rev>/}."""
    base = cache / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(files, snap)
    for name in drop:
        (snap / name).unlink()
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(snap.name)


def test_unreachable_hub_fails_fast_naming_files_and_remedies(no_hub):
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        create_backbone("hf-hub:someorg/some-clip")
    took = time.perf_counter() - t0
    msg = str(info.value)
    assert took < 10, f"took {took:.1f}s"
    assert "not in the local Hugging Face cache" in msg and "not reachable" in msg
    for part in ("config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json",
                 "local-dir:", "models--someorg--some-clip", str(no_hub), "HF_HUB_OFFLINE=1"):
        assert part in msg, part
    assert "\n" not in msg  # one line for the CLI's `error:`


def test_silent_hub_gives_up_after_one_short_attempt(no_hub, monkeypatch):
    """A hub that accepts connections but never answers costs one timeout, not a retry storm."""
    import huggingface_hub.constants as C

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    try:
        monkeypatch.setattr(C, "ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        monkeypatch.setattr(hub, "HUB_TIMEOUT_S", 1.0)
        t0 = time.perf_counter()
        with pytest.raises(FileNotFoundError, match="not reachable"):
            create_backbone("hf-hub:someorg/some-clip")
        assert time.perf_counter() - t0 < 10
    finally:
        srv.close()


def test_offline_flag_skips_the_network(no_hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HfApi", None, raising=False)  # any network use would fail loudly
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set") as info:
        create_backbone("hf-hub:someorg/some-clip")
    assert "local-dir:" in str(info.value)


def test_cached_model_loads_without_any_hub(no_hub, tiny_files, monkeypatch):
    _fill_cache(no_hub, "someorg/tiny", tiny_files)
    bb = create_backbone("hf-hub:someorg/tiny")  # the endpoint refuses: this must come from the cache
    assert bb.name == "hf-hub:someorg/tiny"
    ref = create_backbone(f"local-dir:{tiny_files}")
    import torch

    assert torch.equal(bb.encode_texts(["a red circle"]), ref.encode_texts(["a red circle"]))


def test_partial_cache_names_the_missing_file(no_hub, tiny_files):
    _fill_cache(no_hub, "someorg/partial", tiny_files, drop=("model.safetensors",))
    with pytest.raises(FileNotFoundError) as info:
        create_backbone("hf-hub:someorg/partial")
    assert "without model.safetensors or pytorch_model.bin" in str(info.value)


def test_local_dir_missing_folder_and_missing_files(tmp_path, tiny_files):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        create_backbone(f"local-dir:{tmp_path / 'nope'}")
    assert "Repo id" not in str(info.value) and "config.json" in str(info.value)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_files, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks model.safetensors or pytorch_model.bin"):
        create_backbone(f"local-dir:{partial}")


def test_bad_hub_id_is_explained():
    with pytest.raises(FileNotFoundError, match="form org/name"):
        create_backbone("hf-hub:/not/a/repo")


def test_cli_reports_each_case_without_traceback(no_hub, tmp_path, monkeypatch):
    """The CLI reports each case as a usage error (exit status 2) with the message, not a traceback."""
    from typer.testing import CliRunner

    from zscir.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = [(f"local-dir:{tmp_path / 'nope'}", "does not exist"),
             ("hf-hub:someorg/some-clip", "HF_HUB_OFFLINE is set")]
    try:
        import open_clip  # noqa: F401  (installed and working: nothing to report for open_clip:)
    except Exception:  # noqa: BLE001 - absent, or broken by a missing torchvision: the case under test
        cases.append(("open_clip:ViT-B-32/none", "-c constraints.txt -e \".[openclip]\""))
    for model, needle in cases:
        r = CliRunner().invoke(app, ["eval", "--model", model, "--limit", "1"])
        flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.output).split())  # typer may draw a box around it
        assert r.exit_code == 2 and needle in flat, (model, r.output, r.exception)
        assert not isinstance(r.exception, (ImportError, OSError)), r.exception  # handled, not raised
