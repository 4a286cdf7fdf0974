"""Item ``serve``: end-to-end latency of ``POST /search`` and where it goes (issue 15 §3).

A ViT-B/32-sized random HF CLIP (224 px, 12 + 12 layers, 512-d embeddings) answers queries against an
index of ``n_items`` random fp16 embeddings written with the public store API
(:meth:`~zscir.index.store.EmbeddingStore.save`; random embeddings stand in for a real gallery, which
changes nothing for the timing). The index's items point at a few synthetic ~1 MP JPEG photos so that
"search by item id" decodes a real file. The server is ``zscir``'s FastAPI app under uvicorn in its own
process on 127.0.0.1 (the client's Python does not compete with it for the GIL), ``threads`` torch threads.

Per request the client measures the total wall time; the server reports ``decode``, ``encode`` (composer:
image + text towers), ``search`` (exact top-k, the single-query fast path) and ``app`` (the whole route
handler) in its ``Server-Timing`` header. HTTP + framework overhead = total - app (connection, multipart
parsing, validation, JSON encoding, uvicorn).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.realistic import CORPUS, MODEL_NAME, make_photo, register_bench_model
from benchmarks.search import random_unit

logger = logging.getLogger(__name__)

@dataclass
class ServeLatencyConfig:
    """``model``: :data:`MODEL_NAME` (ViT-B/32-sized) or a registered tiny model for tests."""

    model: str = MODEL_NAME
    n_items: int = 100_000
    requests: int = 100
    warmup: int = 5
    image_size: tuple[int, int] = (1152, 864)  # 1.0 MP
    n_photos: int = 8
    method: str = "sum"
    k: int = 10
    threads: int = 1
    seed: int = 0
    startup_timeout_s: float = 600.0
    work_dir: str | None = None


def build_bench_index(folder: Path, cfg: ServeLatencyConfig) -> tuple[list[str], list[Path]]:
    """Photos + an index folder of ``n_items`` random unit fp16 rows for ``cfg.model`` / ``cfg.method``."""
    from zscir.index.store import EmbeddingStore
    from zscir.methods import create_composer

    photos = folder / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(cfg.n_photos):
        p = photos / f"photo{i}.jpg"
        make_photo(p, cfg.image_size, cfg.seed + i)
        files.append(p)
    composer = create_composer(cfg.method, model=cfg.model)
    key = composer.gallery_cache_key()
    dim = int(composer.encode_queries([_probe_image()], ["x"]).shape[1])
    del composer
    upload = folder / "upload.jpg"  # a photo that is not in the index (an indexed one would be excluded by content)
    make_photo(upload, cfg.image_size, cfg.seed + 10_000)
    files.append(upload)
    ids = [f"img{i:07d}.jpg" for i in range(cfg.n_items)]
    items = [{"id": ids[i], "path": str(files[i % cfg.n_photos])} for i in range(cfg.n_items)]
    emb = random_unit(cfg.n_items, dim, cfg.seed, "float16")
    EmbeddingStore.save(folder / "index", emb, items, {"gallery_key": key}, model=cfg.model, method=cfg.method)
    return ids, files


def _probe_image():
    from PIL import Image

    return Image.new("RGB", (32, 32), (128, 128, 128))


def serve_main(index_dir: str, port: int, threads: int) -> None:
    """Server process: the zscir app over ``index_dir`` under uvicorn on 127.0.0.1:``port``."""
    import torch
    import uvicorn

    from zscir.index.retriever import Retriever
    from zscir.serve import create_app

    torch.set_num_threads(threads)
    register_bench_model()
    app = create_app(Retriever.load(index_dir))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def run_serve_latency_bench(cfg: ServeLatencyConfig) -> dict[str, Any]:
    """Rows for an upload and an item-id reference: p50/p99 total, medians of the parts, overhead share."""
    import httpx

    from zscir.serve.app import parse_server_timing

    register_bench_model()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would be timed too
    work = Path(tempfile.mkdtemp(prefix="zscir-serve-bench-", dir=cfg.work_dir))
    proc = None
    try:
        t0 = time.perf_counter()
        ids, files = build_bench_index(work, cfg)
        build_s = time.perf_counter() - t0
        port = _free_port()
        env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads))
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root, str(Path(root) / "src"), env.get("PYTHONPATH", "")])
        code = (f"from benchmarks.serve_latency import serve_main; "
                f"serve_main({str(work / 'index')!r}, {port}, {cfg.threads})")
        proc = subprocess.Popen([sys.executable, "-c", code], env=env)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=300) as client:
            _wait_ready(client, proc, cfg.startup_timeout_s)
            upload = files[-1].read_bytes()
            kinds = {
                "upload JPEG": lambda i: client.post(
                    "/search", data={"text": CORPUS[i % 4], "k": str(cfg.k)},
                    files={"image": ("q.jpg", upload, "image/jpeg")}),
                "item id": lambda i: client.post(
                    "/search", data={"text": CORPUS[i % 4], "k": str(cfg.k), "item_id": ids[(i * 7919) % len(ids)]}),
            }
            rows = []
            for kind, send in kinds.items():
                for i in range(cfg.warmup):  # the first search also prepares the gallery searcher
                    send(i).raise_for_status()
                total, parts = [], {"decode": [], "encode": [], "search": [], "app": []}
                for i in range(cfg.requests):
                    t = time.perf_counter()
                    r = send(i)
                    total.append((time.perf_counter() - t) * 1e3)
                    r.raise_for_status()
                    excluded = ((r.json()["reference"] or {}).get("indexed") or {}).get("excluded") or []
                    if len(excluded) > 1:
                        raise RuntimeError(f"{len(excluded)} items excluded as the reference: the timing would "
                                           f"not be of one query's search")
                    st = parse_server_timing(r.headers["server-timing"])
                    for key in parts:
                        parts[key].append(st[key])
                overhead = [t - a for t, a in zip(total, parts["app"])]
                other = [a - d - e - s for a, d, e, s in zip(parts["app"], parts["decode"], parts["encode"],
                                                              parts["search"])]
                med = {key: float(np.median(v)) for key, v in parts.items()}
                rows.append({
                    "reference": kind, "requests": cfg.requests, "p50_ms": _pct(total, 50), "p99_ms": _pct(total, 99),
                    "decode_ms": med["decode"], "encode_ms": med["encode"], "search_ms": med["search"],
                    "handler_other_ms": float(np.median(other)),
                    "http_overhead_ms": float(np.median(overhead)), "http_overhead_p99_ms": _pct(overhead, 99),
                    "http_share": float(np.median(overhead)) / _pct(total, 50),
                })
        return {"rows": rows, "build_s": build_s, "upload_bytes": len(upload), "config": cfg.__dict__}
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _wait_ready(client: Any, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the benchmark server exited with code {proc.returncode}")
        try:
            if client.get("/health").status_code == 200:
                return
        except Exception:  # not listening yet  # noqa: BLE001
            pass
        time.sleep(0.5)
    raise RuntimeError("the benchmark server did not start in time")


SERVE_COLUMNS = ["reference", "requests", "p50_ms", "p99_ms", "decode_ms", "encode_ms", "search_ms",
                 "handler_other_ms", "http_overhead_ms", "http_overhead_p99_ms", "http_share"]
