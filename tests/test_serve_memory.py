"""The server's peak resident memory under 16 concurrent uploads of a large (40 MP) PNG is bounded.

A valid 7999 x 5000 PNG of ~100 KiB passes every documented upload limit; decoding it needs ~120 MB. Before
the decode slots (at most ``max_concurrent_decodes`` at once) and the size-reducing decode, 16 concurrent
uploads took a server from 0.42 GB to 3.98 GB. The server runs in its own process (the parent reads its
VmHWM from /proc) with the default limits; the figure is in docs/SEARCH.md ("Memory").
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from test_serve_api import served_index

pytest.importorskip("uvicorn")
if not Path("/proc/self/status").exists():  # pragma: no cover
    pytest.skip("needs /proc to read the server's peak RSS", allow_module_level=True)

#: the documented bound (docs/SEARCH.md): peak RSS growth of the server process under the load below
PEAK_GROWTH_BOUND_MB = 600
N_UPLOADS = 16


def big_png(width: int = 7999, height: int = 5000) -> bytes:
    """A valid, well-compressible PNG of ``width x height`` (a few horizontal bands + noise rows)."""
    rng = np.random.default_rng(0)
    arr = np.zeros((height, width, 3), np.uint8)
    arr[: height // 2] = (200, 30, 30)
    arr[height // 2:] = (30, 30, 200)
    arr[::500] = rng.integers(0, 255, (len(range(0, height, 500)), width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(index_dir: Path, data: bytes, n: int = N_UPLOADS) -> dict[str, float]:
    port = _free_port()
    child = Path(__file__).with_name("serve_memory_child.py")
    import os

    env_path = os.environ.get("ZSCIR_MEMORY_SRC") or str(Path(__file__).resolve().parents[1] / "src")

    env = {**os.environ, "PYTHONPATH": env_path + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(child), str(index_dir), str(port)], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=120) as c:  # warm up: model + one small search
            small = io.BytesIO()
            Image.new("RGB", (64, 64), (9, 9, 9)).save(small, "PNG")
            assert c.post("/search", data={"text": "red", "k": "3"},
                          files={"image": ("s.png", small.getvalue(), "image/png")}).status_code == 200
        base_kb = _status_kb(proc.pid, "VmRSS")

        def upload(i: int) -> int:
            with httpx.Client(base_url=url, timeout=300) as c:
                return c.post("/search", data={"text": f"red {i}", "k": "3"},
                              files={"image": ("big.png", data, "image/png")}).status_code

        t0 = time.time()
        with ThreadPoolExecutor(n) as pool:
            codes = list(pool.map(upload, range(n)))
        seconds = time.time() - t0
        peak_kb = _status_kb(proc.pid, "VmHWM")
        after_kb = _status_kb(proc.pid, "VmRSS")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {"codes": codes, "base_mb": base_kb / 1024, "peak_mb": peak_kb / 1024, "after_mb": after_kb / 1024,
            "seconds": seconds}


@pytest.mark.slow  # ~100 s on a 2-core machine (index, server start, 16 x 40 MP decodes)
def test_peak_rss_bounded_under_concurrent_large_uploads(tmp_path):
    _, idx, _, _ = served_index(tmp_path, n=4)
    data = big_png()
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (7999, 5000) and im.size[0] * im.size[1] <= 40_000_000  # passes every limit
    r = measure(idx, data)
    print(f"\n16 concurrent 7999x5000 PNG uploads ({len(data) / 1024:.0f} KiB): base {r['base_mb']:.0f} MB, "
          f"peak {r['peak_mb']:.0f} MB (+{r['peak_mb'] - r['base_mb']:.0f}), after {r['after_mb']:.0f} MB, "
          f"{r['seconds']:.1f} s")
    assert r["codes"] == [200] * N_UPLOADS
    assert r["peak_mb"] - r["base_mb"] < PEAK_GROWTH_BOUND_MB
    assert r["after_mb"] - r["base_mb"] < PEAK_GROWTH_BOUND_MB / 2
