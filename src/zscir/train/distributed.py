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
* **Trainable parts hooked into a frozen backbone.** TSCIR's VSI modules and composing adapters (incl.
  peft LoRA tensors injected into the text encoder) run inside the frozen backbone's forward hooks, not
  behind one ``forward`` that DDP could wrap. For them :func:`broadcast_params` (start from rank 0's
  weights) plus :func:`average_gradients` after ``backward`` does exactly what DDP's reducer does
  (average the gradients over ranks), without requiring a module boundary.

Launch: ``torchrun --nproc_per_node=N -m zscir train clip ...`` (see docs/SCALING.md). Without
``torchrun`` (``WORLD_SIZE`` unset or 1) every helper is a no-op, so trainers keep one code path.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist

from zscir.data.dist_context import DistContext, init_distributed  # re-exported: the trainers' one import

logger = logging.getLogger(__name__)

__all__ = ["DistContext", "init_distributed", "gather_with_grad", "local_range", "local_slice", "wrap_ddp",
           "barrier", "broadcast_object", "all_gather_object", "reduce_sum", "broadcast_params",
           "average_gradients", "main_first", "sync_torch_rng", "cleanup", "report_once"]


def gather_with_grad(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Concatenate ``x`` from all ranks (rank order) keeping the autograd graph to every slice.

    Slices may differ in length (a global batch not divisible by the world size): all-gather needs equal
    shapes, so the rows are padded to the longest slice and the padding is cut off again.
    """
    if not ctx.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    sizes = torch.zeros(ctx.world_size, dtype=torch.long, device=x.device)  # NCCL reduces only CUDA tensors
    sizes[ctx.rank] = x.shape[0]
    dist.all_reduce(sizes)
    longest = int(sizes.max())
    if int(sizes.min()) == longest:
        return torch.cat(all_gather(x.contiguous()), dim=0)
    pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
    parts = all_gather(torch.cat([x, pad]).contiguous())
    return torch.cat([part[: int(n)] for part, n in zip(parts, sizes)], dim=0)


def local_range(n: int, ctx: DistContext) -> tuple[int, int]:
    """``(lo, hi)``: this rank's contiguous rows of a global batch of ``n`` (sizes differ by at most one)."""
    return ctx.rank * n // ctx.world_size, (ctx.rank + 1) * n // ctx.world_size


def local_slice(global_batch: Sequence | torch.Tensor, ctx: DistContext):
    """This rank's contiguous part of a global batch (sizes differ by at most one across ranks)."""
    lo, hi = local_range(len(global_batch), ctx)
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


def sync_torch_rng(ctx: DistContext, src: int = 0) -> None:
    """Continue rank ``src``'s global torch RNG stream on every rank.

    Trainers whose per-step randomness comes from the global torch RNG (φ's dropout in TSCIR Stage I, the
    diffusion noise / time steps / condition dropout of Fusion-Diff) draw it for the global batch on every
    rank; identical seeds give identical streams only if no rank consumed it differently while preparing
    data (e.g. rank 0 building a cache the others just load), which this makes a guarantee.
    """
    if ctx.enabled:
        torch.set_rng_state(broadcast_object(torch.get_rng_state(), ctx, src))


def all_gather_object(obj, ctx: DistContext) -> list:
    """Every rank's (picklable) ``obj``, in rank order; ``[obj]`` when not distributed.

    For results of uneven size computed without grad, e.g. the hard-negative refresh's query embeddings,
    where each rank encodes its share of the training set.
    """
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def reduce_sum(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``x`` over ranks (a detached copy; ``x`` itself when not distributed)."""
    if not ctx.enabled:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def broadcast_params(params: Iterable[torch.Tensor], ctx: DistContext, src: int = 0) -> None:
    """Overwrite ``params`` in place with rank ``src``'s values (what DDP does at construction).

    Used with :func:`average_gradients` for trainable parts that live inside a frozen backbone's hooks
    (see the module docstring); identical seeds already give identical initial weights, this makes it a
    guarantee (e.g. after a resume that read a checkpoint on one rank only).
    """
    if not ctx.enabled:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=src)


def average_gradients(params: Iterable[torch.Tensor], ctx: DistContext) -> None:
    """Average ``p.grad`` over ranks (one flat all-reduce); call after ``backward``, before clipping.

    The manual equivalent of DDP's gradient averaging for parameters that are not used through one
    wrappable ``forward`` (TSCIR's VSI modules and composing adapters run inside the frozen text
    encoder's hooks). A missing gradient counts as zeros so every rank reduces tensors of the same shape.
    """
    if not ctx.enabled:
        return
    params = list(params)
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Run the block on the main rank first and on the others after it, e.g. to build an on-disk
    feature cache once (concurrent writers would race on the same temporary file) and let the other
    ranks read it."""
    if ctx.enabled and not ctx.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if ctx.enabled and ctx.is_main:
            dist.barrier()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group (only if this module's caller is distributed)."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def report_once(line: str) -> None:
    """Print a trainer command's final line once (rank 0 under ``torchrun``) and leave the process group.

    Every ``zscir train ...`` command ends with it, so a 4-process run prints one result line, not four.
    """
    ctx = init_distributed()  # the trainer's context (a no-op without torchrun)
    if ctx.is_main:
        print(line, flush=True)
    cleanup(ctx)
