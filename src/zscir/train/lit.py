"""`zscir train lit`: train the projection heads of a LiT backbone on (image, caption) pairs.

Both towers are frozen, so each picture and each caption goes through its tower exactly once: the pooled
tower features are cached on disk, keyed by a fingerprint of the towers and preprocessing
(`LiTBackbone.towers_fingerprint`) and, per item, by a hash of the image's pixels or the caption's text.
A second run on the same or an overlapping dataset extracts only what is new; training the heads then
takes seconds to minutes on one core.

Recipe: symmetric InfoNCE with a learnable temperature (CLIP), AdamW (no weight decay on biases, norms and
the temperature), linear warm-up + cosine decay, batches of distinct images with one random caption of
each. A share of the *images* (never only some of their captions) is held out for image→text and
text→image R@1/R@5, reported with the chance level.

Threads: torch gets ``threads`` intra-op threads (default 1; None, the CLI's default, chooses the idle
usable cores through `zscir.threads`): on a busy machine more threads than free cores ran ~5× slower than
one (OpenMP spin-waiting).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from zscir.backbones.lit import LiTBackbone, LiTConfig
from zscir.backbones.tensor_files import TensorFileError, load_torch_tensors, save_torch_tensors
from zscir.train.common import cosine_lr, fit_batch, retrieval_recalls, seed_everything, set_threads, write_json
from zscir.train.run_folder import MODEL_FILES, open_run

logger = logging.getLogger(__name__)


@dataclass
class LiTTrainConfig:
    """Hyper-parameters of `zscir train lit` (the heads' sizes and the towers are in ``model``)."""

    seed: int = 0
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    val_fraction: float = 0.1  # share of distinct images held out for retrieval metrics
    max_val: int = 1000
    eval_every: int = 0  # 0: evaluate at the end only
    threads: int | None = 1  # None: zscir.threads chooses (the CLI's default)
    feature_batch_size: int = 64
    device: str = "cpu"
    model: LiTConfig = field(default_factory=LiTConfig)


def image_key(im: Image.Image) -> str:
    """Content hash of a picture (pixels, size, mode): equal pictures share one cached feature."""
    h = hashlib.sha1(f"{im.mode}{im.size}".encode())
    h.update(im.tobytes())
    return h.hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class FeatureCache:
    """Pooled frozen-tower features by item hash, in one file per tower fingerprint (or in memory only)."""

    def __init__(self, cache_dir: str | Path | None, fingerprint: str):
        self.path = Path(cache_dir) / f"lit-features-{fingerprint}.pt" if cache_dir else None
        self.data: dict[str, dict[str, torch.Tensor]] = {"image": {}, "text": {}}
        if self.path is not None and self.path.exists():
            try:  # a cache is data (weights_only); a damaged or foreign file is ignored and rebuilt
                data = load_torch_tensors(self.path)
                if not (isinstance(data, dict) and all(isinstance(data.get(k), dict) for k in ("image", "text"))
                        and all(isinstance(v, torch.Tensor) for k in ("image", "text") for v in data[k].values())):
                    raise TensorFileError(f"{self.path}: not a LiT feature cache")
                self.data = data
                logger.info("feature cache %s: %d images, %d texts", self.path, len(self.data["image"]),
                            len(self.data["text"]))
            except TensorFileError as e:
                logger.warning("ignoring the feature cache %s: %s", self.path, e)
        self.dirty = False

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        save_torch_tensors(self.data, self.path)
        self.dirty = False


@dataclass
class PairFeatures:
    """Deduplicated tower features and, per pair, which image row and which text row it uses."""

    images: torch.Tensor  # (N_img, C)
    texts: torch.Tensor  # (N_txt, W)
    pair_image: np.ndarray  # (N_pairs,) row into images
    pair_text: np.ndarray  # (N_pairs,) row into texts


@torch.no_grad()
def extract_pair_features(backbone: LiTBackbone, pairs: Iterable[tuple[Image.Image, str]],
                          cache_dir: str | Path | None = None, batch_size: int = 64,
                          progress: bool = True) -> PairFeatures:
    """Stream ``pairs`` once; run each distinct new picture/caption through its frozen tower in batches."""
    cache = FeatureCache(cache_dir, backbone.towers_fingerprint())
    img_rows: dict[str, int] = {}
    txt_rows: dict[str, int] = {}
    pair_image: list[int] = []
    pair_text: list[int] = []
    pending_img: list[tuple[str, Image.Image]] = []
    pending_txt: list[tuple[str, str]] = []

    def flush_images() -> None:
        if pending_img:
            feats = backbone.image_features(backbone.preprocess([im for _, im in pending_img])).float().cpu()
            cache.data["image"].update({k: f.clone() for (k, _), f in zip(pending_img, feats)})
            cache.dirty = True
            pending_img.clear()

    def flush_texts() -> None:
        if pending_txt:
            feats = backbone.text_features([t for _, t in pending_txt]).float().cpu()
            cache.data["text"].update({k: f.clone() for (k, _), f in zip(pending_txt, feats)})
            cache.dirty = True
            pending_txt.clear()

    bar = tqdm(pairs, desc="lit features", unit="pair", disable=not progress)
    for im, caption in bar:
        ik, tk = image_key(im), text_key(caption)
        if ik not in img_rows:
            img_rows[ik] = len(img_rows)
            if ik not in cache.data["image"]:
                pending_img.append((ik, im))
        if tk not in txt_rows:
            txt_rows[tk] = len(txt_rows)
            if tk not in cache.data["text"]:
                pending_txt.append((tk, caption))
        pair_image.append(img_rows[ik])
        pair_text.append(txt_rows[tk])
        if len(pending_img) >= batch_size:
            flush_images()
        if len(pending_txt) >= 4 * batch_size:
            flush_texts()
    flush_images()
    flush_texts()
    cache.save()
    if not pair_image:
        raise ValueError("the pair data is empty")
    images = torch.stack([cache.data["image"][k] for k in img_rows])
    texts = torch.stack([cache.data["text"][k] for k in txt_rows])
    return PairFeatures(images, texts, np.asarray(pair_image), np.asarray(pair_text))


@dataclass
class ImageSplit:
    """Training images with their caption rows, and held-out images with one caption each."""

    train_rows: np.ndarray  # (N_train,) image rows
    train_captions: list[np.ndarray]  # caption rows of each training image
    val_rows: np.ndarray  # (N_val,) image rows
    val_text: np.ndarray  # (N_val,) the first caption row of each held-out image


def split_by_image(feats: PairFeatures, val_fraction: float, max_val: int, seed: int) -> ImageSplit:
    """Hold out a seeded share of the distinct images (all their captions go with them)."""
    n_img = len(feats.images)
    order = np.random.default_rng(seed).permutation(n_img)
    n_val = min(max_val, int(round(n_img * val_fraction))) if n_img >= 4 else 0
    is_val = np.zeros(n_img, bool)
    is_val[order[:n_val]] = True
    captions: dict[int, list[int]] = {}
    for i, t in zip(feats.pair_image.tolist(), feats.pair_text.tolist()):
        captions.setdefault(i, []).append(t)
    val_rows = np.flatnonzero(is_val)
    train_rows = np.flatnonzero(~is_val)
    return ImageSplit(train_rows, [np.asarray(captions[i]) for i in train_rows.tolist()], val_rows,
                      np.asarray([captions[i][0] for i in val_rows.tolist()], dtype=np.int64))


@torch.no_grad()
def evaluate_heads(backbone: LiTBackbone, img_feats: torch.Tensor, txt_feats: torch.Tensor) -> dict[str, float]:
    """Held-out R@1/R@5 (×100) both ways for row-aligned image/caption features, with the chance level."""
    backbone.eval()
    r = retrieval_recalls(backbone.embed_image_features(img_feats), backbone.embed_text_features(txt_feats))
    n = len(img_feats)
    return {"i2t_R@1": r["a2b_R@1"], "i2t_R@5": r["a2b_R@5"], "t2i_R@1": r["b2a_R@1"], "t2i_R@5": r["b2a_R@5"],
            "chance_R@1": 100.0 / n, "chance_R@5": min(100.0, 500.0 / n), "n_val": n}


def contrastive_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
                     caption_rows: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matching (image, caption) rows, temperature ``exp(logit_scale)`` ≤ 100.

    Pictures in a batch are always distinct, but two of them may carry the *same* caption (recoloured clip
    art, "a red apple"); with ``caption_rows`` given, such duplicate captions are masked out as negatives of
    each other instead of being pushed apart from a picture they describe equally well.
    """
    logits = logit_scale.exp().clamp(max=100) * image_embeds @ text_embeds.T
    n = logits.shape[0]
    if caption_rows is not None:
        rows = caption_rows.to(logits.device)
        dup = (rows[:, None] == rows[None, :]) & ~torch.eye(n, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(dup, float("-inf"))
    target = torch.arange(n, device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_lit(pairs: Iterable[tuple[Image.Image, str]], out_dir: str | Path, cfg: LiTTrainConfig | None = None,
              cache_dir: str | Path | None = None, progress: bool = True,
              backbone: LiTBackbone | None = None) -> dict:
    """Train the heads of a LiT backbone on ``pairs`` and save the model folder in ``out_dir``."""
    cfg = cfg or LiTTrainConfig()
    open_run(out_dir, "zscir train lit", MODEL_FILES)  # a user's folder is refused before any work
    cfg = replace(cfg, threads=set_threads(cfg.threads))  # the chosen count is recorded with the config
    seed_everything(cfg.seed)
    if backbone is None:
        backbone = LiTBackbone.build(cfg.model, name=str(out_dir), seed=cfg.seed).to(cfg.device)
    t0 = time.time()
    feats = extract_pair_features(backbone, pairs, cache_dir, cfg.feature_batch_size, progress)
    t_feat = time.time() - t0
    split = split_by_image(feats, cfg.val_fraction, cfg.max_val, cfg.seed)
    train_rows, train_caps, val_rows, val_text = split.train_rows, split.train_captions, split.val_rows, split.val_text
    if len(train_rows) < 2:
        raise ValueError(f"need at least 2 training images, got {len(train_rows)}")
    bs = fit_batch(cfg.batch_size, len(train_rows), "lit training data")

    params = backbone.head_parameters()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    history: list[dict] = []
    metrics: dict = {}
    t1 = time.time()
    bar = tqdm(range(cfg.steps), desc="train lit heads", disable=not progress)
    for step in bar:
        backbone.train()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * cosine_lr(step, cfg.steps, cfg.warmup)
        pick = rng.choice(len(train_rows), size=bs, replace=False)
        caps = [int(train_caps[i][rng.integers(len(train_caps[i]))]) for i in pick]
        ie = backbone.embed_image_features(feats.images[train_rows[pick]])
        te = backbone.embed_text_features(feats.texts[caps])
        loss = contrastive_loss(ie, te, backbone.logit_scale, torch.as_tensor(caps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{backbone.logit_scale.exp().item():.1f}")
        if len(val_rows) and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps):
            metrics = evaluate_heads(backbone, feats.images[val_rows], feats.texts[val_text])
            history.append({"step": step + 1, "loss": losses[-1], **metrics})
            logger.info("step %d loss %.3f %s", step + 1, losses[-1], metrics)
    backbone.eval()
    out = backbone.save_pretrained(out_dir)
    data = {"pairs": int(len(feats.pair_image)), "images": int(len(feats.images)), "texts": int(len(feats.texts)),
            "train_images": int(len(train_rows)), "val_images": int(len(val_rows))}
    log = {"config": asdict(cfg), "data": data, "history": history, "metrics": metrics,
           "feature_seconds": t_feat, "train_seconds": time.time() - t1,
           "towers_fingerprint": backbone.towers_fingerprint()}
    write_json(out / "train_log.json", log)
    return {"out": str(out), "metrics": metrics, "losses": losses, "history": history, "data": data,
            "backbone": backbone}


def world_pair_data(n_pairs: int = 2000, world_seed: int = 0, image_size: int = 160
                    ) -> Iterator[tuple[Image.Image, str]]:
    """CIR-world pictures with every caption variant (a smoke-test dataset that needs no download)."""
    from zscir.data import world

    wcfg = world.WorldConfig(seed=world_seed, image_size=image_size)
    pairs = world.generate_pairs(wcfg, n=n_pairs, split="train")
    for start in range(0, len(pairs), 256):
        chunk = pairs[start:start + 256]
        for p, arr in zip(chunk, world.render_batch([p.scene for p in chunk], image_size)):
            im = Image.fromarray(arr)
            for caption in p.captions:
                yield im, caption


def pair_data(spec: str, n_pairs: int = 2000, seed: int = 0, image_size: int = 160, allow_pipe: bool = False
              ) -> Iterable[tuple[Image.Image, str]]:
    """Resolve ``--data SPEC`` to an iterable of (PIL image, caption) pairs.

    ``world`` is the procedural CIR world. Other specs go to the real-data layer (`zscir.data.get_pair_data`:
    WebDataset shards, manifests, HF datasets); every caption variant of a record becomes one pair.
    """
    if spec == "world":
        return world_pair_data(n_pairs, seed, image_size)
    from zscir.data import get_pair_data

    data = get_pair_data(spec, allow_pipe=allow_pipe)  # a bad spec raises DataError (a ValueError) here
    return ((r.image, c) for r in data for c in r.captions)
