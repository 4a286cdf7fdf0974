"""The diffusion prior over (fused) embeddings: a small transformer denoiser + diffusers schedulers.

The denoiser is our own pre-LN transformer rather than diffusers' `PriorTransformer` because the
Control-Adapter needs (a) the token sequence that enters the first block, to feed its trainable copy, and
(b) a place to add its zero-initialised residuals after each block — `PriorTransformer` exposes neither.
The sequence is four tokens: the noisy embedding x_t, the time step, the text condition (or a learned null
embedding, for classifier-free guidance) and a learned read-out token whose final state is the prediction.

Training uses diffusers' `DDPMScheduler` (forward process ``add_noise``), sampling its `DDIMScheduler` with
the same betas. The default predicts x0 (``prediction_type="sample"``), as the DALL-E 2 prior does: the
quantity retrieval needs is the clean embedding, and x0-prediction is much better behaved than ε at the
few DDIM steps used for retrieval. Embeddings are multiplied by √D so each dimension has ≈ unit variance,
matching the N(0, I) noise the schedule assumes.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from zscir.methods.fusiondiff.config import PriorConfig


class Block(nn.Module):
    """Pre-LN transformer block (self-attention over the few tokens + MLP)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.ln1(h)
        h = h + self.attn(x, x, x, need_weights=False)[0]
        return h + self.mlp(self.ln2(h))


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer time steps (B,) → (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class PriorDenoiser(nn.Module):
    """Predicts x0 (or ε) from (x_t, t, text condition), optionally with per-block residuals added."""

    N_TOKENS = 4

    def __init__(self, dim: int, cfg: PriorConfig):
        super().__init__()
        w = cfg.width
        self.dim, self.width = dim, w
        self.in_x = nn.Linear(dim, w)
        self.in_cond = nn.Linear(dim, w)
        self.null_cond = nn.Parameter(torch.zeros(dim))
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.readout = nn.Parameter(torch.randn(w) * 0.02)
        self.pos = nn.Parameter(torch.randn(self.N_TOKENS, w) * 0.02)
        self.blocks = nn.ModuleList([Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers)])
        self.ln_out = nn.LayerNorm(w)
        self.out = nn.Linear(w, dim)
        # data standardisation (set by the stage-1 trainer; defaults = plain ×√D scaling), saved with the weights
        default_std = torch.full((dim,), 1.0 / (cfg.embed_scale or math.sqrt(dim)))
        self.register_buffer("z_mean", torch.zeros(dim))
        self.register_buffer("z_std", default_std.clone())
        self.register_buffer("c_mean", torch.zeros(dim))
        self.register_buffer("c_std", default_std.clone())

    @torch.no_grad()
    def set_statistics(self, z: torch.Tensor, cond: torch.Tensor, min_std: float = 1e-3) -> None:
        """Standardise targets and conditions per dimension with training-set mean / std.

        World embeddings are far from isotropic (mean pairwise cosine ≈ 0.7): the differences that decide
        retrieval are a small part of each vector. Standardising (as the DALL-E 2 prior does with CLIP
        mean / std) gives those differences unit scale, matching the N(0, I) noise of the schedule.
        """
        self.z_mean.copy_(z.mean(0))
        self.z_std.copy_(z.std(0).clamp_min(min_std))
        self.c_mean.copy_(cond.mean(0))
        self.c_std.copy_(cond.std(0).clamp_min(min_std))

    def tokens(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
               keep_cond: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, 4, width) sequence entering the first block; ``keep_cond`` False → null condition."""
        if keep_cond is not None:
            cond = torch.where(keep_cond[:, None], cond, self.null_cond.to(cond.dtype).expand_as(cond))
        b = x_t.shape[0]
        toks = torch.stack([
            self.in_x(x_t),
            self.time_mlp(timestep_embedding(t.expand(b) if t.ndim == 0 else t, self.width)),
            self.in_cond(cond),
            self.readout.expand(b, -1),
        ], dim=1)
        return toks + self.pos

    def run_blocks(self, h: torch.Tensor, residuals: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Main blocks; ``residuals[i]`` (from the Control-Adapter) is added after block i."""
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if residuals is not None and i < len(residuals):
                h = h + residuals[i]
        return self.out(self.ln_out(h[:, -1]))

    def forward(self, x_t, t, cond, keep_cond=None, residuals=None) -> torch.Tensor:
        return self.run_blocks(self.tokens(x_t, t, cond, keep_cond), residuals)


