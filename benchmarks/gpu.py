"""Item ``gpu``: one prepared check of zscir on CUDA, for the day a GPU is at hand (issue 24 §4).

``python -m benchmarks gpu`` runs, each in its own try/except and timed: every trainer for a few steps in bf16
autocast, one DDP run with NCCL on all visible GPUs (world size = GPU count, 1 included: the process group,
an all-reduce and DDP's gradient sync still run through NCCL), `build_index` throughput at 224 px with a random
ViT-B/32-sized CLIP on synthetic JPEGs (clip-retrieval reports about 7,000 samples/s on 8 A100s for ViT-B/32,
bound by resizing), an eval on a small world benchmark, and CPU against CUDA embeddings of the same model and
pictures (cosine >= 0.999). Each trainer row reports the device and precision the run recorded in its
train_log.json, and fails when that is not the device asked for. It prints one markdown table and exits 1 if
any check failed; nothing is downloaded, and everything is written in a temporary folder that is removed at
the end.

Time: the sizes keep the whole run to a few minutes; a check that would start after ``budget_s`` is not run
(a failed row), and a watchdog ends the process with the table so far at ``hard_limit_s`` (8 min), so a hung
NCCL or driver cannot hold the machine.

Without CUDA it prints ``no CUDA device: nothing to check`` and exits 0. ``--dry-run`` runs the same checks
on the CPU with tiny sizes (seconds), so the plumbing is tested on machines without a GPU
(tests/test_gpu_check.py, tests/test_gpu_devices_trainers.py: every `zscir train` command must have a row);
LiT has no precision option and trains its heads in fp32.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

NO_CUDA = "no CUDA device: nothing to check"
#: the `zscir train` commands; each has a check row (a test compares this with the CLI)
TRAINER_CHECKS = ("clip", "lit", "tscir-stage1", "tscir-stage2", "fusiondiff-prior", "fusiondiff-adapter")
OTHER_CHECKS = ("ddp", "index", "eval", "cpu-vs-cuda")
CHECKS = tuple(f"train-{t}" for t in TRAINER_CHECKS) + OTHER_CHECKS
#: the run folder (under the check's work folder) each trainer writes its train_log.json to
TRAINER_FOLDERS = {"clip": "clip", "lit": "lit", "tscir-stage1": "stage1", "tscir-stage2": "stage2",
                   "fusiondiff-prior": "prior", "fusiondiff-adapter": "adapter"}
COLUMNS = ["check", "status", "seconds", "device", "numbers"]
#: the world benchmark's sizes for the eval row (small: the row checks that eval runs on the device)
EVAL_WORLD = dict(n_cirr_sets=20, queries_per_set=2, n_circo_queries=12, n_circo_distractors=60, n_pairs=3000,
                  n_triplets=2000)


@dataclass
class GPUCheckConfig:
    """Sizes of the CUDA run; `dry_run_config` shrinks them for the CPU."""

    device: str = "cuda"
    dry_run: bool = False
    budget_s: float = 420.0  #: no check starts after this
    hard_limit_s: float = 480.0  #: the watchdog ends the process here (8 min)
    train_steps: int = 3
    train_batch: int = 16
    index_model: str = "bench-vitb32-random"  #: ViT-B/32 sizes (benchmarks.realistic); registered here
    index_images: int = 2048
    index_batch: int = 256
    photo_size: tuple[int, int] = (320, 240)  #: larger than 224 px: decode + resize, as with real photos
    compare_model: str = "bench-vitb32-random"
    compare_images: int = 32
    min_cosine: float = 0.999
    ddp_world: int | None = None  #: None: every visible GPU
    ddp_backend: str = "nccl"
    eval_model: str = "world-clip"
    checks: list[str] = field(default_factory=lambda: list(CHECKS))


def dry_run_config(cfg: GPUCheckConfig | None = None) -> GPUCheckConfig:
    """The same checks on the CPU with tiny sizes (the test of the plumbing)."""
    cfg = copy.deepcopy(cfg or GPUCheckConfig())
    cfg.device, cfg.dry_run = "cpu", True
    cfg.train_steps, cfg.train_batch = 1, 8
    cfg.index_model, cfg.index_images, cfg.index_batch, cfg.photo_size = "tiny-clip-test", 8, 4, (80, 60)
    cfg.compare_model, cfg.compare_images = "tiny-clip-test", 4
    cfg.ddp_world, cfg.ddp_backend = 2, "gloo"
    return cfg


# --- running checks and reporting --------------------------------------------------------------------------

def run_checks(checks: list[tuple[str, Callable[[], dict[str, Any]]]], budget_s: float, device: str = "",
               rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run each ``(name, fn)``; ``fn`` returns ``{"numbers": str, "device": str, "status": "ok"|"skip"}``
    (``status`` optional). An exception makes a ``fail`` row with its one-line message; a check that would
    start after ``budget_s`` is a ``fail`` row too (not run). ``rows`` (appended in place) lets a watchdog
    print what finished."""
    rows = [] if rows is None else rows
    start = time.perf_counter()
    for name, fn in checks:
        t0 = time.perf_counter()
        if t0 - start > budget_s:
            rows.append({"check": name, "status": "fail", "seconds": 0.0, "device": device,
                         "numbers": f"not run: the {budget_s:.0f} s budget was spent"})
            continue
        try:
            out = dict(fn() or {})
            row = {"check": name, "status": out.get("status", "ok"), "device": out.get("device", device),
                   "numbers": out.get("numbers", "")}
        except Exception as e:  # noqa: BLE001 - every failure becomes a row; the run goes on
            logger.warning("gpu check %s failed", name, exc_info=True)
            msg = " ".join(f"{type(e).__name__}: {e}".split())
            row = {"check": name, "status": "fail", "device": device, "numbers": msg[:300]}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        print(f"gpu check {name}: {row['status']} ({row['seconds']} s) {row['numbers']}", file=sys.stderr,
              flush=True)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    from benchmarks.common import markdown_table

    return markdown_table(rows, COLUMNS)


