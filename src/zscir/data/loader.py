"""Streaming batches from any pair source: decode, resize, shuffle buffer, batch — in DataLoader workers.

One pipeline for every source (open_clip's ``get_wds_dataset`` shape): the source yields raw items of its
partition, a worker decodes them through the hardened loader (`zscir.data.images`), keeps a shuffle buffer
and emits batches of uint8 pixels. The partition is (rank x workers + worker) of (world size x workers),
so under ``torchrun`` every rank, and inside it every worker, reads a disjoint share of the data and one
epoch sees each sample exactly once. Problems met in a worker travel with the next batch to the main
process, which records them in the dataset's `Problems` log (once per distinct item, whatever the epoch).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from zscir.backbones.devices import pin_memory as pin_for
from zscir.data.images import open_image, to_uint8
from zscir.data.records import DataError, Problem, Problems
from zscir.data.source import PairSource, Partition

__all__ = ["PairBatch", "PairStream", "PairLoader", "collate_batches"]


@dataclass
class PairBatch:
    """A batch of decoded pairs: ``pixels`` (B, S, S, 3) uint8, ``captions`` every caption variant per item."""

    keys: list[str]
    pixels: torch.Tensor
    captions: list[tuple[str, ...]]
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def pin_memory(self) -> "PairBatch":
        """The batch with page-locked pixels (called by a DataLoader with ``pin_memory=True``)."""
        return PairBatch(self.keys, self.pixels.pin_memory(), self.captions, self.problems)


def _shuffled(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer of ``size`` items (webdataset's ``shuffle`` stage, seeded)."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(len(buf))
        buf[j], item = item, buf[j]
        yield item
    rng.shuffle(buf)
    yield from buf


class PairStream(IterableDataset):
    """Batches of one epoch of ``source`` for this process's partition (see the module docstring)."""

    def __init__(self, source: PairSource, image_size: int, batch_size: int, *, shuffle: bool = False,
                 shuffle_buffer: int = 1000, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False):
        self.source, self.image_size, self.batch_size = source, image_size, batch_size
        self.shuffle, self.shuffle_buffer, self.seed, self.epoch = shuffle, shuffle_buffer, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last

    def partition(self) -> Partition:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return Partition(self.rank * nw + wid, self.world_size * nw)

    def _decoded(self, part: Partition, problems: list[Problem]) -> Iterator[tuple]:
        for item in self.source.iter_raw(part, self.epoch, self.seed, self.shuffle):
            if isinstance(item, Problem):
                problems.append(item)
                continue
            shard = item.meta.get("shard")
            where = f"{shard}/{item.key}" if shard else item.key
            im = open_image(item.image, where)
            if isinstance(im, Problem):
                problems.append(im)
                continue
            yield item.key, to_uint8(im, self.image_size), item.captions

    def __iter__(self) -> Iterator[PairBatch]:
        part = self.partition()
        problems: list[Problem] = []
        items = self._decoded(part, problems)
        if self.shuffle and self.shuffle_buffer > 1:
            items = _shuffled(items, self.shuffle_buffer, random.Random(f"{self.seed}/{self.epoch}/{part.index}"))
        batch: list[tuple] = []
        for item in items:
            batch.append(item)
            if len(batch) == self.batch_size:
                yield self._make(batch, problems)
                batch, problems = [], []
        if (batch and not self.drop_last) or problems:
            yield self._make(batch if not self.drop_last else [], problems)

    def _make(self, batch: list[tuple], problems: list[Problem]) -> PairBatch:
        s = self.image_size
        pixels = torch.from_numpy(np.stack([b[1] for b in batch])) if batch else torch.zeros(0, s, s, 3, dtype=torch.uint8)
        return PairBatch([b[0] for b in batch], pixels, [b[2] for b in batch], list(problems))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is the workers' job; one thread each avoids oversubscription


def collate_batches(x):
    return x


class PairLoader:
    """Iterates `PairBatch`es epoch after epoch (``epochs=None``: forever), recording problems once.

    ``workers`` DataLoader processes decode in parallel; ``rank``/``world_size`` default to torchrun's.
    ``pin_memory`` pins the pixels for a fast copy to a GPU; off by default, and off wherever no CUDA device
    is visible (`zscir.backbones.devices.pin_memory`).
    """

    def __init__(self, source: PairSource, problems: Problems, image_size: int, batch_size: int, *,
                 shuffle: bool = True, shuffle_buffer: int = 1000, workers: int = 0, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None, drop_last: bool = False,
                 prefetch: int = 4, pin_memory: bool = False):
        if rank is None or world_size is None:
            from zscir.data.dist_context import init_distributed

            ctx = init_distributed()
            rank, world_size = ctx.rank, ctx.world_size
        self.source, self.problems = source, problems
        self.kw = dict(image_size=image_size, batch_size=batch_size, shuffle=shuffle, shuffle_buffer=shuffle_buffer,
                       seed=seed, rank=rank, world_size=world_size, drop_last=drop_last)
        self.workers, self.prefetch = workers, prefetch
        self.pin_memory = pin_for("cuda", pin_memory)
        self.epoch = 0
        self._seen: set[tuple[str, str]] = set()

    def epoch_batches(self, epoch: int) -> Iterator[PairBatch]:
        """One epoch of this process's batches (empty batches that only carried problems are dropped)."""
        stream = PairStream(self.source, epoch=epoch, **self.kw)
        extra = dict(prefetch_factor=self.prefetch, worker_init_fn=_worker_init) if self.workers else {}
        dl = DataLoader(stream, batch_size=None, num_workers=self.workers, collate_fn=collate_batches,
                        pin_memory=self.pin_memory, **extra)
        for b in dl:
            for p in b.problems:
                if (p.code, p.where) not in self._seen:
                    self._seen.add((p.code, p.where))
                    self.problems.add(p)
            if len(b):
                yield b

    def __iter__(self) -> Iterator[PairBatch]:
        """Forever: epoch 0, 1, 2, ... (a step-count trainer stops when it has enough)."""
        while True:
            n = 0
            for b in self.epoch_batches(self.epoch):
                n += 1
                yield b
            self.epoch += 1
            if n == 0:
                if self.kw["drop_last"]:  # only full batches are kept: the share may be smaller than one
                    raise DataError(f"{self.source.describe()}: no full batch of {self.kw['batch_size']} in this "
                                    f"process's share of the data (fewer usable samples than the batch size; "
                                    f"use a smaller --batch-size) ({self.problems.summary()})")
                raise DataError(f"{self.source.describe()}: no usable sample in this process's share "
                                f"({self.problems.summary()})")
