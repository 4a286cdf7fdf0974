"""Stage 1: pre-train the diffusion prior on world image–caption pairs.

z0 = fused(I, T) for a pair (image I, one of its caption variants T, drawn anew each step), conditioned
on txt(T) and the time step, with 10% condition dropout for classifier-free guidance; in the image-space
ablation z0 = img(I) instead (a DALL-E-2-style text→image prior). Works on cached frozen-backbone
embeddings only, so it runs in minutes on CPU.

Under ``torchrun`` the prior's denoiser is DDP-wrapped and every rank takes its slice of the global batch
drawn identically on all ranks (`trainer.sliced_loss`); see `trainer` for why that equals one process.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from zscir.backbones import create_backbone
from zscir.backbones.devices import train_device
from zscir.methods.fusiondiff.captioner import RetrievalCaptioner, bank_from_data
from zscir.methods.fusiondiff.checkpoint import count_parameters, save_checkpoint
from zscir.methods.fusiondiff.config import FusionDiffConfig, JointConfig, PriorConfig
from zscir.methods.fusiondiff.features import caption_bank, default_cache_dir, pair_features
from zscir.methods.fusiondiff.joint import fuse
from zscir.methods.fusiondiff.prior import DiffusionPrior
from zscir.methods.fusiondiff.trainer import Denoise, LoopConfig, run_loop, sliced_loss
from zscir.train.common import seed_everything, set_threads
from zscir.train.data_options import DataOptions
from zscir.train.distributed import init_distributed, main_first, sync_torch_rng, wrap_ddp
from zscir.train.precision import resolve_bf16
from zscir.train.run_folder import MODEL_FILES, open_run

logger = logging.getLogger(__name__)


@dataclass
class PriorTrainConfig:
    """Hyper-parameters of `zscir train fusiondiff-prior` (defaults: the shipped prior)."""

    model: str = "world-clip"
    seed: int = 0
    world_seed: int = 0
    steps: int = 2000
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 100
    eval_every: int = 500
    n_val: int = 500
    threads: int | None = 1  # None: zscir.threads chooses (the CLI's default)
    # fp32 by default: it reproduces the shipped checkpoints; None = bf16 where native (zscir.train.precision)
    bf16: bool | None = False
    # where the backbone, prior and cached features go (zscir.backbones.devices: auto, cpu, cuda, cuda:N, mps;
    # under torchrun a CUDA device is each rank's own GPU); the run config records the resolved device
    device: str = "cpu"
    cache_dir: str | None = None
    joint: JointConfig = field(default_factory=JointConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    data: DataOptions = field(default_factory=DataOptions)  # --data / --val-data (world by default)
    heldout: str | None = None  #: held-out folder (zscir.data.real.heldout): its items leave the caption bank


@torch.no_grad()
def _val_loss(prior: DiffusionPrior, z0: torch.Tensor, cond: torch.Tensor, seed: int = 123) -> float:
    """Denoising loss on held-out pairs with fixed noise and time steps (comparable across steps)."""
    prior.eval()
    # the training stream is restored afterwards, the GPU's too (only rank 0 evaluates: a reseeded CUDA
    # stream there would give the ranks different noise / time steps from then on)
    on = z0.device
    with torch.random.fork_rng(devices=[on] if on.type == "cuda" else []):
        torch.manual_seed(seed)
        loss = float(prior.loss(z0, cond, cond_dropout=0.0))
    prior.train()
    return loss


def _data_features(backbone, cfg: PriorTrainConfig, cache: Path, progress: bool) -> tuple[dict, torch.Tensor]:
    """A real ``--data``: image features (train then validation rows), caption indices into the distinct
    captions of those pairs, and the bank's text embeddings (the captions the prior learns to fuse)."""
    from zscir.methods.fusiondiff.features import image_size
    from zscir.train.pair_features import pair_feature_split

    tr, va = pair_feature_split(backbone, cfg.data, image_size(backbone), False, False, cfg.n_val, "fusiondiff",
                                progress)
    caps = tr.captions + va.captions
    texts = list(dict.fromkeys(c for cs in caps for c in cs))
    index = {c: i for i, c in enumerate(texts)}
    v = min(len(c) for c in caps)
    idx = torch.tensor([[index[c] for c in cs[:v]] for cs in caps])
    bank = RetrievalCaptioner(backbone, texts, cache_dir=cache if cfg.data.cache_features else None).bank_embeds
    return {"image": torch.cat([tr.glob, va.glob]), "caption_idx": idx, "n_val": len(va)}, bank


def _own_caption_bank(cfg: PriorTrainConfig) -> list[str] | None:
    """The captions of ``cfg.joint.caption_bank`` (a pair spec the user typed), read with the run's data
    options; None when the checkpoint uses the world bank."""
    spec = cfg.joint.caption_bank
    if not spec:
        return None
    d = cfg.data
    lists = None
    if cfg.heldout:
        from zscir.data import DataError
        from zscir.data.real.heldout import HeldoutError, load_heldout
        from zscir.data.real.sources import RealSources

        try:
            lists = load_heldout(cfg.heldout, "concept", RealSources().emoji_test, RealSources().tuxpaint_dir)
        except HeldoutError as e:
            raise DataError(str(e)) from None
    return bank_from_data(spec, limit=cfg.joint.caption_bank_limit, heldout=lists, image_root=d.image_root,
                          image_column=d.image_column, text_column=d.text_column, allow_pipe=d.allow_pipe)


