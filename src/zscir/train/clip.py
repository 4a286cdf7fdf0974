"""Train the world CLIP: a small HF `CLIPModel` trained contrastively on CIR-world image–caption pairs.

There are no pretrained CLIP weights on this machine, so the project trains its own on the procedural
world and ships it as the default model. It is a genuine `transformers.CLIPModel` saved as a normal HF
folder, so every method takes exactly the code path it would take with ``openai/clip-vit-large-patch14``.

Recipe (see docs/DESIGN-CHOICES.md): a CLIP-style BPE tokenizer trained on the world captions and the
*training* phrasings of modification texts (the held-out benchmark phrasings are never seen), symmetric
InfoNCE with a learnable temperature, AdamW with warm-up + cosine decay, one random caption variant per
pair per step, no image augmentation (flips would break left/right captions). Images are rendered once
into a uint8 array and normalised as tensors, which equals the CLIP processor at the model's resolution.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zscir.backbones.registry import WORLD_CLIP_CONFIG, TinyCLIPConfig, build_random_clip
from zscir.backbones.tokenizer import train_bpe_tokenizer
from zscir.train.common import (
    cosine_lr,
    load_training_state,
    retrieval_recalls,
    save_training_state,
    seed_everything,
    set_threads,
    uint8_to_pixels,
    write_json,
)
from zscir.train.distributed import (
    barrier,
    broadcast_object,
    gather_with_grad,
    init_distributed,
    local_slice,
    wrap_ddp,
)

logger = logging.getLogger(__name__)


class _DualEncoder(torch.nn.Module):
    """Both towers behind one ``forward`` so DistributedDataParallel sees, and syncs, every parameter."""

    def __init__(self, backbone, bf16: bool):
        super().__init__()
        self.model = backbone.model
        object.__setattr__(self, "_backbone", backbone)  # not a submodule: its params are self.model's
        self.bf16 = bf16

    def forward(self, pix, tok):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            ie = self._backbone.encode_image(pix)
            te = self._backbone.encode_text(tok)
        return ie.float(), te.float(), self.model.logit_scale.exp().clamp(max=100)


@dataclass
class CLIPTrainConfig:
    """Hyper-parameters of `zscir train clip` (defaults reproduce the shipped world CLIP)."""

    seed: int = 0
    world_seed: int = 0
    n_pairs: int = 30000
    n_val: int = 1000
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 200
    eval_every: int = 250
    vocab_size: int = 1024
    threads: int | None = 1  # one intra-op thread: robust on a shared 2-core machine (OpenMP spin-waits)
    bf16: bool = False  # bf16 autocast is faster on an idle AVX512-BF16 CPU, slower on a busy one
    tokenizer: str | None = None  # a saved tokenizer folder to use instead of training one, e.g. the shipped
    # model's (trained before BPE learning was made deterministic); under DDP rank 0 builds it and broadcasts
    arch: TinyCLIPConfig = field(default_factory=lambda: WORLD_CLIP_CONFIG)


def _world_data(cfg: CLIPTrainConfig):
    from zscir.data import world

    wcfg = world.WorldConfig(seed=cfg.world_seed, image_size=cfg.arch.image_size)
    t0 = time.time()
    train = world.generate_pairs(wcfg, n=cfg.n_pairs, split="train")
    val = world.generate_pairs(wcfg, n=cfg.n_val, split="val")
    imgs = world.render_batch([p.scene for p in train], cfg.arch.image_size)
    val_imgs = world.render_batch([p.scene for p in val], cfg.arch.image_size)
    corpus = [c for p in train for c in p.captions] + _training_phrasings(train[:4000], cfg.seed)
    logger.info("world data: %d train / %d val pairs rendered in %.1fs", len(train), len(val), time.time() - t0)
    return train, val, imgs, val_imgs, corpus


def _training_phrasings(pairs, seed: int) -> list[str]:
    """Modification texts in the *training* phrasing set, for the tokenizer corpus only.

    A real CLIP tokenizer knows every English word; ours learns whole-word tokens for the training
    phrasings' words, while the held-out benchmark phrasings fall back to sub-word pieces.
    """
    import random

    from zscir.data.world.edits import random_edit
    from zscir.data.world.phrasing import phrase_edit

    rng = random.Random(seed)
    texts = []
    for p in pairs:
        res = random_edit(p.scene, rng)
        if res is not None:
            texts.append(phrase_edit(res[1], rng, "train"))
    return texts


@torch.no_grad()
def evaluate_clip(backbone, val_imgs: np.ndarray, val_captions: list[str], batch_size: int = 500) -> dict:
    """Held-out image→text and text→image R@1/R@5 (×100), one caption per image."""
    backbone.eval()
    ie = torch.cat([backbone.encode_image(uint8_to_pixels(val_imgs[i : i + batch_size]))
                    for i in range(0, len(val_imgs), batch_size)])
    te = backbone.encode_texts(val_captions)
    r = retrieval_recalls(ie, te)
    return {"i2t_R@1": r["a2b_R@1"], "i2t_R@5": r["a2b_R@5"], "t2i_R@1": r["b2a_R@1"], "t2i_R@5": r["b2a_R@5"]}


def train_clip(cfg: CLIPTrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) the world CLIP and save it as an HF model folder in ``out_dir``."""
    out = Path(out_dir)
    ctx = init_distributed()  # a no-op unless launched by torchrun with WORLD_SIZE > 1
    progress = progress and ctx.is_main
    out.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    train, val, imgs, val_imgs, corpus = _world_data(cfg)
    val_caps = [p.caption for p in val]

    if resume and (out / "config.json").exists():
        from zscir.backbones.hf_clip import HFCLIPBackbone

        backbone = HFCLIPBackbone.from_pretrained(out, name="world-clip", local_files_only=True)
    else:
        if cfg.tokenizer:
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(cfg.tokenizer)
        else:
            tok = train_bpe_tokenizer(corpus, vocab_size=cfg.vocab_size, max_length=cfg.arch.max_text_len) \
                if ctx.is_main else None
            tok = broadcast_object(tok, ctx)
        backbone = build_random_clip(cfg.arch, tok, seed=cfg.seed, name="world-clip")
    model = backbone.model
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
    )
    start = 0
    if resume:
        state = load_training_state(out, opt)
        start = state["step"] if state else 0

    net = wrap_ddp(_DualEncoder(backbone, cfg.bf16), ctx)
    losses: list[float] = []
    rng = np.random.default_rng(cfg.seed + start)  # same stream on every rank: same global batches
    history: list[dict] = []
    if start and (out / "train_log.json").exists():
        history = [h for h in json.loads((out / "train_log.json").read_text())["history"] if h["step"] <= start]
    metrics: dict = {}
    bar = tqdm(range(start, cfg.steps), desc="train clip", disable=not progress, initial=start, total=cfg.steps)
    t0 = time.time()
    for step in bar:
        model.train()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        idx = rng.choice(len(train), size=cfg.batch_size, replace=False)
        caps = [train[i].captions[rng.integers(len(train[i].captions))] for i in idx]
        # each rank encodes its slice; the loss is over the gathered global batch (see train.distributed)
        ie, te, scale = net(uint8_to_pixels(imgs[local_slice(idx, ctx)]), backbone.tokenize(local_slice(caps, ctx)))
        ie, te = gather_with_grad(ie, ctx), gather_with_grad(te, ctx)
        logits = scale * ie @ te.T
        target = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{loss.item():.3f}", T=f"{model.logit_scale.exp().item():.1f}")
        last = step + 1 == cfg.steps
        if ((step + 1) % cfg.eval_every == 0 or last) and ctx.is_main:  # one writer
            metrics = evaluate_clip(backbone, val_imgs, val_caps)
            history.append({"step": step + 1, "loss": float(loss.detach()), **metrics, "elapsed_s": time.time() - t0})
            logger.info("step %d loss %.3f %s", step + 1, loss.item(), metrics)
            backbone.save_pretrained(out)
            save_training_state(out, step + 1, opt)
            write_json(out / "train_log.json", {"config": asdict(cfg), "history": history,
                                                "world_size": ctx.world_size})
    barrier(ctx)
    model.eval()
    return {"metrics": metrics, "history": history, "out": str(out), "losses": losses,
            "world_size": ctx.world_size}
