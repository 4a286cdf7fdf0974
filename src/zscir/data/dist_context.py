"""Where this process sits in a ``torchrun`` job: `DistContext` and `init_distributed`.

The data layer needs the rank and world size to split shards between processes (`zscir.data.loader`), and
the trainers need them for everything else; the lookup lives here, on the lowest floor that uses it, and
`zscir.train.distributed` (the trainers' data-parallel helpers) builds on it. Without ``torchrun``
(``WORLD_SIZE`` unset or 1) the context is rank 0 of 1 and no process group is created.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["DistContext", "init_distributed"]


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
