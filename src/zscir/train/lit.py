"""`zscir train lit`: train the projection heads (and optionally the towers) of a LiT backbone on pairs.

Both towers are frozen, so each picture and each caption goes through its tower exactly once: the pooled
tower features are cached on disk, keyed by a fingerprint of the towers and preprocessing
(`LiTBackbone.towers_fingerprint`) and, per item, by a hash of the image's pixels or the caption's text.
A second run on the same or an overlapping dataset extracts only what is new; training the heads then
takes seconds to minutes on one core.

Recipe: symmetric InfoNCE with a learnable temperature (CLIP), AdamW (no weight decay on biases, norms and
the temperature), linear warm-up + cosine decay, batches of distinct images with one random caption of
each. A share of the *images* (never only some of their captions) is held out for image→text and
text→image R@1/R@5, reported with the chance level.

Tuned towers (`--text-tower {lora,full}`, `--image-unlock-blocks K`; files in `zscir.backbones.lit_tuning`):
the cache then keeps only what stays frozen. A tuned text tower runs every step on the batch's captions
(tokenised to ``train_text_len`` tokens; no text features are cached or computed up front), with its own,
lower learning rate (``text_lr``); with ``--text-unlock-layers K`` only its last K layers train and run each
step, on hidden states of the frozen first layers cached once per distinct caption
(`zscir.train.lit_text_cut`). With the last K image blocks unlocked the cache holds each picture's
activations at the input of the first unlocked block, in float16 (4,800 values = 9.6 kB per picture at
160 px for K ≤ 4, 11,200 = 22 kB for K = 5..7; docs/DESIGN-CHOICES.md lists every K; the pooled features
are 1,280 values), and the unlocked
blocks and the head convolution run every step (``image_lr``). BatchNorm statistics stay frozen (towers in
eval mode). ``--caption-augment metadata`` adds phrasings built from each picture's metadata
(`zscir.train.lit_captions`). With the defaults (locked towers, no augmentation) the trainer does exactly
what it did before towers could be tuned: same cache, same random draws, same folder.

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
from zscir.backbones.lit_tuning import (TUNED_FILES, add_lora, check_text_layers, check_unlocked_blocks,
                                        image_block_count, image_tail_modules, lora_state, merge_lora,
                                        text_tail_modules, text_tail_pooled, unload_lora)
from zscir.backbones.tensor_files import TensorFileError, load_torch_tensors, save_torch_tensors
from zscir.train.common import cosine_lr, fit_batch, retrieval_recalls, seed_everything, set_threads, write_json
from zscir.train.lit_captions import AUGMENTS, metadata_phrasings, record_metadata
from zscir.train.lit_text_cut import TextCutCache, pad_hidden
from zscir.train.run_folder import MODEL_FILES, open_run

#: what `zscir train lit` writes into its folder (the tuned-tower files only when towers are tuned)
LIT_RUN_FILES = MODEL_FILES + TUNED_FILES
#: default learning rates of tuned tower weights (`LiTTrainConfig.text_lr` None): LoRA adapters take a
#: larger step than full fine-tuning, both far below the heads' 1e-3
DEFAULT_TEXT_LR = {"lora": 5e-4, "full": 5e-5}

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
    model: LiTConfig = field(default_factory=LiTConfig)  # text_tuning, lora_*, image_unlocked_blocks live here
    text_lr: float | None = None  # tuned text tower weights (None: DEFAULT_TEXT_LR by text_tuning)
    image_lr: float = 1e-4  # unlocked image blocks
    train_text_len: int = 32  # tokens per caption when the text tower runs each step (≤ model.max_text_len)
    caption_augment: str = "none"  # or "metadata" (zscir.train.lit_captions)
    augment_share: float = 0.5  # probability of drawing an augmented phrasing instead of an own caption

    def __post_init__(self):
        if self.caption_augment not in AUGMENTS:
            raise ValueError(f"--caption-augment must be one of {', '.join(AUGMENTS)}, got {self.caption_augment!r}")
        if not 0.0 <= self.augment_share <= 1.0:
            raise ValueError(f"augment_share must be in [0, 1], got {self.augment_share!r}")
        for name in ("text_lr", "image_lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and 0 < v < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1), got {v!r}")
        if not (isinstance(self.train_text_len, int) and self.train_text_len >= 1):
            raise ValueError(f"train_text_len must be a positive integer, got {self.train_text_len!r}")

    @property
    def text_tuned(self) -> bool:
        return self.model.text_tuning != "locked"


def image_key(im: Image.Image) -> str:
    """Content hash of a picture (pixels, size, mode): equal pictures share one cached feature."""
    h = hashlib.sha1(f"{im.mode}{im.size}".encode())
    h.update(im.tobytes())
    return h.hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class FeatureCache:
    """Frozen-tower features by item hash, in one file per tower fingerprint (or in memory only).

    ``kind`` names what the image entries are: "" pooled features (with the text features), ``cut<K>`` the
    float16 activations at the input of image block K (`LiTTrainConfig` with unlocked image blocks)."""

    def __init__(self, cache_dir: str | Path | None, fingerprint: str, kind: str = ""):
        name = f"lit-features-{fingerprint}{'-' + kind if kind else ''}.pt"
        self.path = Path(cache_dir) / name if cache_dir else None
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
    """Deduplicated tower features and, per pair, which image row and which text row it uses.

    ``texts`` is None when the text tower is tuned (it runs each step on ``text_strings`` instead);
    ``image_aug`` lists, per image row, the text rows of its augmented phrasings (`zscir.train.lit_captions`)."""

    images: torch.Tensor  # (N_img, C) pooled, or (N_img, C, h, w) float16 at the first unlocked block
    texts: torch.Tensor | None  # (N_txt, W)
    pair_image: np.ndarray  # (N_pairs,) row into images
    pair_text: np.ndarray  # (N_pairs,) row into texts
    text_strings: list[str] = field(default_factory=list)  # (N_txt,) the caption of each text row
    image_aug: dict[int, list[int]] = field(default_factory=dict)
    text_hidden: list[torch.Tensor] | None = None  # (N_txt,) cached (T_i, W) states (`--text-unlock-layers`)
    text_cache_bytes: int = 0


@torch.no_grad()
def extract_pair_features(backbone: LiTBackbone, pairs: Iterable[tuple], cache_dir: str | Path | None = None,
                          batch_size: int = 64, progress: bool = True, text_features: bool = True,
                          image_cut: int | None = None, text_layers: int = 0) -> PairFeatures:
    """Stream ``pairs`` once; run each distinct new picture/caption through its frozen tower in batches.

    A pair is ``(image, caption)`` or ``(image, caption, phrasings)`` with augmented phrasings of the
    picture. ``text_features=False`` (a tuned text tower) computes and caches no text feature;
    ``image_cut`` (not None) caches the activations at the input of image block ``image_cut`` instead of
    pooled features (the blocks from there on are trained); ``text_layers`` K > 0 (with ``text_features``
    False) caches each caption's hidden states at the input of the text tower's last K layers
    (`zscir.train.lit_text_cut`)."""
    tcache = TextCutCache(cache_dir, backbone, text_layers) if text_layers else None
    cache = FeatureCache(cache_dir, backbone.towers_fingerprint(), "" if image_cut is None else f"cut{image_cut}")
    img_rows: dict[str, int] = {}
    txt_rows: dict[str, int] = {}
    strings: list[str] = []
    image_aug: dict[int, list[int]] = {}
    pair_image: list[int] = []
    pair_text: list[int] = []
    pending_img: list[tuple[str, Image.Image]] = []
    pending_txt: list[tuple[str, str]] = []

    def flush_images() -> None:
        if pending_img:
            pix = backbone.preprocess([im for _, im in pending_img])
            if image_cut is not None:
                model = backbone.image_model
                x = pix.to(backbone.device, next(model.parameters()).dtype).contiguous(memory_format=torch.channels_last)
                feats = model.forward_until(x, image_cut).to(torch.float16).cpu().contiguous()
            else:
                feats = backbone.image_features(pix).float().cpu()
            cache.data["image"].update({k: f.clone() for (k, _), f in zip(pending_img, feats)})
            cache.dirty = True
            pending_img.clear()

    def flush_texts() -> None:
        if pending_txt and tcache is not None:
            tcache.add(pending_txt)
            pending_txt.clear()
        if pending_txt:
            feats = backbone.text_features([t for _, t in pending_txt]).float().cpu()
            cache.data["text"].update({k: f.clone() for (k, _), f in zip(pending_txt, feats)})
            cache.dirty = True
            pending_txt.clear()

    def text_row(text: str) -> int:
        tk = text_key(text)
        if tk not in txt_rows:
            txt_rows[tk] = len(txt_rows)
            strings.append(text)
            if tcache is not None and tk not in tcache.data:
                pending_txt.append((tk, text))
            elif text_features and tk not in cache.data["text"]:
                pending_txt.append((tk, text))
        return txt_rows[tk]

    bar = tqdm(pairs, desc="lit features", unit="pair", disable=not progress)
    for item in bar:
        im, caption = item[0], item[1]
        ik = image_key(im)
        if ik not in img_rows:
            img_rows[ik] = len(img_rows)
            if ik not in cache.data["image"]:
                pending_img.append((ik, im))
        pair_image.append(img_rows[ik])
        pair_text.append(text_row(caption))
        for phrasing in (item[2] if len(item) > 2 else ()):
            rows = image_aug.setdefault(img_rows[ik], [])
            row = text_row(phrasing)
            if row not in rows:
                rows.append(row)
        if len(pending_img) >= batch_size:
            flush_images()
        if len(pending_txt) >= 4 * batch_size:
            flush_texts()
    flush_images()
    flush_texts()
    cache.save()
    if tcache is not None:
        tcache.save()
    if not pair_image:
        raise ValueError("the pair data is empty")
    images = torch.stack([cache.data["image"][k] for k in img_rows])
    texts = torch.stack([cache.data["text"][k] for k in txt_rows]) if text_features else None
    hidden = [tcache.data[k] for k in txt_rows] if tcache is not None else None
    nbytes = sum(h.numel() * 2 for h in hidden) if hidden is not None else 0
    if hidden is not None:
        logger.info("text cut cache: %d distinct captions, %.1f MB", len(hidden), nbytes / 1e6)
    return PairFeatures(images, texts, np.asarray(pair_image), np.asarray(pair_text), strings, image_aug,
                        hidden, nbytes)


@dataclass
class ImageSplit:
    """Training images with their caption rows, and held-out images with one caption each."""

    train_rows: np.ndarray  # (N_train,) image rows
    train_captions: list[np.ndarray]  # caption rows of each training image
    val_rows: np.ndarray  # (N_val,) image rows
    val_text: np.ndarray  # (N_val,) the first caption row of each held-out image
    train_aug: list[np.ndarray] = field(default_factory=list)  # augmented phrasing rows of each training image


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
                      np.asarray([captions[i][0] for i in val_rows.tolist()], dtype=np.int64),
                      [np.asarray(feats.image_aug.get(i, []), dtype=np.int64) for i in train_rows.tolist()])


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


@dataclass
class TowerTraining:
    """What of the towers trains in a run, and how a batch's tower inputs become head inputs."""

    backbone: LiTBackbone
    feats: PairFeatures
    cut: int | None  # first unlocked image block (None: image tower locked)
    text_len: int

    @property
    def text_tuned(self) -> bool:
        return self.feats.texts is None

    def image_inputs(self, rows: np.ndarray) -> torch.Tensor:
        x = self.feats.images[rows]
        if self.cut is None:
            return x
        model = self.backbone.image_model
        x = x.to(self.backbone.device, next(model.parameters()).dtype).contiguous(memory_format=torch.channels_last)
        return model.forward_from(x, self.cut).mean((2, 3))

    def text_inputs(self, rows, max_len: int | None = None) -> torch.Tensor:
        if not self.text_tuned:
            return self.feats.texts[rows]
        if self.feats.text_hidden is not None:  # the last K layers on cached states (at max_text_len)
            model = self.backbone.text_model
            h, mask = pad_hidden([self.feats.text_hidden[int(r)] for r in rows],
                                 next(model.parameters()).dtype, self.backbone.device)
            return text_tail_pooled(model, h, mask, self.backbone.cfg.text_unlocked_layers)
        tok = self.backbone.tokenizer([self.feats.text_strings[int(r)] for r in rows], padding=True, truncation=True,
                                      max_length=max_len or self.text_len, return_tensors="pt")
        return self.backbone.text_features({"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]})

    @torch.no_grad()
    def evaluate(self, val_rows: np.ndarray, val_text: np.ndarray, batch: int = 256) -> dict[str, float]:
        """Held-out metrics with the towers as they are now (a tuned text tower at the model's max_text_len)."""
        self.backbone.eval()
        if self.cut is None and not self.text_tuned:
            return evaluate_heads(self.backbone, self.feats.images[val_rows], self.feats.texts[val_text])
        img = torch.cat([self.image_inputs(val_rows[i:i + batch]) for i in range(0, len(val_rows), batch)])
        txt = torch.cat([self.text_inputs(val_text[i:i + batch], self.backbone.cfg.max_text_len)
                         for i in range(0, len(val_text), batch)])
        return evaluate_heads(self.backbone, img, txt)


def tower_param_groups(backbone: LiTBackbone, cfg: LiTTrainConfig) -> list[dict]:
    """Unlock what ``cfg.model`` says (LoRA adapters, the text tower, the last image blocks) and return their
    optimizer groups (weight decay on matrices only; ``base_lr`` each). The word-embedding table stays frozen
    under ``full``: 12M of MiniLM's 23M weights, mostly rows no caption uses (weight decay would shrink
    them all), and the space the ``$`` pseudo-word of Pic2Word / TSCIR lives in."""
    m = cfg.model
    groups: list[tuple[list[torch.nn.Parameter], float]] = []
    if m.text_tuning == "lora":
        add_lora(backbone.text_model, m.lora_rank, m.lora_alpha, m.text_unlocked_layers)  # only adapters train
        groups.append(([p for p in backbone.text_model.parameters() if p.requires_grad],
                       cfg.text_lr or DEFAULT_TEXT_LR["lora"]))
    elif m.text_tuning == "full" and m.text_unlocked_layers:
        params = [p for mod in text_tail_modules(backbone.text_model, m.text_unlocked_layers).values()
                  for p in mod.parameters()]
        for p in params:
            p.requires_grad_(True)
        groups.append((params, cfg.text_lr or DEFAULT_TEXT_LR["full"]))
    elif m.text_tuning == "full":
        frozen = backbone.text_model.get_input_embeddings().weight
        params = [p for p in backbone.text_model.parameters() if p is not frozen]
        for p in params:
            p.requires_grad_(True)
        groups.append((params, cfg.text_lr or DEFAULT_TEXT_LR["full"]))
    if m.image_unlocked_blocks:
        params = [p for mod in image_tail_modules(backbone.image_model, m.image_unlocked_blocks).values()
                  for p in mod.parameters()]
        for p in params:
            p.requires_grad_(True)
        groups.append((params, cfg.image_lr))
    out = []
    for params, lr in groups:
        out.append({"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay, "base_lr": lr})
        out.append({"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "base_lr": lr})
    return [g for g in out if g["params"]]


def finish_towers(backbone: LiTBackbone, cfg: LiTConfig) -> None:
    """After training: merge a LoRA delta into the text tower exactly as the loader will (the adapters are kept
    for saving), freeze every tower weight again, forget fingerprints computed from the old weights."""
    if cfg.text_tuning == "lora":
        tm = backbone.text_model
        delta = lora_state(tm)
        unload_lora(tm)
        merge_lora(tm, delta, cfg.lora_rank, cfg.lora_alpha, "the trained LoRA delta", cfg.text_unlocked_layers)
        tm.zscir_lora_delta = delta  # type: ignore[assignment]  # what save_pretrained writes
    for p in list(backbone.text_model.parameters()) + list(backbone.image_model.parameters()):
        p.requires_grad_(False)
    backbone._fingerprint = None
    backbone._towers_fp = None


def train_lit(pairs: Iterable[tuple], out_dir: str | Path, cfg: LiTTrainConfig | None = None,
              cache_dir: str | Path | None = None, progress: bool = True,
              backbone: LiTBackbone | None = None) -> dict:
    """Train the heads (and what ``cfg.model`` unlocks of the towers) of a LiT backbone on ``pairs``; save the
    model folder in ``out_dir``."""
    cfg = cfg or LiTTrainConfig()
    open_run(out_dir, "zscir train lit", LIT_RUN_FILES)  # a user's folder is refused before any work
    cfg = replace(cfg, threads=set_threads(cfg.threads))  # the chosen count is recorded with the config
    seed_everything(cfg.seed)
    if backbone is None:
        backbone = LiTBackbone.build(cfg.model, name=str(out_dir), seed=cfg.seed).to(cfg.device)
    elif backbone.cfg != cfg.model:
        backbone.cfg = cfg.model  # the tuning fields decide what trains and what is saved
    n_blocks = cfg.model.image_unlocked_blocks
    check_unlocked_blocks(backbone.image_model, n_blocks, cfg.model.image_tower)
    check_text_layers(backbone.text_model, cfg.model.text_unlocked_layers, cfg.model.text_tuning, cfg.model.text_tower)
    cut = image_block_count(backbone.image_model) - n_blocks if n_blocks else None
    t0 = time.time()
    feats = extract_pair_features(backbone, pairs, cache_dir, cfg.feature_batch_size, progress,
                                  text_features=not cfg.text_tuned, image_cut=cut,
                                  text_layers=cfg.model.text_unlocked_layers if cfg.text_tuned else 0)
    t_feat = time.time() - t0
    split = split_by_image(feats, cfg.val_fraction, cfg.max_val, cfg.seed)
    train_rows, train_caps, val_rows, val_text = split.train_rows, split.train_captions, split.val_rows, split.val_text
    if len(train_rows) < 2:
        raise ValueError(f"need at least 2 training images, got {len(train_rows)}")
    bs = fit_batch(cfg.batch_size, len(train_rows), "lit training data")

    params = backbone.head_parameters()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
              {"params": no_decay, "weight_decay": 0.0, "base_lr": cfg.lr}] + tower_param_groups(backbone, cfg)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    tt = TowerTraining(backbone, feats, cut, min(cfg.train_text_len, cfg.model.max_text_len))
    rng = np.random.default_rng(cfg.seed)
    aug_rng = np.random.default_rng([cfg.seed, 1])  # its own stream: without augmentation the draws are unchanged
    augment = cfg.caption_augment != "none" and any(len(a) for a in split.train_aug)
    losses: list[float] = []
    history: list[dict] = []
    metrics: dict = {}
    t1 = time.time()
    eval_seconds = 0.0
    tuned = cfg.text_tuned or n_blocks
    bar = tqdm(range(cfg.steps), desc="train lit" if tuned else "train lit heads", disable=not progress)
    for step in bar:
        backbone.train()
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * cosine_lr(step, cfg.steps, cfg.warmup)
        pick = rng.choice(len(train_rows), size=bs, replace=False)
        caps = [int(train_caps[i][rng.integers(len(train_caps[i]))]) for i in pick]
        if augment:
            for j, i in enumerate(pick):
                aug = split.train_aug[i]
                if aug_rng.random() < cfg.augment_share and len(aug):
                    caps[j] = int(aug[aug_rng.integers(len(aug))])
        ie = backbone.embed_image_features(tt.image_inputs(train_rows[pick]))
        te = backbone.embed_text_features(tt.text_inputs(caps))
        loss = contrastive_loss(ie, te, backbone.logit_scale, torch.as_tensor(caps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{backbone.logit_scale.exp().item():.1f}")
        if len(val_rows) and ((cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps):
            t_eval = time.time()
            metrics = tt.evaluate(val_rows, val_text)
            eval_seconds += time.time() - t_eval
            history.append({"step": step + 1, "loss": losses[-1], **metrics})
            logger.info("step %d loss %.3f %s", step + 1, losses[-1], metrics)
    train_seconds = time.time() - t1
    towers_fp = backbone.towers_fingerprint()  # of the frozen towers the cache was keyed by
    finish_towers(backbone, cfg.model)
    backbone.eval()
    out = backbone.save_pretrained(out_dir)
    data = {"pairs": int(len(feats.pair_image)), "images": int(len(feats.images)), "texts": int(len(feats.text_strings)),
            "train_images": int(len(train_rows)), "val_images": int(len(val_rows))}
    if feats.text_hidden is not None:
        data["text_cache_bytes"] = int(feats.text_cache_bytes)
    if cfg.caption_augment != "none":
        data["augmented_phrasings"] = int(sum(len(a) for a in feats.image_aug.values()))
    log = {"config": asdict(cfg), "data": data, "history": history, "metrics": metrics,
           "feature_seconds": t_feat, "train_seconds": train_seconds,
           "eval_seconds": eval_seconds, "seconds_per_step": (train_seconds - eval_seconds) / max(1, cfg.steps),
           "towers_fingerprint": towers_fp}
    write_json(out / "train_log.json", log)
    return {"out": str(out), "metrics": metrics, "losses": losses, "history": history, "data": data,
            "backbone": backbone, "seconds_per_step": log["seconds_per_step"]}


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


def pair_data(spec: str, n_pairs: int = 2000, seed: int = 0, image_size: int = 160, allow_pipe: bool = False,
              augment: str = "none") -> Iterable[tuple]:
    """Resolve ``--data SPEC`` to an iterable of (PIL image, caption) pairs.

    ``world`` is the procedural CIR world. Other specs go to the real-data layer (`zscir.data.get_pair_data`:
    WebDataset shards, manifests, HF datasets); every caption variant of a record becomes one pair. With
    ``augment="metadata"`` each pair also carries the picture's augmented phrasings
    (`zscir.train.lit_captions.metadata_phrasings`) as a third element.
    """
    if augment not in AUGMENTS:
        raise ValueError(f"--caption-augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if spec == "world":
        return world_pair_data(n_pairs, seed, image_size)
    from zscir.data import get_pair_data

    data = get_pair_data(spec, allow_pipe=allow_pipe)  # a bad spec raises DataError (a ValueError) here
    if augment == "metadata":
        return ((r.image, c, metadata_phrasings(r.captions, record_metadata(r.meta))) for r in data
                for c in r.captions)
    return ((r.image, c) for r in data for c in r.captions)
