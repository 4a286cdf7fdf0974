"""WebDataset tar shards exactly as img2dataset writes them: ``{key}.jpg|jpeg|png|webp`` + ``{key}.txt``
and/or ``{key}.json`` (caption field ``caption``, ``text`` or ``title``).

Reading tar members and grouping them into samples is the `webdataset` library's (``tar_file_expander``,
``group_by_keys``; ``tarfile_samples`` for remote shards); this module chooses which shards a reader takes,
opens local shards, checks each shard's end and turns the library's exceptions into `Problem`s. Local
shards are opened as regular files only (`zscir.data.files`): a FIFO named ``x.tar`` is refused instead
of blocking the reader forever. A shard that ends early inside a member raises in the tar reader: the
handler records it and the reader moves to the next shard, so only the records after the break are lost.
A shard cut *at* a member boundary reads without an error; it is reported (``truncated_shard``) when it
lacks tar's end-of-archive marker or holds fewer samples than its writer recorded (img2dataset's
``<name>_stats.json``). Captions are read by `zscir.data.cells` (non-text and over-long ones are problems).

Splitting: with at least as many shards as readers (ranks x workers) each reader takes whole shards
(``shards[index::count]``); with fewer, every reader scans every shard and keeps every ``count``-th sample,
so each sample is still read by exactly one reader.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Iterator

from zscir.data.cells import BadCell, caption_variants, parse_json
from zscir.data.files import open_regular
from zscir.data.records import DataError, Problem
from zscir.data.source import PairSource, Partition, RawPair, file_fingerprint
from zscir.data.spec import check_shard_commands, expand_shards

__all__ = ["WebDatasetSource", "IMAGE_EXTS", "CAPTION_FIELDS", "sample_captions", "sample_json", "stated_size",
           "tar_end_problem"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
#: fields of ``{key}.json`` that hold the caption, in order of preference (img2dataset writes ``caption``)
CAPTION_FIELDS = ("caption", "text", "title", "txt")
_TAR_BLOCK = 512


def sample_captions(sample: dict, text_key: str | None = None) -> tuple[str, ...]:
    """Caption variants of a WebDataset sample: ``.txt`` (or ``text_key``), else a caption field of ``.json``.

    Empty when there is none; `zscir.data.cells.BadCell` when the caption is not text or is too long.
    """
    keys = (text_key,) if text_key else ("txt", "text", "caption")
    for k in keys:
        if k in sample and sample[k] is not None:
            return caption_variants(sample[k])
    if "json" in sample:
        try:
            meta = parse_json(sample["json"])
        except (ValueError, UnicodeDecodeError):
            return ()
        if isinstance(meta, dict):
            for f in CAPTION_FIELDS:
                if meta.get(f) is not None and meta.get(f) != "":
                    return caption_variants(meta[f])
    return ()


def sample_json(sample: dict) -> dict | None:
    """A WebDataset sample's ``.json`` as a dict, or None when it has none (or it is no JSON object)."""
    if "json" not in sample:
        return None
    try:
        meta = parse_json(sample["json"])
    except (ValueError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def stated_size(shard: str) -> tuple[int, str] | None:
    """(samples, file) the shard's writer recorded, when it did: img2dataset's ``<name>_stats.json``
    (``successes``) next to ``<name>.tar``. None for remote shards or without such a file."""
    if not _local(shard):
        return None
    p = Path(shard)
    stem = p.name.split(".tar")[0]
    stats = p.with_name(f"{stem}_stats.json")
    if not stats.is_file():
        return None
    try:
        with open_regular(stats, "stats file") as f:
            meta = parse_json(f.read(1 << 20))
    except (DataError, OSError, ValueError, UnicodeDecodeError):
        return None
    n = meta.get("successes") if isinstance(meta, dict) else None
    return (n, stats.name) if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else None


def tar_end_problem(shard: str) -> str | None:
    """Why a local uncompressed ``.tar`` does not end as tar files end, or None when it does.

    tar (and webdataset's ``TarWriter``) close an archive with two zero blocks; a shard cut at a member
    boundary lacks them, and the tar reader then stops silently at the cut. A ``.tar.gz`` or a remote
    shard is not checked (None).
    """
    if not (_local(shard) and shard.endswith(".tar")):
        return None
    try:
        with open_regular(shard, "shard") as f:
            size = os.fstat(f.fileno()).st_size
            if size % _TAR_BLOCK:
                return f"{size} bytes is not a whole number of tar blocks: the shard was cut short"
            if size < 2 * _TAR_BLOCK:
                return "shorter than a tar end marker: the shard was cut short"
            f.seek(size - 2 * _TAR_BLOCK)
            tail = f.read(2 * _TAR_BLOCK)
    except (DataError, OSError):
        return None  # unreadable now: the read itself reported it
    if tail.count(0) != len(tail):
        return "no end-of-archive marker: the shard was cut short and the samples after the cut are lost"
    return None


class WebDatasetSource(PairSource):
    """Pairs from WebDataset shards (a brace pattern, a glob, a folder of ``*.tar``).

    ``samples_read`` maps each shard to the samples this process read from it in its last pass (what
    ``zscir data inspect`` prints per shard).
    """

    def __init__(self, location: str, spec: str = "", text_key: str | None = None, image_key: str | None = None,
                 allow_pipe: bool = False):
        self.location = location
        self.spec = spec or f"wds:{location}"
        self.shards = expand_shards(location)
        check_shard_commands(self.shards, self.spec, allow_pipe)  # pipe:/URL shards only with --allow-pipe
        self.text_key = text_key
        self.image_keys = (image_key,) if image_key else IMAGE_EXTS
        self.size = None
        self.samples_read: dict[str, int] = {}

    def fingerprint(self) -> str:
        return file_fingerprint(self.shards, f"wds|{self.text_key}|{self.image_keys}")

    def describe(self) -> str:
        return f"{self.spec} ({len(self.shards)} shards)"

    @staticmethod
    def _shard_samples(url: str, problems: list[Problem]) -> Iterator[dict[str, Any]]:
        """The samples of one shard; problems (unreadable, truncated, bad members) go into ``problems``.

        A local shard is opened by `open_regular` (a FIFO is refused, not waited on); remote and ``pipe:``
        shards are opened by webdataset."""
        from webdataset.tariterators import group_by_keys, tar_file_expander, tarfile_samples

        def handler(exn: Exception) -> bool:
            text = str(exn.args[0]) if exn.args else str(exn)
            code = "truncated_shard" if "tar" in type(exn).__module__ or "EOF" in text or \
                "truncated" in text.lower() or "unexpected end" in text.lower() else "bad_shard"
            problems.append(Problem(code, url, f"{type(exn).__name__}: {text[:300]}"))
            return True

        if not _local(url):
            yield from tarfile_samples([{"url": url}], handler=handler)
            return
        try:
            stream = open_regular(url, "shard")
        except DataError as e:
            problems.append(Problem("bad_shard", url, str(e).removeprefix(f"{url}: ")))
            return
        with stream:
            yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}], handler=handler),
                                     handler=handler)

    def _shard_end(self, url: str, n: int, clean: bool) -> Iterator[Problem]:
        """After a whole shard: one problem if it lacks its end marker or holds another number of samples
        than its writer recorded."""
        self.samples_read[url] = n
        why = tar_end_problem(url) if clean else None
        reasons = [why] if why else []
        stated = stated_size(url)
        if stated is not None and stated[0] != n:
            reasons.append(f"{stated[1]} states {stated[0]}")
        if reasons:
            code = "truncated_shard" if why or n < stated[0] else "size_mismatch"
            yield Problem(code, url, f"read {n} samples; {'; '.join(reasons)}")

    def iter_raw(self, partition: Partition = Partition(), epoch: int = 0, seed: int = 0,
                 shuffle: bool = False) -> Iterator[RawPair | Problem]:
        shards = list(self.shards)
        if shuffle:
            random.Random(f"{seed}/{epoch}").shuffle(shards)
        per_sample = len(shards) < partition.count
        mine = shards if per_sample else shards[partition.index::partition.count]
        self.samples_read = {}
        n = 0
        for url in mine:
            pending: list[Problem] = []
            clean, in_shard = True, 0
            for sample in self._shard_samples(url, pending):
                in_shard += 1
                clean = clean and not pending
                yield from pending
                pending.clear()
                if per_sample:
                    n += 1
                    if not partition.takes(n - 1):
                        continue
                yield self._pair(sample)
            clean = clean and not pending
            yield from pending
            yield from self._shard_end(url, in_shard, clean)

    def _pair(self, sample: dict[str, Any]) -> RawPair | Problem:
        key = f"{sample.get('__url__', '')}/{sample['__key__']}"
        ext = next((e for e in self.image_keys if e in sample), None)
        if ext is None:
            return Problem("no_image", key, f"no image file ({'/'.join(self.image_keys)}) for this key")
        try:
            captions = sample_captions(sample, self.text_key)
        except BadCell as e:
            return Problem(e.code, key, str(e))
        if not captions:
            return Problem("no_caption", key, "no .txt and no caption field in .json")
        meta = {"shard": sample.get("__url__")}
        if (j := sample_json(sample)) is not None:
            meta["json"] = j  # the item's metadata (concept, variant, style...: make-triplets -g variants)
        return RawPair(sample["__key__"], sample[ext], captions, meta)
