"""DDP for TSCIR Stage I and Stage II: 2 gloo processes reproduce the 1-process loss curve.

Both stages compare every query with the whole batch (InfoNCE, soft alignment, hard negatives), so this
checks the gather-with-grad loss, the explicit gradient average of the hook-attached modules, the global
draws (batches, φ's dropout, hard negatives and their sharded refresh) and that only rank 0 writes.
Stage II uses an odd global batch (7 + 8 rows) so the gather of unequal slices is covered too. bf16 is off:
with it, the per-rank partial weight gradients are rounded to bf16 separately, and Adam's first steps
amplify that rounding to ~1e-2 in the loss (measured), more than the tolerance.
Tiny random backbone saved once (its BPE tokenizer is not deterministic across processes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.ddp_spawn import compare_one_and_two_processes
from zscir.backbones import create_backbone


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-ddp") / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    return f"local-dir:{path}"


def _stage1_cfg(model: str):
    from zscir.methods.tscir.config import MappingConfig, Stage1Config

    # φ keeps its dropout (0.1): the 2-process run must draw the 1-process run's masks
    return Stage1Config(model=model, mapping=MappingConfig(vsi_layers=[0], phi_hidden=64), n_pairs=200, n_val=16,
                        steps=5, batch_size=16, lr=1e-2, warmup=1, eval_every=1000, threads=1, bf16=False)


def _stage2_cfg(model: str, stage1: str):
    from zscir.methods.tscir.config import AdapterConfig, Stage2Config

    return Stage2Config(stage1=stage1, model=model, adapter=AdapterConfig(bottleneck=16), max_triplets=120,
                        n_val=16, gallery_pairs=40, steps=5, batch_size=15, lr=1e-2, warmup=1, eval_every=1000,
                        hard_negatives=4, hn_pool=8, hn_refresh=2, threads=1, bf16=False)


def _train(stage: int, cfg, out: Path) -> dict:
    from zscir.methods.tscir.stage1 import train_stage1
    from zscir.methods.tscir.stage2 import train_stage2

    return (train_stage1 if stage == 1 else train_stage2)(cfg, out, progress=False)


def _compare(tmp_path: Path, stage: int, cfg, weights: str, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    compare_one_and_two_processes(_train, (stage, cfg), tmp_path, cfg.steps, weights)


def test_stage1_two_gloo_processes_match_one_process(tmp_path, tiny_dir, monkeypatch):
    _compare(tmp_path, 1, _stage1_cfg(tiny_dir), "model.safetensors", monkeypatch)


def test_stage2_with_hard_negatives_two_gloo_processes_match_one_process(tmp_path, tiny_dir, monkeypatch):
    from zscir.methods.tscir.checkpoint import save_stage1
    from zscir.methods.tscir.config import MappingConfig, Stage1Config
    from zscir.methods.tscir.mapping import Mapping

    bb = create_backbone(tiny_dir).freeze()
    torch.manual_seed(0)
    mapping = Mapping(bb, MappingConfig(vsi_layers=[0], phi_hidden=64))
    with torch.no_grad():
        mapping.vsi[0].gate.fill_(0.3)
    save_stage1(tmp_path / "s1", mapping, bb, "tscir", Stage1Config(model=tiny_dir).to_dict())
    _compare(tmp_path, 2, _stage2_cfg(tiny_dir, str(tmp_path / "s1")), "adapters.safetensors", monkeypatch)


def test_encode_sharded_equals_one_process_chunks():
    from zscir.methods.tscir.hard_negatives import encode_sharded
    from zscir.train.distributed import DistContext

    calls = []

    def enc(lo, hi):
        calls.append((lo, hi))
        return torch.arange(lo, hi, dtype=torch.float32)[:, None]

    out = encode_sharded(enc, 600, DistContext(), chunk=256)
    assert calls == [(0, 256), (256, 512), (512, 600)] and torch.equal(out[:, 0], torch.arange(600.0))
