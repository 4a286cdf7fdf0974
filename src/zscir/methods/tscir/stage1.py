"""Stage I (mapping): train φ (+ VSI) on world image–caption pairs, the backbone frozen.

Loss = image alignment + ``soft_weight`` × soft text alignment:

* image alignment: symmetric InfoNCE between "a photo of $" (``$`` = φ(image), VSI reading the patch
  tokens) and the frozen image embeddings of the batch — the Pic2Word objective;
* soft text alignment (`training.soft_alignment_loss`): the same prompt against the batch's real caption
  embeddings, with the caption–caption similarity structure as soft targets.

``Stage1Config(method="pic2word", mapping=MappingConfig(vsi_layers=[]), soft_weight=0)`` is Pic2Word.
Validation (every ``eval_every`` steps, on held-out world pairs): R@K of retrieving the image and the
caption from the pseudo-prompt.

Under ``torchrun`` (see `zscir.train.distributed`) every rank draws the same global batch, runs φ on the
*whole* global batch (a small MLP: this keeps φ's dropout masks, drawn from the identically seeded torch
RNG, equal to a 1-process run's) and the text encoder on its own slice; the queries are all-gathered
with grad so both losses are computed over the global batch on every rank. The trainable parts sit in
the frozen text encoder's hooks (VSI), so instead of DDP the gradients are averaged explicitly
(`average_gradients`): the update equals the 1-process update with the same global batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from zscir.data import get_pair_data
from zscir.methods.tscir.checkpoint import load_weights, save_stage1
from zscir.methods.tscir.config import Stage1Config
from zscir.methods.tscir.mapping import Mapping
from zscir.methods.tscir.training import (FeatureBank, ImageTable, autocast, encode_texts_bf16, image_size,
                                          info_nce, pair_banks, prepare_backbone, recall_at,
                                          soft_alignment_loss)
from zscir.train.common import (cosine_lr, fit_batch, load_training_state, save_training_state, seed_everything,
                                set_threads, uint8_to_pixels, write_json)
from zscir.train.pair_features import encode_pixels
from zscir.train.distributed import (average_gradients, barrier, broadcast_params, gather_with_grad,
                                     init_distributed, local_range, main_first, sync_torch_rng)
from zscir.train.precision import resolve_bf16
from zscir.train.run_folder import MODEL_FILES, open_run

logger = logging.getLogger(__name__)


@torch.no_grad()
def validate_stage1(backbone, mapping: Mapping, bank: FeatureBank, caps: torch.Tensor, prompt: str,
                    batch_size: int = 256, bf16: bool = True) -> dict[str, float]:
    """Pseudo-prompt → image and → caption retrieval R@K on held-out pairs."""
    mapping.eval()
    q = []
    for s in range(0, len(bank.glob), batch_size):
        idx = list(range(s, min(s + batch_size, len(bank.glob))))
        glob, patches = bank.get(idx, backbone.device)
        with autocast(backbone, bf16):
            q.append(torch.nn.functional.normalize(
                mapping.encode(backbone, [prompt] * len(idx), glob, patches).float(), dim=-1).cpu())
    q, imgs = torch.cat(q), bank.glob
    target = torch.arange(len(q))
    out = {f"img_{k}": v for k, v in recall_at(q, imgs, target).items()}
    out.update({f"cap_{k}": v for k, v in recall_at(q, caps, target).items()})
    return out


def train_stage1(cfg: Stage1Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) Stage I and save it as a checkpoint folder in ``out_dir``.

    Runs data-parallel under ``torchrun`` (one code path; ``cfg.batch_size`` is the global batch); only
    rank 0 validates and writes. The result's ``losses`` are the per-step global-batch losses.
    """
    ctx = init_distributed()  # a no-op unless launched by torchrun with WORLD_SIZE > 1
    progress = progress and ctx.is_main
    out = open_run(out_dir, "zscir train tscir-stage1", MODEL_FILES, ctx)  # a user's folder is refused first
    cfg = replace(cfg, threads=set_threads(cfg.threads))  # the chosen count is recorded with the config
    cfg = replace(cfg, bf16=resolve_bf16(cfg.bf16, cfg.device))  # auto → this hardware; recorded as such
    seed_everything(cfg.seed)
    if cfg.mapping.prompt.count("$") != 1:
        raise ValueError(f"the Stage I prompt must contain exactly one '$': {cfg.mapping.prompt!r}")
    backbone = prepare_backbone(cfg.model, cfg.device)
    size = image_size(backbone)

    t0 = time.time()
    vsi = len(cfg.mapping.vsi_layers) > 0
    if cfg.data.is_world:
        pairs = get_pair_data("world", world_seed=cfg.world_seed, world_n=cfg.n_pairs).source.pairs
        val = get_pair_data("world:val", world_seed=cfg.world_seed, world_n=cfg.n_val).source.pairs
        table = ImageTable.build([(p.id, p.scene) for p in pairs], size, progress)
        val_table = ImageTable.build([(p.id, p.scene) for p in val], size)
        bank = FeatureBank.build(backbone, table, vsi, cfg.bf16, progress=progress, desc="encode pair images")
        val_bank = FeatureBank.build(backbone, val_table, vsi, cfg.bf16)
        captions, val_captions = [p.captions for p in pairs], [p.caption for p in val]
    elif cfg.data.streaming:  # encode every step's images: nothing of the training set is held in memory
        from zscir.train.pair_features import cached_pair_features

        with main_first(ctx):
            if not cfg.data.val_data:
                logger.warning("no --val-data: validating on the first %d training pairs (not held out)", cfg.n_val)
            v = cached_pair_features(backbone, cfg.data, cfg.data.val_data or cfg.data.data, size, vsi, cfg.bf16,
                                     "tscir", cfg.n_val)
        val_bank, val_captions, captions, pairs = FeatureBank(v.glob, v.patches), [c[0] for c in v.captions], None, []
    else:
        with main_first(ctx):  # rank 0 encodes (and caches) the features, the others read them
            bank, captions, val_bank, val_captions = pair_banks(backbone, cfg.data, size, vsi, cfg.bf16, cfg.n_val,
                                                                progress)
        pairs = captions
    n_var = min(len(c) for c in captions) if captions else 0
    caption_bank = None
    if cfg.soft_weight > 0 and captions:  # every caption variant, encoded once by the frozen text encoder
        caption_bank = encode_texts_bf16(backbone, [c[v] for c in captions for v in range(n_var)], cfg.bf16,
                                         progress=progress, desc="encode captions").view(len(captions), n_var, -1)
    val_caps = encode_texts_bf16(backbone, val_captions, cfg.bf16)
    val = val_captions
    logger.info("stage I data: %d pairs, %d val, rendered and encoded in %.1fs", len(pairs), len(val),
                time.time() - t0)

    torch.manual_seed(cfg.seed)
    mapping = Mapping(backbone, cfg.mapping).to(backbone.device)
    mapping.attach(backbone)
    if resume and (out / "model.safetensors").exists():
        load_weights(out / "model.safetensors", mapping.load_state_dict)
    params = list(mapping.parameters())
    broadcast_params(params, ctx)  # rank 0's start, whatever each rank loaded or initialised
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    history: list[dict] = []
    if resume:
        state = load_training_state(out, opt)
        start = state["step"] if state else 0
        if start and (out / "train_log.json").exists():
            history = [h for h in json.loads((out / "train_log.json").read_text())["history"] if h["step"] <= start]

    rng = np.random.default_rng(cfg.seed + start)  # same stream on every rank: same global batches
    sync_torch_rng(ctx)  # φ's dropout masks come from it: one stream on all ranks
    prompt_toks: dict[int, dict] = {}  # local batch size -> the tokenised prompt
    losses: list[float] = []
    metrics: dict = {}
    bar = tqdm(range(start, cfg.steps), desc=f"{cfg.method} stage I", disable=not progress, initial=start,
               total=cfg.steps)
    stream = None
    if captions is None:  # streaming: each rank reads its own shards / rows, batches of its slice size
        lo, hi = local_range(cfg.batch_size, ctx)
        stream = iter(cfg.data.pair_data(cfg.data.data).loader(
            hi - lo, size, shuffle=True, shuffle_buffer=cfg.data.shuffle_buffer, workers=cfg.data.workers,
            seed=cfg.seed + start, rank=ctx.rank, world_size=ctx.world_size, drop_last=True))
        rng = np.random.default_rng([cfg.seed + start, ctx.rank])  # caption variants of this rank's items
    batch = fit_batch(cfg.batch_size, len(pairs), "tscir stage I data") if stream is None else cfg.batch_size
    t_train = time.time()
    for step in bar:
        mapping.train()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        if stream is None:
            idx = rng.choice(len(pairs), size=batch, replace=False)
            lo, hi = local_range(len(idx), ctx)
            glob = bank.glob[torch.as_tensor(idx)].to(backbone.device)  # φ's input and the image targets
            _, patches = bank.get(idx[lo:hi], backbone.device) if vsi else (None, None)
        else:
            b = next(stream)
            g_local, patches = encode_pixels(backbone, uint8_to_pixels(b.pixels), vsi, cfg.bf16)
            patches = patches.to(backbone.device).float() if patches is not None else None
            glob = gather_with_grad(g_local, ctx).to(backbone.device)  # frozen: no grad, just the global batch
            stream_caps = [c[rng.integers(len(c))] for c in b.captions]
        if hi - lo not in prompt_toks:
            prompt_toks[hi - lo] = backbone.tokenize([cfg.mapping.prompt] * (hi - lo))
        with autocast(backbone, cfg.bf16):
            pseudo = mapping.phi(glob)  # global batch on every rank: the 1-process run's dropout masks
            q = mapping.encode_pseudo(backbone, prompt_toks[hi - lo], pseudo[lo:hi], patches)
        q = gather_with_grad(torch.nn.functional.normalize(q.float(), dim=-1), ctx)  # global-batch queries
        loss_img = info_nce(q @ glob.T / cfg.temperature)
        loss = loss_img
        logs = {"img": f"{loss_img.item():.3f}"}
        if caption_bank is not None or (stream is not None and cfg.soft_weight > 0):
            if stream is None:
                cap_emb = caption_bank[torch.as_tensor(idx), torch.as_tensor(rng.integers(n_var, size=len(idx)))]
            else:
                cap_emb = gather_with_grad(encode_texts_bf16(backbone, stream_caps, cfg.bf16), ctx)
            cap_emb = cap_emb.to(backbone.device)
            loss_soft = soft_alignment_loss(q, cap_emb, cfg.temperature, cfg.soft_temperature)
            loss = loss + cfg.soft_weight * loss_soft
            logs["soft"] = f"{loss_soft.item():.3f}"
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, ctx)  # = DDP's average; the W loss copies make it the global gradient
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(**logs)
        if ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps) and ctx.is_main:  # one writer
            metrics = validate_stage1(backbone, mapping, val_bank, val_caps, cfg.mapping.prompt, bf16=cfg.bf16)
            history.append({"step": step + 1, "loss": loss.item(), **metrics, "elapsed_s": time.time() - t_train})
            logger.info("stage I step %d loss %.3f %s", step + 1, loss.item(), metrics)
            save_stage1(out, mapping, backbone, cfg.method, cfg.to_dict(), metrics)
            save_training_state(out, step + 1, opt)
            write_json(out / "train_log.json", {"config": cfg.to_dict(), "history": history,
                                                "world_size": ctx.world_size})
    if start >= cfg.steps and not (out / "config.json").exists() and ctx.is_main:
        save_stage1(out, mapping, backbone, cfg.method, cfg.to_dict(), metrics)
    barrier(ctx)
    mapping.eval()
    return {"out": str(out), "metrics": metrics, "history": history, "train_s": time.time() - t_train,
            "losses": losses, "world_size": ctx.world_size}
