"""``zscir bench``: the performance suite (same as ``python -m benchmarks``; docs/PERFORMANCE.md).

The suite lives in the top-level ``benchmarks/`` package of the source checkout (it is a development
tool, not part of the installed library). ``python -m benchmarks`` therefore runs only from the repository
root; this command finds the package next to ``src/`` and runs from any folder (``--out`` is relative to
the folder it runs in), and reports a clear error when zscir was installed without the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from zscir.cli.options import OUT

ITEMS = ("search", "single", "serve", "faiss", "latency", "pipeline", "photos", "memory", "evalmem", "datawait",
         "busy")  # = benchmarks.suite.ITEMS


def _import_suite():
    try:
        import benchmarks.suite as suite  # noqa: F401 - already importable (run from the checkout)
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[3]
        if not (root / "benchmarks" / "suite.py").is_file():
            raise typer.BadParameter(
                "the benchmark suite needs a zscir source checkout (benchmarks/ next to src/); "
                "clone the repository and run `zscir bench` or `python -m benchmarks` there") from None
        sys.path.insert(0, str(root))
        import benchmarks.suite as suite
    return suite


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        items: Optional[List[str]] = typer.Argument(None, help=f"items to run (default all: {', '.join(ITEMS)})"),
        large: bool = typer.Option(False, "--large", help="add the 1M-row galleries (exact search, FAISS)"),
        tiny: bool = typer.Option(False, "--tiny", help="tiny sizes (seconds; for tests)"),
        out: Path = typer.Option(Path("runs/bench"), *OUT, help="folder for <item>.json/.md and report.md"),
        threads: int = typer.Option(1, "--threads", help="torch/faiss threads (default 1: shared machines)"),
        repeats: int = typer.Option(3, "--repeats", help="timed repeats per measurement (median reported)"),
        ann_noise: float = typer.Option(1.0, "--ann-noise", help="cluster noise of the FAISS data (higher = harder)"),
        ann_indexes: Optional[List[str]] = typer.Option(
            None, "--ann-indexes", help="FAISS index type to measure (repeatable: ivf-flat, ivf-pq, hnsw; "
                                        "default all three)"),
    ) -> None:
        """Benchmark search, FAISS, per-method latency, the embedding pipeline and index memory."""
        suite = _import_suite()
        chosen = list(items or ITEMS)
        bad = [i for i in chosen if i not in ITEMS]
        if bad:
            raise typer.BadParameter(f"unknown item(s) {bad}; choose from {', '.join(ITEMS)}")
        cmd = "zscir bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else "zscir bench"
        bad = [i for i in ann_indexes or [] if i not in ("ivf-flat", "ivf-pq", "hnsw")]
        if bad:
            raise typer.BadParameter(f"unknown --ann-indexes {bad}; choose from ivf-flat, ivf-pq, hnsw")
        cfg = suite.SuiteConfig(items=chosen, out_dir=out, large=large, tiny=tiny, threads=threads,
                                repeats=repeats, command=cmd.strip(), ann_noise=ann_noise,
                                ann_indexes=list(ann_indexes) if ann_indexes else None)
        suite.run_suite(cfg)
        typer.echo((out / "report.md").read_text(encoding="utf-8"))
