"""``python -m benchmarks [items...] [--large] [--tiny] [--out DIR] [--threads N] [--repeats N]``.

``python -m benchmarks gpu [--dry-run]`` runs the GPU check (`benchmarks.gpu`) instead of the suite.
``python -m benchmarks ondisk [--n 5000000] [--d 512]`` measures the on-disk IVF index (`benchmarks.ondisk`).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from benchmarks.suite import ITEMS, SuiteConfig, run_suite


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["gpu"]:  # the GPU check: its own script and options, never part of the default items
        from benchmarks import gpu

        return gpu.main(args[1:])
    if args[:1] == ["ondisk"]:  # the on-disk IVF index at millions of vectors: long, never a default item
        from benchmarks import ondisk

        return ondisk.main(args[1:])
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("items", nargs="*", default=list(ITEMS), help=f"items to run (default: all of {', '.join(ITEMS)})")
    p.add_argument("--large", action="store_true", help="add N=1M to exact search and run FAISS at N=1M")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (for tests; seconds)")
    p.add_argument("--out", type=Path, default=Path("runs/bench"), help="output folder (JSON + markdown)")
    p.add_argument("--threads", type=int, default=1, help="torch / faiss threads (default 1: shared machines)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    p.add_argument("--ann-noise", type=float, default=1.0, help="cluster noise of the FAISS data (higher = harder)")
    p.add_argument("--ann-indexes", nargs="+", default=None, choices=["ivf-flat", "ivf-pq", "hnsw"],
                   help="FAISS index types to measure (default: all three)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from zscir.progress import quiet_library_bars

    quiet_library_bars()  # as `zscir bench` does: no "Loading weights" bar per model load
    cmd = "python -m benchmarks " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    cfg = SuiteConfig(items=a.items, out_dir=a.out, large=a.large, tiny=a.tiny, threads=a.threads,
                      repeats=a.repeats, command=cmd.strip(), ann_noise=a.ann_noise,
                      ann_indexes=a.ann_indexes)
    run_suite(cfg)
    print((a.out / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
