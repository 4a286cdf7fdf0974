"""Indexing a folder of the user's own images: resumable, incremental, robust to hostile files.

Why it is built this way
------------------------
A photo folder is large, grows over time and contains junk, and indexing it is slow, so ``zscir index``
must survive being killed at any moment, must not redo work on a re-run, and must never crash on a bad
file. The index folder stays a valid ``zscir-index`` v1 store (`EmbeddingStore.load` reads it), and its
``manifest.json`` is the single source of truth, replaced atomically at every commit. Every write, commit
and delete goes through :mod:`zscir.index.folder`: ``--out`` must be new, empty or an index, each file is
recorded before it is created, and only recorded files are ever collected.

* encoded batches are written as *segments* (``segments/<build>-<n>.npz``, atomic) and only count once the
  manifest lists them under ``build.segments``; a recorded segment never listed is an orphan of a kill and is
  collected;
* finishing a run writes a new *generation* of data files (``embeddings-g<N>.npy``, ``items-g<N>.jsonl``,
  one ``gallery-<i>-g<N>.npy`` per extra gallery key) under fresh names and then switches the manifest to
  them in one rename, so readers see the old complete index or the new one, never a mix;
* a re-run compares each file's signature (size + mtime, or SHA-256 with ``hash_content``) with the
  committed generation and the listed segments: unchanged items are copied, new or changed ones encoded,
  vanished ones dropped. Items are assembled by unique id, so none is duplicated or lost;
* when nothing changed, :func:`check_up_to_date` says so from the manifest and the file stats alone, so the
  CLI does not even create the model; replacing an index of another model or folder needs ``overwrite``.

With ``IndexConfig.ann`` (``zscir index --ann ivfpq``) every gallery key also gets a FAISS IVF-PQ index
(:mod:`zscir.index.ann`), rebuilt after each new generation so that it never describes old rows; the
manifest keeps the settings, so later runs keep it up to date without the option.

Files are read through :func:`load_image`, which refuses non-regular files, empty, oversized and
non-image files, unsupported formats and decompression bombs *before* decoding pixels, and downsizes
large photos right away so that a batch of camera images cannot exhaust memory. Refused files are listed
in the report (and the manifest) with a reason; unchanged refused files are not re-read on the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from zscir.index.ann import AnnConfig, ann_status, refresh_ann_locked
from zscir.index.atomic import atomic_open
from zscir.index.folder import (  # noqa: F401 - IndexLockedError, index_lock, read_manifest: re-exported
    SEGMENT_DIR,
    IndexFolder,
    check_claimable,
    IndexLockedError,
    index_lock,
    now,
    open_index_folder,
    read_manifest,
)
from zscir.data.imageio import PIL_FORMATS, ImageLimits, ImageRejected, load_image, read_file_bytes  # noqa: F401
from zscir.index.names import printable, storable_path
from zscir.index.prefetch import default_workers, prefetched_batches  # noqa: F401 - re-exported
from zscir.index.scan import IMAGE_EXTENSIONS, FileEntry, check_image_folder, scan_images  # noqa: F401 - re-exported
from zscir.index.shards import shard_of
from zscir.index.store import FORMAT, FORMAT_VERSION, StoreError
from zscir.methods.base import Composer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ the indexer
@dataclass
class IndexConfig:
    """How `build_index` reads, encodes and stores; ``throttle_s`` sleeps after each batch (shared CPUs, tests)."""

    batch_size: int = 64
    fp16: bool = False
    hash_content: bool = False
    limits: ImageLimits = field(default_factory=ImageLimits)
    workers: int | None = None  # decode threads; None: `default_workers()` (the cores torch leaves free)
    throttle_s: float = 0.0
    progress: bool = True
    shard: tuple[int, int] | None = None  # (i, n): index only the files of shard i of n (see shard_of)
    ann: AnnConfig | None = None  # build/refresh an ANN (IVF-PQ) index per gallery key with these settings
    refresh_ann: bool = True  # keep a previously built ANN index up to date (False: it goes stale, exact is used)
    threads: dict[str, Any] | None = None  # how the thread count was chosen (`zscir.threads.ThreadChoice`)


@dataclass
class IndexReport:
    out_dir: str = ""
    indexed: int = 0  # items in the index after this run
    encoded: int = 0  # encoded by this run
    reused: int = 0  # copied from the previous generation
    resumed: int = 0  # recovered from segments of an interrupted run
    removed: int = 0  # in the previous generation but gone from the folder
    up_to_date: bool = False
    generation: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"id", "path", "code", "reason"}
    ann: dict[str, str] = field(default_factory=dict)  # gallery key -> what happened to its ANN index


def _threads_record(cfg: IndexConfig) -> dict[str, Any]:
    """The torch threads this run used, with how they were chosen (recorded in the manifest)."""
    import torch

    return {**(cfg.threads or {}), "torch": torch.get_num_threads()}


def _signature(entry: FileEntry, cfg: IndexConfig) -> dict[str, Any]:
    sig: dict[str, Any] = {"size": entry.size, "mtime_ns": entry.mtime_ns}
    if cfg.hash_content:
        h = hashlib.sha256()
        with contextlib.suppress(OSError), open(entry.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        sig = {"sha256": h.hexdigest()}
    return sig


def _same(rec: dict[str, Any], sig: dict[str, Any]) -> bool:
    return all(rec.get(k) == v for k, v in sig.items())


class _Sources:
    """Where each already-encoded item's rows live: the committed generation or a committed segment."""

    def __init__(self, out_dir: Path, manifest: dict[str, Any] | None, keys: list[str]):
        self.rows: dict[str, tuple[str, int, dict]] = {}  # id -> (source name, row, record)
        self.arrays: dict[str, list[np.ndarray]] = {}  # source name -> one array per key
        self.out_dir = out_dir
        self.keys = keys
        if manifest and manifest.get("generation", 1) >= 1 and int(manifest.get("count", 0)) > 0:
            with contextlib.suppress(Exception):
                self._add_generation(manifest)

    def _add_generation(self, m: dict[str, Any]) -> None:
        gal = m.get("galleries") or {m.get("gallery_key"): {"file": m.get("embeddings_file", "embeddings.npy")}}
        if not all(k in gal for k in self.keys):
            logger.info("the index lacks gallery keys of this run; every item is re-encoded")
            return
        arrays = [np.load(self.out_dir / gal[k]["file"], mmap_mode="r", allow_pickle=False) for k in self.keys]
        with open(self.out_dir / m.get("items_file", "items.jsonl"), encoding="utf-8") as f:
            items = [json.loads(line) for line in f if line.strip()]
        if any(a.shape[0] != len(items) for a in arrays):
            raise StoreError("generation files disagree with each other")
        self.arrays["gen"] = arrays
        for i, rec in enumerate(items):
            self.rows[rec["id"]] = ("gen", i, rec)

    def add_segment(self, name: str) -> None:
        with np.load(self.out_dir / SEGMENT_DIR / name, allow_pickle=False) as z:
            arrays = [z[f"emb{i}"] for i in range(len(self.keys))]
            items = json.loads(z["items"].tobytes().decode("utf-8"))
        self.arrays[name] = arrays
        for i, rec in enumerate(items):
            self.rows[rec["id"]] = (name, i, rec)

    def row(self, key_index: int, item_id: str) -> np.ndarray:
        src, i, _ = self.rows[item_id]
        return self.arrays[src][key_index][i]


