"""Item 7: does streaming WebDataset input starve `zscir train clip`? The share of step time spent waiting.

A synthetic img2dataset-style shard set (JPEG files larger than the model's input, so every sample is
decoded *and* resized to 224 px, plus ``.txt`` captions) feeds `train_clip` in streaming mode on a randomly
initialised ViT-B/32-sized CLIP (12 x 768 vision layers, patch 32, 224 px; 12 x 512 text layers). The
trainer times, per step, the wait for the next batch and the whole step; the first ``warmup_steps`` (worker
start-up, first shard opened) are left out. Target: wait <= 10 % of step time. ``loader_img_per_s`` is the
loader alone over one epoch (decode + resize + batch): how fast a step may become before it starts to wait.
"""

from __future__ import annotations

import io
import logging
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DATAWAIT_COLUMNS = ["workers", "batch_size", "steps_timed", "step_s_median", "wait_s_median", "wait_share",
                    "target_met", "loader_img_per_s"]


@dataclass
class DataWaitBenchConfig:
    n_images: int = 512
    per_shard: int = 64
    file_size: tuple[int, int] = (320, 256)  # JPEG (width, height): decoded, then resized + cropped to 224
    image_size: int = 224
    batch_size: int = 32
    steps: int = 8
    warmup_steps: int = 2
    workers: list[int] = field(default_factory=lambda: [0, 2])
    arch: dict[str, int] = field(default_factory=lambda: dict(
        image_size=224, patch_size=32, vision_width=768, vision_layers=12, vision_heads=12, text_width=512,
        text_layers=12, text_heads=8, max_text_len=32, projection_dim=512, vocab_size=1024))
    threads: int = 1
    seed: int = 0


def write_shards(root: Path, cfg: DataWaitBenchConfig) -> str:
    """img2dataset-style shards of smooth random images (JPEG q90) with short captions."""
    import webdataset as wds
    from PIL import Image

    rng = np.random.default_rng(cfg.seed)
    w, h = cfg.file_size
    yy, xx = np.mgrid[0:h, 0:w]
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "grey", "brown"]
    n_shards = (cfg.n_images + cfg.per_shard - 1) // cfg.per_shard
    for s in range(n_shards):
        with wds.TarWriter(str(root / f"{s:05d}.tar")) as tw:
            for i in range(s * cfg.per_shard, min(cfg.n_images, (s + 1) * cfg.per_shard)):
                a, b, c = rng.uniform(0.01, 0.05, 3)
                img = np.stack([127 + 120 * np.sin(a * xx + b * yy + k * c * 40) for k in range(3)], -1)
                img = (img + rng.normal(0, 12, img.shape)).clip(0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=90)
                cap = f"a {colours[i % 8]} wave pattern number {i % 13}"
                tw.write({"__key__": f"{i:08d}", "jpg": buf.getvalue(), "txt": cap.encode()})
    return f"wds:{root}/{{00000..{n_shards - 1:05d}}}.tar"


def loader_throughput(spec: str, cfg: DataWaitBenchConfig, workers: int) -> float:
    """Images per second the streaming loader alone delivers (decode + resize + batch), after its first batch:
    the most a faster (GPU) step could consume before it waits."""
    import time

    from zscir.data import get_pair_data

    it = get_pair_data(spec).loader(cfg.batch_size, cfg.image_size, workers=workers, rank=0, world_size=1,
                                    shuffle_buffer=256).epoch_batches(0)
    next(it)
    t0, n = time.perf_counter(), 0
    for b in it:
        n += len(b)
    return n / (time.perf_counter() - t0)


def run_datawait_bench(cfg: DataWaitBenchConfig) -> list[dict[str, Any]]:
    from zscir.backbones.registry import TinyCLIPConfig
    from zscir.train.clip import CLIPTrainConfig, train_clip
    from zscir.train.data_options import DataOptions

    rows = []
    with tempfile.TemporaryDirectory(prefix="zscir-datawait-") as tmp:
        spec = write_shards(Path(tmp), cfg)
        for workers in cfg.workers:
            tcfg = CLIPTrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, warmup=1, eval_every=10**9, n_val=8,
                                   threads=cfg.threads, arch=TinyCLIPConfig(**cfg.arch), vocab_size=cfg.arch["vocab_size"],
                                   data=DataOptions(data=spec, workers=workers, shuffle_buffer=256, cache_features=False))
            r = train_clip(tcfg, Path(tmp) / f"run-w{workers}", progress=False)
            steps, waits = r["step_s"][cfg.warmup_steps:], r["data_wait_s"][cfg.warmup_steps:]
            share = sum(waits) / sum(steps)
            rows.append({"workers": workers, "batch_size": cfg.batch_size, "steps_timed": len(steps),
                         "step_s_median": statistics.median(steps), "wait_s_median": statistics.median(waits),
                         "wait_share": share, "target_met": share <= 0.10,
                         "loader_img_per_s": loader_throughput(spec, cfg, workers)})
            logger.info("datawait workers=%d: %s", workers, rows[-1])
    return rows
