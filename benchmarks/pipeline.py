"""Item 4: image-embedding pipeline throughput vs the raw model forward on pre-made tensors.

The pipeline is what indexing a folder does per image: read the file, decode and bound it
(:func:`zscir.data.imageio.load_image`), preprocess (``Backbone.preprocess``) and run the image encoder.
The raw forward feeds already-preprocessed pixel tensors to ``Backbone.encode_image``; the ratio
``raw time / pipeline time`` is the share of the model's speed the pipeline keeps (target >= 0.9).
Decoding can overlap the forward in DataLoader worker processes, which is measured as a separate row
for each worker count.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.common import Timing, time_it
from benchmarks.realistic import MODEL_NAME, make_photo, register_bench_model

logger = logging.getLogger(__name__)


@dataclass
class PipelineBenchConfig:
    """``n_images`` world renders written as ``fmt`` files at ``size`` px (64 = the model's own size)."""

    model: str = "world-clip"
    n_images: int = 512
    batch_size: int = 64
    size: int = 64
    fmt: str = "png"
    workers: list[int] = field(default_factory=lambda: [0, 1, 2])
    thread_prefetch: bool = True
    indexer: bool = True
    #: decode threads of the `zscir index` rows; None = its default (`default_workers`: the cores torch leaves)
    index_workers: list[int | None] = field(default_factory=lambda: [None, 2])
    repeats: int = 3
    seed: int = 0
    #: issue 15 §2: photo-like JPEGs of this many megapixels (uniform in the range) instead of world renders
    photo_mp: tuple[float, float] | None = None


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str:
        return self.paths[i]


class _LoadAndPreprocess:
    """Collate function: decode a batch of files and preprocess it (runs inside the worker).

    JPEGs are decoded no smaller than the model's input side, as `zscir index` does (`min_side`).
    """

    def __init__(self, backbone: Any):
        self.backbone = backbone

    def __call__(self, paths: list[str]) -> torch.Tensor:
        from zscir.data.imageio import load_image

        torch.set_num_threads(1)
        side = self.backbone.input_side
        return self.backbone.preprocess([load_image(p, min_side=side) for p in paths])


def run_pipeline_bench(cfg: PipelineBenchConfig) -> list[dict[str, Any]]:
    """Rows: raw forward, then the file pipeline with 0..W DataLoader workers, with images/s and ratio."""
    from PIL import Image

    from zscir.backbones import create_backbone
    from zscir.data.world import WorldConfig, generate_pairs, render_batch

    if cfg.model == MODEL_NAME:
        register_bench_model()
    backbone = create_backbone(cfg.model, device="cpu")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="zscir-bench-pipe-") as tmp:
        paths = []
        if cfg.photo_mp is not None:
            rng = np.random.default_rng(cfg.seed)
            for i in range(cfg.n_images):
                mp = rng.uniform(*cfg.photo_mp) * 1e6
                w = int(round((mp * 4 / 3) ** 0.5))  # 4:3 photos
                path = str(Path(tmp) / f"{i:06d}.jpg")
                make_photo(Path(path), (w, int(round(w * 3 / 4))), cfg.seed + i)
                paths.append(path)
        else:
            pairs = generate_pairs(WorldConfig(seed=cfg.seed), cfg.n_images)
            for i, p in enumerate(render_batch([p.scene for p in pairs], cfg.size)):
                path = str(Path(tmp) / f"{i:06d}.{cfg.fmt}")
                Image.fromarray(p).save(path)
                paths.append(path)
        loader_fn = _LoadAndPreprocess(backbone)
        batches = [loader_fn(paths[i:i + cfg.batch_size]) for i in range(0, len(paths), cfg.batch_size)]

        def raw() -> None:
            with torch.no_grad():
                for b in batches:
                    backbone.encode_image(b)

        # the raw forward and the `zscir index` rows run in interleaved rounds (raw, index, index, raw, ...):
        # on a shared machine the forward's own speed drifts by 10-25 % between minutes, so each index run
        # is compared with the raw forward of its own round (`ratio_paired`) as well as medians with medians
        fns = [raw] + ([_indexer_fn(cfg, tmp, backbone, w) for w in cfg.index_workers] if cfg.indexer else [])
        timed = _timed_rounds(fns, cfg.repeats)
        t_raw, cpu_raw, _ = timed[0]
        rows.append({"variant": "raw forward (pre-made tensors)", "workers": None,
                     "images_per_s": cfg.n_images / t_raw.median, "ratio_vs_raw": 1.0, **t_raw.as_dict(),
                     "cpu_s": cpu_raw, "main_cpu_s": cpu_raw})
        if cfg.indexer:
            for w, (t, cpu, main) in zip(cfg.index_workers, timed[1:]):
                rows.append(_indexer_row(cfg, w, t_raw, cpu_raw, t, cpu, main))
        for w in tqdm(cfg.workers, desc="pipeline", unit="cfg"):
            dl = torch.utils.data.DataLoader(_Files(paths), batch_size=cfg.batch_size, num_workers=w,
                                             collate_fn=loader_fn, persistent_workers=w > 0,
                                             prefetch_factor=4 if w > 0 else None)

            def pipe() -> None:
                with torch.no_grad():
                    for b in dl:
                        backbone.encode_image(b)

            t = time_it(pipe, cfg.repeats)
            rows.append({"variant": "files -> decode -> preprocess -> forward", "workers": w,
                         "images_per_s": cfg.n_images / t.median, "ratio_vs_raw": t_raw.median / t.median,
                         **t.as_dict()})
            del dl
        if cfg.thread_prefetch:
            def threaded() -> None:
                with torch.no_grad():
                    for b in prefetch_batches(paths, cfg.batch_size, loader_fn, depth=2):
                        backbone.encode_image(b)

            t, cpu, main = _timed_cpu(threaded, cfg.repeats)
            rows.append({"variant": "same, decode in a prefetch thread", "workers": "1 thread",
                         "images_per_s": cfg.n_images / t.median, "ratio_vs_raw": t_raw.median / t.median,
                         **t.as_dict(), "cpu_s": cpu, "main_cpu_s": main, "ratio_main_cpu": cpu_raw / main})
        rows.extend(_stage_rows(paths, backbone, cfg))
    return rows


