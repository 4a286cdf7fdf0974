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


def uint8_to_pixels(batch: np.ndarray | torch.Tensor, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> torch.Tensor:
    """(B, H, W, 3) uint8 images already at the model's resolution → normalised (B, 3, H, W) floats.

    This equals what the CLIP image processor does for images that already have the model's size (resize
    and centre-crop are then identities), without going through PIL for every training sample.
    """
    x = torch.as_tensor(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def save_training_state(out_dir: Path, step: int, optimizer, extra: dict[str, Any] | None = None) -> None:
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "extra": extra or {},
    }
    tmp = out_dir / "training_state.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, out_dir / "training_state.pt")


def load_training_state(out_dir: Path, optimizer) -> dict[str, Any] | None:
    path = out_dir / "training_state.pt"
    if not path.exists():
        return None
    state = torch.load(path, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    random.setstate(state["python_rng"])
    logger.info("resumed from %s at step %d", path, state["step"])
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
