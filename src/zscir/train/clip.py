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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zscir.backbones.devices import pin_memory, train_device
from zscir.backbones.registry import WORLD_CLIP_CONFIG, TinyCLIPConfig, build_random_clip
from zscir.backbones.tokenizer import train_bpe_tokenizer
from zscir.data import PairTable, get_pair_data
from zscir.train.data_options import DataOptions
from zscir.train.common import (
    cosine_lr,
    fit_batch,
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
    local_range,
    local_slice,
    wrap_ddp,
)
from zscir.train.precision import resolve_bf16
from zscir.train.run_folder import HF_FILES, MODEL_FILES, open_run

logger = logging.getLogger(__name__)


class _DualEncoder(torch.nn.Module):
    """Both towers behind one ``forward`` so DistributedDataParallel sees, and syncs, every parameter."""

    def __init__(self, backbone, bf16: bool):
        super().__init__()
        self.model = backbone.model
        object.__setattr__(self, "_backbone", backbone)  # not a submodule: its params are self.model's
        self.bf16 = bf16

    def forward(self, pix, tok):
        with torch.autocast(self.model.logit_scale.device.type, dtype=torch.bfloat16, enabled=self.bf16):
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
    threads: int | None = 1  # None: the idle usable cores (zscir.threads; the CLI's default); 0: torch's
    # fp32 by default: it reproduces the shipped world CLIP, and bf16 autocast is faster only on an idle
    # AVX512-BF16 CPU (slower on a busy one); None = from the hardware (zscir.train.precision)
    bf16: bool | None = False
    # where the model and batches go (zscir.backbones.devices: auto, cpu, cuda, cuda:N, mps; under torchrun
    # a CUDA device is each rank's own GPU); the run config records the resolved device
    device: str = "cpu"
    tokenizer: str | None = None  # a saved tokenizer folder to use instead of training one, e.g. the shipped
    # model's (trained before BPE learning was made deterministic); under DDP rank 0 builds it and broadcasts
    arch: TinyCLIPConfig = field(default_factory=lambda: WORLD_CLIP_CONFIG)
    model: str | None = None  # start from this backbone (any backbone name) instead of a random `arch` CLIP
    data: DataOptions = field(default_factory=DataOptions)


def _world_data(cfg: CLIPTrainConfig, progress: bool = False, size: int | None = None):
    """The world recipe: ``n_pairs`` training and ``n_val`` validation pairs rendered at the model's size
    (``size``: a ``--model``'s input side; default the random architecture's), and
    a tokenizer corpus of every caption variant plus training-set modification phrasings (a real CLIP
    tokenizer knows every English word; ours learns whole-word tokens for the training phrasings' words,
    while the held-out benchmark phrasings fall back to sub-word pieces)."""
    from zscir.data.world_source import training_phrasings

    t0 = time.time()
    size = size or cfg.arch.image_size
    if progress:  # a few seconds without a loop of its own: say what runs (the rendering below has a bar)
        tqdm.write(f"train clip: generating {cfg.n_pairs:,} world pairs + {cfg.n_val:,} for validation")
    data = get_pair_data("world", world_seed=cfg.world_seed, world_n=cfg.n_pairs)
    train = data.table(size, progress=progress)
    val = get_pair_data("world:val", world_seed=cfg.world_seed, world_n=cfg.n_val).table(size, progress=progress)
    corpus = [c for caps in train.captions for c in caps] + training_phrasings(data.source.pairs[:4000], cfg.seed)
    logger.info("world data: %d train / %d val pairs rendered in %.1fs", len(train), len(val), time.time() - t0)
    return train, val, corpus


