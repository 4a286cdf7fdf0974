"""Stage II (composing): train composing adapters on world triplets, Stage I and the backbone frozen.

Query = text encoder + VSI + CA on ``template`` ("a photo of $ that {}") with ``$`` = φ(reference);
target = the frozen image embedding of the target image. Loss = InfoNCE over the batch's targets plus
mined hard negatives (`hard_negatives.py`). Identical target images inside a batch are masked out as
negatives (the world draws many edits that produce the same scene only rarely, but they exist).

Validation: R@K of the next ``n_val`` triplets (after the training ones) against their targets plus the
whole training gallery.

Under ``torchrun`` every rank draws the same global batch (and its hard negatives, from the same mined
table), encodes the queries of its slice and all-gathers them with grad, so the InfoNCE over the global
batch's targets (+ negatives) is computed on every rank; the adapters live in the frozen text encoder's
hooks (LoRA inside its layers), so their gradients are averaged explicitly (`average_gradients`) instead
of through DDP. The hard-negative refresh encodes the training queries in fixed chunks split over the
ranks (`encode_sharded`), giving every rank the table a 1-process run would compute.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zscir.backbones.registry import checked_model_name
from zscir.data import get_triplet_data
from zscir.methods.tscir.adapters import ComposingAdapters
from zscir.methods.tscir.checkpoint import load_mapping, load_weights, read_config, save_stage2, stage1_folder
from zscir.methods.tscir.composer import fill_template
from zscir.methods.tscir.config import Stage2Config
from zscir.methods.tscir.hard_negatives import HardNegativeMiner, encode_sharded
from zscir.methods.tscir.training import FeatureBank, ImageTable, autocast, image_size, prepare_backbone, recall_at
from zscir.train.common import (cosine_lr, fit_batch, load_training_state, save_training_state, seed_everything,
                                set_threads, write_json)
from zscir.train.distributed import (average_gradients, barrier, broadcast_params, gather_with_grad,
                                     init_distributed, local_slice)
from zscir.train.precision import resolve_bf16
from zscir.train.run_folder import MODEL_FILES, open_run

logger = logging.getLogger(__name__)

#: what Stage II writes into its folder: the model files, its adapters and a copy of the Stage I checkpoint
STAGE2_FILES = MODEL_FILES + ("adapters.safetensors", "stage1/config.json", "stage1/model.safetensors")


class _Row(NamedTuple):
    """A non-world training triplet with the attributes the world's `Triplet` gives the loop and the miner."""

    id: str
    reference: SimpleNamespace
    text: str
    target_id: str


def given_negatives(meta: dict) -> list[str]:
    """The image ids of a canonical manifest row's ``hard_negatives`` list (anything else: none)."""
    v = meta.get("hard_negatives")
    return [x for x in v if isinstance(x, str) and x] if isinstance(v, list) else []


