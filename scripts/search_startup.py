"""Where the time of one `zscir search` goes: imports, model load, index open, the query itself.

Usage: ``python scripts/search_startup.py INDEX_DIR IMAGE TEXT [--repeats 3]``. Each phase is timed in a
fresh process (the way a user pays for it), in the order `zscir search` runs them; then the whole command
``zscir search INDEX_DIR --image IMAGE --text TEXT`` is timed end to end. Medians of ``--repeats`` runs, as
wall time and as CPU time (user + system; on a shared machine the wall time also counts waiting for a core).
Numbers: docs/PERFORMANCE.md ("Start-up of one search").
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

PHASES = r"""
import json, sys, time
now = lambda: (time.perf_counter(), time.process_time())
t = [now()]
import zscir.cli                                          # what `zscir --help` pays
t.append(now())
import torch, transformers                                # noqa: F401 - the heavy libraries
from transformers import CLIPModel                        # noqa: F401 - transformers imports models lazily
from zscir.index.retriever import Retriever
from zscir.index.shards import open_index
from zscir.methods import create_composer
t.append(now())
store = open_index([sys.argv[1]])                         # index open (memory-mapped)
t.append(now())
composer = create_composer(store.manifest.get("method") or "sum", model=store.manifest.get("model"))
t.append(now())
r = Retriever(store, composer)
ref, row = r.resolve_image(sys.argv[2])
hits = r.search_image(ref, sys.argv[3], k=10, exclude=row)
t.append(now())
names = ["cli import", "torch + transformers + zscir imports", "index open", "model load", "query (k=10)"]
print(json.dumps({n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, t, t[1:])}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index")
    ap.add_argument("image")
    ap.add_argument("text")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    runs = []
    for _ in range(a.repeats):
        out = subprocess.run([sys.executable, "-c", PHASES, a.index, a.image, a.text], capture_output=True,
                             text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    print("| phase | wall s (median) | CPU s (median) |\n| --- | --- | --- |")
    for name in runs[0]:
        print(f"| {name} | {statistics.median(r[name][0] for r in runs):.2f} | "
              f"{statistics.median(r[name][1] for r in runs):.2f} |")
    wall, cpu = _command(["search", a.index, "--image", a.image, "--text", a.text], a.repeats)
    print(f"| **`zscir search` end to end** | **{wall:.2f}** | **{cpu:.2f}** |")
    for args in (["--help"], ["eval", "--help"], ["search"]):
        wall, cpu = _command(args, a.repeats, check=False)
        print(f"| `zscir {' '.join(args)}` | {wall:.2f} | {cpu:.2f} |")


def _command(args: list[str], repeats: int, check: bool = True) -> tuple[float, float]:
    """Median wall and CPU seconds of ``zscir ARGS`` in a fresh process."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), _children_cpu()
        subprocess.run([sys.executable, "-m", "zscir", *args], capture_output=True, check=check)
        walls.append(time.perf_counter() - t0)
        cpus.append(_children_cpu() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


if __name__ == "__main__":
    main()
