"""Indexing a folder of the user's own images with a composer's gallery encoder.

This is the plain version used by `zscir index`; the robust indexer (resumable, incremental, hostile
inputs) builds on the same store format. Unreadable files are skipped and reported, never fatal.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from zscir.index.store import EmbeddingStore
from zscir.methods.base import Composer

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def scan_images(folder: str | Path) -> list[Path]:
    """All files with an image extension under ``folder`` (recursive, sorted, symlink loops avoided)."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a directory (expected a folder of images)")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


@dataclass
class IndexReport:
    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def build_index(
    folder: str | Path,
    out_dir: str | Path,
    composer: Composer,
    *,
    model: str | None = None,
    method: str | None = None,
    batch_size: int = 64,
    fp16: bool = False,
    progress: bool = True,
) -> tuple[EmbeddingStore, IndexReport]:
    """Embed every readable image under ``folder`` into an `EmbeddingStore` at ``out_dir``."""
    root = Path(folder).resolve()
    paths = scan_images(root)
    report = IndexReport()
    embs: list[np.ndarray] = []
    items: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), desc="index", unit="img", disable=not progress)
    for i in range(0, len(paths), batch_size):
        batch, batch_items = [], []
        for p in paths[i : i + batch_size]:
            try:
                batch.append(_open(p))
                batch_items.append({"id": str(p.relative_to(root)), "path": str(p)})
            except Exception as e:  # noqa: BLE001 - any unreadable file is skipped and reported
                report.skipped.append((str(p), f"{type(e).__name__}: {e}"))
        if batch:
            embs.append(composer.encode_gallery(batch).float().numpy())
            items.extend(batch_items)
        bar.update(len(paths[i : i + batch_size]))
    bar.close()
    if not items:
        raise ValueError(f"{root}: no readable images found ({len(report.skipped)} skipped)")
    arr = np.concatenate(embs).astype(np.float16 if fp16 else np.float32)
    report.indexed = len(items)
    store = EmbeddingStore.save(
        out_dir, arr, items,
        {"root": str(root), "gallery_key": composer.gallery_cache_key(), "method_config": composer.describe(),
         "skipped": [{"path": p, "reason": r} for p, r in report.skipped]},
        model=model, method=method or composer.name,
    )
    return store, report
