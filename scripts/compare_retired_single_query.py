"""Side by side, in one process: the retired hand-written single-query kernel vs the FAISS path that replaced it.

    python scripts/compare_retired_single_query.py [--commit faac7a6] [--n 100000] [--dims 512 768]
                                                   [--queries 20] [--rounds 3] [--threads 1]

Why it exists: issue 21 retired ``zscir.index.single_query.SingleQueryKernel`` (exact by learning one BLAS
build's row grouping at run time) "unless it wins on every CPU the benchmark is run on". This script lets
anyone check that on their CPU: it loads the retired module's source from git history (``git show
COMMIT:src/zscir/index/single_query.py``; it only imports modules that still exist) and times it against
``ExactSearcher(single_query="fast")`` query by query, alternating the two, so the drift of a shared
machine falls on both alike. Prints the CPU, per-path medians and the median of the per-query ratios
(retired / FAISS; above 1 = FAISS faster). Needs a git checkout and faiss.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the suite's `benchmarks` package (CPU description, random galleries)


def load_retired(commit: str) -> types.ModuleType:
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:src/zscir/index/single_query.py"],
                         check=True, capture_output=True, text=True).stdout
    if "class SingleQueryKernel" not in src:
        raise SystemExit(f"{commit}: src/zscir/index/single_query.py has no SingleQueryKernel")
    mod = types.ModuleType("zscir_retired_single_query")
    exec(compile(src, f"{commit}:single_query.py", "exec"), mod.__dict__)  # our own repository's history
    return mod


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default="faac7a6", help="a commit that still has the retired kernel")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dims", type=int, nargs="+", default=[512, 768])
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--k", type=int, default=10)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from benchmarks.common import cpu_description, machine_info
    from benchmarks.search import random_unit
    from zscir.index.search import ExactSearcher, exact_topk, score_chunk_rows

    retired = load_retired(a.commit)
    info = machine_info()
    print(f"CPU: {cpu_description(info)}; torch threads {a.threads}; load average {info['loadavg_1_5_15']}; "
          f"retired kernel from {a.commit}")
    print("| N | d | storage | retired kernel ms | FAISS path ms | median ratio retired/FAISS | retired certified |")
    print("|---|---|---|---|---|---|---|")
    empty = np.zeros(0, np.int64)
    for d in a.dims:
        g32 = random_unit(a.n, d, 0)
        queries = random_unit(a.queries, d, 1)
        for storage in ("float32", "float16", "bfloat16"):
            gal = torch.from_numpy(g32).bfloat16() if storage == "bfloat16" else g32.astype(storage)
            kern = retired.SingleQueryKernel(gal, score_chunk_rows(a.n, d, storage != "float32", "cpu"))
            available = kern.available

            def old(q: np.ndarray) -> bool:  # what the retired ExactSearcher did: the kernel, else the plain path
                res = kern.topk(q, a.k, empty) if available else None
                if res is None:
                    exact_topk(q, gal, a.k)
                return res is not None

            new = ExactSearcher(gal, single_query="fast")
            old(queries[:1])
            new.search(queries[:1], a.k)  # warm-up: makes the FAISS index
            t_old, t_new, cert = [], [], []
            for r in range(a.rounds):
                for i in range(a.queries):
                    q = queries[i:i + 1]
                    pair = [("old", lambda: old(q)), ("new", lambda: new.search(q, a.k))]
                    for name, fn in (pair if (r + i) % 2 == 0 else pair[::-1]):  # alternate who goes first
                        t0 = time.perf_counter()
                        out = fn()
                        dt = (time.perf_counter() - t0) * 1e3
                        (t_old if name == "old" else t_new).append(dt)
                        if name == "old":
                            cert.append(bool(out))
            ratio = np.median(np.asarray(t_old) / np.asarray(t_new))
            print(f"| {a.n:,} | {d} | {storage} | {np.median(t_old):.2f} | {np.median(t_new):.2f} | {ratio:.2f} | "
                  f"{np.mean(cert) if storage != 'float32' else '–'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
