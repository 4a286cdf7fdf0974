"""The Control-Adapter: a ControlNet-style branch that steers the frozen prior with the reference query.

Like ControlNet, it is a *trainable copy* of the prior's first blocks (initialised from the prior's weights,
so it starts from features that already mean something), fed the same token sequence plus the projected
control signal, and each copied block's output reaches the prior through a zero-initialised linear layer
added after the corresponding prior block. Both the control projection's last layer and the output layers
start at zero, so at step 0 the prior's prediction is exactly unchanged and fine-tuning starts from the
pre-trained prior. The control signal is the concatenation of the requested parts of the reference query: the
reference's own fused (gallery) representation encode_joint(I_ref) — what the edit starts from — the
fused query feature encode_joint(I_ref, T_mod) and its parts img(I_ref), txt(T_mod).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from zscir.methods.fusiondiff.config import AdapterConfig
from zscir.methods.fusiondiff.prior import PriorDenoiser

CONTROL_PARTS = ("reference", "fused", "image", "text")


def control_signal(parts: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
    """Concatenate the named control parts ((B, D) each) in a fixed order."""
    unknown = [n for n in names if n not in CONTROL_PARTS]
    if unknown:
        raise ValueError(f"unknown control parts {unknown}; choose from {CONTROL_PARTS}")
    return torch.cat([parts[n] for n in names], dim=-1)


class ControlAdapter(nn.Module):
    """Residuals for the first ``cfg.blocks`` prior blocks from a control vector."""

    def __init__(self, denoiser: PriorDenoiser, cfg: AdapterConfig):
        super().__init__()
        if not 1 <= cfg.blocks <= len(denoiser.blocks):
            raise ValueError(f"adapter blocks must be in [1, {len(denoiser.blocks)}], got {cfg.blocks}")
        w, d = denoiser.width, denoiser.dim
        self.cfg = cfg
        self.blocks = nn.ModuleList([copy.deepcopy(denoiser.blocks[i]) for i in range(cfg.blocks)])
        self.control_in = nn.Sequential(nn.Linear(d * len(cfg.control_parts), w), nn.SiLU(), nn.Linear(w, w))
        self.zero_out = nn.ModuleList([nn.Linear(w, w) for _ in range(cfg.blocks)])
        nn.init.zeros_(self.control_in[-1].weight)
        nn.init.zeros_(self.control_in[-1].bias)
        for z in self.zero_out:
            nn.init.zeros_(z.weight)
            nn.init.zeros_(z.bias)
        n_in = d * len(cfg.control_parts)
        # zero-initialised linear skip from the control to the prediction: lets the branch copy what the
        # reference already has right (a linear map) instead of pushing it through the blocks
        self.out_skip = nn.Linear(n_in, d)
        nn.init.zeros_(self.out_skip.weight)
        nn.init.zeros_(self.out_skip.bias)
        self.register_buffer("ctrl_mean", torch.zeros(n_in))
        self.register_buffer("ctrl_std", denoiser.z_std.new_full((n_in,), float(denoiser.z_std.mean())))

    @torch.no_grad()
    def set_statistics(self, control: torch.Tensor, min_std: float = 1e-3) -> None:
        """Standardise the control signal per dimension (same reason as `PriorDenoiser.set_statistics`)."""
        self.ctrl_mean.copy_(control.mean(0))
        self.ctrl_std.copy_(control.std(0).clamp_min(min_std))

    def forward(self, tokens: torch.Tensor, control: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(residuals added after prior blocks 0..k-1, residual added to the prior's prediction)."""
        c = (control - self.ctrl_mean) / self.ctrl_std
        h = tokens + self.control_in(c)[:, None, :]
        out = []
        for blk, zero in zip(self.blocks, self.zero_out):
            h = blk(h)
            out.append(zero(h))
        return out, self.out_skip(c)
