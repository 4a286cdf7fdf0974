"""Item ``busy``: search, a training step and indexing on an idle machine and beside two spinning processes.

Why: torch's default is one thread per core, and its OpenMP threads spin-wait at every barrier. When other
processes want the cores too, a barrier waits for a thread that is not running, and work collapses (a
search 3.3x slower beside two spinning processes, a TSCIR Stage I step 24x slower on a loaded machine).
zscir now chooses its thread count (`zscir.threads`: one thread for a single query, the idle usable cores
for batched work). This item measures the ratio ``busy / idle`` of three jobs under two settings, side by
side in one run:

* ``zscir`` — the count zscir chooses, chosen afresh for each phase as a new command would be (so the busy
  phase sees the spinning processes);
* ``torch`` — torch's own default (the behaviour before), for comparison.

Jobs: (a) single composed searches through `Retriever.search` on a small index of world pictures, (b)
training steps of the world CLIP (contrastive, AdamW), (c) `build_index` of a few dozen JPEGs. The
spinning processes are started and stopped here, in a ``finally`` block, and each also stops on its own
after ``max_busy_s``. Goal: ``busy / idle <= 2`` with zscir's choice. `fair_share_bound` is the smallest
ratio the scheduler's fair share allows: where it is above 2 (work that used every core of a 2-core machine
idle), no thread count can meet the goal, and the ratio is to be read against the bound.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

JOBS = ("search", "train", "index")
MODES = ("zscir", "torch")


@dataclass
class BusyBenchConfig:
    model: str = "world-clip"
    spinners: int = 2  #: busy processes started beside the job
    repeats: int = 3  #: rounds per (job, mode): one idle and one busy timed run each, back to back
    queries: int = 20  #: single searches per timed run
    gallery: int = 200  #: pictures in the searched index
    train_steps: int = 2  #: training steps per timed run
    train_batch: int = 16
    index_images: int = 24  #: pictures indexed per timed run
    image_size: int = 96  #: side of the world JPEGs
    max_busy_s: float = 600.0  #: a spinning process stops by itself after this long, whatever happens here
    jobs: list[str] = field(default_factory=lambda: list(JOBS))
    modes: list[str] = field(default_factory=lambda: list(MODES))


def spin(stop: Any, deadline: float) -> None:
    """A busy loop until ``stop`` is set or ``deadline`` (time.time()) passes (runs in a child process)."""
    x = 0
    while not stop.is_set() and time.time() < deadline:
        for _ in range(200_000):
            x += 1


@contextmanager
def spinning(n: int, max_s: float) -> Iterator[None]:
    """``n`` processes spinning on a core each while the block runs; stopped (and joined) however it ends."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=spin, args=(stop, time.time() + max_s), daemon=True) for _ in range(n)]
    try:
        for p in procs:
            p.start()
        time.sleep(0.5)  # let them reach full speed (and show in /proc/stat)
        yield
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)


def _set_mode(mode: str, kind: str) -> int:
    """Apply the thread count of ``mode`` for a job of ``kind`` ("query"/"batch"); returns it."""
    from zscir.threads import apply_threads, forget_idle_measurement, torch_default_threads, use_threads

    if mode == "torch":
        return apply_threads(torch_default_threads())
    forget_idle_measurement()  # measured now, as a command started now would
    return use_threads(kind).threads or apply_threads(None)


def _world_images(n: int, size: int, seed: int) -> tuple[list, list[str]]:
    from PIL import Image

    from zscir.data.world import WorldConfig, generate_pairs, render_batch

    pairs = generate_pairs(WorldConfig(seed=seed, image_size=size), n=n, split="train")
    return [Image.fromarray(a) for a in render_batch([p.scene for p in pairs], size)], [p.caption for p in pairs]


class _Jobs:
    """The three jobs, prepared once (models, index, data) and timed many times."""

    def __init__(self, cfg: BusyBenchConfig, work: Path):
        import torch

        from zscir.backbones import create_backbone
        from zscir.index.build import IndexConfig, build_index
        from zscir.index.retriever import Retriever, RetrieverConfig
        from zscir.index.store import EmbeddingStore
        from zscir.methods import create_composer
        from zscir.train.common import uint8_to_pixels

        self.cfg, self.work = cfg, work
        self.composer = create_composer("sum", model=cfg.model)
        imgs, caps = _world_images(max(cfg.gallery, cfg.index_images), cfg.image_size, 1)
        self.photos = work / "photos"
        self.photos.mkdir()
        for i, im in enumerate(imgs[: cfg.gallery]):
            im.save(self.photos / f"p{i:04d}.jpg", quality=90)
        self.few = work / "few"
        self.few.mkdir()
        for i, im in enumerate(imgs[: cfg.index_images]):
            im.save(self.few / f"p{i:04d}.jpg", quality=90)
        self._build_index, self._index_cfg = build_index, IndexConfig(progress=False)
        build_index(self.photos, work / "index", self.composer, model=cfg.model, config=self._index_cfg)
        self.retrievers = {m: Retriever(EmbeddingStore.load(work / "index"), self.composer,
                                        RetrieverConfig(threads=None if m == "zscir" else 0)) for m in MODES}
        q_imgs, q_caps = _world_images(cfg.queries, cfg.image_size, 2)
        self.queries = list(zip(q_imgs, q_caps))
        # the training step of `zscir train clip`: contrastive loss on a batch of world pictures and captions
        self.torch = torch
        self.backbone = create_backbone(cfg.model)
        self.backbone.model.requires_grad_(True)
        size = int(getattr(self.backbone, "image_size", 64))
        t_imgs, t_caps = _world_images(cfg.train_batch, size, 3)
        import numpy as np

        self.pix = uint8_to_pixels(np.stack([np.asarray(im) for im in t_imgs]))
        self.tok = self.backbone.tokenize(t_caps)
        self.opt = torch.optim.AdamW([p for p in self.backbone.model.parameters() if p.requires_grad], lr=1e-5)
        self.n_index = 0

    def search(self, mode: str) -> float:
        r = self.retrievers[mode]
        for img, text in self.queries:
            r.search_image(img, text, k=10)
        return len(self.queries)

    def train(self, mode: str) -> float:
        torch = self.torch
        F = torch.nn.functional
        self.backbone.model.train()
        for _ in range(self.cfg.train_steps):
            ie = F.normalize(self.backbone.encode_image(self.pix), dim=-1)
            te = F.normalize(self.backbone.encode_text(self.tok), dim=-1)
            logits = 20.0 * ie @ te.T
            target = torch.arange(len(logits))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        self.backbone.model.eval()
        return self.cfg.train_steps

    def index(self, mode: str) -> float:
        self.n_index += 1
        out = self.work / f"idx-{self.n_index}"
        self._build_index(self.few, out, self.composer, model=self.cfg.model, config=self._index_cfg)
        shutil.rmtree(out, ignore_errors=True)
        return self.cfg.index_images


