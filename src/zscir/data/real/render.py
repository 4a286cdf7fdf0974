"""Render the corpus's selected items on several cores, in their order: the output stays byte-identical.

Decoding PNGs and rasterising SVGs is the corpus build's cost (60,000 pictures), and it parallelises per
item. Items carry their loader as a closure, which cannot be pickled, so the worker processes are forked
with the item list and receive only indices; `Pool.imap` returns results in input order, so the shards are
the same for any number of workers. An item that fails (a broken file, a refused SVG) comes back with its
reason instead of bytes: one bad file never stops the build.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Callable, Iterator, Sequence

from PIL import Image

from zscir.data.real.item import RealItem

Encode = Callable[[Image.Image], bytes]
_JOB: tuple[Sequence[RealItem], Encode] | None = None  # what forked workers render (set before forking)


def _render_one(i: int) -> tuple[bytes | None, str | None]:
    assert _JOB is not None
    items, encode = _JOB
    try:
        return encode(items[i].load()), None
    except Exception as e:  # noqa: BLE001 - a broken package file must not stop the build
        return None, f"{type(e).__name__}: {e}"


def render_items(items: Sequence[RealItem], encode: Encode, workers: int = 1,
                 chunksize: int = 8) -> Iterator[tuple[RealItem, bytes | None, str | None]]:
    """``(item, encoded bytes or None, failure reason or None)`` for each item, in order."""
    global _JOB
    workers = max(1, min(workers, os.cpu_count() or 1, len(items) or 1))
    _JOB = (items, encode)
    try:
        if workers == 1 or "fork" not in mp.get_all_start_methods():
            for i, item in enumerate(items):
                data, err = _render_one(i)
                yield item, data, err
            return
        with mp.get_context("fork").Pool(workers) as pool:
            for i, (data, err) in enumerate(pool.imap(_render_one, range(len(items)), chunksize=chunksize)):
                yield items[i], data, err
    finally:
        _JOB = None