def decode_side(composers: Sequence[Composer]) -> int | None:
    """The short side the indexer decodes JPEGs to: the largest input side of the gallery composers.

    None (the general `ImageLimits.max_side` bound) as soon as one composer does not know its side, so a
    method with its own image pipeline (Fusion-Diff's captioner) always sees what it saw before.
    """
    sides = [c.gallery_input_side() for c in composers]
    return None if not sides or None in sides else max(sides)


def _gallery_composers(composers: Composer | Sequence[Composer]) -> dict[str, Composer]:
    comps = [composers] if isinstance(composers, Composer) else list(composers)
    if not comps:
        raise ValueError("build_index needs at least one composer")
    out: dict[str, Composer] = {}
    for c in comps:
        out.setdefault(c.gallery_cache_key(), c)
    return out


def _separate(folder: str | Path, out: Path) -> Path:
    """The resolved image folder; refused when it is the index folder itself.

    An index folder *inside* the image folder is fine: the scan does not enter it.
    """
    root_path = Path(folder).resolve()
    if root_path == out:
        raise StoreError(f"{out}: the index folder cannot be the folder of images itself; choose another --out "
                         f"(e.g. a new folder next to it; one inside it is left out of the scan)")
    return root_path


def check_destination(folder: str | Path, out_dir: str | Path, *, model: str | None = None,
                      overwrite: bool = False) -> None:
    """Everything `build_index` would refuse about ``out_dir``, checked before any work (or model load).

    Raises `StoreError`: ``out_dir`` is the image folder, a folder zscir may not write into, or an index of
    another model or folder without ``overwrite``. Writes nothing.
    """
    check_image_folder(folder)
    out = Path(out_dir).resolve()
    root = storable_path(_separate(folder, out))["path"]
    check_claimable(out)
    refuse_replacement(out, replaced_source(read_manifest(out), model=model, root=root), overwrite)


