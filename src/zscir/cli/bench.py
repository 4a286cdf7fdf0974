"""``zscir bench``: the performance suite (same as ``python -m benchmarks``; docs/PERFORMANCE.md).

The suite lives in the top-level ``benchmarks/`` package of the source checkout (it is a development
tool, not part of the installed library). ``python -m benchmarks`` therefore runs only from the repository
root; this command finds the package next to ``src/`` and runs from any folder (``--out`` is relative to
the folder it runs in), and reports a clear error when zscir was installed without the checkout.

``zscir bench gpu [CHECK...]`` runs the prepared CUDA check (`benchmarks.gpu`, the same as
``python -m benchmarks gpu``) on its own: one table, exit status 1 when a check failed, 0 with a note where
there is no CUDA; ``--tiny`` runs its dry run (the same checks on the CPU with tiny sizes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from zscir.cli.options import OUT

ITEMS = ("search", "single", "serve", "faiss", "latency", "pipeline", "photos", "memory", "evalmem", "datawait",
         "busy")  # = benchmarks.suite.ITEMS
#: the CUDA check: never one of the default items, and run on its own (`benchmarks.gpu`)
GPU_ITEM = "gpu"
#: the one line printed where the benchmarks package is not next to the installed zscir
NO_CHECKOUT = ("the benchmark suite needs a zscir source checkout (benchmarks/ next to src/); clone the repository "
               "and run `zscir bench {item}` or `python -m benchmarks {item}` at its root")


def _import_benchmarks(module: str = "suite", item: str = ""):
    """``benchmarks.<module>`` from the checkout this zscir runs from, whatever the current folder."""
    import importlib

    name = f"benchmarks.{module}"
    try:
        return importlib.import_module(name)  # already importable (run from the checkout's root)
    except ModuleNotFoundError as e:
        if e.name not in ("benchmarks", name):
            raise
    root = Path(__file__).resolve().parents[3]
    if not (root / "benchmarks" / f"{module}.py").is_file():
        raise typer.BadParameter(" ".join(NO_CHECKOUT.format(item=item).split())) from None
    sys.path.insert(0, str(root))
    return importlib.import_module(name)


def _import_suite():
    return _import_benchmarks("suite")


def _run_gpu(checks: list[str], tiny: bool) -> None:
    """`zscir bench gpu [CHECK...]`: the GPU check's own entry point; its exit status is the command's."""
    gpu = _import_benchmarks("gpu", GPU_ITEM)
    bad = [c for c in checks if c not in gpu.CHECKS]
    if bad:
        raise typer.BadParameter(f"unknown gpu check(s) {bad}; choose from {', '.join(gpu.CHECKS)}")
    argv = (["--dry-run"] if tiny else []) + (["--checks", *checks] if checks else [])
    raise typer.Exit(gpu.main(argv))


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench_cmd(
        items: Optional[List[str]] = typer.Argument(
            None, help=f"items to run (default all: {', '.join(ITEMS)}); or `gpu [CHECK...]` alone: the CUDA check "
                       "(--tiny: its dry run on the CPU)"),
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
        chosen = list(items or ITEMS)
        if GPU_ITEM in chosen:
            if chosen[0] != GPU_ITEM:
                raise typer.BadParameter(f"{GPU_ITEM} runs on its own: zscir bench {GPU_ITEM} [CHECK...]")
            _run_gpu(chosen[1:], tiny)
        suite = _import_suite()
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
