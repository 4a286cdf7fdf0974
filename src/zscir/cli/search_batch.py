"""`zscir search IDX --queries FILE`: many queries, one model load, one JSON line per query.

The reading and answering live in `zscir.index.batch` (the same rule as a single search); this module is
the command line's part: checking the options before the model is loaded, writing the JSONL to stdout or
to a new ``--output`` file, and reporting refused rows as one line each on stderr.

Exit status: 0 when every row was answered, 1 when some rows were refused (the others are answered and
written), 2 when the command itself failed (`error: ...`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from zscir.cli.common import check_output_file, fail
from zscir.index.names import printable

#: refused rows printed on stderr (all of them are in the output)
MAX_PRINTED_ERRORS = 50


def load_batch(queries: Path, output: Path | None, *, image: str | None, text: str | None,
               grid: Path | None) -> list:
    """The parsed rows of ``--queries``, after every check that needs no model (else one `error:` line)."""
    from zscir.index.batch import QueryFileError, load_queries

    if image is not None or text is not None or grid is not None:
        fail("--queries answers the queries of the file; --image, --text and --grid are for one query")
    if output is not None:
        check_output_file(output, "results file (--output)")
        if output.exists() or output.is_symlink():
            fail(f"{printable(output)}: exists; zscir does not overwrite it: choose another --output or delete it")
    try:
        return load_queries(queries)
    except (QueryFileError, OSError) as e:
        fail(str(e) if isinstance(e, QueryFileError) else f"{printable(queries)}: {e.strerror or e}")
    return []  # not reached


def run_batch(retriever: Any, rows: list, queries: Path, output: Path | None, *, k: int, method: str | None) -> None:
    """Answer ``rows``, writing JSONL (stdout or a new ``output``); refused rows are printed on stderr."""
    from zscir.index.batch import answer_queries

    sink = None
    if output is not None:
        try:  # "x": created here, never an existing file (checked before the model load, and again now)
            sink = open(output, "x", encoding="utf-8")
        except FileExistsError:
            fail(f"{printable(output)}: exists; zscir does not overwrite it: choose another --output or delete it")
    answered = refused = 0
    try:
        for rec in answer_queries(retriever, rows, k=k, method=method):
            line = json.dumps(rec)
            if sink is not None:
                sink.write(line + "\n")
            else:
                typer.echo(line)
            if "error" in rec:
                refused += 1
                if refused <= MAX_PRINTED_ERRORS:
                    typer.secho(f"error: {printable(str(queries))}:{rec['line']}: {printable(rec['error'])}",
                                fg="red", err=True)
            else:
                answered += 1
    except OSError as e:  # disk full while writing the results: name the file
        raise OSError(e.errno, e.strerror or str(e), os.fspath(output) if output is not None else None) from e
    finally:
        if sink is not None:
            sink.close()
    if refused > MAX_PRINTED_ERRORS:
        typer.secho(f"  ... and {refused - MAX_PRINTED_ERRORS} more refused rows (their records are in the output)",
                    fg="red", err=True)
    where = f" to {printable(output)}" if output is not None else ""
    typer.echo(f"{answered} of {answered + refused} queries answered{where}"
               + (f"; {refused} refused (see the lines above)" if refused else ""), err=True)
    if refused:
        raise typer.Exit(1)
