"""Shared by the DDP tests: train with 1 process and with 2 gloo processes on the same global batch, compare.

``train`` must be a module-level function ``train(*args, out_dir) -> {"losses": [...], "world_size": n}``
(``torch.multiprocessing.spawn`` pickles it by reference into the workers).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, train: Callable[..., dict], args: tuple, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from zscir.train.distributed import cleanup, init_distributed

    # each rank its own folder, so the caller can see that only rank 0 writes
    res = train(*args, Path(out) / f"rank{rank}")
    Path(out, f"losses-{rank}.json").write_text(json.dumps(res["losses"]))
    cleanup(init_distributed())


def compare_one_and_two_processes(train: Callable[..., dict], args: tuple[Any, ...], tmp_path: Path, steps: int,
                                  weights: str) -> Path:
    """Assert that 2 gloo processes reproduce the 1-process loss curve and weights; return rank 0's folder."""
    one = train(*args, tmp_path / "one")
    assert one["world_size"] == 1 and len(one["losses"]) == steps
    ddp = tmp_path / "ddp"
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), train, args, str(ddp)), nprocs=2, join=True)
    l0 = json.loads((ddp / "losses-0.json").read_text())
    l1 = json.loads((ddp / "losses-1.json").read_text())
    assert l0 == pytest.approx(l1, abs=1e-6)  # every rank computes / logs the global-batch loss
    np.testing.assert_allclose(l0, one["losses"], rtol=0, atol=2e-3)
    assert np.ptp(one["losses"]) > 0.1  # the curve moves far more than the tolerance: the match is meaningful
    # only rank 0 wrote, and its weights are the 1-process run's
    assert json.loads((ddp / "rank0" / "train_log.json").read_text())["world_size"] == 2
    assert not any(p.is_file() for p in (ddp / "rank1").rglob("*"))
    a, b = load_file(str(tmp_path / "one" / weights)), load_file(str(ddp / "rank0" / weights))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-3, msg=k)
    return ddp / "rank0"