KIND = {"search": "query", "train": "batch", "index": "batch"}
UNIT = {"search": "query", "train": "step", "index": "picture"}


def _timed(fn: Callable[[str], float], mode: str) -> float:
    """Seconds per unit of work of one run."""
    t0 = time.perf_counter()
    n = fn(mode)
    return (time.perf_counter() - t0) / n


def fair_share_bound(threads_idle: int, threads_busy: int, spinners: int, cores: int) -> float:
    """The smallest busy/idle ratio a fair share of the CPU allows: idle, the job runs on
    ``min(threads_idle, cores)`` cores; beside ``spinners`` busy processes each of its ``threads_busy``
    threads gets ``cores / (threads_busy + spinners)`` of a core at most (all of one when that is >= 1).
    One thread beside two spinners on two cores: 1.5; a job that had both cores idle: 3."""
    share = min(1.0, cores / max(1, threads_busy + spinners))
    return min(threads_idle, cores) / (threads_busy * share)


def _span(values: set[int]) -> str:
    """"2" or "1-2": the thread counts a phase used over the rounds."""
    return str(min(values)) if len(values) == 1 else f"{min(values)}-{max(values)}"


def run_busy_bench(cfg: BusyBenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Rows ``job, mode, threads idle/busy, ms per unit idle/busy (medians over the rounds), ratio`` (the
    median of the rounds' busy/idle); the previous thread count is restored at the end."""
    import torch

    from zscir.threads import torch_default_threads, usable_cores

    before = torch.get_num_threads()
    torch_default_threads()
    cores = usable_cores()
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="zscir-busy-"))
    try:
        jobs = _Jobs(cfg, work)
        for job in cfg.jobs:
            fn = getattr(jobs, job)
            for mode in cfg.modes:
                if progress:
                    progress(f"busy: {job} with {mode} threads")
                idles, busies, ratios, t_idle, t_busy = [], [], [], set(), set()
                _set_mode(mode, KIND[job])
                fn(mode)  # warm-up: allocator, caches, lazy initialisation
                for _ in range(max(1, cfg.repeats)):  # rounds: idle and busy back to back, against drift
                    t_idle.add(_set_mode(mode, KIND[job]))
                    idles.append(_timed(fn, mode))
                    with spinning(cfg.spinners, cfg.max_busy_s):
                        t_busy.add(_set_mode(mode, KIND[job]))
                        busies.append(_timed(fn, mode))
                    ratios.append(busies[-1] / idles[-1])
                rows.append({"job": job, "mode": mode, "unit": UNIT[job], "threads_idle": _span(t_idle),
                             "threads_busy": _span(t_busy), "idle_ms": statistics.median(idles) * 1e3,
                             "busy_ms": statistics.median(busies) * 1e3, "ratio": statistics.median(ratios),
                             "fair_share_bound": fair_share_bound(max(t_idle), min(t_busy), cfg.spinners, cores),
                             "ratio_per_round": ratios})
                logger.info("busy %s %s: idle %.1f ms, busy %.1f ms per %s (x%.2f)", job, mode,
                            rows[-1]["idle_ms"], rows[-1]["busy_ms"], UNIT[job], rows[-1]["ratio"])
    finally:
        torch.set_num_threads(before)
        shutil.rmtree(work, ignore_errors=True)
    return {"config": cfg.__dict__, "rows": rows, "usable_cores": usable_cores(),
            "torch_default_threads": torch_default_threads(), "goal_ratio": 2.0,
            "goal_met": all(r["ratio"] <= 2.0 for r in rows if r["mode"] == "zscir"),
            "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS")}


BUSY_COLUMNS = ["job", "mode", "unit", "threads_idle", "threads_busy", "idle_ms", "busy_ms", "ratio",
                "fair_share_bound"]
