"""`zscir data inspect SPEC`, and the ``--data`` options every `zscir train ...` command shares.

The option objects below are the single definition of the data flags: each trainer command lists them as
defaults, and `data_options` turns the values into the trainers' `DataOptions`. `data_errors` prints a bad
spec or bad file layout as one ``error: ...`` line (exit 2) instead of a traceback.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from zscir.cli.common import fail

data_app = typer.Typer(help="Inspect datasets (pairs and triplets) before training on them.", no_args_is_help=True)

DATA = typer.Option("world", "--data", help="Training data: world | wds:SHARDS | *.tar pattern | manifest "
                    "(.csv/.tsv/.jsonl/.parquet) | folder | hf:NAME[:SPLIT] (docs/DATA.md).")
VAL_DATA = typer.Option(None, "--val-data", help="Validation data (same syntax); default: a held-out tail of --data.")
IMAGE_ROOT = typer.Option(None, "--image-root", help="Folder that relative image paths / ids resolve against.")
IMAGE_COLUMN = typer.Option(None, "--image-column", help="Manifest/HF image column (or WebDataset extension).")
TEXT_COLUMN = typer.Option(None, "--text-column", help="Manifest/HF caption column (or WebDataset extension).")
ID_TEMPLATE = typer.Option(None, "--id-template", help="Triplet image id -> file, e.g. 'images/{id}.jpg'.")
WORKERS = typer.Option(2, "--workers", help="DataLoader worker processes decoding images.")
ALLOW_PIPE = typer.Option(False, "--allow-pipe", help="Let WebDataset shards be 'pipe:CMD' (runs CMD through sh) "
                          "or URLs (fetched by a shell command); off: such specs are refused (docs/DATA.md).")


def data_options(data: str = "world", val_data: str | None = None, image_root: Path | None = None,
                 image_column: str | None = None, text_column: str | None = None, id_template: str | None = None,
                 workers: int = 2, **kw):
    from zscir.train.data_options import DataOptions

    return DataOptions(data=data, val_data=val_data, image_root=str(image_root) if image_root else None,
                       image_column=image_column, text_column=text_column, id_template=id_template,
                       workers=workers, **kw)


@contextlib.contextmanager
def data_errors():
    """Turn `zscir.data.DataError` into ``error: ...`` (exit 2)."""
    from zscir.data import DataError

    try:
        yield
    except DataError as e:
        fail(str(e))


@data_app.command("inspect")
def inspect_cmd(
    spec: str = typer.Argument(..., help="Data spec (docs/DATA.md)."),
    triplets: bool = typer.Option(False, "--triplets", help="Read SPEC as a triplet set."),
    image_root: Path = IMAGE_ROOT, image_column: str = IMAGE_COLUMN, text_column: str = TEXT_COLUMN,
    id_template: str = ID_TEMPLATE,
    limit: int = typer.Option(1000, min=0, help="Read at most this many items (0: all)."),
    samples: int = typer.Option(8, min=0, help="Sample records printed and drawn."),
    grid: Path = typer.Option(None, "--grid", help="Also draw the samples into this new picture file (.png, .jpg, "
                              ".pdf, .svg...; an existing folder: DIR/data-inspect.png). An existing file is never "
                              "replaced."),
    allow_pipe: bool = ALLOW_PIPE,
) -> None:
    """Count records, print samples and problems; with --grid, draw the samples into a new picture."""
    from zscir.cli.inspect_report import grid_path, inspect_pairs, inspect_triplets

    grid = grid_path(grid) if grid is not None else None  # refused before the data is read
    opts = data_options(spec, image_root=image_root, image_column=image_column, text_column=text_column,
                        id_template=id_template, max_items=limit or None, allow_pipe=allow_pipe)
    with data_errors():
        lines = (inspect_triplets if triplets else inspect_pairs)(opts, samples, grid)
    for line in lines:
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
