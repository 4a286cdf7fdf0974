"""`zscir data check-heldout TARGET --heldout DIR`: does a training set contain held-out concepts?

Registered on the ``data`` group that `zscir.cli.data` owns. The ``--heldout``/``--heldout-match`` option
objects below are shared by every command that builds training data (``make-triplets``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from zscir.cli.common import fail
from zscir.cli.data import data_app
from zscir.cli.options import EMOJI_TEST, TUXPAINT_DIR

HELDOUT = typer.Option(None, "--heldout", help="Held-out folder (emoji-ids.txt, tuxpaint-stamps.txt; the project's "
                       "is ../shared/heldout): its concepts never enter training data (docs/DATA.md).")
HELDOUT_MATCH = typer.Option("concept", "--heldout-match",
                             help="concept (default): held-out emoji ids, stamp files and the same concept names "
                                  "in any source; ids: the listed emoji and stamps (with tints) only.")


def open_heldout(folder: Path, match: str = "concept", emoji_test: Path | None = None,
                 tuxpaint_dir: Path | None = None):
    """`load_heldout` with the packages' files for the names; a bad folder or list is one ``error:`` line."""
    from zscir.data.real.heldout import HeldoutError, load_heldout
    from zscir.data.real.sources import RealSources

    src = RealSources.from_options(emoji_test=emoji_test, tuxpaint_dir=tuxpaint_dir)
    try:
        return load_heldout(folder, match, src.emoji_test, src.tuxpaint_dir)
    except HeldoutError as e:
        fail(str(e))


@data_app.command("check-heldout")
def check_heldout_cmd(
    target: str = typer.Argument(..., help="A corpus folder (build_real_corpus.py output), WebDataset shards "
                                           "('wds:DIR/corpus-{00000..00006}.tar') or a .csv/.jsonl manifest."),
    heldout: Path = typer.Option(..., "--heldout", help="Held-out folder (emoji-ids.txt, tuxpaint-stamps.txt)."),
    heldout_match: str = HELDOUT_MATCH,
    show: int = typer.Option(20, min=0, help="Held-out items printed (all are counted)."),
    emoji_test: Path = EMOJI_TEST, tuxpaint_dir: Path = TUXPAINT_DIR,
) -> None:
    """Report every held-out item of a training set; exit 1 if there is any, 0 if none, 2 on bad input."""
    from zscir.data.real.check import check
    from zscir.data.real.heldout import HeldoutError

    lists = open_heldout(heldout, heldout_match, emoji_test, tuxpaint_dir)
    try:
        report, found, scan = check(target, lists)
    except HeldoutError as e:
        fail(str(e))
    for key, why in found[:show]:
        typer.echo(f"held out: {key}: {why}")
    if len(found) > show:
        typer.echo(f"... and {len(found) - show} more" if show else f"{len(found)} held-out items (not listed)")
    for p in scan.problems[:10]:
        typer.secho(f"warning: {p}", err=True)
    if not scan.items:
        fail(f"{target}: no item found to check")
    typer.echo(f"{target}: {len(scan.items)} items in {scan.files} file(s), {report.summary()}"
               + (f"; {len(scan.problems)} unreadable entries" if scan.problems else ""))
    raise typer.Exit(1 if found else 0)


def register(app: typer.Typer) -> None:
    """The command is attached to `data_app` at import; `zscir.cli.data` adds the group to ``app``."""