def _real_data(cfg: CLIPTrainConfig, size: int, progress: bool):
    """(train table or streaming PairData, validation table, tokenizer corpus) for a non-world ``--data``."""
    opts = cfg.data
    data = opts.pair_data(opts.data)
    stream = opts.streams(data)
    if opts.val_data:
        val = opts.pair_data(opts.val_data, limit=cfg.n_val).table(size)
    elif stream:
        logger.warning("no --val-data: validating on the first %d training pairs (not held out)", cfg.n_val)
        val = opts.pair_data(opts.data, limit=cfg.n_val).table(size)
    train = None
    if not stream:
        train = data.table(size, progress=progress, workers=opts.workers)
        if not opts.val_data:
            train, val = train.split(min(cfg.n_val, max(1, len(train) // 10)))
    corpus_src = train.captions if train is not None else list(data.captions(opts.tokenizer_corpus))
    corpus = [c for caps in corpus_src for c in caps]
    return (data if stream else train), val, corpus


@torch.no_grad()
def evaluate_clip(backbone, val_imgs: np.ndarray, val_captions: list[str], batch_size: int = 500) -> dict:
    """Held-out image→text and text→image R@1/R@5 (×100), one caption per image."""
    backbone.eval()
    ie = torch.cat([backbone.encode_image(uint8_to_pixels(val_imgs[i : i + batch_size])).float().cpu()
                    for i in range(0, len(val_imgs), batch_size)])  # on the CPU, as encode_texts' are
    te = backbone.encode_texts(val_captions)
    r = retrieval_recalls(ie, te)
    return {"i2t_R@1": r["a2b_R@1"], "i2t_R@5": r["a2b_R@5"], "t2i_R@1": r["b2a_R@1"], "t2i_R@5": r["b2a_R@5"]}


def train_clip(cfg: CLIPTrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a CLIP contrastively and save it as an HF model folder in ``out_dir``.

    ``cfg.data.data`` selects the pairs: the world (the shipped recipe), or any `zscir.data` spec, held in
    RAM as a uint8 table (random batches, like the world) or streamed batch by batch (WebDataset shards:
    each rank reads its own shards, see `zscir.data.loader`). The result's ``data_wait_share`` is the
    fraction of step time spent waiting for the next batch.
    """
    out = Path(out_dir)
    ctx = init_distributed()  # a no-op unless launched by torchrun with WORLD_SIZE > 1
    progress = progress and ctx.is_main
    dev = train_device(cfg.device, ctx.local_rank if ctx.enabled else None)  # a bad device: before the folder
    open_run(out, "zscir train clip", MODEL_FILES + HF_FILES, ctx)  # a user's folder is refused before any work
    cfg = replace(cfg, threads=set_threads(cfg.threads))  # the chosen count is recorded with the config
    cfg = replace(cfg, device=str(dev), bf16=resolve_bf16(cfg.bf16, str(dev)))  # both recorded as resolved
    seed_everything(cfg.seed)
    base = None
    if cfg.model and not (resume and (out / "config.json").exists()):
        from zscir.backbones import create_backbone

        base = create_backbone(cfg.model, device=dev)
    size = int(getattr(base, "image_size", cfg.arch.image_size)) if base is not None else cfg.arch.image_size
    if cfg.data.is_world:
        train, val, corpus = _world_data(cfg, progress, size)
    else:
        train, val, corpus = _real_data(cfg, size, progress)
    val_imgs, val_caps = val.images, val.primary

    if resume and (out / "config.json").exists():
        from zscir.backbones.hf_clip import HFCLIPBackbone

        backbone = HFCLIPBackbone.from_pretrained(out, name="world-clip", local_files_only=True)
    elif base is not None:
        backbone = base
        backbone.model.requires_grad_(True)
    else:
        if cfg.tokenizer:
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast.from_pretrained(cfg.tokenizer)
        else:
            if progress:
                tqdm.write(f"train clip: learning a {cfg.vocab_size}-token BPE vocabulary from {len(corpus):,} captions")
            tok = train_bpe_tokenizer(corpus, vocab_size=cfg.vocab_size, max_length=cfg.arch.max_text_len) \
                if ctx.is_main else None
            tok = broadcast_object(tok, ctx)
        backbone = build_random_clip(cfg.arch, tok, seed=cfg.seed, name="world-clip")
    backbone.to(dev)  # before the optimiser is made: its state lives beside the parameters
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
    stream = None
    if not isinstance(train, PairTable):  # streaming: each rank its own share, batches of its slice size
        lo, hi = local_range(cfg.batch_size, ctx)
        stream = iter(train.loader(hi - lo, size, shuffle=True, shuffle_buffer=cfg.data.shuffle_buffer,
                                   workers=cfg.data.workers, seed=cfg.seed + start, rank=ctx.rank,
                                   world_size=ctx.world_size, drop_last=True,
                                   pin_memory=pin_memory(dev, True)))  # pinned only for a CUDA device
    history: list[dict] = []
    if start and (out / "train_log.json").exists():
        history = [h for h in json.loads((out / "train_log.json").read_text())["history"] if h["step"] <= start]
    metrics: dict = {}
    batch = fit_batch(cfg.batch_size, len(train), "clip training data") if stream is None else cfg.batch_size
    bar = tqdm(range(start, cfg.steps), desc="train clip", disable=not progress, initial=start, total=cfg.steps)
    t0 = time.time()
    waits: list[float] = []  # per step: seconds spent waiting for the next streamed batch
    step_s: list[float] = []  # per step: seconds from asking for the batch to the optimiser step done
    for step in bar:
        model.train()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        t_wait = time.perf_counter()
        if stream is None:
            idx = rng.choice(len(train), size=batch, replace=False)
            caps = [train.captions[i][rng.integers(len(train.captions[i]))] for i in idx]
            # each rank encodes its slice; the loss is over the gathered global batch (see train.distributed)
            pix = uint8_to_pixels(torch.from_numpy(train.images[local_slice(idx, ctx)]).to(dev))  # uint8 to the device
            local_caps, n = local_slice(caps, ctx), len(idx)
        else:
            batch = next(stream)
            waits.append(time.perf_counter() - t_wait)
            local_caps = [c[rng.integers(len(c))] for c in batch.captions]
            pix, n = uint8_to_pixels(batch.pixels.to(dev, non_blocking=True)), cfg.batch_size  # pinned on CUDA
        ie, te, scale = net(pix, backbone.tokenize(local_caps))
        ie, te = gather_with_grad(ie, ctx), gather_with_grad(te, ctx)
        logits = scale * ie @ te.T
        target = torch.arange(n, device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step_s.append(time.perf_counter() - t_wait)
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
    problems = train.problems if stream is not None else None
    return {"metrics": metrics, "history": history, "out": str(out), "losses": losses,
            "world_size": ctx.world_size, "train_s": time.time() - t0, "step_s": step_s, "data_wait_s": waits,
            "data_wait_share": sum(waits) / max(1e-9, sum(step_s)) if stream is not None else None,
            "problems": problems.summary() if problems is not None else "no problems"}
