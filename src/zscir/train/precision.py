"""Which arithmetic a training run uses: bf16 autocast or plain fp32, chosen from the hardware by default.

Why: bf16 autocast is a large speed-up only where the hardware computes bf16 natively (CPUs with the
AVX512-BF16 or AMX-BF16 instructions, Arm CPUs with the BF16 extension, CUDA GPUs from Ampere on). Elsewhere
PyTorch emulates it, and the TSCIR stages ran about 9x slower (2.53 s against 0.29 s per step) than in fp32.
So ``auto`` (the default of every trainer) turns bf16 on only where it is native; ``--precision bf16`` or
``fp32`` overrides that, and the resolved choice is what the run's config records.
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")


class Precision(str, Enum):
    """The values of every trainer's ``--precision`` option (typer validates them)."""

    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


#: help text of every trainer's ``--precision`` option
PRECISION_HELP = ("auto | bf16 | fp32: bf16 autocast or plain fp32; auto = bf16 only where the hardware computes "
                  "it natively (CPU flags avx512_bf16/amx_bf16, or a bf16-capable GPU); the run config records "
                  "the choice.")
#: /proc/cpuinfo flags of native bf16 arithmetic: x86 (AVX512-BF16, AMX-BF16) and Arm ("bf16" feature)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm); empty if unknown."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU computes bf16 natively (by its feature flags)."""
    return bool(cpu_flags(cpuinfo) & set(BF16_CPU_FLAGS))


def native_bf16(device: str = "cpu", cpuinfo: str | None = None) -> bool:
    """Whether bf16 autocast is native (fast) on ``device``: CPU flags, or CUDA's own check."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return cpu_has_native_bf16(cpuinfo)
    return False  # mps, xpu, ...: leave them in fp32 unless asked


def parse_precision(precision: str | Precision) -> bool | None:
    """``auto`` → None (decide from the hardware), ``bf16`` → True, ``fp32`` → False."""
    p = (precision.value if isinstance(precision, Precision) else precision).strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return {"auto": None, "bf16": True, "fp32": False}[p]


def resolve_bf16(bf16: bool | None, device: str = "cpu", cpuinfo: str | None = None) -> bool:
    """A config's ``bf16`` (None = auto) made concrete for ``device``, logging why."""
    if bf16 is not None:
        return bool(bf16)
    chosen = native_bf16(device, cpuinfo)
    logger.info("precision auto on %s: %s", device, "bf16 autocast (native bf16)" if chosen else
                "fp32 (no native bf16 here; --precision bf16 forces it)")
    return chosen
