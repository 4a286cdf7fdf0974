"""Frozen-encoder features of a real pair dataset, streamed once and cached under the data's fingerprint.

TSCIR Stage I and the Fusion-Diff prior never update the image encoder, so an image's embedding is a pure
function of (backbone, image): decoding and encoding each image once, batch by batch through DataLoader
workers (the pixels are never all in memory), and keeping only the embeddings makes every later step,
re-run and resume start at once. The cache file is keyed by the backbone's and the data's fingerprints
(paths, sizes and modification times of the files), so changed data is re-encoded; ``cache_features=False``
keeps nothing on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from zscir.backbones.tensor_files import TensorFileError, load_torch_tensors, save_torch_tensors
from zscir.data import DataError
from zscir.train.common import uint8_to_pixels

logger = logging.getLogger(__name__)

__all__ = ["PairFeatures", "encode_pixels", "encode_pair_stream", "pair_feature_split"]


@dataclass
class PairFeatures:
    """Normalised global image embeddings (N, D), optional patch tokens (N, P, W) bf16, caption variants."""

    glob: torch.Tensor
    patches: torch.Tensor | None
    captions: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.captions)

    def split(self, k: int) -> tuple["PairFeatures", "PairFeatures"]:
        """(all but the last ``k``, the last ``k``)."""
        p = self.patches
        return (PairFeatures(self.glob[:-k], p[:-k] if p is not None else None, self.captions[:-k]),
                PairFeatures(self.glob[-k:], p[-k:] if p is not None else None, self.captions[-k:]))


@torch.no_grad()
def encode_pixels(backbone, pix: torch.Tensor, patches: bool, bf16: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frozen vision outputs of normalised pixels: (normalised float32 global embeddings on the CPU, patch tokens
    in bfloat16 on the CPU or None) — ~16 kB of patch tokens per image at the world CLIP's size."""
    with torch.autocast(backbone.device.type, dtype=torch.bfloat16, enabled=bf16):
        if patches:
            g, p = backbone.encode_image_tokens(pix.to(backbone.device))
            p = p.to(torch.bfloat16).cpu()
        else:
            g, p = backbone.encode_image(pix.to(backbone.device)), None
    return F.normalize(g.float(), dim=-1).cpu(), p


@torch.no_grad()
def encode_pair_stream(backbone, data, size: int, patches: bool, bf16: bool, workers: int = 0,
                       batch_size: int = 256, progress: bool = False) -> PairFeatures:
    """Features of every usable pair of a `zscir.data.PairData`, in source order (bad images skipped)."""
    from tqdm.auto import tqdm

    globs, toks, caps = [], [], []
    loader = data.loader(batch_size, size, shuffle=False, workers=workers, rank=0, world_size=1)
    bar = tqdm(desc=f"encode {data.spec}", unit="img", disable=not progress, leave=False)
    for b in loader.epoch_batches(0):
        g, p = encode_pixels(backbone, uint8_to_pixels(b.pixels), patches, bf16)
        globs.append(g)
        if p is not None:
            toks.append(p)
        caps += b.captions
        bar.update(len(b))
        if data.limit is not None and len(caps) >= data.limit:
            break
    bar.close()
    data.report(len(caps))
    n = len(caps) if data.limit is None else min(len(caps), data.limit)
    return PairFeatures(torch.cat(globs)[:n], torch.cat(toks)[:n] if patches else None, caps[:n])


def cached_pair_features(backbone, opts, spec: str, size: int, patches: bool, bf16: bool, namespace: str,
                         limit: int | None = None, progress: bool = False) -> PairFeatures:
    data = opts.pair_data(spec, limit)
    path: Path | None = None
    if opts.cache_features:
        from zscir.cache import cache_root

        path = cache_root() / namespace / (f"pairs-{backbone.fingerprint()}-{data.fingerprint()}-{size}-"
                                           f"{'p' if patches else 'g'}{'-bf16' if bf16 else ''}.pt")
        if path.exists():
            cached = read_cached_features(path, patches)
            if cached is not None:
                return cached
    feats = encode_pair_stream(backbone, data, size, patches, bf16, opts.workers, progress=progress)
    if path is not None:
        save_torch_tensors({"glob": feats.glob, "patches": feats.patches, "captions": feats.captions}, path)
    return feats


def read_cached_features(path: Path, patches: bool) -> PairFeatures | None:
    """A feature cache file, or None (with a warning: the features are then re-encoded and the file
    rewritten) when it is not one this module wrote: damaged, of another layout, holding NaN, or a pickle
    that would run code — a cache is data read with ``weights_only=True``, never executed."""
    try:
        d = load_torch_tensors(path)
        glob, toks, caps = d["glob"], d["patches"], d["captions"]
        ok = (isinstance(glob, torch.Tensor) and glob.ndim == 2 and isinstance(caps, list)
              and len(caps) == len(glob) and all(isinstance(c, (tuple, list)) and all(isinstance(t, str) for t in c)
                                                 for c in caps)
              and (toks is None if not patches else isinstance(toks, torch.Tensor) and len(toks) == len(glob)))
        if not ok:
            raise TensorFileError(f"{path}: not a pair-feature cache of this layout")
    except (TensorFileError, KeyError, TypeError) as e:
        logger.warning("ignoring the feature cache %s and encoding again: %s", path, e)
        return None
    return PairFeatures(glob, toks, [tuple(c) for c in caps])


def pair_feature_split(backbone, opts, size: int, patches: bool, bf16: bool, n_val: int, namespace: str,
                       progress: bool = False) -> tuple[PairFeatures, PairFeatures]:
    """(train, validation) features: validation is ``--val-data`` (first ``n_val``) or, without it, the last
    ``min(n_val, N // 10)`` pairs of ``--data`` held out."""
    train = cached_pair_features(backbone, opts, opts.data, size, patches, bf16, namespace, progress=progress)
    if opts.val_data:
        return train, cached_pair_features(backbone, opts, opts.val_data, size, patches, bf16, namespace, n_val)
    k = min(n_val, max(1, len(train) // 10))
    if len(train) - k < 2:
        raise DataError(f"{opts.data}: {len(train)} usable pairs are too few to hold out validation; give --val-data")
    return train.split(k)