def _stage_rows(paths: list[str], backbone: Any, cfg: PipelineBenchConfig) -> list[dict[str, Any]]:
    """Single-threaded seconds per stage: read + decode (``load_image`` with JPEGs decoded no smaller than
    the model's input side, as ``zscir index`` does), preprocess (resize, crop, normalise), model forward;
    ``share`` = each stage's part of their sum. One more row times the decode at the general 512 px bound
    (what the retriever and server use), outside the shares, with ``cos_min``: the lowest cosine between
    a photo's embeddings from the two decodes."""
    import time

    from zscir.data.imageio import load_image

    side = backbone.input_side

    def stages() -> tuple[float, float, float, float]:
        t_dec = t_pre = t_fwd = t_gen = 0.0
        for i in range(0, len(paths), cfg.batch_size):
            t0 = time.perf_counter()
            imgs = [load_image(p, min_side=side) for p in paths[i:i + cfg.batch_size]]
            t1 = time.perf_counter()
            px = backbone.preprocess(imgs)
            t2 = time.perf_counter()
            with torch.no_grad():
                backbone.encode_image(px)
            t3 = time.perf_counter()
            for p in paths[i:i + cfg.batch_size]:
                load_image(p)
            t4 = time.perf_counter()
            t_dec, t_pre, t_fwd, t_gen = t_dec + t1 - t0, t_pre + t2 - t1, t_fwd + t3 - t2, t_gen + t4 - t3
        return t_dec, t_pre, t_fwd, t_gen

    stages()  # warm-up
    runs = [stages() for _ in range(max(1, cfg.repeats))]
    med = [float(np.median([r[j] for r in runs])) for j in range(4)]
    total = sum(med[:3])
    names = (f"read + decode (load_image, JPEG decoded to >= {side} px)", "preprocess (resize/crop/normalise)",
             "model forward")
    rows = [{"variant": f"stage: {name}", "workers": 0, "images_per_s": len(paths) / t, "share": t / total,
             "median_s": t} for name, t in zip(names, med[:3])]
    # what decoding no smaller than the model's side costs in accuracy: cosine to the general decode's embedding
    with torch.no_grad():
        full = backbone.encode_images([load_image(p) for p in paths])
        small = backbone.encode_images([load_image(p, min_side=side) for p in paths])
    rows.append({"variant": "read + decode at the general 512 px bound (not in the shares)", "workers": 0,
                 "images_per_s": len(paths) / med[3], "median_s": med[3],
                 "cos_min": float((full * small).sum(-1).min())})
    return rows


