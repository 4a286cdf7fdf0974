"""The training loop both Fusion-Diff stages share: AdamW, warm-up + cosine, progress, checkpoints, resume.

Each stage supplies a batch-loss function, the trainable parameters and a `save(out)` callback that writes
the model folder (config.json + model.safetensors); the loop adds ``training_state.pt`` (optimiser, RNG,
step) beside it so that ``--resume`` continues an interrupted run exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from zscir.train.common import cosine_lr, load_training_state, save_training_state, write_json

logger = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    steps: int
    lr: float
    weight_decay: float = 0.0
    warmup: int = 100
    eval_every: int = 500
    grad_clip: float = 1.0


def run_loop(
    name: str,
    params: Iterable[torch.nn.Parameter],
    batch_loss: Callable[[int], torch.Tensor],
    loop: LoopConfig,
    out: Path,
    save: Callable[[Path, dict], None],
    evaluate: Callable[[], dict] | None = None,
    resume: bool = False,
    progress: bool = True,
    log_config: dict | None = None,
) -> dict:
    """Train for ``loop.steps`` steps; ``batch_loss(step)`` draws a batch and returns its loss."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=loop.lr, weight_decay=loop.weight_decay)
    start, history = 0, []
    if resume:
        state = load_training_state(out, opt)
        if state is not None:
            start = state["step"]
            history = state["extra"].get("history", [])
    t0 = time.time()
    elapsed0 = history[-1]["elapsed_s"] if history else 0.0
    bar = tqdm(range(start, loop.steps), desc=name, disable=not progress, initial=start, total=loop.steps)
    running = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = loop.lr * cosine_lr(step, loop.steps, loop.warmup)
        loss = batch_loss(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, loop.grad_clip)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        bar.set_postfix(loss=f"{running:.4f}")
        if (step + 1) % loop.eval_every == 0 or step + 1 == loop.steps:
            metrics = evaluate() if evaluate else {}
            entry = {"step": step + 1, "loss": running, **metrics, "elapsed_s": elapsed0 + time.time() - t0}
            history.append(entry)
            logger.info("%s step %d %s", name, step + 1, entry)
            save(out, {"history": history})
            save_training_state(out, step + 1, opt, {"history": history})
            write_json(out / "train_log.json", {"config": log_config or {}, "history": history})
    if not history:  # resumed a finished run
        history = json.loads((out / "train_log.json").read_text())["history"] if (out / "train_log.json").exists() else []
    return {"history": history, "out": str(out), "train_seconds": history[-1]["elapsed_s"] if history else 0.0}
