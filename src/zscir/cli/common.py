"""Helpers shared by CLI commands: option parsing, composer creation, error reporting."""

from __future__ import annotations

import json
from typing import Any

import typer


def parse_options(options: list[str] | None) -> dict[str, Any]:
    """``["weight=0.3", "template=a photo of {}"]`` → ``{"weight": 0.3, ...}`` (JSON values when they parse)."""
    out: dict[str, Any] = {}
    for opt in options or []:
        if "=" not in opt:
            raise typer.BadParameter(f"--option expects KEY=VALUE, got {opt!r}")
        key, value = opt.split("=", 1)
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def make_composer(method: str, model: str | None, checkpoint: str | None, device: str, options: dict[str, Any]):
    """Create a composer, turning configuration errors into one clear CLI error."""
    from zscir.methods import create_composer

    try:
        return create_composer(method, model=model, checkpoint=checkpoint, device=device, **options)
    except (ValueError, FileNotFoundError, OSError, TypeError, ImportError) as e:
        raise typer.BadParameter(str(e)) from e


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)
