"""Where tensors go: the one owner of device names (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

Why one owner: device choice scattered as ``.cuda()`` calls and ``"cuda"`` literals breaks on the machines
that have no GPU (every test machine here) and on multi-GPU nodes (every rank on cuda:0). So code asks this
module: `resolve_device` turns a user's spec into a `torch.device` (or one clear error), `ddp_device` gives a
``torchrun`` rank its own GPU, and `pin_memory` says whether a loader should pin its batches (only when the
batches go to a CUDA device, and only when asked: pinning costs page-locked host memory). A CPU test
(tests/test_gpu_check.py) checks that no ``.cuda()`` call or ``torch.device("cuda...")`` literal appears
outside this file.
"""

from __future__ import annotations

import torch

__all__ = ["DEVICE_SPECS", "DeviceError", "cuda_count", "resolve_device", "train_device", "ddp_device", "pin_memory"]

#: what a device option accepts (``mps`` where PyTorch offers it)
DEVICE_SPECS = "auto, cpu, cuda, cuda:N or mps"


class DeviceError(ValueError):
    """A device spec that does not name a device of this machine (one line for the user)."""


def cuda_count() -> int:
    """Visible CUDA devices (0 without CUDA, whatever the build)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) → ``cuda`` when a GPU is visible, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` and
    ``mps`` are checked against this machine. Raises `DeviceError` with one line naming what is missing."""
    if spec is None or spec == "auto":
        return torch.device("cuda", 0) if cuda_count() else torch.device("cpu")
    try:
        dev = spec if isinstance(spec, torch.device) else torch.device(str(spec))  # exact, as torch reads it
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"{spec!r} is not a device; expected {DEVICE_SPECS}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        n = cuda_count()
        if n == 0:
            raise DeviceError(f"{spec!r}: no CUDA device is available on this machine (use cpu)")
        index = 0 if dev.index is None else dev.index
        if index >= n:
            raise DeviceError(f"{spec!r}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError(f"{spec!r}: MPS is not available on this machine (use cpu)")
        return dev
    raise DeviceError(f"{spec!r}: unsupported device type; expected {DEVICE_SPECS}")


def train_device(spec: str | torch.device | None, local_rank: int | None = None) -> torch.device:
    """The device a trainer places its model and batches on: `resolve_device`, and under ``torchrun``
    (``local_rank`` given) a CUDA spec means this rank's own GPU ``cuda:<local_rank>``, made current, so the
    ranks of one node do not all train on cuda:0."""
    dev = resolve_device(spec)
    if local_rank is None or dev.type != "cuda":
        return dev
    dev = resolve_device(f"cuda:{int(local_rank)}")
    torch.cuda.set_device(dev)
    return dev


def ddp_device(local_rank: int, backend: str | None) -> torch.device:
    """The device of one ``torchrun`` rank: ``cuda:<local_rank>`` under NCCL (which moves CUDA tensors
    only; the rank is also made the current CUDA device, so collectives do not all land on cuda:0), the
    CPU otherwise (gloo)."""
    if backend != "nccl":
        return torch.device("cpu")
    dev = resolve_device(f"cuda:{int(local_rank)}")
    torch.cuda.set_device(dev)
    return dev


def pin_memory(device: str | torch.device, requested: bool = False) -> bool:
    """Whether a DataLoader feeding ``device`` should pin its batches: only when ``requested`` and the
    batches go to CUDA (pinning for the CPU only costs page-locked memory)."""
    return bool(requested) and torch.device(device).type == "cuda" and cuda_count() > 0
