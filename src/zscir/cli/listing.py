"""`zscir list {models,methods}`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd(what: str = typer.Argument(..., help="models | methods")) -> None:
        """List built-in models (and accepted name prefixes) or registered methods."""
        if what == "models":
            from zscir.backbones import list_models

            for name in list_models():
                typer.echo(name)
        elif what == "methods":
            from zscir.methods import list_methods

            for spec in list_methods():
                tag = "(peer) " if spec.peer else "(trained) " if spec.trained else ""
                typer.echo(f"{spec.name:<18} {tag}{spec.description}")
        else:
            raise typer.BadParameter(f"expected 'models' or 'methods', got {what!r}")