def exit_code(rows: list[dict[str, Any]]) -> int:
    """1 when any row failed (or there are no rows), else 0."""
    return 1 if not rows or any(r["status"] == "fail" for r in rows) else 0


def _watchdog(rows: list[dict[str, Any]], limit_s: float) -> threading.Timer:
    """End the process with the table so far after ``limit_s`` (a hang in a driver or collective)."""
    def fire() -> None:
        print(format_table(rows) + f"\nstopped by the watchdog after {limit_s:.0f} s", flush=True)
        os._exit(3)

    t = threading.Timer(limit_s, fire)
    t.daemon = True
    t.start()
    return t


# --- the checks --------------------------------------------------------------------------------------------

def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items())


def _last_loss(result: dict[str, Any]) -> dict[str, Any]:
    losses = result.get("losses") or []
    if losses and not all(abs(float(x)) < float("inf") for x in losses):
        raise FloatingPointError(f"non-finite training loss: {losses}")
    return {"steps": len(losses), "last_loss": float(losses[-1])} if losses else {"steps": 0}


class _Checks:
    """The check functions of one run; they share a work folder (stage 2 reads stage 1's folder)."""

    def __init__(self, cfg: GPUCheckConfig, work: Path):
        from zscir.backbones.devices import resolve_device

        self.cfg, self.work = cfg, work
        self.dev = resolve_device(cfg.device)
        self.device = str(self.dev)

    def recorded(self, trainer: str) -> tuple[str, bool]:
        """(device, bf16) the trainer's run recorded in its train_log.json; a device other than the one
        asked for (a trainer that ignored ``device``) fails the row."""
        import torch

        folder = self.work / TRAINER_FOLDERS[trainer]
        config = json.loads((folder / "train_log.json").read_text(encoding="utf-8"))["config"]
        device = str(config.get("device", "?"))
        try:
            dev = torch.device(device)
            same = dev.type == self.dev.type and dev.index in (None, self.dev.index)
        except (RuntimeError, ValueError):
            same = False
        if not same:
            raise AssertionError(f"{trainer} trained on {device!r}, not on {self.device}")
        return device, bool(config.get("bf16", False))

    def train(self, trainer: str) -> dict[str, Any]:
        from zscir.backbones.registry import TinyCLIPConfig, shipped_model_dir
        from zscir.methods.fusiondiff.config import JointConfig, PriorConfig
        from zscir.methods.fusiondiff.train_adapter import AdapterTrainConfig, train_adapter
        from zscir.methods.fusiondiff.train_prior import PriorTrainConfig, train_prior
        from zscir.methods.tscir.config import AdapterConfig, MappingConfig, Stage1Config, Stage2Config
        from zscir.methods.tscir.stage1 import train_stage1
        from zscir.methods.tscir.stage2 import train_stage2
        from zscir.train.clip import CLIPTrainConfig, train_clip

        c, w = self.cfg, self.work
        steps, batch = c.train_steps, c.train_batch
        common = dict(steps=steps, batch_size=batch, eval_every=1000)
        if trainer == "clip":
            arch = TinyCLIPConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2,
                                  text_width=32, text_layers=1, text_heads=2, projection_dim=32, vocab_size=300,
                                  max_text_len=32)
            r = train_clip(CLIPTrainConfig(n_pairs=4 * batch, n_val=8, warmup=1, arch=arch, vocab_size=300, bf16=True,
                                           tokenizer=str(shipped_model_dir("world-clip")), device=self.device,
                                           **common),
                           w / "clip", progress=False)
        elif trainer == "lit":
            r = self._lit()
        elif trainer == "tscir-stage1":
            r = train_stage1(Stage1Config(model="tiny-clip-test", mapping=MappingConfig(vsi_layers=[0], phi_hidden=32),
                                          n_pairs=4 * batch, n_val=8, threads=1, bf16=True, device=self.device,
                                          **common), w / "stage1", progress=False)
        elif trainer == "tscir-stage2":
            r = train_stage2(Stage2Config(stage1=str(w / "stage1"), adapter=AdapterConfig(bottleneck=8),
                                          max_triplets=3 * batch, n_val=8, gallery_pairs=8, threads=1, bf16=True,
                                          device=self.device, **common), w / "stage2", progress=False)
        elif trainer == "fusiondiff-prior":
            r = train_prior(PriorTrainConfig(model="tiny-clip-test", n_val=8, threads=1, bf16=True,
                                             cache_dir=str(w / "cache"), joint=JointConfig(bank_pairs=4 * batch),
                                             prior=PriorConfig(width=32, layers=2, heads=2, num_train_timesteps=100),
                                             device=self.device, **common), w / "prior", progress=False)
        elif trainer == "fusiondiff-adapter":
            r = train_adapter(AdapterTrainConfig(prior=str(w / "prior"), n_triplets=4 * batch, n_val=8, threads=1,
                                                 bf16=True, cache_dir=str(w / "cache"), device=self.device,
                                                 **common),
                              w / "adapter", progress=False)
        else:
            raise ValueError(f"unknown trainer {trainer!r}")
        device, bf16 = self.recorded(trainer)  # LiT has no precision option: its heads train in fp32
        return {"numbers": _fmt({"bf16": bf16, **_last_loss(r)}), "device": device}

    def _lit(self) -> dict[str, Any]:
        from zscir.backbones.lit import LiTBackbone, LiTConfig, default_towers_installed
        from zscir.train.lit import LiTTrainConfig, train_lit, world_pair_data

        if not default_towers_installed():
            raise RuntimeError("the LiT towers are not installed (pip install 'zscir[real]')")
        mcfg = LiTConfig(embed_dim=32, head_hidden=64)
        pairs = world_pair_data(n_pairs=4 * self.cfg.train_batch, image_size=mcfg.image_size)
        return train_lit(pairs, self.work / "lit", LiTTrainConfig(
            steps=self.cfg.train_steps, batch_size=self.cfg.train_batch, warmup=1, device=self.device, model=mcfg),
            cache_dir=self.work / "lit-cache", progress=False,
            backbone=LiTBackbone.build(mcfg, name="lit-gpu-check").to(self.dev))

    def ddp(self) -> dict[str, Any]:
        import torch.multiprocessing as mp

        from zscir.backbones.devices import cuda_count

        c = self.cfg
        world = c.ddp_world or cuda_count()
        if world < 1:
            raise RuntimeError("no device for the DDP run")
        out = self.work / "ddp"
        out.mkdir()
        port = _free_port()
        ctx = mp.spawn(ddp_worker, args=(world, port, c.ddp_backend, str(out), c.train_steps), nprocs=world,
                       join=False)
        deadline = time.perf_counter() + max(60.0, c.budget_s / 4)
        while not ctx.join(timeout=5):
            if time.perf_counter() > deadline:
                for p in ctx.processes:
                    p.terminate()
                raise TimeoutError(f"the DDP run did not end within {deadline:.0f} s")
        res = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
        if not all(r["same_weights"] for r in res):
            raise AssertionError(f"the ranks' weights differ after DDP steps: {res}")
        if not all(r["all_reduce"] == world * (world + 1) / 2 for r in res):
            raise AssertionError(f"all_reduce gave a wrong sum: {res}")
        if not all(r["gathered"] for r in res):
            raise AssertionError(f"gather_with_grad (uneven slices) gave wrong rows: {res}")
        return {"numbers": _fmt({"backend": c.ddp_backend, "world": world, "steps": c.train_steps,
                                 "last_loss": res[0]["loss"]}),
                "device": f"{res[0]['device']} x{world}"}

    def index(self) -> dict[str, Any]:
        from benchmarks.realistic import make_photo, register_bench_model

        from zscir.index.build import IndexConfig, build_index
        from zscir.methods import create_composer

        c = self.cfg
        register_bench_model()
        photos = self.work / "photos"
        photos.mkdir()
        for i in range(c.index_images):
            make_photo(photos / f"p{i:05d}.jpg", c.photo_size, seed=i)
        warm = self.work / "photos-warm"
        warm.mkdir()
        for i in range(min(c.index_images, 2 * c.index_batch)):
            shutil.copy(photos / f"p{i:05d}.jpg", warm / f"p{i:05d}.jpg")
        composer = create_composer("sum", model=c.index_model, device=self.device)
        icfg = IndexConfig(batch_size=c.index_batch, progress=False)
        build_index(warm, self.work / "index-warm", composer, model=c.index_model, config=icfg)  # CUDA init, cudnn
        _sync(self.dev)
        t0 = time.perf_counter()
        rep = build_index(photos, self.work / "index", composer, model=c.index_model, config=icfg)
        _sync(self.dev)
        dt = time.perf_counter() - t0
        if rep.indexed != c.index_images:
            raise AssertionError(f"indexed {rep.indexed} of {c.index_images} pictures")
        size = getattr(composer.backbone, "image_size", "?")
        return {"numbers": _fmt({"model": c.index_model, "px": size, "photos": f"{c.photo_size[0]}x{c.photo_size[1]}",
                                 "images": rep.indexed, "img_per_s": rep.indexed / dt})}

    def eval(self) -> dict[str, Any]:
        from zscir.eval.world import evaluate_world
        from zscir.methods import create_composer

        composer = create_composer("sum", model=self.cfg.eval_model, device=self.device)
        r = evaluate_world(composer, root=self.work / "world", cache_dir=self.work / "eval-cache", progress=False,
                           world_overrides=EVAL_WORLD)
        m = {k: float(v) for k, v in list(r["metrics"].items())[:3]}
        if not m:
            raise AssertionError("the world eval returned no metrics")
        return {"numbers": _fmt({"model": self.cfg.eval_model, **m})}

    def compare(self) -> dict[str, Any]:
        """The same weights and pictures on the CPU and on the device: cosine of each embedding pair."""
        import numpy as np
        import torch

        from benchmarks.realistic import register_bench_model

        from zscir.backbones import create_backbone
        from zscir.data.world import WorldConfig, generate_pairs, render_batch
        from zscir.train.common import uint8_to_pixels

        c = self.cfg
        register_bench_model()
        cpu = create_backbone(c.compare_model)
        other = create_backbone(c.compare_model)
        other.load_state_dict(cpu.state_dict())  # the very same weights, whatever the factory's seeding
        other.to(self.dev)
        size = int(getattr(cpu, "image_size", 64))
        pairs = generate_pairs(WorldConfig(seed=5, image_size=size), n=c.compare_images, split="train")
        pix = uint8_to_pixels(np.stack(list(render_batch([p.scene for p in pairs], size))))
        caps = [p.caption for p in pairs]
        cos = []
        with torch.no_grad():
            for bb in (cpu, other):
                bb.eval()
            for enc, x in (("encode_image", pix), ("encode_text", cpu.tokenize(caps))):
                a = getattr(cpu, enc)(x).float()
                b = getattr(other, enc)(x.to(self.dev) if hasattr(x, "to") else x).float().cpu()
                cos.append(torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item())
        nums = {"model": c.compare_model, "n": c.compare_images, "min_cos_image": cos[0], "min_cos_text": cos[1]}
        if min(cos) < c.min_cosine:
            raise AssertionError(f"CPU and {self.device} embeddings differ: {_fmt(nums)} < {c.min_cosine}")
        return {"numbers": _fmt(nums)}

    def plan(self) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
        table: dict[str, Callable[[], dict[str, Any]]] = {f"train-{t}": (lambda t=t: self.train(t))
                                                          for t in TRAINER_CHECKS}
        table.update({"ddp": self.ddp, "index": self.index, "eval": self.eval, "cpu-vs-cuda": self.compare})
        return [(name, table[name]) for name in self.cfg.checks]


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world: int, port: int, backend: str, out: str, steps: int) -> None:
    """One rank of the DDP check: join the group through zscir's helpers, train a small model wrapped by
    `wrap_ddp` on the rank's device in bf16 autocast, all-reduce a known tensor, gather slices of unequal length
    with the trainers' `gather_with_grad`, and write what it saw."""
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from zscir.backbones.devices import ddp_device
    from zscir.train.distributed import all_gather_object, gather_with_grad, init_distributed, wrap_ddp

    # the group is created here so that a world of 1 also runs through the backend (zscir skips it at 1)
    dev = ddp_device(rank, backend)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        ctx = init_distributed()
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 16)).to(dev)
        ddp = wrap_ddp(model, ctx) if ctx.enabled else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data: DDP must keep weights equal
        loss = torch.zeros(())
        for _ in range(steps):
            x = torch.randn(32, 64, generator=gen).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = ddp(x).float().pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        total = torch.tensor([float(rank + 1)], device=dev)
        dist.all_reduce(total)
        flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
        sums = all_gather_object(flat.tolist(), ctx)
        # the trainers' contrastive gather, with slices of unequal length (rank r has r + 1 rows of value r)
        rows = gather_with_grad(torch.full((rank + 1, 4), float(rank), device=dev, requires_grad=True), ctx)
        want = torch.cat([torch.full((r + 1, 4), float(r)) for r in range(world)]) if ctx.enabled else \
            torch.full((rank + 1, 4), float(rank))
        gathered = bool(rows.shape == want.shape and torch.equal(rows.detach().cpu(), want))
        same = all(torch.allclose(torch.tensor(s), flat, atol=1e-6) for s in sums)
        Path(out, f"rank{rank}.json").write_text(json.dumps(
            {"same_weights": bool(same), "all_reduce": float(total.item()), "loss": float(loss.item()),
             "gathered": gathered, "device": str(dev)}))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# --- entry point -------------------------------------------------------------------------------------------

