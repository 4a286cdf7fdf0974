"""The option vocabulary every `zscir` command shares, so that a short option means one thing everywhere.

* ``-o`` / ``--out`` is where a command writes its result (a folder or a file). Commands keep their older
  long names as aliases (``--output`` for `zscir eval` and `zscir viz fused`, ``--out-dir`` for
  `zscir submit`). The trainers in ``zscir.methods.*.cli`` spell the names out: importing this package
  from there would be an import circle.
* ``-O`` / ``--option KEY=VALUE`` is a method option (repeatable). Earlier ``-o`` meant this in most
  commands but ``--out`` in `zscir index`, so `check_out_path` turns an old-style ``-o weight=0.3``,
  which would now name an output file, into a clear error instead of a silently ignored option.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from zscir.threads import THREADS_HELP

#: the names of the output option (``-o`` is the short one in every command that writes something)
OUT = ("--out", "-o")
#: the names of the repeatable method option
OPTION = ("--option", "-O")
#: ``--threads N`` of every command that runs torch (the choice itself: `zscir.threads`)
THREADS = typer.Option(None, "--threads", min=0, help=THREADS_HELP)
#: help of a trainer's ``--device`` (placement: `zscir.backbones.devices.train_device`; the value is checked
#: against this machine by `zscir.cli.common.check_device` before any work)
TRAIN_DEVICE_HELP = ("Device of the model and batches: cpu, cuda, cuda:N or mps (under torchrun each rank "
                     "takes its own GPU); the run's train_log.json records it.")

#: where the real pictures' Debian packages are (`zscir demo --real`, `zscir eval --benchmark real`,
#: `zscir data build-benchmark`); defaults: Debian's paths (`zscir.data.real.sources.RealSources`)
EMOJI_FONT = typer.Option(None, "--emoji-font", help="NotoColorEmoji.ttf (Debian package fonts-noto-color-emoji; "
                          "default /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf).")
EMOJI_TEST = typer.Option(None, "--emoji-test", help="emoji-test.txt (Debian package unicode-data; default "
                          "/usr/share/unicode/emoji/emoji-test.txt).")
TUXPAINT_DIR = typer.Option(None, "--tuxpaint-dir", help="Tux Paint stamps folder (Debian package "
                            "tuxpaint-stamps-default; default /usr/share/tuxpaint/stamps).")

NPM_DIR = typer.Option(None, "--npm-dir", help="node_modules folder of the npm emoji packages (@twemoji/svg, "
                       "openmoji, fluentui-emoji; .ci/install-real-npm.sh; default ~/.local/share/zscir/npm/"
                       "node_modules); a missing one leaves those styles out of the real benchmark.")


def real_sources(emoji_font: Path | None, emoji_test: Path | None, tuxpaint_dir: Path | None,
                 npm_dir: Path | None = None):
    """The `RealSources` of the options above (None = Debian's path, zscir's npm folder)."""
    from zscir.data.real.sources import RealSources

    return RealSources.from_options(emoji_font=emoji_font, emoji_test=emoji_test, tuxpaint_dir=tuxpaint_dir,
                                    npm_dir=npm_dir)

_KEY_VALUE = re.compile(r"^[A-Za-z_][\w-]*=")


def check_out_path(path: Path | None) -> Path | None:
    """``path`` unchanged, unless it looks like a ``KEY=VALUE`` method option given to ``-o`` by habit."""
    if path is not None and _KEY_VALUE.match(str(path)) and "/" not in str(path):
        from zscir.cli.common import fail

        fail(f"-o/--out {str(path)!r} names the output; a method option is given with --option/-O KEY=VALUE "
             "(rename the output, e.g. ./" + str(path) + ", if you really meant that file name)")
    return path