class TripletData:
    """Triplets with their images rendered and encoded once (references with patch tokens)."""

    def __init__(self, cfg: Stage2Config, backbone, vsi: bool, progress: bool):
        t0 = time.time()
        size = image_size(backbone)
        if not cfg.data.is_world:
            self._from_data(cfg, backbone, vsi, progress, size)
            logger.info("stage II data: %d train / %d val triplets from %s, gallery %d images, ready in %.1fs",
                        len(self.train), len(self.val), cfg.data.data, len(self.gallery), time.time() - t0)
            return
        src = get_triplet_data("world", quality=cfg.quality, world_seed=cfg.world_seed,
                               world_n=cfg.max_triplets + cfg.n_val)
        trips, pairs = src.world
        self.train, self.val = trips[: cfg.max_triplets], trips[cfg.max_triplets:]
        refs = ImageTable.build([(t.reference.id, t.reference.scene) for t in trips], size, progress)
        # mining gallery: every target, every reference and the first `gallery_pairs` pair images
        gallery_items = [(t.target_id, t.target_scene) for t in trips]
        gallery_items += [(t.reference.id, t.reference.scene) for t in trips]
        gallery_items += [(p.id, p.scene) for p in pairs[: cfg.gallery_pairs]]
        self.gallery = ImageTable.build(gallery_items, size, progress)
        self.ref_bank = FeatureBank.build(backbone, refs, vsi, cfg.bf16, progress=progress, desc="encode references")
        self.gallery_bank = FeatureBank.build(backbone, self.gallery, False, cfg.bf16, progress=progress,
                                              desc="encode gallery")
        self.ref_idx = {t.id: refs.index[t.reference.id] for t in trips}
        self.tgt_idx = {t.id: self.gallery.index[t.target_id] for t in trips}
        self.texts = {t.id: fill_template(cfg.template, t.text) for t in trips}
        logger.info("stage II data: %d train / %d val %s triplets, gallery %d images, ready in %.1fs",
                    len(self.train), len(self.val), cfg.quality, len(self.gallery), time.time() - t0)

    def _from_data(self, cfg: Stage2Config, backbone, vsi: bool, progress: bool, size: int) -> None:
        """A triplet manifest / HF set (``--data``): images loaded once, unusable ones skipped and counted;
        validation is ``--val-data`` or the last ``min(n_val, N // 10)`` triplets. The gallery holds every
        reference and target, an image's id is its key ("same image" for the in-batch mask)."""
        def load(spec: str):
            data = cfg.data.triplet_data(spec)
            data.require_target_images("TSCIR Stage II")
            ids, imgs = data.images([i for r in data.rows for i in (r.reference_id, r.target_id,
                                                                    *given_negatives(r.meta))], size, progress)
            usable = data.usable(set(ids))
            rows = [_Row(str(r.meta.get("id", n)), SimpleNamespace(id=r.reference_id), r.modification, r.target_id)
                    for n, r in enumerate(usable)]
            negs = {row.id: given_negatives(r.meta) for row, r in zip(rows, usable)}
            if data.problems.total:
                logger.warning("%s: skipped %s", spec, data.problems.summary())
            if len(rows) < 2:
                from zscir.data import DataError

                raise DataError(f"{spec}: only {len(rows)} usable triplets{data.problem_note()}")
            return rows, ids, imgs, negs

        rows, ids, imgs, negs = load(cfg.data.data)
        if cfg.data.val_data:
            val, vids, vimgs, _ = load(cfg.data.val_data)
            val = [_Row(f"val:{r.id}", r.reference, r.text, r.target_id) for r in val[: cfg.n_val]]
            new = [k for k, i in enumerate(vids) if i not in set(ids)]
            ids, imgs = ids + [vids[k] for k in new], np.concatenate([imgs, vimgs[new]])
        else:
            k = min(cfg.n_val, max(1, len(rows) // 10))
            rows, val = rows[:-k], rows[-k:]
        if len(rows) < 2:
            from zscir.data import DataError

            raise DataError(f"{cfg.data.data}: only {len(rows)} usable training triplets")
        self.train, self.val = rows[: cfg.max_triplets], val
        self.gallery = ImageTable(ids=list(ids), keys=list(ids), images=imgs, index={i: n for n, i in enumerate(ids)})
        # the manifest's own hard negatives (``hard_negatives`` ids, e.g. make-triplets -g variants), in the gallery
        self.given_negatives = {t.id: [self.gallery.index[n] for n in negs.get(t.id, ()) if n in self.gallery.index]
                                for t in self.train}
        if any(self.given_negatives.values()) and cfg.hard_negatives == 0:
            logger.info("the training triplets list hard negatives; --hard-negatives K uses them (off now)")
        # references and gallery are the same images here: one pass of the frozen image encoder serves both
        # (with VSI the pass also keeps the patch tokens; the gallery needs only the global embeddings)
        self.ref_bank = FeatureBank.build(backbone, self.gallery, vsi, cfg.bf16, progress=progress,
                                          desc="encode images")
        self.gallery_bank = FeatureBank(self.ref_bank.glob, None)
        every = self.train + self.val
        self.ref_idx = {t.id: self.gallery.index[t.reference.id] for t in every}
        self.tgt_idx = {t.id: self.gallery.index[t.target_id] for t in every}
        self.texts = {t.id: fill_template(cfg.template, t.text) for t in every}

    def batch(self, trips, device):
        glob, patches = self.ref_bank.get([self.ref_idx[t.id] for t in trips], device)
        tgt = torch.as_tensor([self.tgt_idx[t.id] for t in trips])
        return [self.texts[t.id] for t in trips], glob, patches, tgt


def encode_queries(backbone, mapping, adapters, data: TripletData, trips, bf16: bool,
                   batch_size: int = 256) -> torch.Tensor:
    """Normalised queries of ``trips`` with the current model, Stage I + ``adapters`` (no grad)."""
    out = []
    with torch.no_grad():
        for s in range(0, len(trips), batch_size):
            texts, glob, patches, _ = data.batch(trips[s : s + batch_size], backbone.device)
            with autocast(backbone, bf16):
                q = mapping.encode(backbone, texts, glob, patches, adapters)
            out.append(F.normalize(q.float(), dim=-1).cpu())
    return torch.cat(out)


def validate_stage2(backbone, mapping, adapters, data: TripletData, bf16: bool) -> dict[str, float]:
    adapters.eval()
    q = encode_queries(backbone, mapping, adapters, data, data.val, bf16)
    tgt = torch.as_tensor([data.tgt_idx[t.id] for t in data.val])
    return recall_at(q, data.gallery_bank.glob, tgt, ks=(1, 5, 10, 50))


def train_stage2(cfg: Stage2Config, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train (or resume) Stage II on top of the Stage I folder ``cfg.stage1``; saves a self-contained folder.

    Runs data-parallel under ``torchrun`` (``cfg.batch_size`` is the global batch); only rank 0 validates
    and writes. The result's ``losses`` are the per-step global-batch losses.
    """
    ctx = init_distributed()  # a no-op unless launched by torchrun with WORLD_SIZE > 1
    progress = progress and ctx.is_main
    if not cfg.stage1:
        raise ValueError("Stage II needs a Stage I checkpoint (--stage1 DIR)")
    out = open_run(out_dir, "zscir train tscir-stage2", STAGE2_FILES, ctx)  # a user's folder is refused first
    cfg = replace(cfg, threads=set_threads(cfg.threads))  # the chosen count is recorded with the config
    cfg = replace(cfg, bf16=resolve_bf16(cfg.bf16, cfg.device))  # auto → this hardware; recorded as such
    seed_everything(cfg.seed)
    stage1_dir = Path(cfg.stage1)
    if (stage1_dir / "config.json").exists() and (given := read_config(stage1_dir))["stage"] == 2:
        stage1_dir = stage1_folder(stage1_dir, given)
    backbone = prepare_backbone(cfg.model or _stage1_model(stage1_dir), cfg.device)
    mapping, _ = load_mapping(stage1_dir, backbone)
    mapping.to(backbone.device).eval().requires_grad_(False)
    mapping.attach(backbone)
    adapters = ComposingAdapters(backbone, cfg.adapter).to(backbone.device)
    adapters.attach(backbone)
    if resume and (out / "adapters.safetensors").exists():
        load_weights(out / "adapters.safetensors", adapters.load_adapter_state_dict)
    params = adapters.trainable_parameters()
    for p in params:
        p.requires_grad_(True)
    broadcast_params(params, ctx)  # rank 0's start, whatever each rank loaded or initialised

    data = TripletData(cfg, backbone, mapping.uses_vsi, progress)
    miner = HardNegativeMiner(data, cfg) if cfg.hard_negatives > 0 else None

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, history = 0, []
    if resume:
        state = load_training_state(out, opt)
        start = state["step"] if state else 0
        if start and (out / "train_log.json").exists():
            history = [h for h in json.loads((out / "train_log.json").read_text())["history"] if h["step"] <= start]
    rng = np.random.default_rng(cfg.seed + start)
    from zscir.methods.tscir.hard_negatives import scene_key_ids

    key_ids = scene_key_ids(data.gallery.keys)
    metrics: dict = {}
    bs = fit_batch(cfg.batch_size, len(data.train), "tscir stage II triplets")
    bar = tqdm(range(start, cfg.steps), desc="tscir stage II", disable=not progress, initial=start, total=cfg.steps)
    t_train = time.time()
    losses: list[float] = []
    if start == 0 and ctx.is_main:  # the Stage I model alone (adapters start as the identity)
        history.append({"step": 0, **validate_stage2(backbone, mapping, adapters, data, cfg.bf16)})
        logger.info("stage II before training: val %s", history[-1])
    for step in bar:
        if miner is not None and (step == start or (step - start) % cfg.hn_refresh == 0):
            adapters.eval()
            miner.refresh(lambda _: encode_sharded(
                lambda lo, hi: encode_queries(backbone, mapping, adapters, data, data.train[lo:hi], cfg.bf16),
                len(data.train), ctx))
        adapters.train()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        bidx = rng.choice(len(data.train), size=bs, replace=False)
        trips = [data.train[i] for i in bidx]
        tgt = torch.as_tensor([data.tgt_idx[t.id] for t in trips])  # the global batch's targets
        texts, glob, patches, _ = data.batch(local_slice(trips, ctx), backbone.device)  # this rank's queries
        with autocast(backbone, cfg.bf16):
            q = mapping.encode(backbone, texts, glob, patches, adapters)
        q = gather_with_grad(F.normalize(q.float(), dim=-1), ctx)  # the global batch's queries
        t_emb = data.gallery_bank.glob[tgt].to(q.device)
        logits = q @ t_emb.T / cfg.temperature
        tk = key_ids[tgt]
        same = (tk[:, None] == tk[None, :]) & ~torch.eye(len(tk), dtype=torch.bool)
        logits = logits.masked_fill(same.to(q.device), float("-inf"))
        if miner is not None:
            neg = miner.negatives(bidx)  # (B, K) gallery indices, never identical to the target
            n_emb = data.gallery_bank.glob[neg].to(q.device)
            logits = torch.cat([logits, torch.einsum("bd,bkd->bk", q, n_emb) / cfg.temperature], dim=1)
        loss = F.cross_entropy(logits, torch.arange(len(tgt), device=q.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(params, ctx)  # = DDP's average; the W loss copies make it the global gradient
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps) and ctx.is_main:  # one writer
            metrics = validate_stage2(backbone, mapping, adapters, data, cfg.bf16)
            history.append({"step": step + 1, "loss": loss.item(), **metrics, "elapsed_s": time.time() - t_train})
            logger.info("stage II step %d loss %.3f val %s", step + 1, loss.item(), metrics)
            save_stage2(out, adapters, stage1_dir, backbone, cfg.template, cfg.to_dict(), metrics)
            save_training_state(out, step + 1, opt)
            write_json(out / "train_log.json", {"config": cfg.to_dict(), "history": history,
                                                "world_size": ctx.world_size})
    barrier(ctx)
    adapters.eval()
    return {"out": str(out), "metrics": metrics, "history": history, "train_s": time.time() - t_train,
            "losses": losses, "world_size": ctx.world_size}


def _stage1_model(stage1_dir: Path) -> str:
    """The backbone a Stage I checkpoint was trained on (Stage II must use the same one)."""
    cfg = read_config(stage1_dir)
    name = (cfg.get("train") or {}).get("model") or (cfg.get("backbone") or {}).get("name")
    return checked_model_name(name, stage1_dir / "config.json")  # a model folder elsewhere: the user's --model
