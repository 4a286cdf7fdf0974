"""Fusion-Diff: prior, Control-Adapter, CFG, joint encoder, captioners, checkpoints, composer."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from zscir.methods.fusiondiff.config import AdapterConfig, FusionDiffConfig, JointConfig, PriorConfig
from zscir.methods.fusiondiff.control_adapter import ControlAdapter
from zscir.methods.fusiondiff.prior import DiffusionPrior

D = 16
SMALL = PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100)


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter non-trivial values (so zero-init checks are not vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _inputs(b: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, D, generator=g)
    t = torch.randint(0, 100, (b,), generator=g)
    cond = torch.randn(b, D, generator=g)
    ctrl = torch.randn(b, 4 * D, generator=g)
    return x, t, cond, ctrl


def test_zero_initialised_adapter_leaves_prior_unchanged_then_learns():
    torch.manual_seed(0)
    prior = DiffusionPrior(D, SMALL)
    _randomise(prior.denoiser)
    adapter = ControlAdapter(prior.denoiser, AdapterConfig(blocks=2))
    x, t, cond, ctrl = _inputs()
    base = prior.predict(x, t, cond)
    with_adapter = prior.predict(x, t, cond, adapter=adapter, control=ctrl)
    assert torch.equal(base, with_adapter)
    # the branch is a real copy of the prior's blocks, and it does train: after one step the output moves
    assert torch.equal(adapter.blocks[0].mlp[0].weight, prior.denoiser.blocks[0].mlp[0].weight)
    opt = torch.optim.SGD(adapter.parameters(), lr=0.1)
    for _ in range(2):  # zero-init output layers get gradients first, the control projection next
        loss = prior.predict(x, t, cond, adapter=adapter, control=ctrl).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not torch.allclose(prior.predict(x, t, cond, adapter=adapter, control=ctrl), base)
    assert adapter.control_in[-1].weight.abs().sum() > 0


def test_cfg_scale_one_equals_conditional_prediction():
    torch.manual_seed(0)
    prior = DiffusionPrior(D, SMALL)
    _randomise(prior.denoiser)
    adapter = ControlAdapter(prior.denoiser, AdapterConfig(blocks=1))
    _randomise(adapter, seed=3)
    x, t, cond, ctrl = _inputs()
    cond_pred = prior.predict(x, t, cond, None, adapter, ctrl)
    assert torch.equal(prior.guided(x, t, cond, 1.0, adapter, ctrl), cond_pred)
    formula = prior.guided(x, t, cond, 1.0, adapter, ctrl, force_uncond_pass=True)
    assert torch.allclose(formula, cond_pred, atol=1e-5)
    uncond = prior.predict(x, t, cond, torch.zeros(len(x), dtype=torch.bool), adapter, ctrl)
    assert not torch.allclose(uncond, cond_pred, atol=1e-3)  # the null condition matters
    s3 = prior.guided(x, t, cond, 3.0, adapter, ctrl)
    assert torch.allclose(s3, uncond + 3.0 * (cond_pred - uncond), atol=1e-4)


def _toy_data(n: int, seed: int = 0):
    """Targets that are a deterministic function of the condition, so a prior can learn them."""
    g = torch.Generator().manual_seed(seed)
    cond = F.normalize(torch.randn(n, D, generator=g), dim=-1)
    mix = torch.randn(D, D, generator=torch.Generator().manual_seed(99))
    return cond, F.normalize(torch.tanh(cond @ mix), dim=-1)


def test_tiny_train_and_sample_reduces_denoising_loss():
    torch.manual_seed(0)
    prior = DiffusionPrior(D, PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100))
    cond, z0 = _toy_data(512)
    v_cond, v_z0 = _toy_data(128, seed=1)

    def val_loss():
        torch.manual_seed(7)
        with torch.no_grad():
            return float(prior.loss(v_z0, v_cond, cond_dropout=0.0))

    before = val_loss()
    opt = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    for step in range(200):
        i = torch.randint(0, len(cond), (64,))
        loss = prior.loss(z0[i], cond[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = val_loss()
    assert after < 0.5 * before, (before, after)
    prior.eval()
    z = prior.sample(v_cond, steps=10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.norm(dim=-1), torch.ones(len(z)), atol=1e-5)
    # generated embeddings point at their own targets far better than at the others
    sims = z @ v_z0.T
    assert float(sims.diag().mean()) > float(sims.mean()) + 0.3
    # editing from an initial embedding: strength 0 returns it, small strength stays close to it
    init = v_z0.roll(1, 0)
    assert torch.allclose(prior.sample(v_cond, init=init, strength=0.0), init, atol=1e-6)
    near = prior.sample(v_cond, steps=10, init=init, strength=0.05, generator=torch.Generator().manual_seed(0))
    assert float((near * init).sum(-1).mean()) > float((z * init).sum(-1).mean())
    # guidance and sample averaging run and keep unit norm
    z2 = prior.sample(v_cond[:4], steps=5, guidance_scale=2.0, n_samples=3)
    assert z2.shape == (4, D) and torch.allclose(z2.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_config_round_trip():
    cfg = FusionDiffConfig(embed_dim=D, joint=JointConfig(space="image", fusion_weight=0.3),
                           adapter=AdapterConfig(blocks=1, control_parts=("fused",)))
    back = FusionDiffConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    assert back.scale == pytest.approx(D ** 0.5)


def test_checkpoint_round_trip(tmp_path):
    from zscir.methods.fusiondiff.checkpoint import build_modules, load_checkpoint, save_checkpoint

    cfg = FusionDiffConfig(embed_dim=D, prior=SMALL, adapter=AdapterConfig(blocks=1))
    prior, adapter = build_modules(cfg)
    _randomise(adapter, 5)
    save_checkpoint(tmp_path, cfg, prior, adapter)
    cfg2, prior2, adapter2 = load_checkpoint(tmp_path)
    x, t, cond, ctrl = _inputs()
    assert cfg2.adapter == cfg.adapter
    assert torch.allclose(prior.predict(x, t, cond, None, adapter, ctrl),
                          prior2.predict(x, t, cond, None, adapter2, ctrl), atol=1e-6)
    save_checkpoint(tmp_path / "half", cfg, prior, adapter, half=True)
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "model.safetensors").stat().st_size
