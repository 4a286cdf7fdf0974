"""Lazy, batched image loading for benchmark evaluation, and SEARLE's ``targetpad`` preprocessing.

Composers receive PIL images and apply their backbone's own preprocessor, so the only preprocessing
decided here is what happens *before* that: nothing (``default``, the backbone's resize + centre crop)
or SEARLE's target padding (``targetpad``), which pads very elongated images so the centre crop does not
cut the object off. SEARLE reports its numbers with ``targetpad``; the choice moves FashionIQ results
noticeably (elongated product photos), so it is a protocol flag and part of the feature-cache key.

Images are opened lazily, batch by batch, through a torch ``DataLoader`` (``num_workers`` > 0 decodes in
worker processes), so a 123K-image gallery never sits in memory as pixels.
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ...data.imageio import ImageRejected, read_file_bytes
from .layout import BenchmarkDataError

logger = logging.getLogger(__name__)

__all__ = ["PREPROCESSING_CHOICES", "targetpad_transform", "ImagePreprocessing", "ImageFiles", "iter_image_batches"]

PREPROCESSING_CHOICES = ("default", "targetpad")


def targetpad_transform(image: Image.Image, target_ratio: float = 1.25) -> Image.Image:
    """SEARLE's ``TargetPad``: pad an image whose aspect ratio exceeds ``target_ratio`` with black borders.

    Reproduces ``data_utils.TargetPad`` of SEARLE (from Baldrati et al., CVPR-W 2022): with ``w, h`` the
    size and ``r = max(w, h) / min(w, h)``, images with ``r < target_ratio`` are returned unchanged;
    otherwise ``int((max(w, h) / target_ratio - w) / 2)`` columns (clamped at 0) are added left and right
    and ``int((max(w, h) / target_ratio - h) / 2)`` rows top and bottom, filled with 0. The result has
    aspect ratio ~``target_ratio`` (``target_ratio=1`` pads to a square); the backbone's resize + centre
    crop then keeps the whole object. The image is converted to RGB first (SEARLE pads before converting;
    identical for RGB inputs).
    """
    if target_ratio <= 0:
        raise ValueError(f"target_ratio must be positive, got {target_ratio}")
    image = image.convert("RGB")
    w, h = image.size
    if min(w, h) == 0:
        return image
    if max(w, h) / min(w, h) < target_ratio:
        return image
    scaled = max(w, h) / target_ratio
    hp = max(int((scaled - w) / 2), 0)
    vp = max(int((scaled - h) / 2), 0)
    if hp == 0 and vp == 0:
        return image
    canvas = Image.new("RGB", (w + 2 * hp, h + 2 * vp), (0, 0, 0))
    canvas.paste(image, (hp, vp))
    return canvas


@dataclass(frozen=True)
class ImagePreprocessing:
    """What is done to every benchmark image before the composer sees it.

    ``kind`` is ``"default"`` (RGB conversion only; the backbone preprocesses) or ``"targetpad"``.
    """

    kind: str = "default"
    target_ratio: float = 1.25

    def __post_init__(self) -> None:
        if self.kind not in PREPROCESSING_CHOICES:
            raise ValueError(f"unknown preprocessing {self.kind!r}; expected one of {', '.join(PREPROCESSING_CHOICES)}")

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.kind == "targetpad":
            return targetpad_transform(image, self.target_ratio)
        return image.convert("RGB")

    def key(self) -> str:
        """Stable string for cache keys and result files."""
        return f"targetpad(ratio={self.target_ratio:g})" if self.kind == "targetpad" else "default"


#: largest benchmark image file read (the real benchmarks' largest is a few MB)
MAX_IMAGE_BYTES = 100 * 2**20


def load_image(path: Path, preprocessing: ImagePreprocessing) -> Image.Image:
    """Open, fully decode and preprocess one image; unreadable files raise `BenchmarkDataError`.

    The file goes through the project's one file check (`zscir.data.imageio.read_file_bytes`: regular
    file, opened non-blocking, size limit), so a FIFO or device named like an image is an error instead
    of a hang; images over Pillow's decompression-bomb limit are an error too. Pixels are not resized
    here: that would change benchmark numbers.
    """
    try:
        data = read_file_bytes(path, MAX_IMAGE_BYTES)
    except ImageRejected as e:
        if e.code == "unreadable" and not os.path.lexists(path):
            raise BenchmarkDataError(f"{path}: image file not found") from None
        raise BenchmarkDataError(f"{path}: cannot read image ({e})") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return preprocessing(im)
    except Image.DecompressionBombError as e:
        raise BenchmarkDataError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
        raise BenchmarkDataError(f"{path}: cannot read image ({e})") from None


class ImageFiles(Dataset):
    """A map-style dataset of preprocessed PIL images (picklable, for DataLoader workers)."""

    def __init__(self, paths: Sequence[Path], preprocessing: ImagePreprocessing) -> None:
        self.paths = list(paths)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:
        return load_image(self.paths[i], self.preprocessing)


def _collate(batch: list[Image.Image]) -> list[Image.Image]:
    return batch


def iter_image_batches(
    paths: Sequence[Path],
    preprocessing: ImagePreprocessing,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "images",
) -> Iterator[list[Image.Image]]:
    """Yield lists of at most ``batch_size`` preprocessed images, in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    loader = DataLoader(
        ImageFiles(paths, preprocessing),
        batch_size=batch_size,
        shuffle=False,
        num_workers=max(0, int(num_workers)),
        collate_fn=_collate,
    )
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in loader:
            yield batch
            bar.update(len(batch))


def as_feature_matrix(x: torch.Tensor, n: int, who: str) -> torch.Tensor:
    """Check a composer output is ``(n, D)`` and return it as float32 on the CPU."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[0] != n:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who} returned {shape}; expected a ({n}, D) tensor")
    return x.detach().to(device="cpu", dtype=torch.float32)