def _scan(folder: str | Path, out: Path, cfg: IndexConfig) -> tuple[list[FileEntry], list[dict], str]:
    """The files of ``folder`` this run indexes (its shard only), the skipped ones, and the stored root."""
    root_path = _separate(folder, out)
    entries, bad = scan_images(root_path, exclude=[out])
    if cfg.shard is not None:
        i, n = cfg.shard
        if not 0 <= i < n:
            raise ValueError(f"shard {i}/{n}: expected 0 <= i < n")
        entries = [e for e in entries if shard_of(e.id, n) == i]
        bad = [b for b in bad if shard_of(str(b["id"]), n) == i]
    return entries, bad, storable_path(root_path)["path"]


def replaced_source(manifest: Mapping[str, Any] | None, *, model: str | None, root: str | None) -> str | None:
    """What makes ``manifest`` an index of *another* model or folder (None: the same source, or unknown).

    Replacing such an index needs an explicit ``overwrite`` (``zscir index --overwrite``): a mistyped
    ``--out`` must not silently throw away a day of encoding.
    """
    if not manifest:
        return None
    for what, old, new in (("model", manifest.get("model"), model), ("folder", manifest.get("root"), root)):
        if old is not None and new is not None and old != new:
            return f"it holds an index of {what} {printable(old)!r}, not {printable(new)!r}"
    return None


def refuse_replacement(out: Path, why: str | None, overwrite: bool) -> bool:
    """True when the existing index is being replaced; raise when that was not asked for."""
    if why is None:
        return False
    if not overwrite:
        raise StoreError(f"{out}: {why}; pass --overwrite (overwrite=True) to replace it, or choose another --out")
    logger.warning("%s: %s; replacing it (--overwrite)", out, why)
    return True


def _tree_signature(path: str | Path, limit: int = 5000) -> dict[str, Any]:
    """A digest of the names, sizes and mtimes of the files under ``path`` (a file or a folder)."""
    p = Path(path).expanduser()
    h = hashlib.sha1()
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())[:limit] if p.is_dir() else []
    for q in files:
        with contextlib.suppress(OSError):
            st = q.stat()
            h.update(f"{q.relative_to(p) if q != p else q.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(
                "utf-8", "surrogateescape"))
    return {"path": storable_path(p.resolve())["path"], "files": len(files), "sha1": h.hexdigest()}


def make_request(model: str | None, methods: Sequence[str], checkpoint: str | None = None) -> dict[str, Any]:
    """The request `zscir index` records: model, methods, and signatures of local model/checkpoint files.

    Equal requests (and unchanged image files) mean an unchanged index; see :func:`check_up_to_date`.
    A model from the hub is identified by its name only.
    """
    req: dict[str, Any] = {"model": model, "methods": list(methods)}
    local = None
    if model and model.startswith("local-dir:"):
        local = model[len("local-dir:"):]
    elif model and not model.startswith(("hf-hub:", "open_clip:")) and ("/" in model or os.sep in model):
        local = model  # a bare model folder (built-in names have no separator)
    if local and Path(local).expanduser().is_dir():
        req["model_files"] = _tree_signature(local)
    if checkpoint:
        req["checkpoint"] = _tree_signature(checkpoint)
    return req


