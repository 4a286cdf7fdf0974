"""`zscir data build-benchmark`: write the real-picture CIR benchmark and its concept split."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.common import fail
from zscir.cli.data import data_app
from zscir.cli.options import EMOJI_FONT, EMOJI_TEST, NPM_DIR, TUXPAINT_DIR, real_sources
from zscir.data.real.sources import BENCHMARK_SOURCES
from zscir.data.real.sources import DEFAULT_BENCHMARK_SOURCES as DEFAULT_SOURCES


@data_app.command("build-benchmark")
def build_benchmark_cmd(
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: the zscir cache root, where "
                                        "`zscir eval --benchmark real` looks)."),
    seed: int = typer.Option(0, help="Seed of the concept split and the query sample."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    sources: str = typer.Option(",".join(DEFAULT_SOURCES), "--sources", "--styles",
                                help="Comma-separated picture sources of the gallery, in order: some of "
                                     + ", ".join(BENCHMARK_SOURCES) + ". 'emoji,tuxpaint' is the Noto-only "
                                     "benchmark of real-v2 (for comparison with older numbers)."),
    test: float = typer.Option(0.2, help="Share of concept families in the test split."),
    val: float = typer.Option(0.1, help="Share of concept families in the validation split."),
    per_family: int = typer.Option(3, help="At most this many queries per (family, attribute edit kind)."),
    per_family_style: int = typer.Option(6, help="At most this many style / any_style queries per family."),
    families: int = typer.Option(0, help="Test size: only the first N families (alphabetical) of the gallery "
                                         "(0: all)."),
    workers: int = typer.Option(1, min=1, help="Processes rendering the gallery (same files for any number)."),
    npm_dir: Path = NPM_DIR, emoji_font: Path = EMOJI_FONT, emoji_test: Path = EMOJI_TEST,
    tuxpaint_dir: Path = TUXPAINT_DIR,
) -> None:
    """Render the real benchmark (emoji variants, Tux Paint tints) from Debian packages; print its split file.

    The packages are fonts-noto-color-emoji, unicode-data and tuxpaint-stamps-default, and the npm emoji
    packages (@twemoji/svg, openmoji, fluentui-emoji); on another system give their files with --emoji-font,
    --emoji-test, --tuxpaint-dir and --npm-dir. A missing source is skipped with a warning.
    """
    import json
    import time

    from zscir.data.outdir import OutputFolderError
    from zscir.data.real.benchmark import RealBenchmarkConfig, gallery_items, select_families
    from zscir.eval.real import ensure_real_benchmark

    started = time.monotonic()
    try:
        paths = real_sources(emoji_font, emoji_test, tuxpaint_dir, npm_dir)
        names = tuple(s.strip() for s in sources.split(",") if s.strip())
        cfg = RealBenchmarkConfig(seed=seed, test=test, val=val, per_family=per_family,
                                  per_family_style=per_family_style, sources=names, workers=workers)
        if families:
            cfg.families = select_families(gallery_items(paths, names=names), families)
        root = ensure_real_benchmark(out, seed, progress, paths, cfg=cfg)
    except OutputFolderError as e:
        fail(str(e))
    info = json.loads((root / "benchmark.json").read_text())
    typer.echo(f"real benchmark {info['version']} in {root}: {info['n_gallery']} gallery pictures "
               f"({time.monotonic() - started:.0f} s)")
    for s in ("test", "val"):
        q = info["queries"][s]
        typer.echo(f"  {s}: {q['cirr']} exact queries from {q.get('cirr_families', '?')} families, {q['circo']} "
                   f"several-target queries; per kind {q.get('kinds', {})}")
    typer.echo(f"concept split (exclude it from training data: build_real_corpus.py --exclude-split): "
               f"{root / 'split.json'}")


def register(app: typer.Typer) -> None:
    """The command is attached to `data_app` at import; `zscir.cli.data` adds the group to ``app``."""
