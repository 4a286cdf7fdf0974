"""DDP for the Fusion-Diff prior and Control-Adapter: 2 gloo processes reproduce the 1-process loss curve.

The diffusion loss is a per-sample MSE: every rank draws the global batch's indices, noise, time steps and
condition-dropout masks and evaluates its slice through the DDP-wrapped module (`trainer.sliced_loss`).
The adapter test uses an odd global batch (7 + 8 rows) to check the size weighting of unequal slices.
Tiny random backbone saved once (its BPE tokenizer is not deterministic across processes).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.ddp_spawn import compare_one_and_two_processes
from zscir.backbones import create_backbone
from zscir.methods.fusiondiff.config import JointConfig, PriorConfig

SMALL = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-ddp-fd") / "clip"
    create_backbone("tiny-clip-test").save_pretrained(path)
    return f"local-dir:{path}"


def _prior_cfg(model: str, cache: Path, steps: int = 6):
    from zscir.methods.fusiondiff.train_prior import PriorTrainConfig

    return PriorTrainConfig(model=model, steps=steps, batch_size=16, lr=1e-2, warmup=1, eval_every=1000, n_val=20,
                            cache_dir=str(cache), joint=JointConfig(bank_pairs=120), prior=SMALL)


def _adapter_cfg(prior: Path, cache: Path, model: str | None = None):
    from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig

    # 15 = 7 + 8 rows: unequal slices must still give the global-batch mean and its gradient
    return AdapterTrainConfig(prior=str(prior), model=model, n_triplets=80, n_val=20, steps=6, batch_size=15, lr=1e-2,
                              warmup=1, eval_every=1000, cache_dir=str(cache))


def _train(stage: str, cfg, out: Path) -> dict:
    from zscir.methods.fusiondiff.train_adapter import train_adapter
    from zscir.methods.fusiondiff.train_prior import train_prior

    return (train_prior if stage == "prior" else train_adapter)(cfg, out, progress=False)


def _compare(tmp_path: Path, stage: str, cfg, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rank0 = compare_one_and_two_processes(_train, (stage, cfg), tmp_path, cfg.steps, "model.safetensors")
    assert (rank0 / "training_state.pt").exists()


def test_prior_two_gloo_processes_match_one_process(tmp_path, tiny_dir, monkeypatch):
    _compare(tmp_path, "prior", _prior_cfg(tiny_dir, tmp_path / "cache"), monkeypatch)


def test_adapter_two_gloo_processes_match_one_process(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _train("prior", _prior_cfg(tiny_dir, tmp_path / "cache", steps=2), tmp_path / "prior")
    # the prior's config names a model folder: zscir loads one only when the user names it (--model)
    _compare(tmp_path, "adapter", _adapter_cfg(tmp_path / "prior", tmp_path / "cache", tiny_dir), monkeypatch)


def test_sliced_loss_is_the_prior_loss_without_torchrun():
    """One process: `sliced_loss` draws and computes exactly `DiffusionPrior.loss` (the shipped recipe)."""
    from zscir.methods.fusiondiff.config import AdapterConfig
    from zscir.methods.fusiondiff.control_adapter import ControlAdapter
    from zscir.methods.fusiondiff.prior import DiffusionPrior
    from zscir.methods.fusiondiff.trainer import Denoise, sliced_loss
    from zscir.train.distributed import DistContext

    torch.manual_seed(0)
    prior = DiffusionPrior(16, SMALL)
    adapter = ControlAdapter(prior.denoiser, AdapterConfig(blocks=1, control_parts=("fused",)))
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.1)
    g = torch.Generator().manual_seed(1)
    z0, cond, ctrl = (torch.nn.functional.normalize(torch.randn(12, 16, generator=g), dim=-1) for _ in range(3))
    torch.manual_seed(5)
    want = prior.loss(z0, cond, adapter=adapter, control=ctrl)
    torch.manual_seed(5)
    got = sliced_loss(prior, Denoise(prior, adapter), z0, cond, DistContext(), control=ctrl)
    assert got.share == 1.0 and torch.equal(got.loss, want)
    # two ranks' slices, weighted by their shares, average to the global-batch loss
    parts = []
    for r in range(2):
        torch.manual_seed(5)
        parts.append(sliced_loss(prior, Denoise(prior, adapter), z0[:11], cond[:11], DistContext(r, 2),
                                 control=ctrl[:11]))
    torch.manual_seed(5)
    whole = prior.loss(z0[:11], cond[:11], adapter=adapter, control=ctrl[:11])
    assert [p.share for p in parts] == [5 / 11, 6 / 11]
    torch.testing.assert_close(sum(p.loss * p.share for p in parts), whole)