def _timed_cpu(fn: Any, repeats: int) -> tuple[Timing, float, float]:
    """``time_it`` of ``fn`` plus the median process CPU s and calling-thread CPU s of the same runs.

    Why: on a shared machine the wall time depends on what else runs; the CPU time of the calling thread
    (the one that runs the model) against the raw forward's says what the pipeline keeps when decoding has a
    core of its own, and the process CPU time what it keeps when it has none.
    """
    return _timed_rounds([fn], repeats)[0]


def _timed_rounds(fns: list[Any], repeats: int) -> list[tuple[Timing, float, float]]:
    """`_timed_cpu` of several callables run in turn within each round (one warm-up round first).

    Why rounds: a ratio of two timings taken minutes apart measures the machine's drift as much as the
    code; within a round the callables meet the same machine state, so ``Timing.times[i]`` of two
    callables are comparable pairwise.
    """
    import time

    for fn in fns:  # warm-up
        fn()
    out = [(Timing(), [], []) for _ in fns]
    for _ in range(max(1, repeats)):
        for fn, (t, cpu, main) in zip(fns, out):
            w0, p0, t0 = time.perf_counter(), time.process_time(), time.thread_time()
            fn()
            t.times.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - p0)
            main.append(time.thread_time() - t0)
    return [(t, float(np.median(cpu)), float(np.median(main))) for t, cpu, main in out]


def _indexer_fn(cfg: PipelineBenchConfig, folder: str, backbone: Any, workers: int | None) -> Any:
    """One `zscir index` run (``build_index``: scan, decode in its thread pool, encode, write segments)."""
    import shutil

    from zscir.index.build import IndexConfig, build_index
    from zscir.methods import create_composer

    composer = create_composer("image", model=cfg.model, backbone=backbone)
    runs = iter(range(10_000))

    def index() -> None:
        out = Path(folder + f"-idx{next(runs)}")
        build_index(folder, out, composer, model=cfg.model,
                    config=IndexConfig(batch_size=cfg.batch_size, workers=workers, progress=False))
        shutil.rmtree(out)

    return index


def _indexer_row(cfg: PipelineBenchConfig, workers: int | None, t_raw: Timing, cpu_raw: float, t: Timing,
                 cpu: float, main: float) -> dict[str, Any]:
    """The `zscir index` row: wall time against the raw forward, medians and per round.

    ``ratio_paired`` = the median over rounds of (raw forward s / index s) of the same round;
    ``cpu_s`` (process CPU), ``main_cpu_s`` (the model thread's CPU) and ``ratio_main_cpu`` = raw forward
    CPU / model-thread CPU, the ratio this pipeline reaches when the decode threads have cores of their own
    (see `_timed_cpu`).
    """
    from zscir.index.prefetch import default_workers

    n_threads = default_workers() if workers is None else workers
    how = "default" if workers is None else "set"
    paired = [r / i for r, i in zip(t_raw.times, t.times)]
    return {"variant": f"zscir index (build_index, {n_threads} decode thread(s), {how}; writes segments)",
            "workers": f"{n_threads} threads", "images_per_s": cfg.n_images / t.median,
            "ratio_vs_raw": t_raw.median / t.median, "ratio_paired": float(np.median(paired)),
            "ratio_paired_min": min(paired), "paired_ratios": paired, **t.as_dict(), "cpu_s": cpu, "main_cpu_s": main,
            "ratio_main_cpu": cpu_raw / main}


def prefetch_batches(paths: list[str], batch_size: int, load: Any, depth: int = 2):
    """Yield ``load(batch_paths)`` in order while up to ``depth`` later batches load in one thread.

    PIL decodes and torch runs its kernels with the GIL released, so one thread overlaps decoding with
    the model's forward without worker processes (no pickling of pixel tensors between processes).
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    starts = iter(range(0, len(paths), batch_size))
    with ThreadPoolExecutor(max_workers=1) as ex:
        pending: deque = deque()
        for _ in range(depth):
            i = next(starts, None)
            if i is not None:
                pending.append(ex.submit(load, paths[i:i + batch_size]))
        while pending:
            batch = pending.popleft().result()
            i = next(starts, None)
            if i is not None:
                pending.append(ex.submit(load, paths[i:i + batch_size]))
            yield batch


PIPELINE_COLUMNS = ["variant", "workers", "images_per_s", "ratio_vs_raw", "ratio_paired", "ratio_paired_min", "share",
                    "median_s", "min_s", "max_s", "cpu_s", "main_cpu_s", "ratio_main_cpu", "cos_min"]
