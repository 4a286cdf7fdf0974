"""Item 5: peak resident memory of searching a 1M x 512 fp16 index, measured in a fresh subprocess.

Why a subprocess: the peak RSS of the benchmark process itself is polluted by everything measured
before; a child that only loads the index (memory-mapped ``.npy``, as `EmbeddingStore` does) and
searches it reports a clean ``ru_maxrss`` and, from ``/proc/self/status``, how much of the resident
memory is the file mapping (page cache, shared, reclaimable) versus anonymous allocations.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import PROC_STATUS_SRC

logger = logging.getLogger(__name__)

_CHILD = PROC_STATUS_SRC + r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[4]))
from zscir.index.search import ExactSearcher

startup = _status().get('VmHWM')  # peak of this process image so far (python + torch + zscir imports)
try:  # reset VmHWM so it measures the load + search phase only, not the transient peak of imports
    open('/proc/self/clear_refs', 'w').write('5')
    reset = True
except OSError:
    reset = False
emb = np.load(sys.argv[1], mmap_mode='r')
s = ExactSearcher(emb, chunk_size=int(sys.argv[3]))
rng = np.random.default_rng(1)
q = rng.standard_normal((int(sys.argv[2]), emb.shape[1])).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
t0 = time.perf_counter()
s.search(q, 10)
dt = time.perf_counter() - t0
st = _status()
print(json.dumps({"search_peak_rss_bytes": st.get('VmHWM') if reset else None, "hwm_reset": reset,
                  "startup_peak_rss_bytes": startup,
                  "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "search_s": dt, **st}))
"""


@dataclass
class MemoryBenchConfig:
    n: int = 1_000_000
    d: int = 512
    n_queries: int = 64
    chunk_size: int = 65536
    threads: int = 1
    target_bytes: float = 1.1e9


def _write_index(path: Path, n: int, d: int) -> None:
    """A random unit fp16 ``.npy`` written block-wise (never a full fp32 copy in this process)."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    rng = np.random.default_rng(0)
    for i in range(0, n, 65536):
        x = rng.standard_normal((min(65536, n - i), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        arr[i:i + len(x)] = x
    arr.flush()
    del arr


def run_memory_bench(cfg: MemoryBenchConfig) -> dict[str, Any]:
    """Peak RSS (and its anonymous / file-backed split) of loading + searching the index in a child."""
    with tempfile.TemporaryDirectory(prefix="zscir-bench-mem-") as tmp:
        path = Path(tmp) / "emb.npy"
        _write_index(path, cfg.n, cfg.d)
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(cfg.n_queries), str(cfg.chunk_size),
                               str(cfg.threads)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed: {proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    data_bytes = cfg.n * cfg.d * 2
    # ru_maxrss is useless here: Linux carries the parent's RSS at fork() into the child's ru_maxrss
    peak = res["search_peak_rss_bytes"] or res["ru_maxrss_bytes"]
    res.update({"n": cfg.n, "d": cfg.d, "dtype": "float16", "data_bytes": data_bytes,
                "target_bytes": cfg.target_bytes, "target_met": peak <= cfg.target_bytes,
                "overhead_bytes": peak - data_bytes})
    return res
