"""Gallery feature extraction with an on-disk cache shared between methods.

Embedding a benchmark gallery is the expensive part of an evaluation (123K images for CIRCO) and most
methods embed it identically (image-only, sum, Pic2Word, SEARLE-style methods all use the plain image
encoder of the same backbone). Features are therefore cached per

    (composer.gallery_cache_key(), image preprocessing, fingerprint of the image list)

in ``cache_dir`` (default ``$ZSCIR_CACHE/features``, i.e. ``~/.cache/zscir/features``), so evaluating another method or another protocol
flag on the same backbone re-uses them. The image-list fingerprint hashes, in order, each image's id,
path relative to the data root, size and modification time: moving a data root keeps the cache valid,
regenerating or replacing images invalidates it.

Each entry is ``<digest>.safetensors`` (one float32 ``features`` tensor) plus ``<digest>.json``, a manifest
describing it (key parts, benchmark, split, number of images, dimension, zscir version, creation time).
Both are written atomically and the manifest last, so a manifest always describes a complete tensor.
Composers that keep the base class' ``gallery_cache_key`` (which contains the object's ``id()``) cannot be
matched across processes; their features are never written to disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ...methods.base import Composer
from .images import ImagePreprocessing, as_feature_matrix, iter_image_batches
from .layout import GalleryImage

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureCacheKey",
    "FeatureCache",
    "image_list_fingerprint",
    "cacheable",
    "GalleryFeatures",
    "encode_gallery",
    "encode_queries",
]

_FORMAT_VERSION = 1


def image_list_fingerprint(images: Sequence[GalleryImage]) -> str:
    """sha256 over each image's id, relative path, size and mtime (in gallery order)."""
    h = hashlib.sha256()
    for im in images:
        try:
            st = os.stat(im.path)
            stat_part = f"{st.st_size}\t{st.st_mtime_ns}"
        except OSError:
            stat_part = "missing"
        h.update(f"{im.id}\t{im.relpath}\t{stat_part}\n".encode("utf-8"))
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureCacheKey:
    """Everything that determines a gallery feature matrix."""

    encoder: str
    preprocessing: str
    image_list_sha: str
    n_images: int

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:32]


def cacheable(composer: Composer) -> bool:
    """Whether ``composer``'s gallery key is meaningful across processes (it overrides the default)."""
    return type(composer).gallery_cache_key is not Composer.gallery_cache_key


