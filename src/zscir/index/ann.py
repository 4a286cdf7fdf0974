"""Approximate nearest-neighbour search with FAISS: IVF-PQ trained on a sample, re-ranked exactly.

Why this shape
--------------
Exact search (:func:`zscir.index.search.exact_topk`) reads the whole gallery for every query batch, which
is fine up to a few million items and too slow beyond. docs/PERFORMANCE.md (section 2) measured the
default used here: an inverted file with ``nlist ≈ 2√N`` cells (rounded to a power of two) holding 4-bit
product-quantisation codes (``PQ{d/8}x4fs``, FAISS' "fast-scan" layout), ``max(64, nlist/16)`` cells
visited per query, and the best ``k_factor × k`` (16 × k) candidates re-ranked by their exact inner product:
0.958 recall@10 at 19× the speed of exact search at N = 100K on hard clustered data (nprobe 64 of 512
cells), 0.961 at 82× at N = 1M (nprobe 128 of 2048).

* **Trained on a random sample** (16,384 vectors by default) read from the memory-mapped store, and the
  collection added in chunks, so building never needs the gallery in memory: only the PQ codes
  (``d/16`` bytes + an 8-byte id per vector) live in RAM.
* **Re-rank from the store, not from faiss' ``RFlat``.** ``RFlat`` keeps a second, fp32 copy of every
  vector inside the faiss index (2 KB per 512-d vector: 205 GB at 100M), in RAM and on disk. The store
  already has the vectors (fp16 or fp32, memory-mapped), so :class:`AnnSearcher` fetches the shortlist's
  rows from it and scores them exactly: the same ranking as ``RFlat`` with no copy, at the price of
  ``k_factor × k`` random row reads per query (160 KB for k = 10, fp16, d = 512), which the page cache
  serves for hot data. ``rerank="none"`` ranks by the PQ scores alone (no reads, much lower recall:
  0.2–0.4 recall@10 on the test data, so it is not the default); a factory ending in ``,RFlat`` gives
  faiss' in-RAM refine instead.
* **One ANN index per gallery key**: methods such as Fusion-Diff have their own gallery matrix, and each
  matrix gets its own faiss file.

On disk and staleness
---------------------
An ANN index is a file ``ann-<key hash>-<build id>.faiss`` inside the index folder, described in the
manifest under ``ann`` (``{gallery_key: {"file", "source_file", "count", "factory", "nprobe", ...}}``);
``ann_config`` records the settings so that ``zscir index`` keeps the ANN index up to date. It is *stale*
when the gallery matrix it was built from is no longer the index's (every indexer generation writes new
file names) or the item count differs; a stale or missing ANN index is never used: searches fall back to
exact search with a warning, and the next ``zscir index`` run (or ``zscir index ann``) rebuilds it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm.auto import tqdm

from zscir.index.atomic import atomic_open
from zscir.index.faiss_search import (RERANK_MODES, AnnSearcher, FaissSearcher, check_finite_rows, import_faiss,
                                     ivf_of, make_faiss_index)
from zscir.index.folder import IndexFolder, open_index_folder, read_manifest
from zscir.index.ondisk import DEFAULT_MEMORY_BUDGET, ONDISK_KINDS, build_from_matrix, open_ondisk, parse_size
from zscir.index.searcher import ArrayLike, release_pages
from zscir.index.store import StoreError

logger = logging.getLogger(__name__)

__all__ = ["AnnConfig", "AnnSearcher", "auto_nprobe", "FaissSearcher", "build_ann", "remove_ann", "ann_status",
           "default_factory", "gallery_files", "open_ann_searcher", "stale_reason", "too_few_items",
           "ann_fallback_note"]

#: the one ANN kind `zscir index --ann` offers (the measured default; other factories via AnnConfig.factory)
ANN_KINDS = ("ivfpq",) + ONDISK_KINDS
#: below this many vectors a trained quantiser makes no sense (PQ 4-bit needs 16 training points per code)
HARD_MIN_ITEMS = 64


# ------------------------------------------------------------------------------------------ config
@dataclass
class AnnConfig:
    """How to build (and by default search) an ANN index; recorded in the manifest as ``ann_config``.

    ``factory`` None means the measured default ``IVF{nlist},PQ{d/8}x4fs`` with ``nlist`` = 2√N rounded
    to a power of two (at most 1/8 of the training sample). ``train_sample`` 0 means
    ``max(16384, 40 × nlist)`` vectors (capped at N): 16,384 is what PERFORMANCE.md measured with, and
    k-means wants ~40 points per cell (faiss warns below 39), which a fixed 16,384 no longer gives from
    nlist 512 (N ≥ 33K) on: 20,480 at 100K, 82K at 1M (nlist 2048, 0.17 GB fp32 at d = 512), 328K at
    10M (0.67 GB), 655K at 100M (nlist 16384, 1.3 GB). ``nprobe``, ``k_factor`` and ``rerank`` are
    search-time defaults (changing them needs no rebuild); ``nprobe`` 0 means :func:`auto_nprobe`
    (64 up to nlist 1024, nlist/16 beyond); ``min_items``: smaller galleries keep exact search, well
    under a millisecond per query there.
    """

    factory: str | None = None
    train_sample: int = 0
    nprobe: int = 0
    k_factor: int = 16
    rerank: str = "store"
    seed: int = 0
    min_items: int = 1000
    add_chunk: int = 65_536
    #: ``ivfpq`` (in RAM, the default) or an on-disk kind of :mod:`zscir.index.ondisk`
    kind: str = "ivfpq"
    #: on-disk kinds: RAM bound of the build in bytes (0: 1.5 GB); a string such as "800MB" is parsed
    memory_budget: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ANN_KINDS:
            raise ValueError(f"ANN kind must be one of {ANN_KINDS}, got {self.kind!r}")
        if isinstance(self.memory_budget, str):
            self.memory_budget = parse_size(self.memory_budget)
        if isinstance(self.memory_budget, bool) or not isinstance(self.memory_budget, int) or self.memory_budget < 0:
            raise ValueError(f"memory_budget must be a size in bytes, got {self.memory_budget!r}")
        if self.kind in ONDISK_KINDS and self.factory:
            raise ValueError(f"--factory does not apply to the on-disk kind {self.kind!r} (its parameters are "
                             f"chosen from N, d and --memory-budget)")
        if self.rerank not in RERANK_MODES:
            raise ValueError(f"rerank must be one of {RERANK_MODES}, got {self.rerank!r}")
        for name in ("train_sample", "nprobe", "k_factor", "add_chunk", "min_items"):
            v = getattr(self, name)
            lowest = 0 if name in ("train_sample", "min_items", "nprobe") else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lowest:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if 0 < self.train_sample < HARD_MIN_ITEMS:
            raise ValueError(f"train_sample must be 0 (auto) or >= {HARD_MIN_ITEMS}, got {self.train_sample}")
        if self.factory is not None and not str(self.factory).strip():
            self.factory = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "AnnConfig | None":
        if not d:
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def merged(cls, recorded: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None) -> "AnnConfig":
        """Recorded settings (an index's ``ann_config``, or the defaults) with ``overrides`` applied on top.

        Why: ``zscir index ann IDX --nprobe 32`` should change nprobe only, not reset a custom factory
        chosen earlier.
        """
        base = asdict(cls.from_dict(recorded) or cls())
        return cls(**{**base, **{k: v for k, v in (overrides or {}).items() if v is not None}})

    def build_key(self) -> dict[str, Any]:
        """The settings that change the built index (the others apply at search time)."""
        key = {"factory": self.factory, "train_sample": self.train_sample, "seed": self.seed}
        if self.kind != "ivfpq":  # only then: indexes built before the kinds existed stay up to date
            key.update(kind=self.kind, memory_budget=self.memory_budget or DEFAULT_MEMORY_BUDGET)
        return key


def auto_nprobe(nlist: int | None) -> int:
    """The default cells per query: ``max(64, nlist // 16)``, at most ``nlist``.

    Why it grows with nlist: the benchmark (docs/PERFORMANCE.md, section 2) reached 0.958 recall@10 with
    nprobe 64 of 512 cells at N = 100K, but only 0.941 with 64 of 2048 cells at N = 1M, where 128 (1/16
    of the cells) gave 0.961 at 82x the exact speed. A fixed fraction of the cells keeps recall roughly
    constant as the gallery grows (the work per query then grows like √N, still far below exact's N).
    """
    if not nlist:
        return 64
    return int(min(nlist, max(64, nlist // 16)))


def _pow2(x: float) -> int:
    return int(2 ** max(0, round(math.log2(max(x, 1)))))


def pq_subquantizers(d: int) -> int:
    """``d/8`` sub-quantizers (8 dimensions each), or the largest divisor of ``d`` below that."""
    m = max(1, d // 8)
    while d % m:
        m -= 1
    return m


def training_plan(cfg: AnnConfig, n: int, d: int) -> tuple[str, int]:
    """``(factory, number of training vectors)`` for ``n`` vectors of dimension ``d`` under ``cfg``."""
    if cfg.factory:
        m = re.search(r"IVF(\d+)", cfg.factory)
        nlist = int(m.group(1)) if m else 0
    else:
        nlist = _pow2(2 * math.sqrt(max(n, 1)))
    n_train = min(n, cfg.train_sample or max(16_384, 40 * nlist))
    return cfg.factory or default_factory(n, d, n_train), n_train


def default_factory(n: int, d: int, n_train: int | None = None) -> str:
    """The documented default ``IVF{2√N},PQ{d/8}x4fs`` (nlist a power of two, ≤ n_train / 8)."""
    nlist = _pow2(2 * math.sqrt(max(n, 1)))
    cap = 2 ** int(math.floor(math.log2(max(1, (n_train or n) // 8))))
    return f"IVF{max(1, min(nlist, cap))},PQ{pq_subquantizers(d)}x4fs"


# ------------------------------------------------------------------------------------ manifest view
def gallery_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """``{gallery_key: data file}`` of an index (the primary matrix of a plain store has key ``gallery_key``)."""
    gal = {k: v["file"] for k, v in (manifest.get("galleries") or {}).items()}
    if not gal and manifest.get("gallery_key"):
        gal = {manifest["gallery_key"]: manifest.get("embeddings_file", "embeddings.npy")}
    return gal


def stale_reason(folder: str | os.PathLike, manifest: Mapping[str, Any], key: str) -> str | None:
    """Why the ANN index of ``key`` cannot be used (None: it is up to date)."""
    entry = (manifest.get("ann") or {}).get(key)
    if not entry:
        return "no ANN index was built for this gallery"
    src = gallery_files(manifest).get(key)
    if entry.get("source_file") != src:
        return (f"it was built from {entry.get('source_file')} but the index now uses {src} "
                f"(the index changed since)")
    if int(entry.get("count", -1)) != int(manifest.get("count", -2)):
        return f"it holds {entry.get('count')} vectors but the index has {manifest.get('count')} items"
    if not (Path(folder) / entry["file"]).is_file():
        return f"its file {entry['file']} is missing"
    if entry.get("ivfdata") and not (Path(folder) / str(entry["ivfdata"])).is_file():
        return f"its list file {entry['ivfdata']} is missing"
    return None


def too_few_items(count: int, config: AnnConfig | None = None) -> str | None:
    """Why a gallery of ``count`` items gets no ANN index under ``config`` (None: it gets one).

    The one wording of `zscir index ann`'s "skipped: ..." status and of the note of a search that asked
    for ANN on such an index (`ann_fallback_note`), so the two never contradict each other.
    """
    floor = max((config or AnnConfig()).min_items, HARD_MIN_ITEMS)
    return f"{count} items < {floor} (exact search is used)" if count < floor else None


def ann_fallback_note(folder: str | os.PathLike, manifest: Mapping[str, Any], key: str) -> str | None:
    """The note of an ANN search (``--ann``) that falls back to exact search because `zscir index ann`
    skipped gallery ``key`` as too small under the recorded settings; None when that is not the case."""
    recorded = AnnConfig.from_dict(manifest.get("ann_config"))
    if recorded is None or key in (manifest.get("ann") or {}):
        return None
    why = too_few_items(int(manifest.get("count", 0)), recorded)
    return f"{folder}: no ANN index: {why}" if why else None


def ann_status(folder: str | os.PathLike, manifest: Mapping[str, Any]) -> dict[str, str]:
    """``{gallery_key: "up to date" | "stale: ..." | "none"}`` for every gallery of the index."""
    out = {}
    for key in gallery_files(manifest):
        if key not in (manifest.get("ann") or {}):
            out[key] = "none"
        else:
            why = stale_reason(folder, manifest, key)
            out[key] = "up to date" if why is None else f"stale: {why}"
    return out


# ----------------------------------------------------------------------------------------- building
def _key_slug(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def _train_and_add(emb: np.ndarray, factory: str, n_train: int, cfg: AnnConfig, progress: bool, desc: str) -> Any:
    """Train ``factory`` on ``n_train`` random rows of ``emb`` and add all rows chunk by chunk."""
    faiss = import_faiss()
    n, d = emb.shape
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
    sample = np.ascontiguousarray(emb[rows], dtype=np.float32)  # sorted rows: forward reads of the map
    index = make_faiss_index(faiss, d, factory)
    check_finite_rows(sample, "gallery", rows)
    logger.info("training %s on %d of %d vectors", factory, n_train, n)
    if not index.is_trained:
        index.train(sample)
    del sample
    bar = tqdm(total=n, desc=desc, unit="vec", disable=not progress, dynamic_ncols=True)
    try:
        for s in range(0, n, cfg.add_chunk):
            e = min(n, s + cfg.add_chunk)
            chunk = np.ascontiguousarray(emb[s:e], dtype=np.float32)
            check_finite_rows(chunk, "gallery", s)
            index.add(chunk)
            release_pages(emb, s, e)  # keep the resident set at one chunk for memory-mapped galleries
            bar.update(e - s)
    finally:
        bar.close()
    return index


def _build_one(ix: IndexFolder, manifest: Mapping[str, Any], key: str, cfg: AnnConfig, progress: bool) -> dict:
    faiss = import_faiss()
    folder = ix.path
    src = gallery_files(manifest)[key]
    emb = np.load(folder / src, mmap_mode="r", allow_pickle=False)
    n, d = int(emb.shape[0]), int(emb.shape[1])
    if cfg.kind in ONDISK_KINDS:
        return _build_ondisk(ix, emb, key, src, cfg, progress)
    factory, n_train = training_plan(cfg, n, d)
    t0 = time.perf_counter()
    try:
        index = _train_and_add(emb, factory, n_train, cfg, progress, desc=f"ann {key[:24]}")
    except ValueError as e:  # a factory faiss cannot build, NaN rows: name the gallery file
        raise ValueError(f"{folder / src}: {e}") from None
    name = f"ann-{_key_slug(key)}-{uuid.uuid4().hex[:8]}.faiss"
    ix.record({name})  # recorded before it exists: a kill leaves nothing zscir would not clean up
    with atomic_open(folder / name, "wb") as f:
        writer = faiss.PyCallbackIOWriter(f.write)  # streams: no second in-memory copy of the codes
        faiss.write_index(index, writer)
        del writer
    ivf = ivf_of(index)
    entry = {"file": name, "source_file": src, "count": n, "dim": d, "factory": factory,
             "nlist": int(ivf.nlist) if ivf is not None else None, "train_sample": n_train,
             "nprobe": cfg.nprobe or auto_nprobe(int(ivf.nlist) if ivf is not None else None),
             "k_factor": cfg.k_factor, "rerank": cfg.rerank, "build": cfg.build_key(),
             "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
             "build_s": round(time.perf_counter() - t0, 3), "bytes": (folder / name).stat().st_size}
    logger.info("ANN index for %s: %s, %d vectors, %.1f MB, %.1f s", key, factory, n, entry["bytes"] / 2**20,
                entry["build_s"])
    return entry


def _build_ondisk(ix: IndexFolder, emb: np.ndarray, key: str, src: str, cfg: AnnConfig, progress: bool) -> dict:
    """The on-disk kinds (:mod:`zscir.index.ondisk`): partition files recorded first, deleted after the merge."""
    n = int(emb.shape[0])
    bar = tqdm(total=n, desc=f"ann {key[:24]}", unit="vec", disable=not progress, dynamic_ncols=True)
    try:
        entry = build_from_matrix(emb, ix.path, f"ann-{_key_slug(key)}-{uuid.uuid4().hex[:8]}", cfg.kind,
                                  memory_budget=cfg.memory_budget or DEFAULT_MEMORY_BUDGET, seed=cfg.seed,
                                  nprobe=cfg.nprobe, record=ix.record, progress=bar.update)
    except ValueError as e:  # NaN rows, a budget too small: name the gallery file
        raise ValueError(f"{ix.path / src}: {e}") from None
    finally:
        bar.close()
    logger.info("on-disk ANN index for %s: %s, %d vectors, %.1f MB, %.1f s", key, entry["factory"], n,
                entry["ivfdata_bytes"] / 2**20, entry["build_s"])
    return {**entry, "source_file": src, "k_factor": cfg.k_factor, "rerank": cfg.rerank, "build": cfg.build_key(),
            "built": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def refresh_ann_locked(ix: IndexFolder, config: AnnConfig | None = None, *, progress: bool = True,
                       rebuild: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """Bring every gallery's ANN index of the locked folder ``ix`` up to date.

    ``config`` None uses the recorded ``ann_config`` (nothing to do if there is none). Up-to-date indexes
    built with the same build settings are kept (their search-time defaults updated); the others are
    rebuilt. Returns the committed manifest and ``{gallery_key: what happened}``.
    """
    out = ix.path
    manifest = ix.manifest or {}
    cfg = config or AnnConfig.from_dict(manifest.get("ann_config"))
    if cfg is None:
        return manifest, {}
    files = gallery_files(manifest)
    entries = {k: v for k, v in (manifest.get("ann") or {}).items() if k in files}
    status: dict[str, str] = {}
    count = int(manifest.get("count", 0))
    for key in files:
        if (why := too_few_items(count, cfg)) is not None:
            entries.pop(key, None)
            status[key] = f"skipped: {why}"
            continue
        e = entries.get(key)
        if e and not rebuild and stale_reason(out, manifest, key) is None and e.get("build") == cfg.build_key():
            tuned = e.get("nprobe") if e.get("ivfdata") else auto_nprobe(e.get("nlist"))  # on-disk: tuned at build
            entries[key] = {**e, "nprobe": cfg.nprobe or tuned, "k_factor": cfg.k_factor,
                            "rerank": cfg.rerank}
            status[key] = "up to date"
            continue
        entries[key] = _build_one(ix, manifest, key, cfg, progress)
        status[key] = f"built ({entries[key]['factory']}, {entries[key]['build_s']:.1f} s)"
        # commit each gallery's index as soon as it exists: a long multi-gallery build keeps its progress
        ix.commit({**manifest, "ann": dict(entries), "ann_config": asdict(cfg)})
    new = {**manifest, "ann": entries, "ann_config": asdict(cfg)}
    if new != manifest:
        ix.finish_writes()
        new = ix.commit(new)
        ix.collect()  # the replaced ANN files
    return new, status


def _finished_manifest(out: Path) -> dict[str, Any]:
    m = read_manifest(out)
    if m is None:
        raise StoreError(f"{out}: no manifest.json (not a zscir index folder, or its first run did not finish)")
    if int(m.get("generation", 1)) < 1:
        raise StoreError(f"{out}: the first `zscir index` run into this folder did not finish; re-run it first")
    if not gallery_files(m):
        raise StoreError(f"{out}: the manifest names no gallery key (not written by `zscir index`); "
                         f"cannot tell which method's gallery an ANN index would serve")
    return m


def build_ann(index_dir: str | os.PathLike, config: AnnConfig | None = None, *,
              overrides: Mapping[str, Any] | None = None, progress: bool = True, rebuild: bool = False
              ) -> dict[str, str]:
    """Build (or bring up to date) the ANN index of every gallery of a finished index folder.

    ``config`` None: the recorded ``ann_config`` (or the defaults) with ``overrides`` applied. Takes the
    folder's index lock, so it never interleaves with a running ``zscir index``. Settings are recorded as
    ``ann_config``, so later ``zscir index`` runs keep the ANN index up to date.
    """
    out = Path(index_dir).resolve()
    with open_index_folder(out, existing=True) as ix:
        m = _finished_manifest(out)
        cfg = config or AnnConfig.merged(m.get("ann_config"), overrides)
        _, status = refresh_ann_locked(ix, cfg, progress=progress, rebuild=rebuild)
    return status


def remove_ann(index_dir: str | os.PathLike) -> int:
    """Drop the ANN indexes and settings of an index folder (searches become exact); returns how many."""
    out = Path(index_dir).resolve()
    with open_index_folder(out, existing=True) as ix:
        m = _finished_manifest(out)
        n = len(m.get("ann") or {})
        new = {k: v for k, v in m.items() if k not in ("ann", "ann_config")}
        if new != m:
            ix.commit(new)
            ix.collect()
    return n


# ---------------------------------------------------------------------------------------- searching
def open_ann_searcher(folder: str | os.PathLike, manifest: Mapping[str, Any], key: str, embeddings: ArrayLike, *,
                      nprobe: int | None = None, k_factor: int | None = None, rerank: str | None = None,
                      required: bool = False) -> AnnSearcher | None:
    """The :class:`AnnSearcher` of gallery ``key`` in ``folder``, or None (exact search should be used).

    A missing ANN index returns None silently; a stale one (or no faiss) logs a warning and returns None,
    so that a changed index never serves results of the old one. ``required=True`` raises
    :class:`~zscir.index.store.StoreError` instead (``zscir search --ann``).
    """
    where = Path(folder)
    entry = (manifest.get("ann") or {}).get(key)
    if entry is None:
        if required:
            hint = f"build one with `zscir index ann {where}`"
            count = int(manifest.get("count", 0))
            if count < HARD_MIN_ITEMS:  # `zscir index ann` would skip it, whatever the settings
                hint = f"{too_few_items(count)}: search without --ann"
            elif too_few_items(count) is not None:  # skipped under the default settings: say how it is not
                hint = (f"`zscir index ann` skips galleries of fewer than {AnnConfig().min_items} items ({count} "
                        f"here; exact search is fast at this size): search without --ann, or build one anyway "
                        f"with `zscir index ann {where} --min-items {count}`")
            raise StoreError(f"{where}: no ANN index for gallery {key!r}; {hint}")
        return None
    why = stale_reason(where, manifest, key)
    if why is None:
        try:
            index = where / entry["file"]
            if entry.get("ivfdata"):  # on-disk kinds: validated against the manifest, lists memory-mapped
                dim = int(embeddings.shape[1]) if embeddings is not None else int(entry.get("dim", -1))
                index = open_ondisk(where, entry, count=int(manifest.get("count", -1)), dim=dim)
            return AnnSearcher(index, embeddings,
                               nprobe=int(nprobe or entry.get("nprobe") or auto_nprobe(entry.get("nlist"))),
                               k_factor=int(k_factor or entry.get("k_factor", 16)),
                               rerank=rerank or entry.get("rerank", "store"))
        except ImportError as e:
            why = str(e)
        except StoreError as e:  # an on-disk index that does not match the manifest
            why = str(e)
        except (RuntimeError, OSError) as e:  # unreadable faiss file
            why = f"its file {entry['file']} cannot be read ({str(e).splitlines()[-1] if str(e) else e})"
    msg = (f"{where}: the ANN index of gallery {key!r} is not used: {why}; searching exactly. "
           f"Re-run `zscir index` or `zscir index ann {where}` to rebuild it")
    if required:
        raise StoreError(msg)
    logger.warning("%s", msg)
    return None
