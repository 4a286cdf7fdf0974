"""`zscir data build-benchmark`: write the real-picture CIR benchmark and its concept split."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.common import fail
from zscir.cli.data import data_app


@data_app.command("build-benchmark")
def build_benchmark_cmd(
    out: Path = typer.Option(None, help="Output folder (default: the zscir cache root, where "
                                        "`zscir eval --benchmark real` looks)."),
    seed: int = typer.Option(0, help="Seed of the concept split and the query sample."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Render the real benchmark (emoji variants, Tux Paint tints) from Debian packages; print its split file."""
    from zscir.data.outdir import OutputFolderError
    from zscir.eval.real import ensure_real_benchmark

    try:
        root = ensure_real_benchmark(out, seed, progress)
    except OutputFolderError as e:
        fail(str(e))
    import json

    info = json.loads((root / "benchmark.json").read_text())
    typer.echo(f"real benchmark in {root}: {info['n_gallery']} gallery pictures, queries {info['queries']}")
    typer.echo(f"concept split (exclude it from training data: build_real_corpus.py --exclude-split): "
               f"{root / 'split.json'}")


def register(app: typer.Typer) -> None:
    """The command is attached to `data_app` at import; `zscir.cli.data` adds the group to ``app``."""
