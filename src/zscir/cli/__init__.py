"""The `zscir` command line (typer). Each sub-module registers one group of commands.

Logging is configured here and only here; library modules just use `logging.getLogger(__name__)`.
Heavy imports (torch, transformers) happen inside the commands so that ``zscir --help`` stays fast.
"""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    name="zscir",
    help="Zero-shot composed image retrieval: reference image + modification text → target image.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _configure(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v for info, -vv for debug logs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        for noisy in ("transformers", "diffusers", "httpx", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def _register_all() -> None:
    from zscir.cli import demo, evaluate, indexing, listing, train

    for mod in (listing, demo, evaluate, indexing, train):
        mod.register(app)
    try:
        from zscir.cli import benchmarks
    except ImportError:  # pragma: no cover - only while the module is absent
        return
    benchmarks.register(app)


_register_all()


def main() -> None:
    app()
