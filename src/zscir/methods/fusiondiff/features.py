"""World training features for both stages, computed once per backbone and cached on disk.

Both trainers work on frozen backbone embeddings only (the prior never sees pixels), so rendering and
encoding the world once — keyed by the backbone fingerprint and the data sizes — makes every later run
(resumes, ablations with 10%/50% of the triplets, image-space variant) start in seconds.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from zscir.backbones.base import Backbone
from zscir.backbones.tensor_files import TensorFileError, load_torch_tensors, save_torch_tensors

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    from zscir.cache import cache_dir

    return cache_dir("fusiondiff")


@torch.no_grad()
def _encode_scenes(backbone: Backbone, scenes, size: int, batch_size: int = 512, desc: str = "images",
                   progress: bool = True) -> torch.Tensor:
    from zscir.data.world_source import render_scenes as render_batch
    from zscir.train.common import uint8_to_pixels

    out = []
    for s in tqdm(range(0, len(scenes), batch_size), desc=desc, leave=False, disable=not progress):
        pix = uint8_to_pixels(render_batch(scenes[s:s + batch_size], size)).to(backbone.device)
        out.append(backbone.encode_image(pix).float().cpu())
    return torch.cat(out)


def _cached(path: Path | None, build):
    """``build()``'s dict of tensors, cached in ``path``. The cache is data: read with ``weights_only=True``;
    a file that is damaged, holds NaN, is not a dict of tensors or would run code is rebuilt (with a warning)."""
    if path is not None and path.exists():
        try:
            obj = load_torch_tensors(path)
            if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
                return obj
            raise TensorFileError(f"{path}: not a dict of tensors")
        except TensorFileError as e:
            logger.warning("ignoring the feature cache %s and building it again: %s", path, e)
    t0 = time.time()
    obj = build()
    logger.info("built %s in %.1fs", path.name if path else "features", time.time() - t0)
    if path is not None:
        save_torch_tensors(obj, path)
    return obj


def image_size(backbone: Backbone) -> int:
    proc = getattr(backbone, "processor", None)
    size = getattr(getattr(backbone, "model", None), "config", None)
    try:
        return int(size.vision_config.image_size)
    except AttributeError:
        return 64 if proc is None else int(proc.crop_size["height"])


def pair_features(backbone: Backbone, n_pairs: int, world_seed: int = 0,
                  cache_dir: Path | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """{"image": (N, D), "caption_idx": (N, V)} for the first ``n_pairs`` world training pairs.

    Captions are given as indices into `caption_bank(n_pairs, world_seed)`: the stage-1 captions and the
    retrieval captioner's bank are the same texts, so they are embedded once (by the captioner).
    """
    path = cache_dir / f"pairs-{backbone.fingerprint()}-s{world_seed}-n{n_pairs}.pt" if cache_dir else None

    def build():
        from zscir.data import get_pair_data

        pairs = get_pair_data("world", world_seed=world_seed, world_n=n_pairs).source.pairs
        index = {c: i for i, c in enumerate(caption_bank(n_pairs, world_seed))}
        img = _encode_scenes(backbone, [p.scene for p in pairs], image_size(backbone), desc="pair images",
                             progress=progress)
        v = min(len(p.captions) for p in pairs)
        idx = torch.tensor([[index[c] for c in p.captions[:v]] for p in pairs])
        return {"image": img, "caption_idx": idx}

    return _cached(path, build)


def triplet_features(backbone: Backbone, n_triplets: int, world_seed: int = 0,
                     cache_dir: Path | None = None, progress: bool = True) -> dict[str, torch.Tensor]:
    """{"ref_image", "text", "target_image"}: (N, D) each, for the first ``n_triplets`` HQ triplets."""
    path = cache_dir / f"triplets-{backbone.fingerprint()}-s{world_seed}-n{n_triplets}.pt" if cache_dir else None

    def build():
        from zscir.data import get_triplet_data

        trip = get_triplet_data("world", quality="hq", world_seed=world_seed, world_n=n_triplets).world[0]
        size = image_size(backbone)
        return {
            "ref_image": _encode_scenes(backbone, [t.reference.scene for t in trip], size, desc="references",
                                        progress=progress),
            "text": backbone.encode_texts([t.text for t in trip], batch_size=1024),
            "target_image": _encode_scenes(backbone, [t.target_scene for t in trip], size, desc="targets",
                                           progress=progress),
        }

    return _cached(path, build)


def caption_bank(n_pairs: int, world_seed: int = 0) -> list[str]:
    """Distinct caption variants of the first ``n_pairs`` world training pairs (deterministic, ~1 s)."""
    from zscir.data.world_source import world_caption_bank

    return world_caption_bank(n_pairs, world_seed)


@torch.no_grad()
def data_triplet_features(backbone: Backbone, opts, n_val: int, cache_dir: Path | None = None,
                          progress: bool = True) -> dict:
    """{"ref_image", "text", "target_image", "n_val"} of a triplet ``--data`` (`DataOptions`): training rows
    first, then ``n_val`` validation rows (``--val-data``, or the last ``min(n_val, N // 10)`` rows). Each
    distinct image is decoded and encoded once; unusable images drop their triplets (counted, logged)."""
    from zscir.data import DataError
    from zscir.train.common import uint8_to_pixels

    def load(spec: str):
        data = opts.triplet_data(spec)
        data.require_target_images("the Fusion-Diff Control-Adapter")
        path = None
        if cache_dir is not None and opts.cache_features:
            path = cache_dir / f"triplets-{backbone.fingerprint()}-{data.fingerprint()}.pt"
        def build():
            size = image_size(backbone)
            ids, imgs = data.images([i for r in data.rows for i in (r.reference_id, r.target_id)], size, progress)
            rows = data.usable(set(ids))
            if data.problems.total:
                logger.warning("%s: skipped %s", spec, data.problems.summary())
            if len(rows) < 2:
                raise DataError(f"{spec}: only {len(rows)} usable triplets{data.problem_note()}")
            emb = torch.cat([backbone.encode_image(uint8_to_pixels(imgs[s:s + 256]).to(backbone.device)).float().cpu()
                             for s in range(0, len(imgs), 256)]) if len(imgs) else torch.zeros(0, backbone.embed_dim)
            at = {i: n for n, i in enumerate(ids)}
            return {"ref_image": emb[[at[r.reference_id] for r in rows]], "target_image": emb[[at[r.target_id] for r in rows]],
                    "text": backbone.encode_texts([r.modification for r in rows], batch_size=1024)}
        return _cached(path, build)

    tr = load(opts.data)
    if opts.val_data:
        va = {k: v[:n_val] for k, v in load(opts.val_data).items()}
    else:
        k = min(n_val, max(1, len(tr["text"]) // 10))
        va = {key: v[-k:] for key, v in tr.items()}
        tr = {key: v[:-k] for key, v in tr.items()}
    if len(tr["text"]) < 2:
        raise DataError(f"{opts.data}: only {len(tr['text'])} usable training triplets")
    out = {k: torch.cat([tr[k], va[k]]) for k in tr}
    return {**out, "n_val": len(va["text"])}
