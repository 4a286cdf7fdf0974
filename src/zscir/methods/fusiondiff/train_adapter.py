"""Stage 2: fine-tune the Control-Adapter on the world's synthetic (HQ) triplets, the prior frozen.

For a triplet (I_ref, T_mod, I_tgt): control = [fused(I_ref, T_mod), img(I_ref), txt(T_mod)] (the parts
named in `AdapterConfig.control_parts`), text condition = txt(T_mod), z0 = the *gallery* embedding of the
target — fused with its retrieved caption in the joint space, img(I_tgt) in the image space — so that what
the model learns to generate is exactly what retrieval compares against. ``mode="full"`` also unfreezes the
prior (ablation 5). Validation: R@1 of DDIM samples among the held-out triplets' targets.

Under ``torchrun`` the Control-Adapter (and in ``full`` mode the prior) is DDP-wrapped and every rank takes
its slice of the global batch drawn identically on all ranks (`trainer.sliced_loss`, see `trainer`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from zscir.backbones import create_backbone
from zscir.backbones.devices import train_device
from zscir.backbones.registry import checked_model_name
from zscir.methods.fusiondiff.captioner import build_captioner
from zscir.methods.fusiondiff.checkpoint import captioner_inputs, count_parameters, load_checkpoint, save_checkpoint
from zscir.methods.fusiondiff.config import AdapterConfig
from zscir.methods.fusiondiff.control_adapter import ControlAdapter, control_signal
from zscir.methods.fusiondiff.features import data_triplet_features, default_cache_dir, triplet_features
from zscir.methods.fusiondiff.joint import ClipFusionEncoder, fuse
from zscir.methods.fusiondiff.trainer import Denoise, LoopConfig, run_loop, sliced_loss
from zscir.train.common import seed_everything, set_threads
from zscir.train.data_options import DataOptions
from zscir.train.distributed import init_distributed, main_first, sync_torch_rng, wrap_ddp
from zscir.train.precision import resolve_bf16
from zscir.train.run_folder import MODEL_FILES, open_run

logger = logging.getLogger(__name__)


@dataclass
class AdapterTrainConfig:
    """Hyper-parameters of `zscir train fusiondiff-adapter` (defaults: the shipped checkpoint)."""

    prior: str = "runs/fusiondiff-prior"
    model: str | None = None  # the backbone; None: the one the prior's config names (a built-in or hub name)
    seed: int = 0
    world_seed: int = 0
    n_triplets: int = 10000
    max_triplets: int | None = None
    n_val: int = 500
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    eval_every: int = 500
    threads: int | None = 1  # None: zscir.threads chooses (the CLI's default)
    # fp32 by default: it reproduces the shipped checkpoints; None = bf16 where native (zscir.train.precision)
    bf16: bool | None = False
    # where the backbone, prior, adapter and cached features go (zscir.backbones.devices: auto, cpu, cuda,
    # cuda:N, mps; under torchrun a CUDA device is each rank's own GPU); the run config records the resolved one
    device: str = "cpu"
    cache_dir: str | None = None
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    data: DataOptions = field(default_factory=DataOptions)  # --data (triplets) / --val-data


def control_parts(ref_img: torch.Tensor, txt: torch.Tensor, weight: float, names: tuple[str, ...],
                  ref_joint: torch.Tensor | None = None) -> torch.Tensor:
    """The control vector; ``ref_joint`` is the reference's gallery (fused-with-caption) embedding."""
    parts = {"fused": fuse(ref_img, txt, weight), "image": ref_img, "text": txt}
    if "reference" in names:
        if ref_joint is None:
            raise ValueError("control part 'reference' needs the reference's joint embedding")
        parts["reference"] = ref_joint
    return control_signal(parts, names)


@torch.no_grad()
def _val_recall(prior, adapter, ctrl, txt, z0, steps: int = 10) -> dict:
    """R@1 / R@5 (×100) of generated embeddings among the validation targets (a fast training monitor)."""
    was = adapter.training
    adapter.eval()
    prior.eval()
    gen = torch.Generator().manual_seed(0)
    z = prior.sample(txt, adapter=adapter, control=ctrl, steps=steps, generator=gen)
    if was:
        adapter.train()
        prior.train()
    sim = z @ z0.T
    rank = (sim > sim.diag()[:, None]).sum(1)
    return {"val_R@1": float((rank < 1).float().mean() * 100), "val_R@5": float((rank < 5).float().mean() * 100)}


