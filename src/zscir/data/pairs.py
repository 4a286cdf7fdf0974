"""`get_pair_data`: one entry point for image–caption data, whatever the source (open_clip's ``get_data``).

The spec's kind (`zscir.data.spec`) selects the source; the returned `PairData` gives the same three views
of any of them:

* ``records()`` — decoded `PairRecord`s, one process (inspection, small jobs);
* ``loader(...)`` — a `PairLoader` of uint8 batches with DataLoader workers, a shuffle buffer and the
  rank x worker split (streaming: data larger than RAM);
* ``table(size)`` — every image decoded once into one uint8 array (`PairTable`), for data that fits in RAM
  and trainers that draw random batches (the world's exact recipe).

Bad items are skipped and land in ``problems`` (counted and listed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from zscir.data.images import open_image, to_uint8
from zscir.data.loader import PairLoader
from zscir.data.records import DataError, PairRecord, Problem, Problems
from zscir.data.source import PairSource, Partition
from zscir.data.spec import DataSpec, parse_spec

logger = logging.getLogger(__name__)

__all__ = ["PairData", "PairTable", "get_pair_data", "pair_source"]


@dataclass
class PairTable:
    """Materialised pairs: ``images`` (N, S, S, 3) uint8 and every caption variant of each."""

    keys: list[str]
    images: np.ndarray
    captions: list[tuple[str, ...]]
    primary: list[str] = field(default_factory=list)  # the caption of each item (default: its first variant)

    def __post_init__(self) -> None:
        if not self.primary:
            self.primary = [c[0] for c in self.captions]

    def __len__(self) -> int:
        return len(self.keys)

    def split(self, n_tail: int) -> tuple["PairTable", "PairTable"]:
        """(head, tail): the last ``n_tail`` items held out (validation when no --val-data is given)."""
        k = len(self) - n_tail
        if k <= 0:
            raise DataError(f"cannot hold out {n_tail} of {len(self)} pairs for validation (use --val-data or fewer)")
        return (PairTable(self.keys[:k], self.images[:k], self.captions[:k], self.primary[:k]),
                PairTable(self.keys[k:], self.images[k:], self.captions[k:], self.primary[k:]))


def pair_source(spec: str | DataSpec, *, image_root=None, image_column=None, text_column=None, streaming=None,
                n: int | None = None, world_seed: int = 0, image_size: int = 64,
                allow_pipe: bool = False) -> PairSource:
    """The `PairSource` a spec names (see `zscir.data.spec` for the syntax); ``allow_pipe`` lets WebDataset
    shards be ``pipe:`` commands or URLs (`zscir.data.spec.check_shard_commands`)."""
    s = parse_spec(spec)
    if s.kind == "world":
        from zscir.data.world_source import WorldPairSource

        return WorldPairSource(world_seed, s.split or "train", n, image_size, spec=s.text)
    if s.kind == "wds":
        from zscir.data.wds_source import WebDatasetSource

        return WebDatasetSource(s.location, s.text, text_key=text_column, image_key=image_column,
                                allow_pipe=allow_pipe)
    if s.kind == "manifest":
        from zscir.data.manifest_source import ManifestSource

        return ManifestSource(s.location, s.text, image_root, image_column, text_column)
    if s.kind == "hf":
        from zscir.data.hf_source import HFSource

        return HFSource(s.location, s.split, s.text, image_column, text_column, bool(streaming))
    raise DataError(f"unknown data kind {s.kind!r}")


class PairData:
    """Image–caption pairs from one source (see the module docstring). ``limit`` caps the items read."""

    def __init__(self, source: PairSource, limit: int | None = None):
        self.source = source
        self.limit = limit
        self.problems = Problems()

    @property
    def spec(self) -> str:
        return self.source.spec

    @property
    def is_world(self) -> bool:
        return parse_spec(self.source.spec).is_world if self.source.spec else False

    def fingerprint(self) -> str:
        return f"{self.source.fingerprint()}-n{self.limit}" if self.limit else self.source.fingerprint()

    def report(self, n_usable: int) -> None:
        """After a full read: a `DataError` when nothing was usable, else a warning summing up what was skipped."""
        if not n_usable:
            raise DataError(f"{self.source.describe()}: no usable image–caption pair ({self.problems.summary()})")
        if self.problems.total:
            logger.warning("%s: skipped %s", self.spec, self.problems.summary())

    def records(self, limit: int | None = None) -> Iterator[PairRecord]:
        """Decoded records in source order (one process); problems are logged and skipped."""
        limit = limit if limit is not None else self.limit
        n = 0
        for item in self.source.iter_raw(Partition()):
            if limit is not None and n >= limit:
                return
            if isinstance(item, Problem):
                self.problems.add(item)
                continue
            shard = item.meta.get("shard")
            im = open_image(item.image, f"{shard}/{item.key}" if shard else item.key)
            if isinstance(im, Problem):
                self.problems.add(im)
                continue
            n += 1
            yield PairRecord(item.key, im, item.captions[0], item.captions,
                             {k: v for k, v in item.meta.items() if k != "scene"})

    def __iter__(self) -> Iterator[PairRecord]:
        return self.records()

    def captions(self, limit: int | None = None) -> Iterator[tuple[str, ...]]:
        """Caption variants of the first ``limit`` items, without decoding any image (tokenizer corpora)."""
        n = 0
        for item in self.source.iter_raw(Partition()):
            if limit is not None and n >= limit:
                return
            if not isinstance(item, Problem):
                n += 1
                yield item.captions

    def loader(self, batch_size: int, image_size: int, *, shuffle: bool = True, shuffle_buffer: int = 1000,
               workers: int = 0, seed: int = 0, rank: int | None = None, world_size: int | None = None,
               drop_last: bool = False, pin_memory: bool = False) -> PairLoader:
        """Streaming `PairBatch`es (uint8 pixels at ``image_size``), epoch after epoch; ``pin_memory``: see
        `PairLoader`."""
        return PairLoader(self.source, self.problems, image_size, batch_size, shuffle=shuffle,
                          shuffle_buffer=shuffle_buffer, workers=workers, seed=seed, rank=rank,
                          world_size=world_size, drop_last=drop_last, pin_memory=pin_memory)

    def torch_loader(self, batch_size: int, image_size: int, **kw):
        """One epoch as a plain ``torch.utils.data.DataLoader`` of `PairBatch`es (workers via ``num_workers``)."""
        from torch.utils.data import DataLoader

        from zscir.data.loader import PairStream, collate_batches

        workers = kw.pop("num_workers", 0)
        return DataLoader(PairStream(self.source, image_size, batch_size, **kw), batch_size=None,
                          num_workers=workers, collate_fn=collate_batches)

    def table(self, image_size: int, progress: bool = False, workers: int = 0) -> PairTable:
        """Every pair decoded once at ``image_size`` (in source order). The world renders its scenes as the
        trainers always did (each scene on its own, so rendering in chunks behind a progress bar gives the
        same pixels)."""
        from tqdm.auto import tqdm

        from zscir.data.world_source import WorldPairSource, render_scenes

        if isinstance(self.source, WorldPairSource):
            pairs = self.source.pairs[: self.limit] if self.limit else self.source.pairs
            pixels = render_scenes([p.scene for p in pairs], image_size, progress, desc=f"render {self.spec} pairs")
            return PairTable([p.id for p in pairs], pixels, [tuple(p.captions) for p in pairs],
                             [p.caption for p in pairs])

        keys, imgs, caps = [], [], []
        loader = PairLoader(self.source, self.problems, image_size, 256, shuffle=False, workers=workers,
                            rank=0, world_size=1)
        bar = tqdm(desc=f"decode {self.spec}", unit="img", disable=not progress, leave=False)
        for b in loader.epoch_batches(0):
            take = len(b) if self.limit is None else min(len(b), self.limit - len(keys))
            keys += b.keys[:take]
            imgs.append(b.pixels[:take].numpy())
            caps += b.captions[:take]
            bar.update(take)
            if self.limit is not None and len(keys) >= self.limit:
                break
        bar.close()
        self.report(len(keys))
        return PairTable(keys, np.concatenate(imgs), caps)


def get_pair_data(spec: str | DataSpec | None = "world", *, image_root=None, image_column: str | None = None,
                  text_column: str | None = None, streaming: bool | None = None, limit: int | None = None,
                  world_seed: int = 0, world_n: int | None = None, image_size: int = 64,
                  allow_pipe: bool = False) -> PairData:
    """Image–caption pairs named by ``spec`` (``world``, ``wds:...``, a manifest, a folder, ``hf:...``).

    ``image_root`` resolves relative manifest paths; ``image_column``/``text_column`` name the columns (or
    WebDataset extensions); ``streaming`` reads hub datasets without downloading them; ``limit`` caps the
    number of pairs. ``world_*`` configure the world source (``world_n`` pairs of seed ``world_seed``).
    ``allow_pipe``: accept ``pipe:CMD`` / URL shards, which make webdataset run shell commands — only for a
    spec the user typed with ``--allow-pipe`` (docs/DATA.md).
    """
    if limit is not None and limit < 1:
        raise DataError(f"the pair limit must be >= 1 (or None for all), got {limit}")
    src = pair_source(spec, image_root=image_root, image_column=image_column, text_column=text_column,
                      streaming=streaming, n=world_n, world_seed=world_seed, image_size=image_size,
                      allow_pipe=allow_pipe)
    return PairData(src, limit)