def train_prior(cfg: PriorTrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
                backbone=None) -> dict:
    """Train (or resume) the stage-1 prior; writes a Fusion-Diff checkpoint (prior only) to ``out``.

    Data-parallel under ``torchrun`` (``cfg.batch_size`` is the global batch; only rank 0 writes).
    """
    ctx = init_distributed()  # a no-op unless launched by torchrun with WORLD_SIZE > 1
    dev = train_device(cfg.device, ctx.local_rank if ctx.enabled else None)  # a bad device: before the folder
    out = open_run(out, "zscir train fusiondiff-prior", MODEL_FILES, ctx)  # a user's folder is refused first
    cfg = replace(cfg, threads=set_threads(cfg.threads))  # the chosen count is recorded with the config
    cfg = replace(cfg, device=str(dev), bf16=resolve_bf16(cfg.bf16, str(dev)))  # the log records both as resolved
    seed_everything(cfg.seed)
    backbone = (backbone or create_backbone(cfg.model)).to(dev)  # it encodes the (cached) features
    backbone.freeze()
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    n = cfg.joint.bank_pairs
    with main_first(ctx):  # rank 0 builds the on-disk feature caches, the others read them
        if cfg.data.is_world:
            feats = pair_features(backbone, n, cfg.joint.bank_world_seed, cache, progress=progress)
            bank = RetrievalCaptioner(backbone, caption_bank(n, cfg.joint.bank_world_seed), cache_dir=cache).bank_embeds
        else:
            feats, bank = _data_features(backbone, cfg, cache, progress)
            cfg = replace(cfg, n_val=feats["n_val"])
    # a caption bank of the user's own data is stored in the checkpoint (never the spec it came from: a
    # checkpoint is data and may not name a command, URL or file elsewhere, see `checkpoint.check_refs`)
    own_bank = _own_caption_bank(cfg) if ctx.is_main else None
    # the features are cached on the CPU; training draws its batches from copies on the device
    img, cap_idx, bank = feats["image"].to(dev), feats["caption_idx"].to(dev), bank.to(dev)
    n_train = len(img) - cfg.n_val
    dim = img.shape[1]

    def target(i: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        return img[i] if cfg.joint.space == "image" else fuse(img[i], txt, cfg.joint.fusion_weight)

    fcfg = FusionDiffConfig(embed_dim=dim, joint=cfg.joint, prior=cfg.prior, backbone=cfg.model,
                            backbone_fingerprint=backbone.fingerprint())
    prior = DiffusionPrior(dim, cfg.prior, fcfg.scale).to(dev)
    if resume and (out / "model.safetensors").exists():
        from zscir.methods.fusiondiff.checkpoint import load_checkpoint

        prior.denoiser.load_state_dict(load_checkpoint(out)[1].denoiser.state_dict())
    else:
        ti = torch.arange(n_train, device=dev)
        t_txt = bank[cap_idx[ti, 0]]
        prior.denoiser.set_statistics(target(ti, t_txt), t_txt)
    prior.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    vi = torch.arange(n_train, len(img), device=dev)
    v_txt = bank[cap_idx[vi, 0]]
    v_z0 = target(vi, v_txt)
    net = wrap_ddp(Denoise(prior), ctx)
    sync_torch_rng(ctx)  # the noise / time steps / CFG dropout come from it: one stream on all ranks

    def batch_loss(step: int):
        # the global batch, on every rank (drawn on the CPU: the same indices whatever the device)
        i = torch.randint(0, n_train, (cfg.batch_size,), generator=gen).to(dev)
        v = torch.randint(0, cap_idx.shape[1], (cfg.batch_size,), generator=gen).to(dev)
        txt = bank[cap_idx[i, v]]
        return sliced_loss(prior, net, target(i, txt), txt, ctx)

    def save(path: Path, info: dict) -> None:
        save_checkpoint(path, replace(fcfg, train_info={"stage": "prior", "train_config": asdict(cfg), **info}), prior,
                        caption_bank=own_bank)

    n_params = count_parameters(prior.denoiser)
    logger.info("prior: %d parameters, %d training pairs", n_params, n_train)
    r = run_loop("fusiondiff-prior", prior.parameters(), batch_loss,
                 LoopConfig(cfg.steps, cfg.lr, cfg.weight_decay, cfg.warmup, cfg.eval_every, bf16=cfg.bf16),
                 out, save,
                 evaluate=lambda: {"val_loss": _val_loss(prior, v_z0, v_txt)}, resume=resume,
                 progress=progress, log_config=asdict(cfg), ctx=ctx)
    return {**r, "trainable_params": n_params}
