"""`zscir index` and `zscir search` over a folder of the user's own images."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from zscir.cli.common import fail, make_composer, parse_options


def register(app: typer.Typer) -> None:
    @app.command()
    def index(
        folder: Path = typer.Argument(..., help="Folder of images (scanned recursively)."),
        out: Path = typer.Option(..., "--out", help="Index folder to write."),
        method: str = typer.Option("sum", help="Method whose gallery encoder embeds the images."),
        model: str = typer.Option(None, help="Backbone (default: world-clip)."),
        checkpoint: str = typer.Option(None, help="Checkpoint folder of a trained method."),
        batch_size: int = typer.Option(64),
        fp16: bool = typer.Option(False, help="Store embeddings as float16 (half the size)."),
        device: str = typer.Option("cpu"),
    ) -> None:
        """Embed a folder of images into an index for `zscir search`."""
        from zscir.backbones import DEFAULT_MODEL
        from zscir.index.build import build_index

        composer = make_composer(method, model, checkpoint, device, {})
        try:
            store, report = build_index(folder, out, composer, model=model or DEFAULT_MODEL, method=method,
                                        batch_size=batch_size, fp16=fp16)
        except (NotADirectoryError, ValueError) as e:
            fail(str(e))
        typer.echo(f"indexed {report.indexed} images into {out} ({len(report.skipped)} skipped)")
        for path, reason in report.skipped:
            typer.echo(f"  skipped {path}: {reason}")

    @app.command()
    def search(
        index_dir: Path = typer.Argument(..., help="Index folder written by `zscir index`."),
        image: str = typer.Option(..., help="Reference image: a file path or an indexed item id."),
        text: str = typer.Option(..., help="Modification text."),
        k: int = typer.Option(10, "-k", min=1, max=1000),
        method: str = typer.Option(None, help="Method (default: the one the index was built with)."),
        checkpoint: str = typer.Option(None),
        option: list[str] = typer.Option(None, "--option", "-o", help="Method option KEY=VALUE."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        device: str = typer.Option("cpu"),
    ) -> None:
        """Composed search: reference image + modification text → ranked images of the index."""
        from zscir.index.retriever import Retriever
        from zscir.index.store import StoreError

        try:
            r = Retriever.load(index_dir, method=method, checkpoint=checkpoint, device=device,
                               **parse_options(option))
            hits = r.search(image, text, k=k)
        except (StoreError, FileNotFoundError, ValueError) as e:
            fail(str(e))
        if as_json:
            typer.echo(json.dumps([{"rank": h.rank + 1, "id": h.id, "path": h.path, "score": h.score}
                                   for h in hits], indent=2))
        else:
            for h in hits:
                typer.echo(f"{h.rank + 1:>3}. {h.score:.4f}  {h.path}")
