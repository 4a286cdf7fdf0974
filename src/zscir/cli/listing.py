"""`zscir list {models,methods}`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd(what: str = typer.Argument(..., help="models | methods")) -> None:
        """List built-in models (and accepted name prefixes) or registered methods."""
        if what == "models":
            from zscir.backbones import list_models
            from zscir.backbones.registry import model_info, model_version

            for name in list_models():  # with what each built-in is for (world-clip: not for real photos)
                info = model_info(name)
                version = model_version(name)  # a shipped model's trained weights (e.g. lit-clipart-1)
                tag = f"[{version}] " if version else ""
                typer.echo(f"{name:<18} {tag}{info.purpose}" if info else name)
        elif what == "methods":
            from zscir.methods import list_methods

            for spec in list_methods():
                tag = "(peer) " if spec.peer else "(trained) " if spec.trained else ""
                typer.echo(f"{spec.name:<18} {tag}{spec.description}")
        else:
            raise typer.BadParameter(f"expected 'models' or 'methods', got {what!r}")
