"""The training loop both Fusion-Diff stages share: AdamW, warm-up + cosine, progress, checkpoints, resume.

Each stage supplies a batch-loss function, the trainable parameters and a `save(out)` callback that writes
the model folder (config.json + model.safetensors); the loop adds ``training_state.pt`` (optimiser, RNG,
step) beside it so that ``--resume`` continues an interrupted run exactly where it stopped.

Data-parallel training (``torchrun``, see `zscir.train.distributed`): the stage wraps its trainable
modules in DDP (`Denoise` + `wrap_ddp`) and its ``batch_loss`` returns a `LocalLoss` from `sliced_loss`.
The diffusion loss is a per-sample MSE, so no gather is needed: every rank draws the *global* batch's
indices, noise, time steps and condition-dropout masks from identically seeded generators (exactly the
draws of a 1-process run) and evaluates the denoiser on its slice only. The loop back-propagates the
local mean scaled by ``W · n_local / B``, so DDP's gradient average is the gradient of the global-batch
mean even for unequal slices, and logs the global-batch loss (the all-reduced, size-weighted sum), the
same number on every rank. Only rank 0 evaluates and writes; the others do not wait for it until the
next collective (evaluation itself uses none).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zscir.train.common import cosine_lr, load_training_state, save_training_state, write_json
from zscir.train.distributed import DistContext, barrier, local_range, reduce_sum

logger = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    steps: int
    lr: float
    weight_decay: float = 0.0
    warmup: int = 100
    eval_every: int = 500
    grad_clip: float = 1.0
    bf16: bool = False  # bf16 autocast of the loss computation (zscir.train.precision decides the default)


class LocalLoss(NamedTuple):
    """A per-sample-mean loss over this rank's ``share`` (n_local / B) of the global batch."""

    loss: torch.Tensor
    share: float


class Denoise(torch.nn.Module):
    """`DiffusionPrior.predict` behind one ``forward``, so DistributedDataParallel sees the trainable modules.

    DDP only averages gradients of parameters used through the wrapper's ``forward``; the prior's
    denoiser and the (optional) Control-Adapter are submodules here, and frozen parameters
    (``requires_grad=False``, e.g. the prior in adapter mode) are ignored by DDP's reducer.
    """

    def __init__(self, prior, adapter=None):
        super().__init__()
        self.denoiser = prior.denoiser
        self.adapter = adapter
        object.__setattr__(self, "_prior", prior)  # not a submodule: its parameters are the denoiser's

    def forward(self, x_t, t, cond_scaled, keep_cond=None, control=None) -> torch.Tensor:
        return self._prior.predict(x_t, t, cond_scaled, keep_cond, self.adapter, control)


def sliced_loss(prior, net: torch.nn.Module, z0: torch.Tensor, cond: torch.Tensor, ctx: DistContext,
                control: torch.Tensor | None = None) -> LocalLoss:
    """`DiffusionPrior.loss` of the *global* batch ``(z0, cond, control)``, evaluated on this rank's rows.

    The random draws are those of `DiffusionPrior.loss` for the whole batch, in the same order, from the
    same (identically seeded) torch RNG, so without ``torchrun`` this *is* ``prior.loss`` and with it the
    ranks together see exactly the samples of a 1-process run. ``net`` is `Denoise` (DDP-wrapped or not).
    """
    b = z0.shape[0]
    x0 = prior.to_x(z0)
    noise = torch.randn_like(x0)
    t = torch.randint(0, prior.cfg.num_train_timesteps, (b,), device=z0.device)
    keep = torch.rand(b, device=z0.device) >= prior.cfg.cond_dropout
    lo, hi = local_range(b, ctx)
    if hi == lo:
        raise ValueError(f"global batch {b} is smaller than the world size {ctx.world_size}")
    x0, noise, t = x0[lo:hi], noise[lo:hi], t[lo:hi]
    x_t = prior.train_scheduler.add_noise(x0, noise, t)
    pred = net(x_t, t, prior.cond_x(cond[lo:hi]), keep[lo:hi], None if control is None else control[lo:hi])
    if prior.cfg.prediction_type == "sample":
        target = x0
    elif prior.cfg.prediction_type == "v_prediction":
        target = prior.train_scheduler.get_velocity(x0, noise, t)
    else:
        target = noise
    return LocalLoss(F.mse_loss(pred, target), (hi - lo) / b)


def run_loop(
    name: str,
    params: Iterable[torch.nn.Parameter],
    batch_loss: Callable[[int], torch.Tensor | LocalLoss],
    loop: LoopConfig,
    out: Path,
    save: Callable[[Path, dict], None],
    evaluate: Callable[[], dict] | None = None,
    resume: bool = False,
    progress: bool = True,
    log_config: dict | None = None,
    ctx: DistContext | None = None,
) -> dict:
    """Train for ``loop.steps`` steps; ``batch_loss(step)`` draws a batch and returns its loss.

    ``batch_loss`` returns either the global-batch loss itself (identical on every rank) or a `LocalLoss`.
    Under DDP (``ctx`` enabled) the modules behind ``batch_loss`` must be DDP-wrapped so that ``backward``
    averages the gradients. The result's ``losses`` are the per-step global-batch losses.
    """
    ctx = ctx or DistContext()
    progress = progress and ctx.is_main
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
    losses: list[float] = []
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = loop.lr * cosine_lr(step, loop.steps, loop.warmup)
        with torch.autocast(params[0].device.type if params else "cpu", dtype=torch.bfloat16, enabled=loop.bf16):
            loss = batch_loss(step)
        if isinstance(loss, LocalLoss):
            local, share = loss
            scale = share * ctx.world_size  # DDP averages over ranks: weight each by its share of the batch
            backward = local if scale == 1.0 else local * scale
            logged = float(reduce_sum(local.detach() * share, ctx))
        else:
            backward, logged = loss, float(loss.detach())
        opt.zero_grad(set_to_none=True)
        backward.backward()
        torch.nn.utils.clip_grad_norm_(params, loop.grad_clip)
        opt.step()
        losses.append(logged)
        running = logged if running is None else 0.98 * running + 0.02 * logged
        bar.set_postfix(loss=f"{running:.4f}")
        if ((step + 1) % loop.eval_every == 0 or step + 1 == loop.steps) and ctx.is_main:  # one writer
            metrics = evaluate() if evaluate else {}
            entry = {"step": step + 1, "loss": running, **metrics, "elapsed_s": elapsed0 + time.time() - t0}
            history.append(entry)
            logger.info("%s step %d %s", name, step + 1, entry)
            save(out, {"history": history})
            save_training_state(out, step + 1, opt, {"history": history})
            write_json(out / "train_log.json", {"config": log_config or {}, "history": history,
                                                "world_size": ctx.world_size})
    barrier(ctx)  # rank 0's last checkpoint is on disk before any rank returns
    if not history:  # resumed a finished run, or a rank other than 0
        history = json.loads((out / "train_log.json").read_text())["history"] if (out / "train_log.json").exists() else []
    return {"history": history, "out": str(out), "train_seconds": history[-1]["elapsed_s"] if history else 0.0,
            "losses": losses, "world_size": ctx.world_size}
