"""`zscir train ...`: every trainable stage has a sub-command here."""

from __future__ import annotations

from pathlib import Path

import typer

train_app = typer.Typer(help="Train models (world CLIP, method stages).", no_args_is_help=True)


@train_app.command("clip")
def train_clip_cmd(
    out: Path = typer.Option(Path("runs/world-clip"), help="Output HF model folder."),
    steps: int = typer.Option(None, help="Training steps (default: the shipped recipe)."),
    batch_size: int = typer.Option(None),
    n_pairs: int = typer.Option(None, help="Number of world image–caption pairs."),
    lr: float = typer.Option(None),
    seed: int = typer.Option(0),
    world_seed: int = typer.Option(0),
    threads: int = typer.Option(None, help="torch intra-op threads."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
    eval_every: int = typer.Option(None),
) -> None:
    """Train the world CLIP (a transformers CLIPModel) contrastively on CIR-world pairs."""
    from dataclasses import replace

    from zscir.train.clip import CLIPTrainConfig, train_clip
    from zscir.train.distributed import report_once

    cfg = CLIPTrainConfig(seed=seed, world_seed=world_seed, threads=threads)
    overrides = {k: v for k, v in dict(steps=steps, batch_size=batch_size, n_pairs=n_pairs, lr=lr,
                                         eval_every=eval_every).items() if v is not None}
    cfg = replace(cfg, **overrides)
    r = train_clip(cfg, out, resume=resume)
    report_once(f"saved {r['out']}; held-out retrieval: {r['metrics']}")  # once under torchrun


#: modules with ``register_train(train_app)`` adding `zscir train <stage>` commands (method packages' ``cli``,
#: and `zscir.cli.train_lit`)
TRAIN_COMMAND_MODULES = ("zscir.methods.tscir.cli", "zscir.methods.fusiondiff.cli", "zscir.cli.train_lit")


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
