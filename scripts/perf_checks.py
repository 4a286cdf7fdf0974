"""Small measurements behind the prose of docs/PERFORMANCE.md (sections 1c, 1d, 4 and 5b), one command each.

    python scripts/perf_checks.py preprocess    # fast preprocessing vs the HF processor (ms/image, bit-identical?)
    python scripts/perf_checks.py index         # `build_index` vs the raw forward on the same 512 files, 3 repeats
    python scripts/perf_checks.py eval-stages   # RSS after each step of a world evaluation (image method)
    python scripts/perf_checks.py bf16-gemm     # bf16 vs fp32 GEMM, 256 x 65,536 x 512 (section 1c)
    python scripts/perf_checks.py index-fill    # section 4b: `build_index` with the model thread waiting for a
                                                # batch vs helping decode it, 48 and 128 photos, ViT-B/32-sized
    python scripts/perf_checks.py decode-beside # section 4b: the raw forward alone, beside a decode thread,
                                                # beside a decode process (does decoding slow the model?)

All on one torch thread; the embedded world-clip and 64 px world renders (as the benchmark suite) except
`index-fill` and `decode-beside` (the suite's `photos` item's model and photos).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _files(n: int = 512) -> Path:
    from PIL import Image

    from zscir.data.world import WorldConfig, generate_pairs, render_batch

    pix = render_batch([p.scene for p in generate_pairs(WorldConfig(seed=0), n)], 64)
    d = Path(tempfile.mkdtemp(prefix="zscir-perf-"))
    for i, p in enumerate(pix):
        Image.fromarray(p).save(d / f"{i:06d}.png")
    return d


def preprocess() -> None:
    from PIL import Image

    from zscir.backbones import create_backbone

    bb = create_backbone("world-clip")
    rng = np.random.default_rng(0)
    ims = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(64)]
    fast = bb.preprocess(ims)
    ref = bb.image_processor(images=ims, return_tensors="pt")["pixel_values"]
    print(f"fast path taken: {bb._identity_geometry_side() is not None}; bit-identical: {torch.equal(fast, ref)}")
    for name, fn in (("zscir preprocess", lambda: bb.preprocess(ims)),
                     ("HF processor", lambda: bb.image_processor(images=ims, return_tensors="pt"))):
        fn()
        t = time.perf_counter()
        for _ in range(10):
            fn()
        print(f"{name}: {(time.perf_counter() - t) / 640 * 1e3:.3f} ms per image")


def index() -> None:
    from zscir.index.build import IndexConfig, build_index
    from zscir.data.imageio import load_image
    from zscir.methods import create_composer

    d = _files()
    composer = create_composer("image")
    bb = composer.backbone
    paths = sorted(d.iterdir())
    batches = [bb.preprocess([load_image(p) for p in paths[i:i + 64]]) for i in range(0, len(paths), 64)]
    with torch.no_grad():
        for rep in range(3):
            t = time.perf_counter()
            for b in batches:
                bb.encode_image(b)
            raw = time.perf_counter() - t
            out = Path(f"{d}-idx{rep}")
            t = time.perf_counter()
            build_index(d, out, composer, config=IndexConfig(progress=False))
            idx = time.perf_counter() - t
            shutil.rmtree(out)
            print(f"raw forward {raw:.3f} s, zscir index {idx:.3f} s, ratio {raw / idx:.3f}")
    shutil.rmtree(d)


def eval_stages() -> None:
    def rss(tag: str) -> None:
        d = {}
        for line in open("/proc/self/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                d[k] = int(v.split()[0]) // 1024
        print(f"{tag:<28} VmRSS {d['VmRSS']:>5} MB   VmHWM {d['VmHWM']:>5} MB")

    import zscir.cli  # noqa: F401 - what `zscir eval` imports first

    rss("import torch + zscir.cli")
    from zscir.data.world.cache import ensure_world_benchmark
    from zscir.eval.world import evaluate_world
    from zscir.methods import create_composer

    ensure_world_benchmark(0)
    rss("world benchmark on disk")
    composer = create_composer("image")
    rss("composer created")
    with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
        evaluate_world(composer, progress=False, cache_dir=c1)
        rss("after one evaluation")
        evaluate_world(composer, progress=False, cache_dir=c2)
        rss("after a second evaluation")


def bf16_gemm() -> None:
    q = torch.nn.functional.normalize(torch.randn(256, 512), dim=1)
    g = torch.nn.functional.normalize(torch.randn(65536, 512), dim=1)
    out32, out16 = torch.empty(256, 65536), torch.empty(256, 65536, dtype=torch.bfloat16)
    qb, gb = q.bfloat16(), g.bfloat16()
    for name, fn in (("fp32", lambda: torch.mm(q, g.T, out=out32)), ("bf16", lambda: torch.mm(qb, gb.T, out=out16))):
        fn()
        t = time.perf_counter()
        for _ in range(5):
            fn()
        print(f"{name} GEMM 256 x 65536 x 512: {(time.perf_counter() - t) / 5 * 1e3:.1f} ms")


def index_fill() -> None:
    """`build_index` as shipped (the model thread decodes the jobs of a batch the pool has not started) vs
    the model thread waiting for the pool, as before: 4 rounds of raw forward / waiting / helping, in turn."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the suite's `benchmarks` package
    from benchmarks.realistic import MODEL_NAME, register_bench_model
    from zscir.backbones import create_backbone
    from zscir.index import build
    from zscir.data.imageio import load_image
    from zscir.methods import create_composer

    logging.disable(logging.INFO)

    def waiting(jobs, load, batch_size, workers):  # the pipeline before: wait for every job of the batch
        with ThreadPoolExecutor(workers) as pool:
            pending = [pool.submit(load, j) for j in jobs[:batch_size]]
            for start in range(0, len(jobs), batch_size):
                loaded = [f.result() for f in pending]
                pending = [pool.submit(load, j) for j in jobs[start + batch_size:start + 2 * batch_size]]
                yield jobs[start:start + batch_size], loaded

    register_bench_model()
    backbone = create_backbone(MODEL_NAME, device="cpu")
    composer = create_composer("image", model=MODEL_NAME, backbone=backbone)
    shipped = build.prefetched_batches
    for n in (48, 128):
        folder = _photo_folder(n)
        paths = sorted(folder.iterdir())
        batches = [backbone.preprocess([load_image(p, min_side=224) for p in paths[i:i + 16]])
                   for i in range(0, n, 16)]

        def raw() -> None:
            with torch.no_grad():
                for b in batches:
                    backbone.encode_image(b)

        def index_with(pipeline):
            def run() -> None:
                build.prefetched_batches = pipeline
                out = Path(tempfile.mkdtemp(prefix="zscir-perf-idx-")) / "idx"
                try:
                    build.build_index(folder, out, composer, model=MODEL_NAME,
                                      config=build.IndexConfig(batch_size=16, progress=False))
                finally:
                    build.prefetched_batches = shipped
                    shutil.rmtree(out.parent)
            return run

        fns = {"raw": raw, "waiting": index_with(waiting), "helping": index_with(shipped)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for f in fns.values():
            f()  # warm-up
        for _ in range(4):
            for name, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
        for name in ("waiting", "helping"):
            paired = [r / t for r, t in zip(times["raw"], times[name])]
            print(f"{n} photos, {name}: {np.median(times[name]):.2f} s (raw forward {np.median(times['raw']):.2f} s); "
                  f"raw / index per round: median {np.median(paired):.3f}, min {min(paired):.3f}, "
                  f"max {max(paired):.3f}", flush=True)
        shutil.rmtree(folder)


def _photo_folder(n: int) -> Path:
    """``n`` photo-like JPEGs of 1-12 MP (4:3), as the suite's photos item makes them."""
    from benchmarks.realistic import make_photo

    folder = Path(tempfile.mkdtemp(prefix="zscir-perf-photos-"))
    rng = np.random.default_rng(0)
    for i in range(n):
        w = int(round((rng.uniform(1, 12) * 1e6 * 4 / 3) ** 0.5))
        make_photo(folder / f"{i:06d}.jpg", (w, int(round(w * 3 / 4))), i)
    return folder


def _decode_forever(paths: list, stop: Any) -> None:
    from zscir.data.imageio import load_image

    torch.set_num_threads(1)
    while not stop.is_set():
        for p in paths:
            load_image(p, min_side=224)
            if stop.is_set():
                break


def decode_beside() -> None:
    """Wall and model-thread CPU s of one raw forward over 24 photos' tensors: alone, while a thread of the
    same process decodes photos non-stop, and while another process does; 8 rounds, medians."""
    import multiprocessing as mp
    import threading

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the suite's `benchmarks` package
    from benchmarks.realistic import MODEL_NAME, register_bench_model
    from zscir.backbones import create_backbone
    from zscir.data.imageio import load_image

    register_bench_model()
    backbone = create_backbone(MODEL_NAME, device="cpu")
    folder = _photo_folder(24)
    paths = sorted(folder.iterdir())
    batches = [backbone.preprocess([load_image(p, min_side=224) for p in paths[i:i + 16]])
               for i in range(0, len(paths), 16)]

    def forward() -> tuple[float, float]:
        w0, t0 = time.perf_counter(), time.thread_time()
        with torch.no_grad():
            for b in batches:
                backbone.encode_image(b)
        return time.perf_counter() - w0, time.thread_time() - t0

    forward()  # warm-up
    res: dict[str, list[tuple[float, float]]] = {"alone": [], "decode thread beside": [],
                                                 "decode process beside": []}
    for _ in range(8):
        res["alone"].append(forward())
        stop = threading.Event()
        th = threading.Thread(target=_decode_forever, args=(paths, stop))
        th.start()
        res["decode thread beside"].append(forward())
        stop.set()
        th.join()
        pstop = mp.get_context("fork").Event()
        proc = mp.get_context("fork").Process(target=_decode_forever, args=(paths, pstop))
        proc.start()
        time.sleep(1.0)  # let it start decoding
        res["decode process beside"].append(forward())
        pstop.set()
        proc.join()
    for name, v in res.items():
        wall, cpu = np.median([x[0] for x in v]), np.median([x[1] for x in v])
        print(f"{name}: wall {wall:.2f} s, model-thread CPU {cpu:.2f} s "
              f"(wall min {min(x[0] for x in v):.2f}, max {max(x[0] for x in v):.2f})", flush=True)
    shutil.rmtree(folder)


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmds = {"preprocess": preprocess, "index": index, "eval-stages": eval_stages, "bf16-gemm": bf16_gemm,
            "index-fill": index_fill, "decode-beside": decode_beside}
    if len(sys.argv) != 2 or sys.argv[1] not in cmds:
        raise SystemExit(f"usage: python scripts/perf_checks.py {{{'|'.join(cmds)}}}")
    cmds[sys.argv[1]]()