class FeatureCache:
    """A folder of cached gallery feature matrices with per-entry JSON manifests."""

    def __init__(self, directory: Path | str | None = None) -> None:
        from zscir.cache import cache_dir

        # the default follows ZSCIR_CACHE like every other zscir cache (read when the cache is opened)
        self.directory = Path(directory).expanduser() if directory is not None else cache_dir("features")

    def _paths(self, key: FeatureCacheKey) -> tuple[Path, Path]:
        d = key.digest()
        return self.directory / f"{d}.safetensors", self.directory / f"{d}.json"

    def load(self, key: FeatureCacheKey) -> torch.Tensor | None:
        """The cached features for ``key``, or ``None`` (missing, incomplete or inconsistent entry)."""
        from zscir.backbones.tensor_files import load_safetensors

        tensor_path, manifest_path = self._paths(key)
        if not manifest_path.is_file() or not tensor_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if manifest.get("key") != asdict(key):
                logger.warning("feature cache manifest %s does not match its key; ignoring it", manifest_path)
                return None
            feats = load_safetensors(tensor_path)["features"]  # damaged or non-finite: ignored below
        except Exception as e:  # a corrupt cache entry must never break an evaluation
            logger.warning("ignoring unreadable feature cache entry %s (%s)", tensor_path, e)
            return None
        if feats.ndim != 2 or feats.shape[0] != key.n_images:
            logger.warning("feature cache entry %s has shape %s, expected %d rows; ignoring it",
                           tensor_path, tuple(feats.shape), key.n_images)
            return None
        return feats

    def save(self, key: FeatureCacheKey, features: torch.Tensor, info: dict[str, Any] | None = None) -> Path:
        """Store ``features`` for ``key``; returns the manifest path."""
        from safetensors.torch import save

        from ...index.atomic import atomic_write_bytes, atomic_write_json
        from ... import __version__

        tensor_path, manifest_path = self._paths(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        feats = features.detach().to("cpu", torch.float32).contiguous()
        atomic_write_bytes(tensor_path, save({"features": feats}))
        manifest = {
            "format_version": _FORMAT_VERSION,
            "key": asdict(key),
            "digest": key.digest(),
            "file": tensor_path.name,
            "shape": list(feats.shape),
            "dtype": "float32",
            "zscir_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(info or {}),
        }
        atomic_write_json(manifest_path, manifest)
        return manifest_path

    def entries(self) -> list[dict[str, Any]]:
        """All manifests in the cache folder (for listing / pruning tools)."""
        out = []
        for p in sorted(self.directory.glob("*.json")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue
        return out


@dataclass
class GalleryFeatures:
    """Gallery features plus how they were obtained (recorded in the result JSON)."""

    features: torch.Tensor
    cache_hit: bool
    cache_key: FeatureCacheKey | None
    seconds: float


def encode_gallery(
    composer: Composer,
    images: Sequence[GalleryImage],
    preprocessing: ImagePreprocessing,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    progress: bool = True,
    desc: str = "gallery",
    info: dict[str, Any] | None = None,
) -> GalleryFeatures:
    """Embed ``images`` with ``composer.encode_gallery`` (float32, CPU), using the feature cache."""
    t0 = time.perf_counter()
    key = None
    cache = None
    if use_cache and cacheable(composer):
        key = FeatureCacheKey(composer.gallery_cache_key(), preprocessing.key(), image_list_fingerprint(images),
                              len(images))
        cache = FeatureCache(cache_dir)
        cached = cache.load(key)
        if cached is not None:
            logger.info("%s: %d gallery features loaded from cache %s", desc, len(images), cache.directory)
            return GalleryFeatures(cached, True, key, time.perf_counter() - t0)
    elif use_cache:
        logger.info("%s uses the default gallery_cache_key(); gallery features are not cached on disk",
                    type(composer).__name__)
    chunks = []
    with torch.no_grad():
        for batch in iter_image_batches([im.path for im in images], preprocessing, batch_size=batch_size,
                                        num_workers=num_workers, progress=progress, desc=desc):
            chunks.append(as_feature_matrix(composer.encode_gallery(batch), len(batch), "encode_gallery"))
    feats = torch.nn.functional.normalize(torch.cat(chunks), dim=-1) if chunks else torch.zeros((0, 0))
    if cache is not None and key is not None and len(images):
        try:
            cache.save(key, feats, info)
        except OSError as e:  # an unwritable cache must not lose a finished extraction
            logger.warning("could not write the feature cache in %s (%s)", cache.directory, e)
    return GalleryFeatures(feats, False, key, time.perf_counter() - t0)


def encode_queries(
    composer: Composer,
    reference_paths: Sequence[Path],
    texts: Sequence[Sequence[str]],
    preprocessing: ImagePreprocessing,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "queries",
) -> torch.Tensor:
    """Embed (reference image, text) queries; several texts per query are averaged.

    ``texts[i]`` holds one or more text variants for query ``i`` (all queries the same number). Each
    variant is encoded with the same reference image and the L2-normalised embeddings are averaged and
    re-normalised — SEARLE's FashionIQ protocol for its two caption orders; with one variant this is just
    the (re-)normalised query embedding. Returns float32 CPU features, one row per query.
    """
    if len(reference_paths) != len(texts):
        raise ValueError(f"{len(reference_paths)} reference images but {len(texts)} query texts")
    n_variants = {len(t) for t in texts}
    if len(n_variants) > 1 or 0 in n_variants:
        raise ValueError("every query needs the same, non-zero number of text variants")
    out = []
    offset = 0
    with torch.no_grad():
        for batch in iter_image_batches(reference_paths, preprocessing, batch_size=batch_size,
                                        num_workers=num_workers, progress=progress, desc=desc):
            batch_texts = texts[offset:offset + len(batch)]
            offset += len(batch)
            acc = None
            for j in range(len(batch_texts[0])):
                emb = as_feature_matrix(composer.encode_queries(batch, [t[j] for t in batch_texts]), len(batch),
                                        "encode_queries")
                emb = torch.nn.functional.normalize(emb, dim=-1)
                acc = emb if acc is None else acc + emb
            assert acc is not None
            out.append(torch.nn.functional.normalize(acc, dim=-1))
    return torch.cat(out) if out else torch.zeros((0, 0))
