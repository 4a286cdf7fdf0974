"""Data-parallel training helpers shared by the trainers (``torchrun`` + DistributedDataParallel).

Why these pieces and not just ``DDP(model)``:

* **Same global batch, same loss.** Contrastive losses (world CLIP, TSCIR's alignment losses) compare
  every query with every other item of the batch, so a rank that only sees its local slice would
  optimise a different (easier) objective than a 1-process run. :func:`gather_with_grad` all-gathers
  the per-rank embeddings *with* autograd, so every rank computes the loss of the whole global batch.
  Gradients then flow back into each rank's slice from every rank's copy of the loss (``W`` times), and
  DDP's gradient *average* over the ``W`` ranks divides that back out: the update equals the
  1-process update on the global batch (up to floating-point summation order).
* **Same samples.** Every rank draws the global batch with the same seeded generator and keeps its
  contiguous slice (:func:`local_slice`), so no sampler state has to be communicated or resumed.
* **One writer.** Only the main rank saves checkpoints and logs (:attr:`DistContext.is_main`).

Launch: ``torchrun --nproc_per_node=N -m zscir train clip ...`` (see docs/SCALING.md). Without
``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is a no-op, so trainers keep one code path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["DistContext", "init_distributed", "gather_with_grad", "local_slice", "wrap_ddp", "barrier",
           "broadcast_object", "cleanup"]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job (read from torchrun's environment variables)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistContext:
    """Join the process group described by ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT``.

    ``backend`` defaults to ``ZSCIR_DIST_BACKEND`` or gloo: the trainers keep their tensors on the CPU
    today, and NCCL only moves CUDA tensors; a GPU trainer passes ``"nccl"``. Calling it again, or in a
    process group someone else initialised, returns the existing context.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                           dist.get_backend())
    if world <= 1:
        return DistContext()
    backend = backend or os.environ.get("ZSCIR_DIST_BACKEND") or "gloo"
    dist.init_process_group(backend=backend)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), backend)
    logger.info("distributed: rank %d / %d (%s)", ctx.rank, ctx.world_size, backend)
    return ctx


def gather_with_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate ``x`` from all ranks (rank order) keeping the autograd graph to every slice."""
    if not ctx.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def local_slice(global_batch: Sequence | torch.Tensor, ctx: DistContext):
    """This rank's contiguous part of a global batch (sizes differ by at most one across ranks)."""
    n = len(global_batch)
    lo = ctx.rank * n // ctx.world_size
    hi = (ctx.rank + 1) * n // ctx.world_size
    return global_batch[lo:hi]


def wrap_ddp(module: torch.nn.Module, ctx: DistContext, **kw) -> torch.nn.Module:
    """``DistributedDataParallel(module)`` when distributed (broadcasts rank 0's weights), else ``module``."""
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.local_rank] if torch.cuda.is_available() and ctx.backend == "nccl" else None
    return DistributedDataParallel(module, device_ids=device_ids, **kw)


def broadcast_object(obj, ctx: DistContext, src: int = 0):
    """Rank ``src``'s (picklable) ``obj`` on every rank, e.g. a tokenizer whose training is not
    deterministic across processes (HF `tokenizers` BPE ties depend on per-process hashing)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (only if this module's caller is distributed)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
