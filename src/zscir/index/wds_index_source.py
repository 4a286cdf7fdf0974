"""Index source ``webdataset``: img2dataset's shards (``{key}.jpg`` + ``{key}.txt`` / ``{key}.json``).

Spec: ``wds:PATTERN``, or a pattern that ends in ``.tar`` / ``.tar.gz``: brace lists (``{00000..00331}``),
globs, ``::``-joined lists, a folder of ``*.tar`` after ``wds:`` — expanded by the data layer
(`zscir.data.spec.expand_shards`: the brace count is capped before anything is expanded; local shards must be
regular files). Shards named by a URL are read through fsspec with ``allow_remote`` (or ``allow_pipe``);
``pipe:CMD`` shards run CMD only with ``allow_pipe`` (`zscir.data.spec.check_shard_commands`).

Partitions: shard ``j`` (in spec order) belongs to partition ``j % n``, so a partition is a fixed set of
whole shard files and a re-run reads exactly the same ones. `default_partitions` is one per shard (at most
`MAX_DEFAULT_PARTITIONS`).

Ids: the sample's ``__key__`` (img2dataset keys are unique across a dataset: they start with the shard
number), escaped like file names (`zscir.index.names.escape_name`). A key seen twice in one partition is an
error record (``duplicate_key``, naming both shards), never a silent overwrite; keys that repeat across
partitions cannot be seen by one partition and are left to the engine's merge, or avoided with
``shard_ids=True``: ids ``SHARD/KEY`` (the shard's file name without ``.tar``; the path below the shards'
common folder when two shards share a name), unique by construction.

Reading: the tar stream is walked by `tarfile` in stream mode (``r|*``: ``.tar`` and ``.tar.gz``) rather than
by webdataset's expander, because a member's size is checked *before* it is read: an image member over the
byte cap is refused without loading it, and members that are neither an image nor ``txt``/``json`` are never
read. A sample without an image, an empty or over-large image, an unreadable or cut shard is an error record;
the samples before a break are kept. Captions come from `zscir.data.wds_source.sample_captions`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import tarfile
import zlib
from typing import Any, Iterator, Sequence

from zscir.data.cells import BadCell, parse_json
from zscir.data.files import open_regular
from zscir.data.records import DataError
from zscir.data.spec import check_shard_commands, expand_shards
from zscir.data.wds_source import IMAGE_EXTS, sample_captions, stated_size, tar_end_problem
from zscir.index.names import escape_name
from zscir.index.source_rules import (DEFAULT_MAX_BYTES, MAX_DEFAULT_PARTITIONS, check_partition, check_protocol,
                                      error_record, local_path, open_url, refuse_options, value_scheme)
from zscir.index.sources import SourceError, SourceRecord, register_source

__all__ = ["WebDatasetIndexSource", "is_shard_spec", "META_MAX_BYTES"]

logger = logging.getLogger(__name__)

#: the largest ``.txt`` / ``.json`` member read for metadata (larger ones are ignored, not loaded)
META_MAX_BYTES = 1 << 20
_META_EXTS = ("txt", "json")
_OPTIONS = ("allow_pipe", "allow_remote", "max_bytes", "shard_ids")


def is_shard_spec(spec: str) -> bool:
    """``wds:...`` or a pattern ending in ``.tar`` / ``.tar.gz``."""
    s = spec.strip().lower()
    return s.startswith("wds:") or s.endswith((".tar", ".tar.gz", ".tgz"))


def _labels(shards: Sequence[str]) -> list[str]:
    """A short, unique name per shard: its file name, or its path below the common folder on a clash."""
    base = [posixpath.basename(s.rstrip("/")) or s for s in shards]
    if len(set(base)) == len(base):
        return base
    try:
        root = os.path.commonpath(shards)
    except ValueError:  # a mix of absolute and relative paths
        return list(shards)
    return [os.path.relpath(s, root) if root else s for s in shards]


def _stem(label: str) -> str:
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if label.endswith(suffix):
            return label[: -len(suffix)]
    return label


def _split_name(name: str) -> tuple[str | None, str]:
    """(key, extension) of a member name as webdataset splits it: key up to the file name's first dot."""
    folder, _, base = name.rpartition("/")
    if "." not in base or base.startswith("."):
        return None, ""
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


