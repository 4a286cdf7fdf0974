"""Item 5b: peak resident memory of *evaluation*, each measurement in a fresh subprocess.

Two views, because "evaluation memory" has two parts that scale differently:

* **End to end**: ``zscir eval`` on the embedded world benchmark for every shipped method, run in a
  child interpreter that reports its own ``VmHWM`` (peak RSS of this process image) when the command
  returns. This is what a user sees: Python + torch + the model + the rendered benchmark + features.
* **Ranking at real-benchmark scale**: the step whose memory grows with the gallery. A child holds a
  CIRCO-test-sized gallery of fp32 features (123,403 x 768, as the feature cache loads it) and ranks
  800 queries at k = 50, either with zscir's ``exact_topk`` (what every protocol runner uses) or with
  the peer-style loop (full ``(Q, N)`` score matrix, then ``argsort``). The number reported is the peak
  *above* the gallery itself, so it isolates what the ranking costs.

Why a child per measurement: ``ru_maxrss`` of a forked child inherits the parent's peak (see
``benchmarks.memory``), and one process measuring several methods would report the largest so far.
``VmHWM`` after ``exec`` belongs to the new process image only.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import PROC_STATUS_SRC

logger = logging.getLogger(__name__)

_EVAL_CHILD = PROC_STATUS_SRC + r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[1]))
from zscir.cli import main
startup = _status()['VmHWM']
t0 = time.perf_counter()
sys.argv = ['zscir'] + sys.argv[2:]
try:
    rc = main()
except SystemExit as e:
    rc = e.code
dt = time.perf_counter() - t0
print(json.dumps({"rc": rc or 0, "peak_rss_bytes": _status()['VmHWM'], "startup_peak_rss_bytes": startup,
                  "eval_s": dt}))
"""

_RANK_CHILD = PROC_STATUS_SRC + r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[5]))
from zscir.index.search import exact_topk
n, d, q, k, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[6]
rng = np.random.default_rng(0)
g = torch.empty(n, d)
for i in range(0, n, 16384):  # block-wise: no transient second copy of the gallery
    x = torch.from_numpy(rng.standard_normal((min(16384, n - i), d), dtype=np.float32))
    g[i:i + len(x)] = torch.nn.functional.normalize(x, dim=1)
qs = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((q, d), dtype=np.float32)), dim=1)
base = _status()['VmRSS']
try:
    open('/proc/self/clear_refs', 'w').write('5')  # VmHWM := current RSS, so the peak is the ranking's
    reset = True
except OSError:
    reset = False
t0 = time.perf_counter()
if mode == 'zscir':
    _, idx = exact_topk(qs, g, k)
else:  # peer-style: the full score matrix, then a full argsort per query, first k kept
    scores = qs @ g.T
    idx = torch.argsort(scores, dim=1, descending=True)[:, :k]
dt = time.perf_counter() - t0
st = _status()
print(json.dumps({"peak_rss_bytes": st['VmHWM'] if reset else None, "hwm_reset": reset, "base_rss_bytes": base,
                  "rank_s": dt, "first": [int(v) for v in idx[0, :3]]}))
"""


@dataclass
class EvalMemoryConfig:
    """``methods`` for the end-to-end part; the ranking part defaults to CIRCO test (123,403 x 768, Q = 800)."""

    methods: list[str] = field(default_factory=lambda: ["image", "text", "sum", "pic2word", "tscir", "fusiondiff"])
    model: str | None = None  # None: the embedded default (world-clip)
    limit: int | None = None  # queries per world evaluation (None: the whole benchmark)
    rank_n: int = 123_403
    rank_d: int = 768
    rank_queries: int = 800
    rank_k: int = 50
    threads: int = 1


def _child(code: str, args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({' '.join(args)}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_eval_memory_bench(cfg: EvalMemoryConfig) -> dict[str, Any]:
    """Peak RSS of ``zscir eval`` per method and of the ranking step at real-benchmark scale."""
    eval_rows = []
    with tempfile.TemporaryDirectory(prefix="zscir-bench-evalmem-") as tmp:
        for m in cfg.methods:
            args = [str(cfg.threads), "eval", "-m", m, "--no-progress", "--output", str(Path(tmp) / f"{m}.json")]
            if cfg.model:
                args += ["--model", cfg.model]
            if cfg.limit:
                args += ["--limit", str(cfg.limit)]
            t0 = time.perf_counter()
            res = _child(_EVAL_CHILD, args)
            if res["rc"] != 0:
                raise RuntimeError(f"zscir eval -m {m} exited with {res['rc']}")
            metrics = json.loads((Path(tmp) / f"{m}.json").read_text())
            eval_rows.append({"method": m, "peak_rss_bytes": res["peak_rss_bytes"],
                              "startup_peak_rss_bytes": res["startup_peak_rss_bytes"],
                              "eval_only_bytes": res["peak_rss_bytes"] - res["startup_peak_rss_bytes"],
                              "eval_s": res["eval_s"], "wall_s": time.perf_counter() - t0,
                              "n_queries": _find(metrics, "n_queries"),
                              "n_gallery": _find(metrics, "n_gallery")})
            logger.info("eval memory %s: %.0f MB", m, res["peak_rss_bytes"] / 1e6)
    gallery_bytes = cfg.rank_n * cfg.rank_d * 4
    rank_rows = []
    for mode in ("zscir", "peer"):
        res = _child(_RANK_CHILD, [str(cfg.rank_n), str(cfg.rank_d), str(cfg.rank_queries), str(cfg.rank_k),
                                   str(cfg.threads), mode])
        peak = res["peak_rss_bytes"]
        rank_rows.append({"ranking": mode, "n": cfg.rank_n, "d": cfg.rank_d, "queries": cfg.rank_queries,
                          "k": cfg.rank_k, "gallery_bytes": gallery_bytes, "base_rss_bytes": res["base_rss_bytes"],
                          "peak_rss_bytes": peak,
                          "ranking_extra_bytes": None if peak is None else peak - res["base_rss_bytes"],
                          "rank_s": res["rank_s"], "first_ids": res["first"]})
    rank_rows[0]["same_top3_as_peer"] = rank_rows[0]["first_ids"] == rank_rows[1]["first_ids"]
    return {"config": cfg.__dict__, "eval_rows": eval_rows, "rank_rows": rank_rows}


def _find(metrics: dict[str, Any], key: str) -> int | None:
    """The first integer under ``key`` anywhere in the result JSON (None when absent)."""
    if isinstance(metrics.get(key), int):
        return metrics[key]
    for v in metrics.values():
        if isinstance(v, dict):
            n = _find(v, key)
            if n is not None:
                return n
    return None


EVAL_COLUMNS = ["method", "n_queries", "n_gallery", "peak_rss_bytes", "startup_peak_rss_bytes", "eval_only_bytes", "eval_s"]
RANK_COLUMNS = ["ranking", "n", "d", "queries", "k", "gallery_bytes", "base_rss_bytes", "peak_rss_bytes",
                "ranking_extra_bytes", "rank_s"]