def run_gpu_check(cfg: GPUCheckConfig, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run ``cfg.checks`` in a temporary folder (removed at the end); returns the rows."""
    work = Path(tempfile.mkdtemp(prefix="zscir-gpu-check-"))
    try:
        checks = _Checks(cfg, work)
        return run_checks(checks.plan(), cfg.budget_s, checks.device, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="the same checks on the CPU with tiny sizes (seconds)")
    p.add_argument("--checks", nargs="+", choices=CHECKS, default=None, help="run only these checks")
    a = p.parse_args(argv)
    from zscir.backbones.devices import cuda_count

    if not a.dry_run and cuda_count() == 0:
        print(NO_CUDA)
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = dry_run_config() if a.dry_run else GPUCheckConfig()
    if a.checks:
        cfg.checks = list(a.checks)
    rows: list[dict[str, Any]] = []
    dog = _watchdog(rows, cfg.hard_limit_s)
    try:
        run_gpu_check(cfg, rows)
    finally:
        dog.cancel()
    import torch

    name = torch.cuda.get_device_name(0) if cfg.device.startswith("cuda") else "CPU (dry run)"
    print(f"GPU check on {name}, torch {torch.__version__}\n")
    print(format_table(rows))
    return exit_code(rows)


if __name__ == "__main__":
    raise SystemExit(main())
