"""The output folder of every `zscir train ...` command: zscir's own, or refused before any work.

A trainer writes its model folder (config.json, model.safetensors, training_state.pt, train_log.json, ...)
into ``--out``. That folder must be new, empty, or one the *same* trainer created: `open_run` checks it
first thing, before any model is loaded or any data read, and refuses anything else with one line — a
user's folder (any file in it, even one of a trainer's names), another trainer's run, a file. A trainer's
folder carries the marker `RUN_MARKER`, written before any other file, and its journal (`zscir.data.outdir`)
records every name the trainer writes there, also before the first is written. So:

* re-training or ``--resume`` into the trainer's own folder replaces only files it recorded; a file you put
  there under one of the trainer's names is refused as in the way, and any other file of yours is left alone;
* ``--resume`` reads a checkpoint only from a folder that carries the marker (an empty or new folder simply
  starts a new run);
* nothing is ever deleted: a run writes over its own files (each checkpoint replaces the last).

Folders written by a zscir older than the marker are refused like any other: train into a new folder.
Under ``torchrun`` every rank checks the folder, then only the main rank writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from zscir.data.outdir import (OutputFolderError, Recorder, check_out, has_marker, read_journal, read_marker,
                                write_marker)

logger = logging.getLogger(__name__)

RUN_MARKER = ".zscir-run.json"
#: what every trainer writes: the model folder, the resumable state, the log (and their temporary names)
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.tmp", "training_state.pt",
               "training_state.pt.tmp", "train_log.json", "train_log.json.tmp")
#: what an HF CLIP folder holds besides (tokenizer and image processor; written by transformers)
HF_FILES = ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json", "model.safetensors.index.json")

__all__ = ["HF_FILES", "MODEL_FILES", "RUN_MARKER", "check_run", "open_run"]


def check_run(out: str | Path, trainer: str, files: Sequence[str] = MODEL_FILES) -> None:
    """Refuse ``out`` unless ``trainer`` may write ``files`` into it (see the module docstring); writes nothing.

    ``trainer`` names the command (``zscir train clip``); ``files`` are the names it writes, relative to ``out``.
    """
    out = Path(out)
    check_out(out, RUN_MARKER, trainer)
    if not has_marker(out, RUN_MARKER):
        return
    other = read_marker(out / RUN_MARKER).get("created_by")
    if other != trainer:
        raise OutputFolderError(f"{out} is a run folder of {other or 'an unknown writer'}, not of {trainer}; "
                                "choose a new or empty folder")
    recorded, _ = read_journal(out, RUN_MARKER)
    taken = [f for f in files if ((out / f).exists() or (out / f).is_symlink()) and f not in recorded]
    if taken:
        raise OutputFolderError(f"{out / taken[0]} is in the way: {trainer} did not write it (a file of yours?); "
                                "move it away or choose a new folder")


def open_run(out: str | Path, trainer: str, files: Sequence[str] = MODEL_FILES, ctx=None) -> Path:
    """Check ``out`` (`check_run`), then create it with the marker and record ``files`` (main rank only, after
    every rank has checked); returns the folder. Call it before loading a model or reading data."""
    from zscir.train.distributed import barrier

    out = Path(out)
    check_run(out, trainer, files)
    if ctx is not None:
        barrier(ctx)  # every rank has seen the folder as it was before the main rank writes into it
    if ctx is None or ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not has_marker(out, RUN_MARKER):
            write_marker(out, RUN_MARKER, {"created_by": trainer}, indent=1)
        rec = Recorder(out, RUN_MARKER)
        dirs = sorted({f.rsplit("/", 1)[0] for f in files if "/" in f})
        for d in dirs:
            rec.mkdir(d)
        recorded, _ = read_journal(out, RUN_MARKER)
        for f in files:
            if f not in recorded:
                rec.claim(f)
        rec.close()
    return out
