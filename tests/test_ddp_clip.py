"""DDP for the world-CLIP trainer (issue 7): 2 gloo processes reproduce the 1-process loss curve."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.ddp_spawn import free_port
from zscir.backbones.registry import TinyCLIPConfig
from zscir.train.distributed import DistContext, gather_with_grad, init_distributed, local_slice


def _cfg(tokenizer: str | None = None):
    from zscir.train.clip import CLIPTrainConfig

    arch = TinyCLIPConfig(vision_width=32, vision_layers=1, vision_heads=2, text_width=32, text_layers=1,
                          text_heads=2, projection_dim=32, vocab_size=300, max_text_len=32)
    return CLIPTrainConfig(n_pairs=200, n_val=16, steps=5, batch_size=16, warmup=2, eval_every=1000,
                           vocab_size=300, lr=3e-3, arch=arch, tokenizer=tokenizer)


def _worker(rank: int, world: int, port: int, out: str, tokenizer: str | None) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from zscir.train.clip import train_clip
    from zscir.train.distributed import cleanup

    res = train_clip(_cfg(tokenizer), Path(out) / "model", progress=False)
    Path(out, f"losses-{rank}.json").write_text(json.dumps(res["losses"]))
    cleanup(init_distributed())


def test_local_slice_partitions_the_global_batch():
    batch = list(range(10))
    parts = [local_slice(batch, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sum(parts, []) == batch and [len(p) for p in parts] == [3, 3, 4]
    assert local_slice(batch, DistContext()) == batch


def test_helpers_are_no_ops_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed()
    assert ctx == DistContext() and ctx.is_main and not ctx.enabled
    x = torch.ones(2, 3, requires_grad=True)
    assert gather_with_grad(x, ctx) is x


def test_two_gloo_processes_match_one_process_loss_curve(tmp_path, monkeypatch):
    from zscir.train.clip import train_clip

    from zscir.backbones.tokenizer import train_bpe_tokenizer
    from zscir.train.clip import _world_data

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = _cfg()
    # one tokenizer for both runs: BPE training is not deterministic across processes
    tok = train_bpe_tokenizer(_world_data(cfg)[2], vocab_size=cfg.vocab_size, max_length=cfg.arch.max_text_len)
    tok.save_pretrained(tmp_path / "tok")
    one = train_clip(_cfg(str(tmp_path / "tok")), tmp_path / "one", progress=False)
    assert one["world_size"] == 1 and len(one["losses"]) == 5
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), str(tmp_path), str(tmp_path / "tok")), nprocs=2,
                                join=True)
    l0 = json.loads((tmp_path / "losses-0.json").read_text())
    l1 = json.loads((tmp_path / "losses-1.json").read_text())
    assert l0 == pytest.approx(l1, abs=1e-6)  # every rank computes the global-batch loss
    np.testing.assert_allclose(l0, one["losses"], rtol=0, atol=2e-3)
    assert np.ptp(one["losses"]) > 0.1  # the curve moves far more than the tolerance: the match is meaningful
    # only rank 0 wrote the model, with the world size in its log
    assert json.loads((tmp_path / "model" / "train_log.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_ddp_without_a_given_tokenizer_shares_rank0s(tmp_path):
    """Without cfg.tokenizer every rank must still use the same vocabulary (rank 0's, broadcast)."""
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), str(tmp_path), None), nprocs=2, join=True)
    l0 = json.loads((tmp_path / "losses-0.json").read_text())
    l1 = json.loads((tmp_path / "losses-1.json").read_text())
    assert l0 == pytest.approx(l1, abs=1e-6) and len(l0) == 5
