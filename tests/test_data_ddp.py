"""Under torchrun (2 gloo processes) streaming shards: one epoch sees each sample exactly once, and
`train clip` streams its own shards on each rank while both ranks log the same global-batch loss."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.data_fixtures import corpus, write_wds
from tests.ddp_spawn import free_port


def _worker(rank: int, world: int, port: int, spec: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from zscir.backbones.registry import TinyCLIPConfig
    from zscir.data import get_pair_data
    from zscir.train.clip import CLIPTrainConfig, train_clip
    from zscir.train.data_options import DataOptions
    from zscir.train.distributed import cleanup, init_distributed

    ctx = init_distributed()
    loader = get_pair_data(spec).loader(5, 16, shuffle=True, workers=2, seed=1)  # rank / world from torchrun
    keys = [k for epoch in (0, 1) for b in loader.epoch_batches(epoch) for k in b.keys]
    arch = TinyCLIPConfig(image_size=16, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                          text_width=32, text_layers=1, text_heads=2, projection_dim=32, vocab_size=300, max_text_len=32)
    cfg = CLIPTrainConfig(steps=3, batch_size=8, warmup=1, eval_every=1000, n_val=4, vocab_size=300, arch=arch,
                          data=DataOptions(data=spec, workers=0))
    res = train_clip(cfg, Path(out) / f"rank{rank}", progress=False)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"keys": keys, "losses": res["losses"]}))
    cleanup(ctx)


@pytest.mark.slow  # two spawned processes, each with DataLoader workers: 210 s measured on the busy 2-core machine
def test_two_processes_over_shards_see_each_sample_once_per_epoch(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    items = corpus(36)
    spec = write_wds(tmp_path / "w", items, per_shard=4)  # 9 shards over 2 ranks x 2 workers
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), spec, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    everything = sorted(k for k, _, _ in items)
    # each epoch: the two ranks' keys are disjoint and together are the whole set
    n0, n1 = len(r0["keys"]) // 2, len(r1["keys"]) // 2
    for e in (0, 1):
        k0, k1 = r0["keys"][e * n0:(e + 1) * n0], r1["keys"][e * n1:(e + 1) * n1]
        assert not set(k0) & set(k1)
        assert sorted(k0 + k1) == everything
    assert r0["keys"][:n0] != r0["keys"][n0:]  # reshuffled between epochs
    assert r0["losses"] == r1["losses"] and len(r0["losses"]) == 3  # the global-batch loss on both ranks
