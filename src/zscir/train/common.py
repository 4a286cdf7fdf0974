"""Pieces every zscir trainer shares: seeding, optimiser schedule, resumable checkpoints, fast pixels.

Trainers save their *model* as a self-describing folder (config.json + model.safetensors, loadable
without the trainer) and their *training state* (optimiser, scheduler, step, RNG) beside it in
``training_state.pt``, so an interrupted run resumes from the last checkpoint with ``--resume``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zscir.backbones.tensor_files import TensorFileError, load_torch_tensors, save_torch_tensors

logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int | None) -> int | None:
    """Use ``n`` intra-op threads; None chooses for batched work (`zscir.threads`: the idle usable
    cores), 0 leaves torch's default. Returns the count now used (None for 0), which trainers record."""
    from zscir.threads import use_threads

    return use_threads("batch", n).threads


def cosine_lr(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 0, as a multiplier of the base learning rate."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def fit_batch(batch_size: int, n: int, what: str = "training set") -> int:
    """The batch to draw without replacement from ``n`` items: ``batch_size``, or all ``n`` items (with a
    warning saying so) when the training set is smaller than one batch. Drawing more than ``n`` items
    would fail inside numpy ("Cannot take a larger sample than population")."""
    if n < batch_size:
        logger.warning("%s: %d items, fewer than the batch size %d: training with batches of %d", what, n,
                       batch_size, n)
        return n
    return batch_size


def uint8_to_pixels(batch: np.ndarray | torch.Tensor, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    """(B, H, W, 3) uint8 images already at the model's resolution → normalised (B, 3, H, W) floats.

    This equals what the CLIP image processor does for images that already have the model's size (resize
    and centre-crop are then identities), without going through PIL for every training sample.
    """
    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)  # on the batch's device: a trainer may send the
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)  # uint8 batch to the GPU first (4x fewer bytes)
    return (x - m) / s


#: version of the ``training_state.pt`` layout; files of another layout (or a pickle with objects) are refused
TRAINING_STATE_FORMAT = "zscir-training-state-v2"


def _rng_states() -> dict[str, Any]:
    """torch / numpy / python RNG states as tensors, ints, floats and lists: what ``weights_only`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python_rng": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }


def _restore_rng(state: dict[str, Any], path: Path) -> None:
    try:
        torch.set_rng_state(state["torch_rng"])
        n = state["numpy_rng"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                             float(n["cached_gaussian"])))
        p = state["python_rng"]
        random.setstate((int(p["version"]), tuple(int(x) for x in p["internal"]), p["gauss_next"]))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise TensorFileError(f"{path}: the RNG state is not one zscir wrote ({type(e).__name__}: {e})") from None


def save_training_state(out_dir: Path, step: int, optimizer, extra: dict[str, Any] | None = None) -> None:
    """Write ``training_state.pt`` (optimiser, step, RNG states, ``extra``) as plain tensors and containers,
    so `load_training_state` reads it back with ``torch.load(weights_only=True)``: ``extra`` must hold only
    dicts, lists, strings and numbers."""
    state = {"format": TRAINING_STATE_FORMAT, "step": int(step), "optimizer": optimizer.state_dict(),
             **_rng_states(), "extra": extra or {}}
    save_torch_tensors(state, Path(out_dir) / "training_state.pt")


def load_training_state(out_dir: Path, optimizer) -> dict[str, Any] | None:
    """Restore the optimiser and RNG states saved by `save_training_state`; None when there is none.

    The file is data, not code: it is read with ``weights_only=True`` (`zscir.backbones.tensor_files`), so
    a planted pickle that would run code is refused with `TensorFileError` (one ``error:`` line), as is a
    state of another layout (an older zscir, another program) or one holding NaN / inf.
    """
    path = Path(out_dir) / "training_state.pt"
    if not path.exists():
        return None
    try:
        state = load_torch_tensors(path, bound=None)
    except TensorFileError as e:  # a planted file, or one an older zscir pickled with numpy objects
        raise TensorFileError(f"{e}; if the run is yours, delete {path.name} to resume the saved weights from "
                              "step 0, or run without --resume") from None
    if not isinstance(state, dict) or state.get("format") != TRAINING_STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TensorFileError(f"{path}: not a training state this zscir wrote (format {found!r}, expected "
                              f"{TRAINING_STATE_FORMAT!r}); delete it to train from the last saved model, or "
                              "run without --resume")
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0 or not isinstance(state.get("extra"), dict):
        raise TensorFileError(f"{path}: step {step!r} / extra are not those of a zscir training state")
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise TensorFileError(f"{path}: the optimiser state does not fit this model "
                              f"({type(e).__name__}: {e})") from None
    _restore_rng(state, path)
    logger.info("resumed from %s at step %d", path, step)
    return state


def write_json(path: Path, obj: Any) -> None:
    if is_dataclass(obj):
        obj = asdict(obj)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def retrieval_recalls(a: torch.Tensor, b: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """R@K (×100) for retrieving b[i] from a[i] and a[i] from b[i] (a, b: (N, D) normalised)."""
    sim = a @ b.T
    n = sim.shape[0]
    target = torch.arange(n)
    out = {}
    for name, s in (("a2b", sim), ("b2a", sim.T)):
        rank = (s > s[target, target][:, None]).sum(1)  # number of items scored above the true one
        for k in ks:
            out[f"{name}_R@{k}"] = float((rank < k).float().mean() * 100)
    return out