class WebDatasetIndexSource:
    """The samples of WebDataset shards, partitioned by whole shards (see the module docstring)."""

    kind = "webdataset"

    def __init__(self, spec: str | Sequence[str], *, allow_pipe: bool = False, allow_remote: bool = False,
                 max_bytes: int = DEFAULT_MAX_BYTES, shard_ids: bool = False):
        text = spec if isinstance(spec, str) else "::".join(spec)
        self.spec = text
        location = text.strip()
        location = location[4:] if location[:4].lower() == "wds:" else location
        if not location:
            raise SourceError(f"{text!r}: names no shard")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise SourceError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        try:
            shards = expand_shards(location)
        except DataError as e:
            raise SourceError(str(e)) from None
        if len(set(shards)) != len(shards):
            seen: set[str] = set()
            twice = next(s for s in shards if s in seen or seen.add(s))
            raise SourceError(f"{text}: shard {twice!r} is named more than once; each shard must be listed once")
        commands = [s for s in shards if value_scheme(s) == "pipe"]
        urls = [s for s in shards if value_scheme(s) not in ("", "pipe", "file")]
        try:
            check_shard_commands(commands, text, allow_pipe)  # the one owner of the pipe: rule
        except DataError as e:
            raise SourceError(str(e)) from None
        if urls and not (allow_remote or allow_pipe):
            raise SourceError(f"{text}: shard {urls[0]!r} is a URL; zscir fetches URLs only when you allow it "
                              "with --allow-remote (allow_remote=True), see docs/DATA.md")
        for scheme in sorted({value_scheme(u) for u in urls}):
            check_protocol(next(u for u in urls if value_scheme(u) == scheme))
        self.shards = shards
        self.labels = _labels(shards)
        self.max_bytes = max_bytes
        self.shard_ids = bool(shard_ids)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "spec": self.spec, "shards": len(self.shards),
                "ids": "shard/key" if self.shard_ids else "key"}

    def default_partitions(self) -> int:
        return max(1, min(len(self.shards), MAX_DEFAULT_PARTITIONS))

    def partition_shards(self, i: int, n: int) -> list[str]:
        """The shard files of partition ``i`` of ``n`` (shard ``j`` goes to ``j % n``)."""
        check_partition(i, n)
        return self.shards[i::n]

    def iter_partition(self, i: int, n: int) -> Iterator[SourceRecord]:
        check_partition(i, n)
        seen: dict[str, str] = {}  # id -> shard label where it was first read
        dups = 0
        for j in range(i, len(self.shards), n):
            shard, label = self.shards[j], self.labels[j]
            for rec in self._shard_records(shard, label):
                if rec.meta.get("key") is None:  # a shard-level error record
                    yield rec
                    continue
                first = seen.get(rec.id)
                if first is not None:
                    dups += 1  # the error's id names the shard and stays unique: "0001.tar/KEY#dup2"
                    yield error_record(f"{label}/{rec.meta['key']}#dup{dups}", "duplicate_key",
                                       f"id {rec.id!r} again (first in {first}); use shard_ids (--shard-ids) "
                                       "if keys repeat across shards",
                                       key=rec.meta["key"], image_path=rec.meta.get("image_path"))
                    continue
                seen[rec.id] = label
                yield rec

    # -- one shard ---------------------------------------------------------------------------------------

    def _open(self, shard: str):
        scheme = value_scheme(shard)
        if scheme == "pipe":  # only here when check_shard_commands allowed it
            from webdataset import gopen

            return gopen(shard, "rb")
        if scheme and scheme != "file":
            return open_url(shard)
        return open_regular(local_path(shard), "shard")

    def _shard_records(self, shard: str, label: str) -> Iterator[SourceRecord]:
        n, clean = 0, True
        try:
            stream = self._open(shard)
        except DataError as e:
            yield error_record(label, "bad_shard", str(e).removeprefix(f"{shard}: "), image_path=shard)
            return
        except Exception as e:  # noqa: BLE001 - fsspec / gopen raise many types
            yield error_record(label, "bad_shard", f"cannot open ({type(e).__name__}: {str(e)[:200]})",
                               image_path=shard)
            return
        samples = self._samples(stream)
        try:
            with stream:
                while True:
                    try:
                        sample = next(samples)
                    except StopIteration:
                        break
                    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as e:
                        clean = False
                        text = str(e) or type(e).__name__
                        code = "truncated_shard" if "unexpected end" in text or isinstance(e, EOFError) \
                            else "bad_shard"
                        yield error_record(label, code, f"after {n} samples: {type(e).__name__}: {text[:200]}",
                                           image_path=shard)
                        break
                    n += 1
                    yield self._record(sample, shard, label)
        except Exception as e:  # noqa: BLE001 - a pipe: command's exit status is raised at close
            if clean:
                clean = False
                yield error_record(label, "bad_shard", f"{type(e).__name__}: {str(e)[:200]}", image_path=shard)
        if clean:
            why = tar_end_problem(shard)
            stated = stated_size(shard)
            if why:
                yield error_record(label, "truncated_shard", f"read {n} samples; {why}", image_path=shard)
            elif stated is not None and stated[0] != n:
                yield error_record(label, "size_mismatch", f"read {n} samples; {stated[1]} states {stated[0]}",
                                   image_path=shard)

    def _samples(self, stream) -> Iterator[dict[str, Any]]:
        """Consecutive members with one key, grouped: ``{"__key__", ext: bytes, ...}``; an image member over
        the byte cap is recorded as ``"__too_large__"`` without being read."""
        current: dict[str, Any] | None = None
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                tar.members = []  # stream mode keeps every TarInfo otherwise
                if not member.isreg():
                    continue
                key, ext = _split_name(member.name)
                if key is None or key.startswith("__") or "/__" in key:
                    continue
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key}
                if ext in current or ext not in IMAGE_EXTS + _META_EXTS:
                    continue  # a repeated or unused member is never read
                cap = self.max_bytes if ext in IMAGE_EXTS else META_MAX_BYTES
                if member.size > cap:
                    current.setdefault("__too_large__", (ext, member.size))
                    continue
                f = tar.extractfile(member)
                current[ext] = f.read() if f is not None else b""
        if current is not None:
            yield current

    def _record(self, sample: dict[str, Any], shard: str, label: str) -> SourceRecord:
        key = escape_name(sample["__key__"])
        rid = f"{escape_name(_stem(label))}/{key}" if self.shard_ids else key
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        meta: dict[str, Any] = {"key": key, "shard": label,
                                "image_path": f"{shard}/{key}.{ext}" if ext else f"{shard}/{key}"}
        try:
            captions = sample_captions(sample)
        except BadCell:
            captions = ()
        if captions:
            meta["caption"] = captions[0]
        if "json" in sample:
            try:
                info = parse_json(sample["json"])
            except (ValueError, UnicodeDecodeError):
                info = None
            if isinstance(info, dict) and isinstance(info.get("url"), str):
                meta["url"] = info["url"]
        if ext is None:
            big = sample.get("__too_large__")
            if big and big[0] in IMAGE_EXTS:
                return error_record(rid, "file_too_large", f"{big[0]} member of {big[1]} bytes exceeds the limit "
                                    f"of {self.max_bytes}", **meta)
            return error_record(rid, "no_image", f"no image member ({'/'.join(IMAGE_EXTS)}) for this key", **meta)
        if not sample[ext]:
            return error_record(rid, "empty", f"empty {ext} member", **meta)
        return SourceRecord(id=rid, data=sample[ext], meta=meta)


def _open_source(spec: str, **options: Any) -> WebDatasetIndexSource:
    return WebDatasetIndexSource(spec, **refuse_options("webdataset", options, _OPTIONS))


register_source("webdataset", is_shard_spec, _open_source)
