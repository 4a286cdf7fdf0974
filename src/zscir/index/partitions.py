"""Indexing by fixed output partitions: the unit of work every engine (local processes, Ray, Slurm) shares.

Why partitions (as in clip-retrieval)
-------------------------------------
At many machines the question is not "how fast" but "what is left after a crash". The work is therefore cut
into ``n`` *output partitions* with fixed ids: partition ``i`` holds the items the source puts there
(:meth:`~zscir.index.sources.IndexSource.iter_partition`; for a folder the same set as ``--shard i/n``). Each
partition is embedded and written as a complete, ordinary index folder, atomically:

1. it is written into ``OUT/.work/part-iiiii.<random>/`` (a folder only this writer uses);
2. that folder is renamed to ``OUT/part-iiiii`` (one atomic rename);
3. the done marker ``OUT/part-iiiii.done`` (JSON: counts, host, time) is written atomically.

A re-run, after a dead worker, a dead driver or Ctrl-C, embeds only the partitions without a done marker; a
``part-*`` folder without its marker (a kill between 2 and 3) is redone. Two writers of the same partition
(a Ray retry racing its original, two Slurm tasks given the same id) each write their own work folder, and
the second rename finds the first and drops its own copy: no partition is ever half-written or doubled.

Why a shard set and no merge at the end: ``OUT`` with its ``part-*`` index folders is searched in place as
one gallery (:class:`zscir.index.shards.ShardSet`: ``zscir search OUT``), which is exact and costs no copy;
``zscir index merge`` can still turn it into one folder. ``OUT/zscir-partitions.json`` (the plan: source,
partition count, model and methods) is written once, by whoever comes first; a later run with another plan
is refused, and ``OUT`` must otherwise be new or empty, so no user folder is ever written into.
:func:`zscir.index.shards.unfinished_partitions` makes searching refuse a folder whose run is not done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from zscir.data.imageio import ImageLimits, ImageRejected, load_image
from zscir.index.atomic import atomic_open, atomic_write_json, fsync_dir
from zscir.index.build import decode_side, describe_composer, empty_manifest, encode_batch, generation_files
from zscir.index.folder import check_creatable, now
from zscir.index.names import printable
from zscir.index.shards import PLAN_FILE, done_marker_name, partition_done, partition_name, unfinished_partitions
from zscir.index.sources import IndexSource, SourceError, SourceRecord, open_index_source
from zscir.index.store import MANIFEST_FILE, StoreError

if TYPE_CHECKING:
    from zscir.methods.base import Composer

logger = logging.getLogger(__name__)

__all__ = ["EngineError", "PartitionJob", "PartitionResult", "PartitionsReport", "ENGINES", "WORK_DIR", "PLAN_FORMAT",
           "parse_partition", "slurm_partition", "prepare_out", "embed_partition", "run_partitions",
           "assemble", "composers_for"]

PLAN_FORMAT = "zscir-partitions"
WORK_DIR = ".work"
ENGINES = ("local", "ray")
#: engines that live in their own module (imported by name, only when asked for: Ray stays optional)
ENGINE_MODULES = {"ray": "zscir.index.ray_engine"}
#: the most partitions one plan may have (a typo like 10**9 would otherwise list a billion markers)
MAX_PARTITIONS = 1_000_000


class EngineError(RuntimeError):
    """A worker of a distributed engine failed (its own error, in one line); the done partitions are kept."""


@dataclass(frozen=True)
class PartitionJob:
    """Everything a worker needs to embed any partition: picklable, so it travels to processes and actors."""

    source: str  #: the source spec (a folder, WebDataset shards, a table)
    out_dir: str
    partitions: int
    methods: tuple[str, ...] = ("sum",)
    model: str | None = None
    checkpoint: str | None = None
    device: str = "cpu"  #: "auto": the GPU Ray or Slurm gave the worker, else the CPU
    batch_size: int = 64
    fp16: bool = False
    limits: ImageLimits = field(default_factory=ImageLimits)
    torch_threads: int | None = None  #: torch threads per worker (None: leave torch's choice)
    throttle_s: float = 0.0  #: sleep after each batch (tests slow a run down to kill it mid-way)
    #: options of a shard or table source (allow_pipe, allow_remote, image_column, ...): given again by each
    #: run, never read back from OUT's plan (a recorded ``pipe:`` permission would be a command from a file)
    source_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.partitions
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PARTITIONS:
            raise ValueError(f"--partitions {n!r}: expected a whole number from 1 to {MAX_PARTITIONS}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        if not methods or not all(isinstance(m, str) and m for m in methods):
            raise ValueError(f"methods: expected one or more method names, got {self.methods!r}")
        object.__setattr__(self, "methods", methods)

    def open_source(self) -> IndexSource:
        source = open_index_source(self.source, **self.source_options)
        if getattr(source, "kind", None) == "folder":
            out = Path(self.out_dir).resolve()
            if Path(self.source).resolve() == out:
                raise SourceError(f"{out}: the index folder cannot be the folder of images itself; choose "
                                  f"another --out")
            source.exclude = (out,)  # an OUT inside the folder is not scanned
            source.limits = self.limits
        return source

    def plan(self, source: IndexSource) -> dict[str, Any]:
        """What OUT records: a re-run or another array task must agree on all of it."""
        described = {k: v for k, v in source.describe().items() if k in ("kind", "root", "spec")}
        if "root" not in described and "spec" not in described:
            described["spec"] = self.source
        return {"format": PLAN_FORMAT, "version": 1, "partitions": self.partitions, "source": described,
                "model": self.model, "methods": list(self.methods), "checkpoint": self.checkpoint,
                "dtype": "float16" if self.fp16 else "float32"}


@dataclass
class PartitionResult:
    partition: int
    indexed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    already_done: bool = False  #: a done marker existed (or another writer finished it first)
    pid: int = 0


@dataclass
class PartitionsReport:
    out_dir: str = ""
    partitions: int = 0
    embedded: list[int] = field(default_factory=list)  #: partitions this run wrote
    already_done: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  #: still without a done marker after this run
    indexed: int = 0  #: items embedded by this run
    skipped: int = 0  #: pictures this run refused
    complete: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------ partition ids
def parse_partition(value: Any, n: int) -> int:
    """A partition id given by a user or an environment variable, checked against ``n``."""
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):  # no "-1", "1.5", "٣", "1e3"
        raise ValueError(f"partition {printable(text)!r}: out of range, expected a whole number 0..{n - 1}")
    i = int(text)
    if not 0 <= i < n:
        raise ValueError(f"partition {i}: out of range, expected 0..{n - 1} for {n} partitions")
    return i


def slurm_partition(n: int, environ: dict[str, str] | None = None) -> int | None:
    """The partition of this Slurm array task (``SLURM_ARRAY_TASK_ID``), or None outside an array."""
    env = os.environ if environ is None else environ
    value = env.get("SLURM_ARRAY_TASK_ID")
    if value is None or value == "":
        return None
    try:
        return parse_partition(value, n)
    except ValueError as e:
        raise ValueError(f"SLURM_ARRAY_TASK_ID: {e} (submit the array as --array=0-{n - 1})") from None


# ------------------------------------------------------------------------------------------ the out folder
def _read_plan(out: Path) -> dict[str, Any] | None:
    try:
        plan = json.loads((out / PLAN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StoreError(f"{out / PLAN_FILE}: unreadable partition plan ({e}); choose another --out") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise StoreError(f"{out / PLAN_FILE}: not a zscir partition plan; choose another --out")
    return plan


def prepare_out(job: PartitionJob, source: IndexSource) -> dict[str, Any]:
    """Claim ``OUT`` for ``job``: create it and its plan, or check the plan already there. Returns the plan.

    ``OUT`` must be new, empty, or a partitioned index of the same plan (same source, partition count,
    model, methods, dtype); anything else is refused before a byte is written. The plan is published with
    a hard link, which fails when it exists, so concurrent array tasks agree on one plan.
    """
    out = Path(job.out_dir)
    wanted = job.plan(source)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise StoreError(f"{out}: exists and is not a folder; give a new or empty folder for the index")
        plan = _read_plan(out)
        if plan is None:
            try:
                names = sorted(os.listdir(out))
            except OSError as e:
                raise StoreError(f"{out}: cannot list the folder ({e.strerror})") from None
            if names:
                raise StoreError(f"{out}: the folder is not empty and holds no partitioned zscir index (e.g. "
                                 f"{printable(names[0])!r}); choose another --out")
    else:
        check_creatable(out)
        plan = None
    if plan is None:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{PLAN_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        body = {**wanted, "created": now()}
        with atomic_open(tmp, "w") as f:
            f.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        try:
            os.link(tmp, out / PLAN_FILE)
        except FileExistsError:
            pass  # another array task was first: its plan is checked below
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        plan = _read_plan(out)
    differs = [k for k in ("partitions", "source", "model", "methods", "checkpoint", "dtype")
               if plan.get(k) != wanted.get(k)]
    if differs:
        k = differs[0]
        raise StoreError(f"{out}: holds a partitioned index with {k} {printable(str(plan.get(k)))!r}, this run "
                         f"asks for {printable(str(wanted.get(k)))!r}; re-run with the same settings or choose "
                         f"another --out")
    return plan


def _remove_ours(folder: Path, i: int, n: int) -> None:
    """Delete a partition folder left without a done marker, only if it is one zscir wrote for (i, n)."""
    try:
        m = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        ours = m.get("partition") == [i, n]
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours or folder.is_symlink():
        raise StoreError(f"{folder}: in the way of partition {i} and not written by zscir for it; move it away")
    shutil.rmtree(folder)


# ------------------------------------------------------------------------------------------ one partition
def composers_for(job: PartitionJob, device: Any = None) -> list["Composer"]:
    """The composers a worker embeds with, one per gallery key (the first one's is the primary matrix)."""
    from zscir.backbones.devices import resolve_device
    from zscir.methods import create_composer

    dev = str(resolve_device(job.device if device is None else device))
    first = create_composer(job.methods[0], model=job.model, checkpoint=job.checkpoint, device=dev)
    comps = [first] + [create_composer(m, model=job.model, backbone=first.backbone, device=dev)
                       for m in job.methods[1:]]
    out: dict[str, Composer] = {}
    for c in comps:
        out.setdefault(c.gallery_cache_key(), c)
    return list(out.values())


def _record(rec: SourceRecord, **extra: Any) -> dict[str, Any]:
    """The item (or skipped) record of a source record: JSON-safe metadata, its id, and a ``path`` that search
    results show (the file, else the source's image path / URL, else the id)."""
    meta = {str(k): v if v is None or isinstance(v, (str, int, float, bool)) else printable(str(v))
            for k, v in rec.meta.items()}
    if "path" not in meta:
        meta["path"] = str(meta.get("image_path") or meta.get("url") or rec.id)
    return {**meta, "id": rec.id, **extra}


def _decode(records: Iterable[SourceRecord], limits: ImageLimits, side: int | None, comps, batch_size: int):
    """Batches of (decoded items, skipped records), in the source's order."""
    good: list[tuple[SourceRecord, Any, list]] = []
    bad: list[dict[str, Any]] = []
    for rec in records:
        if rec.data is None:
            bad.append(_record(rec, code=str(rec.meta.get("code") or "unreadable"),
                               reason=printable(rec.error or "unreadable")))
            continue
        try:
            im = load_image(rec.data, limits, min_side=side)
        except ImageRejected as err:
            bad.append(_record(rec, code=err.code, reason=printable(err)))
            continue
        good.append((rec, im, [c.prepare_gallery_image(im) for c in comps]))
        if len(good) == batch_size:
            yield good, bad
            good, bad = [], []
    if good or bad:
        yield good, bad


def _write_partition(job: PartitionJob, i: int, comps, source: IndexSource, work: Path) -> tuple[int, int]:
    """Embed partition ``i`` into the (new) folder ``work`` as a complete index; returns (indexed, skipped)."""
    dtype = np.float16 if job.fp16 else np.float32
    side = decode_side(comps)
    chunks: list[list[np.ndarray]] = [[] for _ in comps]
    items: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    seen: set[str] = set()
    for good, bad in _decode(source.iter_partition(i, job.partitions), job.limits, side, comps, job.batch_size):
        skipped += bad
        if good:
            for ki, c in enumerate(comps):
                emb = encode_batch(c, [g[1] for g in good], [g[2][ki] for g in good])
                chunks[ki].append(emb.numpy().astype(dtype))
        for rec, im, _ in good:
            if rec.id in seen:
                raise SourceError(f"partition {i}: item id {printable(rec.id)!r} occurs twice in the source")
            seen.add(rec.id)
            items.append(_record(rec, width=im.width, height=im.height))
        if job.throttle_s > 0:
            time.sleep(job.throttle_s)
    names = generation_files(1, len(comps))
    files, dims = {}, {}
    for ki, c in enumerate(comps):
        if chunks[ki]:
            arr = np.concatenate(chunks[ki])
        else:  # an empty partition still has the model's width, so shard sets and merges agree
            from PIL import Image

            arr = np.zeros((0, int(c.encode_gallery([Image.new("RGB", (8, 8))]).shape[1])), dtype)
        with atomic_open(work / names[ki], "wb") as f:
            np.save(f, arr, allow_pickle=False)
        files[c.gallery_cache_key()], dims[c.gallery_cache_key()] = names[ki], int(arr.shape[1])
        if ki == 0:
            normalized = bool(arr.size == 0 or np.allclose(np.linalg.norm(arr.astype(np.float32), axis=1), 1,
                                                          atol=1e-2))
    with atomic_open(work / names[-1], "wb") as f:
        for rec in items:
            f.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
    desc = source.describe()
    root = str(desc.get("root") or desc.get("spec") or job.source)
    keys = [c.gallery_cache_key() for c in comps]
    manifest = {
        **empty_manifest(job.model, comps[0], root),
        "count": len(items), "dim": dims[keys[0]], "dtype": np.dtype(dtype).name, "normalized": normalized,
        "embeddings_file": names[0], "items_file": names[-1], "generation": 1, "updated": now(),
        "galleries": {k: {"file": files[k], "dim": dims[k], "method": c.name, "method_config": describe_composer(c)}
                      for k, c in zip(keys, comps)},
        "skipped": skipped, "build": None, "shard": [i, job.partitions], "partition": [i, job.partitions],
        "source": {k: v for k, v in desc.items() if k in ("kind", "root", "spec")},
        "indexer": {"limits": asdict(job.limits), "decode_side": side, "engine_pid": os.getpid()},
        "request": {"model": job.model, "methods": list(job.methods)},
    }
    atomic_write_json(work / MANIFEST_FILE, manifest)
    return len(items), len(skipped)


def embed_partition(job: PartitionJob, i: int, composers: Sequence["Composer"] | None = None,
                    source: IndexSource | None = None) -> PartitionResult:
    """Embed and publish partition ``i`` unless it has a done marker (see the module docstring).

    Safe to call twice at once for the same ``i`` (a retry racing its original): one copy is published.
    """
    out = Path(job.out_dir)
    i = parse_partition(i, job.partitions)
    t0 = time.monotonic()
    if partition_done(out, i):
        return PartitionResult(i, already_done=True, pid=os.getpid())
    comps = list(composers) if composers is not None else composers_for(job)
    source = source if source is not None else job.open_source()
    work = out / WORK_DIR / f"{partition_name(i)}.{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True)
    try:
        indexed, skipped = _write_partition(job, i, comps, source, work)
        final = out / partition_name(i)
        if final.exists() or final.is_symlink():
            if partition_done(out, i):  # another writer finished it meanwhile
                shutil.rmtree(work)
                return PartitionResult(i, already_done=True, pid=os.getpid())
            _remove_ours(final, i, job.partitions)  # published by a writer killed before its marker
        try:
            os.rename(work, final)
        except OSError:  # another writer published first
            if not final.is_dir():
                raise
            shutil.rmtree(work)
            return PartitionResult(i, already_done=True, pid=os.getpid())
        fsync_dir(out)
        secs = round(time.monotonic() - t0, 3)
        atomic_write_json(out / done_marker_name(i), {
            "partition": i, "of": job.partitions, "indexed": indexed, "skipped": skipped, "seconds": secs,
            "host": socket.gethostname(), "pid": os.getpid(), "finished": now()})
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("partition %d/%d: %d items, %d skipped (%.1fs)", i, job.partitions, indexed, skipped, secs)
    return PartitionResult(i, indexed=indexed, skipped=skipped, seconds=secs, pid=os.getpid())


# ------------------------------------------------------------------------------------------ engines
_WORKER: dict[str, Any] = {}


def _init_worker(job: PartitionJob) -> None:
    if job.torch_threads:
        import torch

        torch.set_num_threads(job.torch_threads)
    _WORKER["composers"] = composers_for(job)
    _WORKER["source"] = job.open_source()


def _worker_embed(job: PartitionJob, i: int) -> PartitionResult:
    return embed_partition(job, i, _WORKER["composers"], _WORKER["source"])


def _run_local(job: PartitionJob, todo: list[int], jobs: int, composers=None) -> list[PartitionResult]:
    """Partitions one after another in this process, or over ``jobs`` worker processes (one model each)."""
    if jobs <= 1 or len(todo) <= 1:
        comps = list(composers) if composers is not None else composers_for(job)
        source = job.open_source()
        return [embed_partition(job, i, comps, source) for i in todo]
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # no forked torch state
    with ctx.Pool(min(jobs, len(todo)), initializer=_init_worker, initargs=(job,)) as pool:
        return pool.starmap(_worker_embed, [(job, i) for i in todo], chunksize=1)


def run_partitions(job: PartitionJob, *, engine: str = "local", jobs: int = 1, only: Sequence[int] | None = None,
                   ray_address: str | None = None, composers: Sequence["Composer"] | None = None,
                   num_gpus: float | None = None, **engine_options: Any) -> PartitionsReport:
    """Embed the partitions of ``job`` that have no done marker (all, or just ``only``) with ``engine``.

    ``engine="local"``: in this process, or ``jobs`` processes; ``"ray"``: a Ray Data actor pool of ``jobs``
    actors on the cluster ``ray_address`` (or ``RAY_ADDRESS``, or a local one), see
    :mod:`zscir.index.ray_engine` (``engine_options`` go to its `run_ray`). ``composers`` (local engine in this
    process only) skips loading the model.
    When every partition is done, the work folder is cleared and ``report.complete`` is True.
    """
    if engine not in ENGINES:
        raise ValueError(f"--engine {printable(str(engine))!r}: expected one of {', '.join(ENGINES)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs {jobs!r}: expected a positive number")
    wanted = list(range(job.partitions)) if only is None else [parse_partition(i, job.partitions) for i in only]
    source = job.open_source()
    prepare_out(job, source)
    out = Path(job.out_dir)
    todo = [i for i in dict.fromkeys(wanted) if not partition_done(out, i)]
    rep = PartitionsReport(out_dir=str(out), partitions=job.partitions,
                           already_done=[i for i in wanted if i not in todo])
    logger.info("%s: %d of %d partitions to embed (engine %s)", out, len(todo), len(wanted), engine)
    if todo:
        if engine in ENGINE_MODULES:
            import importlib

            run = importlib.import_module(ENGINE_MODULES[engine]).run_engine
            results = run(job, todo, actors=jobs, address=ray_address, num_gpus=num_gpus, **engine_options)
        else:
            results = _run_local(job, todo, jobs, composers)
        for r in results:
            (rep.already_done if r.already_done else rep.embedded).append(r.partition)
            rep.indexed += r.indexed
            rep.skipped += r.skipped
    rep.embedded.sort()
    rep.already_done.sort()
    rep.missing = unfinished_partitions(out) or []
    rep.complete = not rep.missing
    if rep.complete:
        assemble(out)
    return rep


def assemble(out_dir: str | os.PathLike) -> int:
    """Check that every partition of ``out_dir`` is done and clear its work folder; returns the item count.

    The partitioned folder is then searched as it is (``zscir search OUT``: a shard set of its ``part-*``).
    """
    out = Path(out_dir)
    if _read_plan(out) is None:
        raise StoreError(f"{out}: not a partitioned zscir index (no {PLAN_FILE})")
    missing = unfinished_partitions(out) or []
    if missing:
        raise StoreError(f"{out}: {len(missing)} partition(s) not indexed yet (e.g. {missing[0]}); run them first")
    work = out / WORK_DIR
    if work.is_dir() and not work.is_symlink():
        for p in work.iterdir():  # leftovers of killed writers (only names this module gives)
            if p.name.startswith("part-") and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
        with contextlib.suppress(OSError):
            work.rmdir()
    total = 0
    for name in sorted(os.listdir(out)):
        if name.endswith(".done") and name.startswith("part-"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                total += int(json.loads((out / name).read_text(encoding="utf-8"))["indexed"])
    return total