def train_adapter(cfg: AdapterTrainConfig, out: str | Path, resume: bool = False, progress: bool = True,
                  backbone=None) -> dict:
    """Train (or resume) the Control-Adapter on top of the stage-1 prior checkpoint ``cfg.prior``.

    Data-parallel under ``torchrun`` (``cfg.batch_size`` is the global batch; only rank 0 writes).
    """
    ctx = init_distributed()  # a no-op unless launched by torchrun with WORLD_SIZE > 1
    dev = train_device(cfg.device, ctx.local_rank if ctx.enabled else None)  # a bad device: before the folder
    out = open_run(out, "zscir train fusiondiff-adapter", MODEL_FILES, ctx)  # a user's folder is refused first
    cfg = replace(cfg, threads=set_threads(cfg.threads))  # the chosen count is recorded with the config
    cfg = replace(cfg, device=str(dev), bf16=resolve_bf16(cfg.bf16, str(dev)))  # the log records both as resolved
    seed_everything(cfg.seed)
    if cfg.adapter.mode not in ("adapter", "full"):
        raise ValueError(f"mode must be 'adapter' or 'full', got {cfg.adapter.mode!r}")
    base_cfg, prior, _ = load_checkpoint(cfg.prior)
    prior.to(dev)
    # the prior's config names its backbone; a model folder elsewhere must come from the user (--model)
    backbone = backbone or create_backbone(cfg.model or checked_model_name(base_cfg.backbone,
                                                                           Path(cfg.prior) / "config.json"))
    backbone.to(dev).freeze()  # it encodes the (cached) features
    if base_cfg.backbone_fingerprint and base_cfg.backbone_fingerprint != backbone.fingerprint():
        logger.warning("prior was trained on backbone %s, training the adapter on %s",
                       base_cfg.backbone_fingerprint, backbone.fingerprint())
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    jc = base_cfg.joint
    with main_first(ctx):  # rank 0 builds the on-disk feature caches, the others read them
        if cfg.data.is_world:
            feats = triplet_features(backbone, cfg.n_triplets, cfg.world_seed, cache, progress=progress)
        else:
            feats = data_triplet_features(backbone, cfg.data, cfg.n_val, cache, progress=progress)
            cfg = replace(cfg, n_val=feats["n_val"])
        cap_joint, bank = captioner_inputs(cfg.prior, jc)  # the prior's own caption bank, from its folder
        joint = ClipFusionEncoder(backbone, jc, build_captioner(backbone, cap_joint, cache, bank=bank)
                                  if jc.space == "joint" else None)
        ref, txt, tgt = feats["ref_image"], feats["text"], feats["target_image"]
        z0_all = joint.from_embeddings(tgt, None)
        ctrl_all = control_parts(ref, txt, jc.fusion_weight, cfg.adapter.control_parts,
                                 joint.from_embeddings(ref, None))
    # the features are cached on the CPU; training draws its batches from copies on the device
    txt, z0_all, ctrl_all = txt.to(dev), z0_all.to(dev), ctrl_all.to(dev)
    n_val = cfg.n_val
    n_train = min(len(ref) - n_val, cfg.max_triplets or len(ref))
    val = slice(len(ref) - n_val, len(ref))  # validation is the tail; training uses a prefix

    adapter = ControlAdapter(prior.denoiser, cfg.adapter).to(dev)
    adapter.set_statistics(ctrl_all[:n_train])
    if resume and (out / "model.safetensors").exists():
        _, p2, a2 = load_checkpoint(out)
        prior.denoiser.load_state_dict(p2.denoiser.state_dict())
        adapter.load_state_dict(a2.state_dict())
    for p in prior.parameters():
        p.requires_grad_(cfg.adapter.mode == "full")
    prior.train(cfg.adapter.mode == "full")
    adapter.train()
    trainable = count_parameters(adapter, True) + count_parameters(prior, True)
    logger.info("stage 2 (%s): %d trainable parameters, %d training triplets", cfg.adapter.mode, trainable, n_train)
    fcfg = replace(base_cfg, adapter=cfg.adapter)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = wrap_ddp(Denoise(prior, adapter), ctx)  # DDP syncs what trains: the adapter (+ prior in full mode)
    sync_torch_rng(ctx)  # the noise / time steps / CFG dropout come from it: one stream on all ranks

    def batch_loss(step: int):
        i = torch.randint(0, n_train, (cfg.batch_size,), generator=gen).to(dev)  # the global batch, every rank
        return sliced_loss(prior, net, z0_all[i], txt[i], ctx, control=ctrl_all[i])

    def save(path: Path, info: dict) -> None:
        info = {"stage": "adapter", "train_config": asdict(cfg), "trainable_params": trainable,
                "n_train_triplets": n_train, "prior_train_info": base_cfg.train_info, **info}
        save_checkpoint(path, replace(fcfg, train_info=info), prior, adapter, caption_bank=bank)

    params = list(adapter.parameters()) + list(prior.parameters())
    r = run_loop(f"fusiondiff-adapter[{cfg.adapter.mode}]", params, batch_loss,
                 LoopConfig(cfg.steps, cfg.lr, cfg.weight_decay, cfg.warmup, cfg.eval_every, bf16=cfg.bf16),
                 out, save,
                 evaluate=lambda: _val_recall(prior, adapter, ctrl_all[val], txt[val], z0_all[val]),
                 resume=resume, progress=progress, log_config=asdict(cfg), ctx=ctx)
    return {**r, "trainable_params": trainable, "n_train_triplets": n_train}
