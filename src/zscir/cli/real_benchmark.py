"""`zscir data build-benchmark`: write the real-picture CIR benchmark and its concept split."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.common import fail
from zscir.cli.data import data_app
from zscir.cli.options import EMOJI_FONT, EMOJI_TEST, TUXPAINT_DIR, real_sources


@data_app.command("build-benchmark")
def build_benchmark_cmd(
    out: Path = typer.Option(None, help="Output folder (default: the zscir cache root, where "
                                        "`zscir eval --benchmark real` looks)."),
    seed: int = typer.Option(0, help="Seed of the concept split and the query sample."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    emoji_font: Path = EMOJI_FONT, emoji_test: Path = EMOJI_TEST, tuxpaint_dir: Path = TUXPAINT_DIR,
) -> None:
    """Render the real benchmark (emoji variants, Tux Paint tints) from Debian packages; print its split file.

    The packages are fonts-noto-color-emoji, unicode-data and tuxpaint-stamps-default; on another system give
    their files with --emoji-font, --emoji-test and --tuxpaint-dir.
    """
    from zscir.data.outdir import OutputFolderError
    from zscir.eval.real import ensure_real_benchmark

    try:
        root = ensure_real_benchmark(out, seed, progress, real_sources(emoji_font, emoji_test, tuxpaint_dir))
    except OutputFolderError as e:
        fail(str(e))
    import json

    info = json.loads((root / "benchmark.json").read_text())
    typer.echo(f"real benchmark in {root}: {info['n_gallery']} gallery pictures, queries {info['queries']}")
    typer.echo(f"concept split (exclude it from training data: build_real_corpus.py --exclude-split): "
               f"{root / 'split.json'}")


def register(app: typer.Typer) -> None:
    """The command is attached to `data_app` at import; `zscir.cli.data` adds the group to ``app``."""