class DiffusionPrior(nn.Module):
    """Denoiser + schedules: training loss, (guided) prediction and DDIM sampling of unit embeddings."""

    def __init__(self, dim: int, cfg: PriorConfig, scale: float | None = None):
        super().__init__()
        from diffusers import DDPMScheduler

        self.cfg = cfg
        self.dim = dim
        self.scale = float(scale) if scale else math.sqrt(dim)
        self.denoiser = PriorDenoiser(dim, cfg)
        self.train_scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                                             beta_schedule=cfg.beta_schedule,
                                             prediction_type=cfg.prediction_type, clip_sample=False)

    # ------------------------------------------------------------------------------ standardising
    def to_x(self, z: torch.Tensor) -> torch.Tensor:
        d = self.denoiser
        return (z - d.z_mean) / d.z_std

    def from_x(self, x: torch.Tensor) -> torch.Tensor:
        d = self.denoiser
        return F.normalize(x * d.z_std + d.z_mean, dim=-1)

    def cond_x(self, cond: torch.Tensor) -> torch.Tensor:
        d = self.denoiser
        return (cond - d.c_mean) / d.c_std

    # ----------------------------------------------------------------------------------- training
    def loss(self, z0: torch.Tensor, cond: torch.Tensor, adapter=None, control: torch.Tensor | None = None,
             cond_dropout: float | None = None) -> torch.Tensor:
        """DDPM denoising loss (MSE on x0 or ε) for clean unit embeddings ``z0`` given text ``cond``."""
        b = z0.shape[0]
        x0 = self.to_x(z0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.cfg.num_train_timesteps, (b,), device=z0.device)
        x_t = self.train_scheduler.add_noise(x0, noise, t)
        p = self.cfg.cond_dropout if cond_dropout is None else cond_dropout
        keep = torch.rand(b, device=z0.device) >= p
        pred = self.predict(x_t, t, self.cond_x(cond), keep, adapter, control)
        if self.cfg.prediction_type == "sample":
            target = x0
        elif self.cfg.prediction_type == "v_prediction":
            target = self.train_scheduler.get_velocity(x0, noise, t)
        else:
            target = noise
        return F.mse_loss(pred, target)

    # --------------------------------------------------------------------------------- prediction
    def predict(self, x_t, t, cond_scaled, keep_cond=None, adapter=None, control=None) -> torch.Tensor:
        """One denoiser evaluation; ``adapter(tokens, control)`` adds its residuals when given."""
        toks = self.denoiser.tokens(x_t, t, cond_scaled, keep_cond)
        if adapter is None:
            return self.denoiser.run_blocks(toks)
        residuals, out_residual = adapter(toks, control)
        return self.denoiser.run_blocks(toks, residuals) + out_residual

    def guided(self, x_t, t, cond_scaled, guidance_scale: float = 1.0, adapter=None, control=None,
               force_uncond_pass: bool = False) -> torch.Tensor:
        """Classifier-free guidance: u + s · (c − u), u with the null text condition (control kept).

        At ``s = 1`` this *is* the conditional prediction; the unconditional pass is skipped unless
        ``force_uncond_pass`` (used by the tests to check the formula itself).
        """
        b = x_t.shape[0]
        if guidance_scale == 1.0 and not force_uncond_pass:
            return self.predict(x_t, t, cond_scaled, None, adapter, control)
        keep = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x_t.device)
        two = lambda x: None if x is None else torch.cat([x, x])  # noqa: E731
        tt = t if t.ndim == 0 else two(t)
        out = self.predict(two(x_t), tt, two(cond_scaled), keep, adapter, two(control))
        u, c = out[:b], out[b:]
        return u + guidance_scale * (c - u)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, adapter=None, control: torch.Tensor | None = None, steps: int = 10,
               guidance_scale: float = 1.0, n_samples: int = 1, eta: float = 0.0,
               generator: torch.Generator | None = None, init: torch.Tensor | None = None,
               strength: float = 1.0) -> torch.Tensor:
        """DDIM-sample ``n_samples`` embeddings per condition; returns their normalised mean (B, D).

        With ``init`` (unit embeddings, e.g. the fused reference) and ``strength`` < 1, sampling starts from
        ``init`` noised to the time step ``strength · T`` and denoises from there (SDEdit-style editing of
        the reference representation into the target's); ``strength = 1`` starts from pure noise.
        """
        from diffusers import DDIMScheduler

        sched = DDIMScheduler(num_train_timesteps=self.cfg.num_train_timesteps, beta_schedule=self.cfg.beta_schedule,
                              prediction_type=self.cfg.prediction_type, clip_sample=False,
                              set_alpha_to_one=True, timestep_spacing="trailing")
        sched.set_timesteps(steps)
        timesteps = sched.timesteps
        b = cond.shape[0]
        rep = lambda x: None if x is None else x.repeat_interleave(n_samples, 0)  # noqa: E731
        cond_s, ctrl = self.cond_x(rep(cond)), rep(control)
        x = torch.randn(b * n_samples, self.dim, generator=generator).to(cond.device)
        if init is not None and strength < 1.0:
            timesteps = timesteps[timesteps <= int(strength * (self.cfg.num_train_timesteps - 1))]
            if len(timesteps) == 0:
                return F.normalize(init, dim=-1)
            x = sched.add_noise(self.to_x(rep(init)), x, timesteps[:1].repeat(len(x)))
        for t in timesteps:
            out = self.guided(x, t.to(cond.device), cond_s, guidance_scale, adapter, ctrl)
            x = sched.step(out, t, x, eta=eta, generator=generator).prev_sample
        z = self.from_x(x).view(b, n_samples, -1).mean(1)
        return F.normalize(z, dim=-1)