def build_index(
    folder: str | Path,
    out_dir: str | Path,
    composers: Composer | Sequence[Composer],
    *,
    model: str | None = None,
    config: IndexConfig | None = None,
    overwrite: bool = False,
    request: Mapping[str, Any] | None = None,
) -> IndexReport:
    """Index (or update, or resume indexing) ``folder`` into ``out_dir``; see the module docstring.

    ``composers``: the first one's gallery embedding is the primary matrix (``embeddings_file``); further
    composers with other gallery keys (e.g. Fusion-Diff's fused gallery) get their own aligned matrix.
    ``out_dir`` must be new, empty or an index (:mod:`zscir.index.folder`); an index of another model or
    folder is replaced only with ``overwrite``. ``request`` (default: :func:`make_request` of the model and
    the method names) is recorded for :func:`check_up_to_date`.
    """
    cfg = config or IndexConfig()
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    out = Path(out_dir).resolve()
    galleries = _gallery_composers(composers)
    keys = list(galleries)
    primary = galleries[keys[0]]
    dtype = np.float16 if cfg.fp16 else np.float32
    req = dict(request) if request is not None else make_request(model, [c.name for c in galleries.values()])
    check_image_folder(folder)  # before the folder is claimed: a typo leaves nothing behind
    _separate(folder, out)
    with open_index_folder(out) as ix:
        entries, bad, root = _scan(folder, out, cfg)
        manifest = ix.manifest
        fresh = refuse_replacement(out, replaced_source(manifest, model=model, root=root), overwrite)
        reusable = None if fresh else manifest
        report = IndexReport(out_dir=str(out))
        src = _Sources(out, reusable, keys)
        prev_ids = set(src.rows)
        build_key = {"root": root, "keys": keys, "dtype": np.dtype(dtype).name, "model": model,
                     **({"shard": list(cfg.shard)} if cfg.shard else {})}
        build = (reusable or {}).get("build")
        if build and build.get("key") == build_key:
            for name in build.get("segments", []):
                try:
                    src.add_segment(name)
                except Exception as e:  # noqa: BLE001 - a listed segment must exist; if not, re-encode
                    logger.warning("ignoring unreadable segment %s (%s)", name, e)
        else:
            build = None
        known_bad = {s["id"]: s for s in (reusable or {}).get("skipped", [])}
        known_bad.update({s["id"]: s for s in (build or {}).get("skipped", [])})

        todo: list[tuple[FileEntry, dict]] = []
        sigs: dict[str, dict] = {}
        skipped = list(bad)
        for e in entries:
            sig = sigs[e.id] = _signature(e, cfg)
            prev = src.rows.get(e.id)
            if prev is not None and _same(prev[2], sig):
                report.reused += prev[0] == "gen"
                report.resumed += prev[0] != "gen"
            elif e.id in known_bad and _same(known_bad[e.id], sig):
                skipped.append(known_bad[e.id])
            else:
                todo.append((e, sig))
        report.removed = len(prev_ids - set(sigs))
        gen = int((manifest or {}).get("generation", 0) or 0)
        unchanged = (not todo and build is None and reusable is not None and report.removed == 0
                     and report.reused == len(prev_ids) and reusable.get("dtype") == np.dtype(dtype).name
                     and set((reusable.get("galleries") or {}).keys()) == set(keys))
        if unchanged:
            report.up_to_date, report.indexed, report.generation = True, len(prev_ids), gen
            report.skipped = skipped
            if ([s["id"] for s in skipped] != [s["id"] for s in reusable.get("skipped", [])]
                    or reusable.get("request") != req):
                ix.commit({**reusable, "skipped": skipped, "request": req})
            ix.collect()  # leftovers of a run killed right after its final commit
            _refresh_ann(ix, cfg, report)  # e.g. a run killed before its ANN rebuild
            return report

        build = build or {"id": uuid.uuid4().hex[:12], "key": build_key, "segments": [], "skipped": [],
                          "started": now()}
        base = {**(manifest if manifest is not None else empty_manifest(model, primary, root)), "build": build}
        _start_build(ix, base, gen, len(keys))
        skipped.extend(_encode_todo(todo, galleries, cfg, dtype, ix, src, report))

        # ---- finalize: one new generation, switched in by a single manifest rename
        ids = [e.id for e in entries if e.id in src.rows and _same(src.rows[e.id][2], sigs[e.id])]
        gen += 1
        files, dims = {}, {}
        for ki, key in enumerate(keys):
            name = generation_files(gen, len(keys))[ki]
            dim = _dim_of(src, ki, galleries[key])
            arr = np.zeros((len(ids), dim), dtype=dtype)
            for r, item_id in enumerate(ids):
                arr[r] = src.row(ki, item_id)
            with atomic_open(out / name, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            files[key], dims[key] = name, dim
            if ki == 0:
                normalized = bool(arr.size == 0 or np.allclose(np.linalg.norm(arr.astype(np.float32), axis=1), 1,
                                                              atol=1e-2))
        items_name = generation_files(gen, len(keys))[-1]
        with atomic_open(out / items_name, "wb") as f:
            for item_id in ids:
                f.write(json.dumps(src.rows[item_id][2], ensure_ascii=False).encode("utf-8") + b"\n")
        carried = {} if fresh else {k: ix.manifest[k] for k in ("ann", "ann_config") if ix.manifest.get(k)}
        new = {
            **empty_manifest(model, primary, root),
            "count": len(ids), "dim": dims[keys[0]], "dtype": np.dtype(dtype).name, "normalized": normalized,
            "embeddings_file": files[keys[0]], "items_file": items_name, "generation": gen,
            "created": (None if fresh else ix.manifest.get("created")) or now(), "updated": now(),
            "galleries": {k: {"file": files[k], "dim": dims[k], "method": galleries[k].name,
                              "method_config": describe_composer(galleries[k])} for k in keys},
            "skipped": skipped, "build": None, "shard": list(cfg.shard) if cfg.shard else None,
            "indexer": {"hash_content": cfg.hash_content, "limits": asdict(cfg.limits),
                        "decode_side": decode_side(list(galleries.values())), "threads": _threads_record(cfg)},
            "request": req,
            # carried over: now stale (they name the old generation's files) until _refresh_ann rebuilds them
            **carried,
        }
        ix.finish_writes()
        ix.commit(new)
        ix.collect()
        report.indexed, report.generation, report.skipped = len(ids), gen, skipped
        _refresh_ann(ix, cfg, report)
        logger.info("index %s generation %d: %d items (%d encoded, %d reused, %d resumed, %d removed, %d skipped)",
                    out, gen, len(ids), report.encoded, report.reused, report.resumed, report.removed, len(skipped))
        return report


def check_up_to_date(folder: str | Path, out_dir: str | Path, *, request: Mapping[str, Any],
                     config: IndexConfig | None = None) -> IndexReport | None:
    """The report of an index that a `build_index` run with ``request`` would leave as it is, else None.

    Why: deciding that nothing changed needs only the manifest and the files' stats (or hashes with
    ``hash_content``), while creating the model takes seconds to a minute. The CLI asks this first and
    loads the model only when there is work. Nothing is written. The check trusts the recorded ``request``
    (model name, methods, checkpoint): weights changed in place under the same name are not detected
    (the full run would notice them through the gallery keys).
    """
    cfg = config or IndexConfig()
    out = Path(out_dir).resolve()
    try:
        manifest = read_manifest(out)
    except StoreError:
        return None
    dtype = np.dtype(np.float16 if cfg.fp16 else np.float32).name
    if (not manifest or manifest.get("build") or int(manifest.get("generation") or 0) < 1
            or manifest.get("request") != dict(request) or manifest.get("dtype") != dtype
            or manifest.get("shard") != (list(cfg.shard) if cfg.shard else None) or not manifest.get("galleries")):
        return None
    entries, bad, root = _scan(folder, out, cfg)
    if manifest.get("root") != root:
        return None
    try:
        with open(out / manifest["items_file"], encoding="utf-8") as f:
            items = {rec["id"]: rec for rec in map(json.loads, filter(str.strip, f))}
        for g in manifest["galleries"].values():  # the data files exist and match (headers only)
            if np.load(out / g["file"], mmap_mode="r", allow_pickle=False).shape[0] != len(items):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    known_bad = {s["id"]: s for s in manifest.get("skipped", [])}
    skipped = list(bad)
    seen = 0
    for e in entries:
        sig = _signature(e, cfg)
        if e.id in items and _same(items[e.id], sig):
            seen += 1
        elif e.id in known_bad and _same(known_bad[e.id], sig):
            skipped.append(known_bad[e.id])
        else:
            return None
    if seen != len(items) or [s["id"] for s in skipped] != [s["id"] for s in manifest.get("skipped", [])]:
        return None
    if cfg.ann is not None and asdict(cfg.ann) != manifest.get("ann_config"):
        return None
    if cfg.ann is not None or (cfg.refresh_ann and manifest.get("ann_config")):
        floor = (AnnConfig.from_dict(manifest.get("ann_config")) or AnnConfig()).min_items
        status = ann_status(out, manifest)
        if any(v != "up to date" for v in status.values()) and len(items) >= floor:
            return None
    return IndexReport(out_dir=str(out), indexed=len(items), up_to_date=True,
                       generation=int(manifest["generation"]), skipped=skipped)


def _refresh_ann(ix: IndexFolder, cfg: IndexConfig, report: IndexReport) -> None:
    """Build or rebuild the ANN indexes after a commit (`IndexConfig.ann`, or the recorded settings)."""
    manifest = ix.manifest or {}
    if cfg.ann is None and not (cfg.refresh_ann and manifest.get("ann_config")):
        return
    try:
        _, report.ann = refresh_ann_locked(ix, cfg.ann, progress=cfg.progress)
    except ImportError as e:  # the index itself is committed and fine; only its ANN index stays stale
        logger.warning("ANN index not rebuilt (%s); searches of %s are exact until it is", e, ix.path)
        report.ann = {k: f"not rebuilt: {e}" for k in (manifest.get("galleries") or {})}


def describe_composer(c: Composer) -> Any:
    try:
        return json.loads(json.dumps(c.describe()))
    except Exception:  # noqa: BLE001 - descriptions are informative only
        return {"method": c.name}


def empty_manifest(model: str | None, primary: Composer, root: str) -> dict[str, Any]:
    """A manifest that loads as an empty store; `generation` 0 marks "no complete run yet"."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "count": 0, "dim": 1, "dtype": "float32",
            "model": model, "method": primary.name, "preprocessing": None, "created": now(),
            "normalized": True, "embeddings_file": "embeddings-g0.npy", "items_file": "items-g0.jsonl",
            "generation": 0, "root": root, "gallery_key": primary.gallery_cache_key(),
            "method_config": describe_composer(primary), "galleries": {}, "skipped": [], "build": None}


def _dim_of(src: _Sources, ki: int, composer: Composer) -> int:
    for arrays in src.arrays.values():
        if arrays[ki].shape[0]:
            return int(arrays[ki].shape[1])
    return int(composer.encode_gallery([Image.new("RGB", (8, 8))]).shape[1])  # empty index: probe the width


def generation_files(gen: int, n_keys: int) -> list[str]:
    """Data files of generation ``gen``: one matrix per gallery key, then the items file."""
    mats = [f"embeddings-g{gen}.npy" if ki == 0 else f"gallery-{ki}-g{gen}.npy" for ki in range(n_keys)]
    return mats + [f"items-g{gen}.jsonl"]


def _segment_name(build: Mapping[str, Any], n: int) -> str:
    return f"{SEGMENT_DIR}/{build['id']}-{n:06d}.npz"


def _start_build(ix: IndexFolder, manifest: dict[str, Any], gen: int, n_keys: int) -> None:
    """Commit the build record, recording every file this run may write, then drop orphans of killed runs.

    Recorded ahead: the next generation's data files and the first new segment (each batch commit records
    the one after it), and on a first run the empty generation 0 that the manifest names until then.
    """
    build = manifest["build"]
    names = set(generation_files(gen + 1, n_keys)) | {_segment_name(build, len(build["segments"]))}
    if gen == 0:
        names |= {"embeddings-g0.npy", "items-g0.jsonl"}
    ix.record(names, manifest)
    if gen == 0:
        with atomic_open(ix.path / "embeddings-g0.npy", "wb") as f:
            np.save(f, np.zeros((0, 1), np.float32), allow_pickle=False)
        with atomic_open(ix.path / "items-g0.jsonl", "wb"):
            pass
    ix.collect()  # unlisted segments and temp files of a killed run (recorded ones only)


def encode_batch(composer: Composer, images: list[Image.Image], prepared: list) -> torch.Tensor:
    """The gallery embeddings of one batch, from the decode threads' preprocessing where it was split off."""
    if prepared and all(p is not None for p in prepared):
        return composer.encode_prepared_gallery(prepared).float().cpu()
    return composer.encode_gallery(images).float().cpu()


