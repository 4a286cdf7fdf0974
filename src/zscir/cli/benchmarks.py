"""``zscir submit`` and ``zscir validate-submission``: test-server files for CIRR and CIRCO.

The lead's ``zscir.cli`` app calls `register(app)`. Heavy imports (torch, methods) happen inside the
commands so ``zscir --help`` stays fast. Data problems (`BenchmarkDataError`) are printed as one line and
exit with status 2; an invalid submission file exits with status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from zscir.cli.options import OPTION, OUT, THREADS, check_out_path

__all__ = ["register"]

_MAX_PRINTED_ERRORS = 30


def _submit(
    benchmark: str = typer.Option(..., "--benchmark", "-b", help="cirr (test1) or circo (test)"),
    data_root: Path = typer.Option(..., "--data-root", help="benchmark root folder (see docs/BENCHMARKS.md)"),
    method: str = typer.Option(..., "--method", "-m", help="composer name, e.g. image, sum, pic2word, tscir"),
    split: Optional[str] = typer.Option(None, "--split", help="default: test1 for cirr, test for circo"),
    model: Optional[str] = typer.Option(None, "--model", help="backbone model name"),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="method checkpoint"),
    option: Optional[list[str]] = typer.Option(None, *OPTION, help="method option KEY=VALUE (repeatable)"),
    flag: Optional[list[str]] = typer.Option(
        None, "--flag", help="protocol flag KEY=VALUE, e.g. preprocessing=targetpad, use_shared_concept=true"),
    out_dir: Path = typer.Option(Path("submissions"), *OUT, "--out-dir", help="folder for the submission files"),
    name: Optional[str] = typer.Option(None, "--name", help="file name stem (default <benchmark>_<split>_<method>)"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    num_workers: int = typer.Option(0, "--num-workers", min=0, help="image decoding worker processes"),
    device: str = typer.Option("cpu", "--device"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="gallery feature cache (default $ZSCIR_CACHE/features)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    threads: Optional[int] = THREADS,
) -> None:
    """Rank a test split and write the evaluation-server submission file(s)."""
    from ..eval.benchmarks import BenchmarkDataError, write_submission
    from ..threads import use_threads
    from .common import make_composer, parse_options

    check_out_path(out_dir)
    use_threads("batch", threads)
    composer = make_composer(method, model, checkpoint, device, parse_options(option))
    try:
        paths = write_submission(benchmark, data_root, split, composer, out_dir, batch_size=batch_size,
                                 cache_dir=cache_dir, device=device, progress=progress, num_workers=num_workers,
                                 stem=name, **parse_options(flag))
    except (BenchmarkDataError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    for p in paths:
        typer.echo(str(p))


def _validate(
    file: Path = typer.Argument(..., help="submission JSON file"),
    benchmark: str = typer.Option(..., "--benchmark", "-b", help="cirr or circo"),
    data_root: Optional[Path] = typer.Option(
        None, "--data-root", help="benchmark root; enables query-id, name, reference and subset checks"),
    split: Optional[str] = typer.Option(None, "--split", help="default: test1 for cirr, test for circo"),
) -> None:
    """Check a submission file against the test server's rules (exit status 1 if invalid)."""
    from ..eval.benchmarks import check_submission

    check = check_submission(file, benchmark, data_root=data_root, split=split)  # data errors: cli/common.py
    for warning in check.warnings:
        typer.echo(f"warning: {warning}", err=True)
    errors = check.errors
    if errors:
        for err in errors[:_MAX_PRINTED_ERRORS]:
            typer.echo(f"invalid: {err}")
        if len(errors) > _MAX_PRINTED_ERRORS:
            typer.echo(f"... and {len(errors) - _MAX_PRINTED_ERRORS} more problems")
        raise typer.Exit(1)
    scope = "" if data_root is not None else " (structure only; pass --data-root for the full check)"
    typer.echo(f"{file}: valid {benchmark} submission{scope}")


def register(app: typer.Typer) -> None:
    """Add the ``submit`` and ``validate-submission`` commands to ``app``."""
    app.command("submit")(_submit)
    app.command("validate-submission")(_validate)
