"""The `zscir` command line (typer). Each sub-module registers one group of commands.

Logging is configured here and only here; library modules just use `logging.getLogger(__name__)`.
Heavy imports (torch, transformers) happen inside the commands so that ``zscir --help`` stays fast.
"""

from __future__ import annotations

import logging

import typer

from zscir.cli.common import ZscirGroup

app = typer.Typer(
    cls=ZscirGroup,  # the error rule: expected errors -> one `error:` line, exit 2 (see cli/common.py)
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
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of any error."),
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        for noisy in ("transformers", "diffusers", "httpx", "huggingface_hub"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        from zscir.progress import quiet_library_bars

        quiet_library_bars()  # "Loading weights" bars on every model load; -v shows them


#: modules with a ``register(app)`` function adding their commands; optional ones may be absent
COMMAND_MODULES = (
    "zscir.cli.listing", "zscir.cli.demo", "zscir.cli.evaluate", "zscir.cli.indexing", "zscir.cli.train",
    "zscir.cli.benchmarks", "zscir.cli.serve", "zscir.cli.viz", "zscir.cli.bench", "zscir.cli.data",
    "zscir.cli.make_triplets", "zscir.cli.real_benchmark", "zscir.cli.heldout",
)


def _register_all() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.register(app)


_register_all()


def main() -> None:
    app()
