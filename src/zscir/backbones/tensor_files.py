"""The one reader of tensor files: every checkpoint, model folder, training state and cache zscir loads.

Why one owner: a tensor file is *data* a user may have been handed (a checkpoint from a colleague, a run
folder on a shared disk, a cache another process wrote), and the ways to read one differ in what a hostile
file can do. Here there are exactly two:

* `load_safetensors` — safetensors files (model folders, checkpoints); the format has no code in it.
* `load_torch_tensors` — ``torch.save`` files (released peer checkpoints, ``training_state.pt``, feature
  caches), always read with ``torch.load(weights_only=True)`` on the CPU, whose unpickler rebuilds only
  tensors and plain containers (dict, list, tuple, str, int, float, bool, None). A file that needs any
  other object refuses to load instead of running the code its pickle names.

Every failure — a damaged file (truncated, empty, random bytes, a huge or non-JSON header, offsets past the
end), a pickle that would run code — is one `TensorFileError` (a ``ValueError``, so the CLI prints
``error: <file>: ...`` on one line) naming the file; a missing file is a ``FileNotFoundError`` as anywhere.
Weights are checked by `check_finite`: NaN, ±inf and magnitudes above `MAX_ABS_WEIGHT` are refused, because
they do not fail loudly later — they turn into ``-inf`` scores, NaN embeddings and indexes that silently rank
nothing. A test (tests/test_no_code_from_data.py) keeps ``torch.load`` in this module only.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import torch

logger = logging.getLogger(__name__)

__all__ = ["TensorFileError", "MAX_ABS_WEIGHT", "load_safetensors", "check_safetensors", "load_torch_tensors",
           "save_torch_tensors", "check_finite", "check_module_finite"]

#: the largest |value| a loaded weight may have. Trained weights are O(1) (a logit scale is ~100, LayerNorm
#: statistics and Adam moments stay far below 1e10); 1e20 is far above anything a trained model holds, yet
#: low enough that a single product of two such values (1e40) still overflows float32 to inf — so anything
#: above it cannot come from training and would only poison scores
MAX_ABS_WEIGHT = 1e20


class TensorFileError(ValueError):
    """A tensor file is missing, damaged, unsafe to unpickle, or holds non-finite / absurd weights.

    The message is one line and names the file; the CLI prints it as ``error: ...``.
    """


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]


def _unpickler_reason(exc: BaseException) -> str:
    """torch's own reason (``Unsupported global: GLOBAL x.y ...``) without its multi-line advice to trust the file."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "Unsupported" in line or "WeightsUnpickler error" in line:
            return f" ({line.replace('WeightsUnpickler error: ', '').split('. Please')[0][:200]})"
    return ""


def _require_file(path: Path, what: str) -> None:
    if not path.exists():  # an OSError like any missing file (the CLI prints "error: <path>: ... not found")
        raise FileNotFoundError(errno.ENOENT, f"{what} not found", str(path))
    if not path.is_file():
        raise TensorFileError(f"{path}: {what} is not a regular file")


# ---------------------------------------------------------------------------------------- finiteness
def _named_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts / lists / tuples, with a dotted name."""
    if isinstance(obj, torch.Tensor):
        yield prefix or "<tensor>", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _named_tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _named_tensors(v, f"{prefix}[{i}]")


def check_finite(tensors: Any, source: str | os.PathLike, bound: float | None = MAX_ABS_WEIGHT) -> None:
    """Refuse NaN, ±inf and (unless ``bound`` is None) values with ``|v| > bound`` in any floating tensor.

    ``tensors``: a tensor, or dicts / lists / tuples of them (a state dict, a loaded ``torch.save`` object);
    ``source`` names the file in the message. Integer tensors (token ids, RNG states) are not checked.
    """
    for name, t in _named_tensors(tensors):
        if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        x = t.detach()
        if x.device.type == "meta":
            continue
        x = x.abs() if x.is_complex() else x.float().abs()
        if not bool(torch.isfinite(x).all()):
            kind = "NaN" if bool(torch.isnan(x).any()) else "infinite values"
            raise TensorFileError(f"{source}: tensor {name!r} holds {kind}; refusing weights that would turn "
                                  "into NaN or -inf scores")
        if bound is not None:
            peak = float(x.max())
            if peak > bound:
                raise TensorFileError(f"{source}: tensor {name!r} holds a value of magnitude {peak:.3g} "
                                      f"(> {bound:.0e}); no trained weight is that large")


def check_module_finite(module: torch.nn.Module, source: str | os.PathLike,
                        bound: float | None = MAX_ABS_WEIGHT) -> None:
    """`check_finite` over a loaded module's parameters and buffers (weights another library read)."""
    check_finite(dict(module.state_dict()), source, bound)


# ---------------------------------------------------------------------------------------- safetensors
def check_safetensors(path: str | os.PathLike) -> list[str]:
    """Validate a safetensors file's header (size, JSON, dtypes, offsets inside the file) without reading
    its data; returns the tensor names. For files another library (transformers) will load."""
    from safetensors import SafetensorError, safe_open

    p = Path(path).expanduser()
    _require_file(p, "safetensors file")
    try:
        with safe_open(str(p), framework="pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TensorFileError(f"{p}: not a readable safetensors file ({_one_line(e)})") from None


def load_safetensors(path: str | os.PathLike, check: bool = True,
                     bound: float | None = MAX_ABS_WEIGHT) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file on the CPU; damaged files and (with ``check``) non-finite weights
    raise `TensorFileError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    _require_file(p, "safetensors file")
    try:
        tensors = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise TensorFileError(f"{p}: not a readable safetensors file ({_one_line(e)})") from None
    if check:
        check_finite(tensors, p, bound)
    return tensors


# ---------------------------------------------------------------------------------------- torch.save files
def load_torch_tensors(path: str | os.PathLike, check: bool = True, bound: float | None = MAX_ABS_WEIGHT) -> Any:
    """A ``torch.save`` file read with ``weights_only=True`` on the CPU (tensors and plain containers only).

    A pickle that would construct any other object (and so could run code) raises `TensorFileError`, as do
    unreadable files and, with ``check``, non-finite or absurd weights (`check_finite`).
    """
    p = Path(path).expanduser()
    _require_file(p, "tensor file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise TensorFileError(
            f"{p}: not a plain tensor file: loading it would need arbitrary pickled objects, which zscir refuses "
            f"to run{_unpickler_reason(e)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError, ImportError, KeyError,
            IndexError, MemoryError, OverflowError, UnicodeDecodeError) as e:
        raise TensorFileError(f"{p}: not a readable PyTorch file ({type(e).__name__}: {_one_line(e)})") from None
    if check:
        check_finite(obj, p, bound)
    return obj


def save_torch_tensors(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` (tensors and plain containers only, so `load_torch_tensors` reads it back) atomically:
    a temporary file beside it, then a rename — a crash never leaves half a file under the real name."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, p)
    return p