def _encode_todo(todo, galleries, cfg, dtype, ix: IndexFolder, src: _Sources, report: IndexReport) -> list[dict]:
    """Encode ``todo`` in batches; each batch becomes a committed segment (atomic file, then manifest)."""
    manifest = ix.manifest
    build = manifest["build"]
    skipped: list[dict] = []
    bar = tqdm(total=len(todo), desc="index", unit="img", disable=not cfg.progress, dynamic_ncols=True)
    device = getattr(getattr(next(iter(galleries.values())), "backbone", None), "device", None)
    workers = default_workers(getattr(device, "type", "cpu") == "cpu") if cfg.workers is None else cfg.workers
    comps = list(galleries.values())
    side = decode_side(comps)

    def load(job: tuple[FileEntry, dict]) -> tuple[FileEntry, dict, Image.Image | ImageRejected, list]:
        # decode and each composer's per-image preprocessing, off the model's thread when there is a pool
        e, sig = job
        try:
            im = load_image(e.path, cfg.limits, min_side=side)
        except ImageRejected as err:
            return e, sig, err, []
        return e, sig, im, [c.prepare_gallery_image(im) for c in comps]

    batches = prefetched_batches(todo, load, cfg.batch_size, workers)
    try:
        if todo:
            (ix.path / SEGMENT_DIR).mkdir(exist_ok=True)
        for chunk, loaded in batches:
            images, preps, recs, bad = [], [], [], []
            for e, sig, res, prep in loaded:
                if isinstance(res, ImageRejected):
                    bad.append({"id": e.id, **e.path_record(), "code": res.code, "reason": printable(res), **sig})
                else:
                    images.append(res)
                    preps.append(prep)
                    recs.append({"id": e.id, **e.path_record(), **sig, "width": res.width, "height": res.height})
            arrays = {f"emb{ki}": encode_batch(composer, images, [p[ki] for p in preps]).numpy().astype(dtype)
                      if images else np.zeros((0, 1), dtype) for ki, composer in enumerate(comps)}
            seg = _segment_name(build, len(build["segments"]))  # recorded by the previous commit
            payload = np.frombuffer(json.dumps(recs, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
            with atomic_open(ix.path / seg, "wb") as f:
                np.savez(f, items=payload, **arrays)
            build["segments"].append(seg.split("/", 1)[1])
            build["skipped"].extend(bad)
            # the commit point of this batch, which also records the next segment's name
            ix.record({_segment_name(build, len(build["segments"]))}, manifest)
            if recs:
                src.add_segment(seg.split("/", 1)[1])
            skipped.extend(bad)
            report.encoded += len(recs)
            bar.update(len(chunk))
            bar.set_postfix(skipped=len(skipped), refresh=False)
            if cfg.throttle_s > 0:
                time.sleep(cfg.throttle_s)
    finally:
        batches.close()  # stops the decode pool at once, also on an error or a kill
        bar.close()
    return skipped
