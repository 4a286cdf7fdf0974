"""WebDataset tar shards exactly as img2dataset writes them: ``{key}.jpg|jpeg|png|webp`` + ``{key}.txt``
and/or ``{key}.json`` (caption field ``caption``, ``text`` or ``title``).

Reading, grouping files into samples and opening shards is the `webdataset` library's
(``tarfile_samples``); this module only chooses which shards a reader takes and turns the library's
exceptions into `Problem`s. A shard that ends early raises inside the tar reader: the handler records it
and the library moves to the next shard, so only the records after the break are lost.

Splitting: with at least as many shards as readers (ranks x workers) each reader takes whole shards
(``shards[index::count]``); with fewer, every reader scans every shard and keeps every ``count``-th sample,
so each sample is still read by exactly one reader.
"""

from __future__ import annotations

import json
import random
from typing import Iterator

from zscir.data.records import Problem
from zscir.data.source import PairSource, Partition, RawPair, file_fingerprint
from zscir.data.spec import check_shard_commands, expand_shards

__all__ = ["WebDatasetSource", "IMAGE_EXTS", "CAPTION_FIELDS", "caption_from_sample"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
#: fields of ``{key}.json`` that hold the caption, in order of preference (img2dataset writes ``caption``)
CAPTION_FIELDS = ("caption", "text", "title", "txt")


def caption_from_sample(sample: dict, text_key: str | None = None) -> str | None:
    """The caption of a WebDataset sample: ``.txt`` (or ``text_key``), else a caption field of ``.json``."""
    keys = (text_key,) if text_key else ("txt", "text", "caption")
    for k in keys:
        if k in sample and sample[k] is not None:
            v = sample[k]
            return (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)).strip()
    if "json" in sample:
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError):
            return None
        for f in CAPTION_FIELDS:
            if isinstance(meta, dict) and meta.get(f):
                return str(meta[f]).strip()
    return None


class WebDatasetSource(PairSource):
    """Pairs from WebDataset shards (a brace pattern, a glob, a folder of ``*.tar``)."""

    def __init__(self, location: str, spec: str = "", text_key: str | None = None, image_key: str | None = None,
                 allow_pipe: bool = False):
        self.location = location
        self.spec = spec or f"wds:{location}"
        self.shards = expand_shards(location)
        check_shard_commands(self.shards, self.spec, allow_pipe)  # pipe:/URL shards only with --allow-pipe
        self.text_key = text_key
        self.image_keys = (image_key,) if image_key else IMAGE_EXTS
        self.size = None

    def fingerprint(self) -> str:
        return file_fingerprint(self.shards, f"wds|{self.text_key}|{self.image_keys}")

    def describe(self) -> str:
        return f"{self.spec} ({len(self.shards)} shards)"

    def iter_raw(self, partition: Partition = Partition(), epoch: int = 0, seed: int = 0,
                 shuffle: bool = False) -> Iterator[RawPair | Problem]:
        from webdataset.tariterators import tarfile_samples

        shards = list(self.shards)
        if shuffle:
            random.Random(f"{seed}/{epoch}").shuffle(shards)
        per_sample = len(shards) < partition.count
        mine = shards if per_sample else shards[partition.index::partition.count]
        pending: list[Problem] = []

        def handler(exn: Exception) -> bool:
            where = next((str(a) for a in reversed(exn.args) if isinstance(a, str) and a.endswith(".tar")), "shard")
            code = "truncated_shard" if "tar" in type(exn).__module__ or "EOF" in str(exn) or \
                "truncated" in str(exn).lower() or "unexpected end" in str(exn).lower() else "bad_shard"
            pending.append(Problem(code, where, f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}"))
            return True

        n = 0
        for sample in tarfile_samples(({"url": u} for u in mine), handler=handler):
            yield from pending
            pending.clear()
            if per_sample:
                n += 1
                if not partition.takes(n - 1):
                    continue
            key = f"{sample.get('__url__', '')}/{sample['__key__']}"
            ext = next((e for e in self.image_keys if e in sample), None)
            if ext is None:
                yield Problem("no_image", key, f"no image file ({'/'.join(self.image_keys)}) for this key")
                continue
            caption = caption_from_sample(sample, self.text_key)
            if not caption:
                yield Problem("no_caption", key, "no .txt and no caption field in .json")
                continue
            yield RawPair(sample["__key__"], sample[ext], (caption,), {"shard": sample.get("__url__")})
        yield from pending
