"""An IVF index for galleries that do not fit in RAM: trained on a sample, filled partition by partition,
merged on disk, served memory-mapped.

Why this shape
--------------
The in-memory ANN index (:mod:`zscir.index.ann`) keeps every code in RAM: 32 B + 8 B of id per vector,
4 GB at 100M, and the build holds all of it before writing. Here RAM is bounded by a *memory budget*
whatever N is:

1. **Train** an empty ``IVF{nlist},PQ{m}x8`` (``ivfpq-ondisk``) or ``IVF{nlist},SQ8`` (``ivfsq8-ondisk``)
   index on a random sample that fits the budget (:func:`choose_plan`); it is freed before step 2.
2. **Fill partition by partition**: a copy of the trained, empty index receives blocks of vectors (with
   their global row numbers as ids) until it holds ``partition_rows`` vectors, is written to a partition
   file and dropped. Only one partition's codes are in RAM (sized from the budget with room for
   ``std::vector``'s doubling).
3. **Merge on disk**: :func:`faiss.contrib.ondisk.merge_ondisk` maps every partition file
   (``IO_FLAG_MMAP``: nothing is loaded) and copies their inverted lists into one ``.ivfdata`` file
   (``OnDiskInvertedLists``); the index file then holds only the quantizer and the list directory.
4. **Serve memory-mapped**: :func:`open_ondisk` reads the index with ``IO_FLAG_ONDISK_SAME_DIR |
   IO_FLAG_READ_ONLY``; the ``OnDiskInvertedLists`` maps the ``.ivfdata`` read-only, so a search touches
   only the ``nprobe`` lists it scans and the page cache decides what stays resident. (``IO_FLAG_MMAP``
   is the flag for in-memory ``ArrayInvertedLists`` files; combined with ``IO_FLAG_ONDISK_SAME_DIR`` on a
   merged index faiss 1.15.1 crashes on the first search, so it is used only for the partition files.)

Fast-scan PQ (``x4fs``, the in-memory default) packs codes in blocks that ``OnDiskInvertedLists`` cannot
hold, hence 8-bit PQ here. The parameters are chosen from N, d and the budget by :func:`choose_plan`
(our own rules, written for zscir; autofaiss was not used, see docs/SCALING.md), and ``nprobe`` from a
held-out sample by :func:`tune_nprobe`.

Files handed to :func:`open_ondisk` are data: d, ntotal, the metric and the ``.ivfdata`` size are
checked against what the zscir manifest recorded, and the list directory against the file, before any
list is read (a truncated ``.ivfdata`` would otherwise be a SIGBUS on the first search that reaches it).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from zscir.index.faiss_search import check_finite_rows, import_faiss, make_faiss_index
from zscir.index.store import StoreError

logger = logging.getLogger(__name__)

__all__ = ["ONDISK_KINDS", "DEFAULT_MEMORY_BUDGET", "MemoryBudgetError", "OndiskPlan", "parse_size",
           "choose_plan", "train_empty", "fill_partitions", "merge_partitions", "open_ondisk", "tune_nprobe",
           "exact_topk_stream", "build_ondisk", "build_from_matrix", "ondisk_file_names"]

ONDISK_KINDS = ("ivfpq-ondisk", "ivfsq8-ondisk")
DEFAULT_MEMORY_BUDGET = int(1.5 * 2**30)
#: k-means wants >= 39 points per cell (faiss warns below); we aim for 64 when the budget allows
MIN_POINTS_PER_CELL = 39
TRAIN_POINTS_PER_CELL = 64
#: vectors per add call: bounds the fp32 block and faiss' temporary assignment buffers
ADD_BLOCK = 65_536
#: the smallest training sample worth a trained quantizer (PQ 8-bit has 256 centroids per sub-space)
MIN_TRAIN = 4096
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


class MemoryBudgetError(ValueError):
    """The memory budget cannot hold the smallest useful training sample plus one add block."""


def parse_size(text: Any) -> int:
    """``"1.5GB"`` / ``"800M"`` / ``1234`` -> bytes (binary units: 1 GB = 2**30 bytes)."""
    if isinstance(text, bool):
        raise ValueError(f"memory budget must be a size such as 1.5GB, got {text!r}")
    if isinstance(text, (int, np.integer)):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"memory budget must be a size such as 1.5GB or 800MB, got {text!r}")
        value, unit = float(m.group(1)), m.group(2).lower()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory budget must be positive, got {text!r}")
    return size


def _pow2_floor(x: float) -> int:
    return 2 ** int(math.floor(math.log2(max(1.0, x))))


def _pow2_round(x: float) -> int:
    return 2 ** int(round(math.log2(max(1.0, x))))


@dataclass(frozen=True)
class OndiskPlan:
    """What :func:`choose_plan` decided, and the sizes it expects (recorded in the manifest entry)."""

    kind: str
    n: int
    d: int
    factory: str
    nlist: int
    n_train: int
    code_size: int
    partition_rows: int
    memory_budget: int
    disk_bytes: int

    @property
    def partitions(self) -> int:
        return max(1, math.ceil(self.n / self.partition_rows))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "partitions": self.partitions}


def _pq_m(d: int) -> int:
    """``d/8`` sub-quantizers (one byte per 8 dimensions), or the nearest divisor of ``d`` below."""
    m = max(1, d // 8)
    while d % m:
        m -= 1
    return m


def choose_plan(n: int, d: int, kind: str = "ivfpq-ondisk", memory_budget: int = DEFAULT_MEMORY_BUDGET, *,
                n_train: int | None = None, nlist: int | None = None) -> OndiskPlan:
    """Index parameters for ``n`` vectors of dimension ``d`` within ``memory_budget`` bytes of RAM.

    * **nlist**: ``4 sqrt(N)`` rounded to a power of two (the low end of the usual 4-16 sqrt(N) range: the
      cost of training and of assigning every vector grows with nlist, and nprobe is tuned to the recall
      target anyway), bounded by the training sample (>= 39 points per cell).
    * **Training sample**: ``64 x nlist`` vectors, at most N and at most the budget in fp32 (it is freed
      before the add phase; the issue's goal counts RAM *beyond* the sample). A small budget therefore
      gives fewer, larger cells: slower queries, not lower recall at the tuned nprobe.
    * **Codes**: ``ivfpq-ondisk``: ``PQ{d/8}x8`` (d/8 bytes, e.g. 64 B at 512-d); ``ivfsq8-ondisk``: one
      byte per dimension. Plus 8 bytes of id per vector in the ``.ivfdata``.
    * **Partition size**: the rest of the budget after one add block (its fp32 copy and ~2 copies of
      faiss temporaries) and the quantizer, divided by twice the bytes per
      vector (inverted lists grow by doubling).

    ``n_train`` / ``nlist`` override the rules (the benchmark uses them where the machine is too slow
    for the chosen nlist); the ``>= 39 points per cell`` bound still applies.

    Raises :class:`MemoryBudgetError` (one line) when the budget cannot hold ``MIN_TRAIN`` training
    vectors plus one add block and a partition of one block.
    """
    if kind not in ONDISK_KINDS:
        raise ValueError(f"on-disk index kind must be one of {ONDISK_KINDS}, got {kind!r}")
    for name, v in (("n", n), ("d", d), ("memory_budget", memory_budget)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    n, d, memory_budget = int(n), int(d), int(memory_budget)
    if kind == "ivfpq-ondisk":
        m = _pq_m(d)
        code, codec = m, f"PQ{m}x8"
    else:
        code, codec = d, "SQ8"
    per_vec = code + 8
    block = min(n, ADD_BLOCK)
    want_nlist = _pow2_round(4 * math.sqrt(n)) if nlist is None else int(nlist)
    # one add block costs its fp32 copy plus faiss' temporaries (residuals / encoding buffers, about two
    # more copies): measured at 5M x 512 (SQ8), reserving the fp32 copy alone let the add phase reach
    # 1.8 GB beyond the interpreter on a 1.5 GB budget
    block_cost = 3 * block * d * 4
    need = min(n, MIN_TRAIN) * d * 4 + block_cost + 2 * block * per_vec
    if memory_budget < need:
        raise MemoryBudgetError(
            f"memory budget {memory_budget / 2**20:.0f} MB is too small for {n} {d}-d vectors ({kind}): it "
            f"needs at least {math.ceil(need / 2**20)} MB (a {min(n, MIN_TRAIN)}-vector training sample, one "
            f"{block}-vector add block and its codes)")
    cap_train = max(min(n, MIN_TRAIN), memory_budget // (d * 4))
    if n_train is None:
        n_train = min(n, TRAIN_POINTS_PER_CELL * want_nlist, cap_train)
    n_train = int(min(n, max(1, n_train)))
    nlist = max(1, min(want_nlist, _pow2_floor(n_train / MIN_POINTS_PER_CELL)))
    quantizer = nlist * d * 4 + (256 * d * 4 if kind == "ivfpq-ondisk" else 2 * d * 4)
    rest = memory_budget - block_cost - quantizer
    partition_rows = int(max(block, min(n, rest // (2 * per_vec))))
    return OndiskPlan(kind=kind, n=n, d=d, factory=f"IVF{nlist},{codec}", nlist=nlist, n_train=n_train,
                      code_size=code, partition_rows=partition_rows, memory_budget=memory_budget,
                      disk_bytes=n * per_vec + nlist * d * 4)


@contextlib.contextmanager
def _quiet_stdout():
    """Keep faiss' C-level ``printf`` lines ("resizing ...", "IO_FLAG_ONDISK_SAME_DIR: updating ondisk
    filename ...") off stdout: `zscir search --json` writes its results there. fd 1 goes to /dev/null and
    libc's buffer is flushed before it comes back (a pipe's buffer would otherwise leak them later)."""
    try:
        sys.stdout.flush()
        saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no real fd 1 (embedded interpreters): nothing to hide
        yield
        return
    libc = ctypes.CDLL(None)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        with contextlib.suppress(Exception):
            libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


# ------------------------------------------------------------------------------------------ building
def train_empty(sample: np.ndarray, plan: OndiskPlan) -> Any:
    """The trained, empty index of ``plan`` (inner-product metric), trained on ``sample``."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 2 or sample.shape[1] != plan.d:
        raise ValueError(f"training sample: expected shape (n, {plan.d}), got {sample.shape}")
    check_finite_rows(sample, "training sample")
    faiss = import_faiss()
    index = make_faiss_index(faiss, plan.d, plan.factory)
    ivf = faiss.extract_index_ivf(index)
    if hasattr(ivf, "do_polysemous_training"):
        # faiss turns on polysemous training for 8-bit IVF-PQ: a simulated annealing of the code order that
        # only polysemous search uses (zscir does not) and that took 19 of 20 s to train a 4000 x 64 toy
        ivf.do_polysemous_training = False
    logger.info("training %s on %d vectors", plan.factory, len(sample))
    index.train(sample)
    return index


