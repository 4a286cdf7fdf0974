"""`zscir train ...`: every trainable stage has a sub-command here."""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.data import ALLOW_PIPE, DATA, IMAGE_COLUMN, IMAGE_ROOT, TEXT_COLUMN, VAL_DATA, WORKERS, data_errors, data_options
from zscir.threads import THREADS_HELP
from zscir.cli.options import OUT, TRAIN_DEVICE_HELP
from zscir.train.precision import PRECISION_HELP, Precision, parse_precision

train_app = typer.Typer(help="Train models (world CLIP, method stages).", no_args_is_help=True)


@train_app.command("clip")
def train_clip_cmd(
    out: Path = typer.Option(Path("runs/world-clip"), *OUT, help="Output HF model folder."),
    steps: int = typer.Option(None, help="Training steps (default: the shipped recipe)."),
    batch_size: int = typer.Option(None),
    n_pairs: int = typer.Option(None, help="Number of world image–caption pairs."),
    lr: float = typer.Option(None),
    seed: int = typer.Option(0),
    world_seed: int = typer.Option(0),
    threads: int = typer.Option(None, min=0, help=THREADS_HELP),
    device: str = typer.Option("cpu", help=TRAIN_DEVICE_HELP),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
    eval_every: int = typer.Option(None),
    model: str = typer.Option(None, help="Start from this backbone instead of a random world-CLIP architecture."),
    data: str = DATA, val_data: str = VAL_DATA, image_root: Path = IMAGE_ROOT, image_column: str = IMAGE_COLUMN,
    text_column: str = TEXT_COLUMN, workers: int = WORKERS, allow_pipe: bool = ALLOW_PIPE,
    streaming: bool = typer.Option(None, "--streaming/--in-memory", help="Stream batches (default for shards) "
                                   "or decode every image into RAM first (default otherwise)."),
    precision: Precision = typer.Option(
        Precision.fp32, help=PRECISION_HELP + " Default here fp32: it reproduces the shipped model."),
) -> None:
    """Train a CLIP contrastively: the world CLIP by default, or on --data image–caption pairs."""
    from dataclasses import replace

    from zscir.train.clip import CLIPTrainConfig, train_clip
    from zscir.train.distributed import report_once

    cfg = CLIPTrainConfig(seed=seed, world_seed=world_seed, threads=threads, model=model, device=device,
                          bf16=parse_precision(precision),
                          data=data_options(data, val_data, image_root, image_column, text_column, workers=workers,
                                            streaming=streaming, allow_pipe=allow_pipe))
    overrides = {k: v for k, v in dict(steps=steps, batch_size=batch_size, n_pairs=n_pairs, lr=lr,
                                         eval_every=eval_every).items() if v is not None}
    cfg = replace(cfg, **overrides)
    with data_errors():
        r = train_clip(cfg, out, resume=resume)
    report_once(f"saved {r['out']}; held-out retrieval: {r['metrics']}")  # once under torchrun


#: modules with ``register_train(train_app)`` adding `zscir train <stage>` commands (one per trainable method
#: or model; they live in `zscir.cli`, the top floor, and import their method's trainer inside the command)
TRAIN_COMMAND_MODULES = ("zscir.cli.train_tscir", "zscir.cli.train_fusiondiff", "zscir.cli.train_lit")


def register(app: typer.Typer) -> None:
    import importlib

    for name in TRAIN_COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is None or not name.startswith(e.name):
                raise
            continue
        mod.register_train(train_app)
    app.add_typer(train_app, name="train")