def ondisk_file_names(stem: str, partitions: int) -> tuple[str, str, list[str]]:
    """``(index file, .ivfdata file, partition files)`` of an on-disk index named ``stem``."""
    return f"{stem}.faiss", f"{stem}.ivfdata", [f"{stem}.part{i:05d}.faiss" for i in range(partitions)]


def fill_partitions(trained: Any, blocks: Iterable[np.ndarray], plan: OndiskPlan, folder: Path,
                    part_names: list[str], *, progress: Callable[[int], None] | None = None) -> list[str]:
    """Add ``blocks`` (consecutive rows, ids = row numbers) to copies of ``trained``; one file per partition.

    Returns the partition files written (a prefix of ``part_names``). The blocks must hold exactly
    ``plan.n`` rows in total; each is checked for shape and finite values.
    """
    faiss = import_faiss()
    written: list[str] = []
    current, in_part, row = None, 0, 0

    def flush() -> None:
        nonlocal current, in_part
        if current is None or in_part == 0:
            return
        if len(written) >= len(part_names):
            raise ValueError(f"more partitions than planned ({len(part_names)})")
        path = folder / part_names[len(written)]
        faiss.write_index(current, os.fspath(path))
        written.append(part_names[len(written)])
        current, in_part = None, 0

    for blk in blocks:
        x = np.ascontiguousarray(blk, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != plan.d:
            raise ValueError(f"vectors: expected blocks of shape (rows, {plan.d}), got {x.shape} at row {row}")
        check_finite_rows(x, "vectors", row)
        s = 0
        while s < len(x):
            if current is None:
                current = faiss.clone_index(trained)
            take = min(len(x) - s, plan.partition_rows - in_part)
            if row + take > plan.n:
                raise ValueError(f"vectors: more than the {plan.n} rows announced")
            current.add_with_ids(x[s:s + take], np.arange(row, row + take, dtype=np.int64))
            s, row, in_part = s + take, row + take, in_part + take
            if in_part >= plan.partition_rows:
                flush()
        if progress is not None:
            progress(len(x))
    flush()
    if row != plan.n:
        raise ValueError(f"vectors: {row} rows given, {plan.n} announced")
    return written


def merge_partitions(trained: Any, folder: Path, part_names: list[str], index_name: str, ivfdata_name: str) -> Any:
    """Merge the partitions' inverted lists into ``ivfdata_name`` and write ``index_name``; returns the index."""
    faiss = import_faiss()
    from faiss.contrib.ondisk import merge_ondisk

    merged = faiss.clone_index(trained)
    with _quiet_stdout():
        merge_ondisk(merged, [os.fspath(folder / p) for p in part_names], os.fspath(folder / ivfdata_name))
    faiss.write_index(merged, os.fspath(folder / index_name))
    return merged


def build_ondisk(sample: np.ndarray, blocks: Iterable[np.ndarray], plan: OndiskPlan, folder: str | os.PathLike,
                 stem: str, *, progress: Callable[[int], None] | None = None,
                 timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Train, fill partition by partition, merge: the three build steps into ``folder`` (already claimed).

    The caller owns ``folder``: it must have recorded the names :func:`ondisk_file_names` gives before
    calling (zscir index folders do so through :class:`~zscir.index.folder.IndexFolder`). Partition files
    are deleted after the merge. Returns ``{"file", "ivfdata", "ivfdata_bytes", "bytes", "nlist", ...}``.
    """
    folder = Path(folder)
    index_name, ivfdata_name, part_names = ondisk_file_names(stem, plan.partitions)
    t = timings if timings is not None else {}
    t0 = time.perf_counter()
    trained = train_empty(sample, plan)
    del sample
    t["train_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    written = []
    try:
        written = fill_partitions(trained, blocks, plan, folder, part_names, progress=progress)
        t["add_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        merged = merge_partitions(trained, folder, written, index_name, ivfdata_name)
        t["merge_s"] = time.perf_counter() - t0
    finally:
        for p in part_names:
            try:
                (folder / p).unlink()
            except FileNotFoundError:
                pass
    del merged
    return {"file": index_name, "ivfdata": ivfdata_name, "ivfdata_bytes": (folder / ivfdata_name).stat().st_size,
            "bytes": (folder / index_name).stat().st_size, "count": plan.n, "dim": plan.d, "metric": "ip",
            "factory": plan.factory, "nlist": plan.nlist, "train_sample": plan.n_train, "kind": plan.kind,
            "partitions": len(written), "memory_budget": plan.memory_budget}


# ------------------------------------------------------------------------------------------ reading
def open_ondisk(folder: str | os.PathLike, entry: Mapping[str, Any], *, count: int, dim: int) -> Any:
    """Read the merged index named by manifest ``entry`` from ``folder``, memory-mapped, after validation.

    Refuses (``StoreError``, one line) an ``.ivfdata`` whose size differs from the recorded one, an index
    whose d / ntotal / metric differ from the manifest's (``count`` / ``dim`` / inner product), and a list
    directory that points past the end of the ``.ivfdata``.
    """
    faiss = import_faiss()
    where = Path(folder)
    ipath, dpath = where / str(entry["file"]), where / str(entry["ivfdata"])
    if Path(str(entry["ivfdata"])).name != str(entry["ivfdata"]) or not dpath.is_file():
        raise StoreError(f"{dpath}: the on-disk index's list file is missing")
    size = dpath.stat().st_size
    if "ivfdata_bytes" in entry and size != int(entry["ivfdata_bytes"]):
        raise StoreError(f"{dpath}: {size} bytes, the manifest recorded {entry['ivfdata_bytes']} (truncated or "
                         f"replaced); rebuild it with `zscir index ann {where} --rebuild`")
    try:
        with _quiet_stdout():
            index = faiss.read_index(os.fspath(ipath), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as e:
        raise StoreError(f"{ipath}: not a readable faiss index ({(str(e).strip().splitlines() or ['?'])[-1]})") \
            from None
    ivf = faiss.extract_index_ivf(index) if isinstance(index, faiss.Index) else None
    problems = []
    if int(index.d) != int(dim):
        problems.append(f"d {index.d} != {dim}")
    if int(index.ntotal) != int(count):
        problems.append(f"ntotal {index.ntotal} != {count}")
    if int(index.metric_type) != int(faiss.METRIC_INNER_PRODUCT):
        problems.append("metric is not inner product")
    if problems:
        raise StoreError(f"{ipath}: does not match the index manifest ({', '.join(problems)}); rebuild it with "
                         f"`zscir index ann {where} --rebuild`")
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        raise StoreError(f"{ipath}: not an on-disk (merged) IVF index")
    per = int(lists.code_size) + 8
    end, total = 0, 0
    for i in range(int(lists.nlist)):
        li = lists.lists.at(i)
        if li.size > li.capacity:
            end = size + 1
            break
        end = max(end, int(li.offset) + int(li.capacity) * per)
        total += int(li.size)
    if end > size or int(lists.totsize) > size or total != int(count):
        raise StoreError(f"{dpath}: its list directory needs {max(end, int(lists.totsize))} bytes and "
                         f"{total} entries, the file has {size} bytes and the index {count} items (truncated "
                         f"or corrupt); rebuild it")
    return index


# ------------------------------------------------------------------------------------------ nprobe
def exact_topk_stream(queries: np.ndarray, blocks: Iterable[np.ndarray], k: int,
                      exclude_self: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of ``queries`` over streamed ``blocks`` (ids = row numbers).

    ``exclude_self``: for each query, a row id never returned (a query taken from the gallery itself).
    Memory: one block plus ``Q x (k + block)`` scores.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    row = 0
    for blk in blocks:
        x = np.ascontiguousarray(blk, dtype=np.float32)
        s = q @ x.T
        if exclude_self is not None:
            hit = (exclude_self >= row) & (exclude_self < row + len(x))
            s[np.flatnonzero(hit), exclude_self[hit] - row] = -np.inf
        ids = np.arange(row, row + len(x), dtype=np.int64)
        kk = min(k, len(x))
        part = np.argpartition(s, len(x) - kk, axis=1)[:, len(x) - kk:]
        cs = np.concatenate([best_s, np.take_along_axis(s, part, 1)], 1)
        ci = np.concatenate([best_i, ids[part]], 1)
        order = np.lexsort((ci, -cs), axis=-1)[:, :k]
        best_s, best_i = np.take_along_axis(cs, order, 1), np.take_along_axis(ci, order, 1)
        row += len(x)
    return best_s, best_i


def tune_nprobe(index: Any, queries: np.ndarray, truth: np.ndarray, target: float = 0.95,
                max_nprobe: int = 1024) -> tuple[int, dict[int, float]]:
    """The smallest power-of-two ``nprobe`` whose *cell recall* on a held-out sample reaches ``target``.

    ``truth`` (Q, k, d): the vectors of each query's exact top-k. Cell recall is the share of them whose
    inverted list is among the ``nprobe`` lists a search visits, an upper bound of the index's recall that
    needs no index search (the coarse quantizer only). zscir aims it at 0.95 for a 0.9 recall@10 goal: the
    codes' own error (PQ before the exact re-rank, SQ8) costs the rest. Returns ``(nprobe, {nprobe: cell
    recall})``.
    """
    faiss = import_faiss()
    ivf = faiss.extract_index_ivf(index)
    nlist = int(ivf.nlist)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    t = np.ascontiguousarray(truth, dtype=np.float32)
    top = min(nlist, max_nprobe)
    _, probe = ivf.quantizer.search(q, top)
    _, cell = ivf.quantizer.search(t.reshape(-1, t.shape[-1]), 1)
    cell = cell.reshape(t.shape[0], t.shape[1])
    rank = np.full(cell.shape, top, np.int64)  # position of each true neighbour's cell in the probe order
    for i in range(len(q)):
        pos = {int(c): j for j, c in enumerate(probe[i])}
        rank[i] = [pos.get(int(c), top) for c in cell[i]]
    curve: dict[int, float] = {}
    p = 1
    while True:
        p = min(p, top)
        curve[p] = float((rank < p).mean())
        if curve[p] >= target or p >= top:
            return p, curve
        p *= 2


# ------------------------------------------------------------------------------------- from a gallery
def matrix_blocks(emb: np.ndarray, rows: int = ADD_BLOCK) -> Iterable[np.ndarray]:
    """Consecutive fp32 blocks of a (memory-mapped) matrix; pages of a read-only map are released after
    each block, so streaming a gallery bigger than RAM keeps the resident set at one block."""
    from zscir.index.searcher import release_pages

    for s in range(0, len(emb), rows):
        e = min(len(emb), s + rows)
        yield np.asarray(emb[s:e], dtype=np.float32)
        release_pages(emb, s, e)


def build_from_matrix(emb: np.ndarray, folder: str | os.PathLike, stem: str, kind: str, *,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET, seed: int = 0, nprobe: int = 0,
                      record: Callable[[set[str]], Any] | None = None,
                      progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Build the on-disk index of a (memory-mapped) ``(N, d)`` gallery into ``folder``.

    The training sample is ``plan.n_train`` random rows; ``nprobe`` 0 is tuned by :func:`tune_nprobe` on
    256 held-out gallery rows against their exact neighbours (themselves excluded) in a random subset of
    at most 262,144 rows. ``record`` is called with every file name before it is created (the index
    folder's write-ahead record). Returns the manifest entry (without ``source_file``).
    """
    n, d = int(emb.shape[0]), int(emb.shape[1])
    plan = choose_plan(n, d, kind, memory_budget)
    index_name, ivfdata_name, part_names = ondisk_file_names(stem, plan.partitions)
    if record is not None:
        record({index_name, ivfdata_name, *part_names})
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, plan.n_train, replace=False)) if plan.n_train < n else np.arange(n)
    sample = np.asarray(emb[rows], dtype=np.float32)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    entry = build_ondisk(sample, matrix_blocks(emb), plan, folder, stem, progress=progress, timings=timings)
    del sample
    index = open_ondisk(folder, entry, count=n, dim=d)
    curve: dict[int, float] = {}
    if not nprobe:
        sub = np.sort(rng.choice(n, min(n, 262_144), replace=False))
        held = np.sort(rng.choice(sub, min(len(sub), 256), replace=False))
        q = np.asarray(emb[held], dtype=np.float32)
        sub_vecs = np.asarray(emb[sub], dtype=np.float32)
        self_pos = np.searchsorted(sub, held)
        _, nn = exact_topk_stream(q, (sub_vecs[i:i + ADD_BLOCK] for i in range(0, len(sub), ADD_BLOCK)),
                                  min(10, len(sub) - 1), exclude_self=self_pos)
        nprobe, curve = tune_nprobe(index, q, sub_vecs[nn])
        del sub_vecs
    del index
    return {**entry, "nprobe": int(nprobe), "nprobe_curve": {str(k): round(v, 4) for k, v in curve.items()},
            "build_s": round(time.perf_counter() - t0, 3), "timings": {k: round(v, 3) for k, v in timings.items()}}
