"""Indexing a folder of the user's own images: resumable, incremental, robust to hostile files.

Why it is built this way
------------------------
A photo folder is large, grows over time and contains junk, and indexing it is slow, so ``zscir index``
must survive being killed at any moment, must not redo work on a re-run, and must never crash on a bad
file. The index folder stays a valid ``zscir-index`` v1 store (`EmbeddingStore.load` reads it), and its
``manifest.json`` is the single source of truth, replaced atomically at every commit:

* encoded batches are written as *segments* (``segments/<build>-<n>.npz``, atomic) and only count once the
  manifest lists them under ``build.segments``; a segment not listed is an orphan of a kill and is deleted;
* finishing a run writes a new *generation* of data files (``embeddings-g<N>.npy``, ``items-g<N>.jsonl``,
  one ``gallery-<i>-g<N>.npy`` per extra gallery key) under fresh names and then switches the manifest to
  them in one rename, so readers see the old complete index or the new one, never a mix;
* a re-run compares each file's signature (size + mtime, or SHA-256 with ``hash_content``) with the
  committed generation and the listed segments: unchanged items are copied, new or changed ones encoded,
  vanished ones dropped. Items are assembled by unique id, so none is duplicated or lost.

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
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from zscir.index.atomic import atomic_open, atomic_write_json, fsync_dir
from zscir.index.ann import AnnConfig, refresh_ann_locked
from zscir.index.imageio import PIL_FORMATS, ImageLimits, ImageRejected, load_image, read_file_bytes  # noqa: F401
from zscir.index.shards import merge_indexes, shard_of  # noqa: F401 - re-exported (they used to live here)
from zscir.index.store import FORMAT, FORMAT_VERSION, MANIFEST_FILE, StoreError
from zscir.methods.base import Composer

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SEGMENT_DIR = "segments"
_DATA_FILE = re.compile(r"^(embeddings-g\d+\.npy|items-g\d+\.jsonl|gallery-\d+-g\d+\.npy|"
                        r"embeddings\.npy|items\.jsonl|ann-[0-9a-f]+-[0-9a-f]+\.faiss|\..*\.tmp)$")


class IndexLockedError(RuntimeError):
    """Another process is writing the same index folder."""


# ---------------------------------------------------------------------------------------------- scanning
@dataclass(frozen=True)
class FileEntry:
    id: str  # path relative to the root, POSIX separators
    path: str  # absolute path
    size: int
    mtime_ns: int


def scan_images(folder: str | Path, exclude: Sequence[str | Path] = ()) -> tuple[list[FileEntry], list[dict]]:
    """Files with an image extension under ``folder`` (recursive, sorted) and the ones that cannot be stat-ed.

    Directory symlinks are not followed (no loops); file symlinks are, and loops or dangling links are
    reported as skipped. ``exclude`` folders (e.g. the index itself) are not entered.
    """
    root = Path(folder).resolve()
    if not root.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory (expected a folder of images)")
    skip_dirs = {os.path.realpath(p) for p in exclude}
    found: list[FileEntry] = []
    bad: list[dict] = []

    def onerror(e: OSError) -> None:
        bad.append({"id": os.path.relpath(e.filename, root) if e.filename else "?", "path": e.filename,
                    "code": "unreadable", "reason": f"cannot list directory ({e.strerror})"})

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in skip_dirs)
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            p = os.path.join(dirpath, name)
            rel = Path(os.path.relpath(p, root)).as_posix()
            try:
                st = os.stat(p)
            except OSError as e:
                bad.append({"id": rel, "path": p, "code": "unreadable", "reason": f"cannot stat ({e.strerror})"})
                continue
            found.append(FileEntry(rel, p, int(st.st_size), int(st.st_mtime_ns)))
    found.sort(key=lambda f: f.id)
    return found, bad


# ------------------------------------------------------------------------------------------ the indexer
@dataclass
class IndexConfig:
    """How `build_index` reads, encodes and stores; ``throttle_s`` sleeps after each batch (shared CPUs, tests)."""

    batch_size: int = 64
    fp16: bool = False
    hash_content: bool = False
    limits: ImageLimits = field(default_factory=ImageLimits)
    workers: int = 2
    throttle_s: float = 0.0
    progress: bool = True
    shard: tuple[int, int] | None = None  # (i, n): index only the files of shard i of n (see shard_of)
    ann: AnnConfig | None = None  # build/refresh an ANN (IVF-PQ) index per gallery key with these settings
    refresh_ann: bool = True  # keep a previously built ANN index up to date (False: it goes stale, exact is used)


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


@contextlib.contextmanager
def index_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``out_dir/.lock`` so two indexers never interleave commits."""
    out_dir.mkdir(parents=True, exist_ok=True)
    f = open(out_dir / ".lock", "a+")
    try:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no advisory locking
            pass
        except OSError:
            raise IndexLockedError(f"{out_dir} is being written by another `zscir index` process") from None
        yield
    finally:
        f.close()


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The raw manifest, or None when the folder has none; a foreign/corrupt one raises `StoreError`."""
    mpath = out_dir / MANIFEST_FILE
    if not mpath.is_file():
        return None
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"{mpath}: unreadable manifest ({e}); remove the folder to rebuild") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise StoreError(f"{mpath}: not a {FORMAT} manifest; refusing to overwrite it")
    return m


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


def _gallery_composers(composers: Composer | Sequence[Composer]) -> dict[str, Composer]:
    comps = [composers] if isinstance(composers, Composer) else list(composers)
    if not comps:
        raise ValueError("build_index needs at least one composer")
    out: dict[str, Composer] = {}
    for c in comps:
        out.setdefault(c.gallery_cache_key(), c)
    return out


def build_index(
    folder: str | Path,
    out_dir: str | Path,
    composers: Composer | Sequence[Composer],
    *,
    model: str | None = None,
    config: IndexConfig | None = None,
) -> IndexReport:
    """Index (or update, or resume indexing) ``folder`` into ``out_dir``; see the module docstring.

    ``composers``: the first one's gallery embedding is the primary matrix (``embeddings_file``); further
    composers with other gallery keys (e.g. Fusion-Diff's fused gallery) get their own aligned matrix.
    """
    cfg = config or IndexConfig()
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    out = Path(out_dir).resolve()
    galleries = _gallery_composers(composers)
    keys = list(galleries)
    primary = galleries[keys[0]]
    dtype = np.float16 if cfg.fp16 else np.float32
    with index_lock(out):
        entries, bad = scan_images(folder, exclude=[out])
        if cfg.shard is not None:
            i, n = cfg.shard
            if not 0 <= i < n:
                raise ValueError(f"shard {i}/{n}: expected 0 <= i < n")
            entries = [e for e in entries if shard_of(e.id, n) == i]
            bad = [b for b in bad if shard_of(str(b["id"]), n) == i]
        root = str(Path(folder).resolve())
        manifest = read_manifest(out)
        report = IndexReport(out_dir=str(out))
        src = _Sources(out, manifest, keys)
        prev_ids = set(src.rows)
        build_key = {"root": root, "keys": keys, "dtype": np.dtype(dtype).name, "model": model,
                     **({"shard": list(cfg.shard)} if cfg.shard else {})}
        build = (manifest or {}).get("build")
        if build and build.get("key") == build_key:
            for name in build.get("segments", []):
                try:
                    src.add_segment(name)
                except Exception as e:  # noqa: BLE001 - a listed segment must exist; if not, re-encode
                    logger.warning("ignoring unreadable segment %s (%s)", name, e)
        else:
            build = None
        known_bad = {s["id"]: s for s in (manifest or {}).get("skipped", [])}
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
        unchanged = (not todo and build is None and manifest is not None and report.removed == 0
                     and report.reused == len(prev_ids) and manifest.get("dtype") == np.dtype(dtype).name
                     and set((manifest.get("galleries") or {}).keys()) == set(keys))
        if unchanged:
            report.up_to_date, report.indexed, report.generation = True, len(prev_ids), gen
            report.skipped = skipped
            if [s["id"] for s in skipped] != [s["id"] for s in manifest.get("skipped", [])]:
                manifest = {**manifest, "skipped": skipped}
                atomic_write_json(out / MANIFEST_FILE, manifest)
            _collect_garbage(out, manifest)  # leftovers of a run killed right after its final commit
            _refresh_ann(out, manifest, cfg, report)  # e.g. a run killed before its ANN rebuild
            return report

        build = build or {"id": uuid.uuid4().hex[:12], "key": build_key, "segments": [], "skipped": [],
                          "started": _now()}
        manifest = manifest or _empty_manifest(model, primary, root)
        manifest["build"] = build
        _start_build(out, manifest)
        skipped.extend(_encode_todo(todo, galleries, cfg, dtype, out, manifest, src, report))

        # ---- finalize: one new generation, switched in by a single manifest rename
        ids = [e.id for e in entries if e.id in src.rows and _same(src.rows[e.id][2], sigs[e.id])]
        gen += 1
        files, dims = {}, {}
        for ki, key in enumerate(keys):
            name = f"embeddings-g{gen}.npy" if ki == 0 else f"gallery-{ki}-g{gen}.npy"
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
        items_name = f"items-g{gen}.jsonl"
        with atomic_open(out / items_name, "wb") as f:
            for item_id in ids:
                f.write(json.dumps(src.rows[item_id][2], ensure_ascii=False).encode("utf-8") + b"\n")
        new = {
            **_empty_manifest(model, primary, root),
            "count": len(ids), "dim": dims[keys[0]], "dtype": np.dtype(dtype).name, "normalized": normalized,
            "embeddings_file": files[keys[0]], "items_file": items_name, "generation": gen,
            "created": manifest.get("created") or _now(), "updated": _now(),
            "galleries": {k: {"file": files[k], "dim": dims[k], "method": galleries[k].name,
                              "method_config": _describe(galleries[k])} for k in keys},
            "skipped": skipped, "build": None, "shard": list(cfg.shard) if cfg.shard else None,
            "indexer": {"hash_content": cfg.hash_content, "limits": asdict(cfg.limits)},
            # carried over: now stale (they name the old generation's files) until _refresh_ann rebuilds them
            **{k: manifest[k] for k in ("ann", "ann_config") if manifest.get(k)},
        }
        atomic_write_json(out / MANIFEST_FILE, new)
        _collect_garbage(out, new)
        report.indexed, report.generation, report.skipped = len(ids), gen, skipped
        _refresh_ann(out, new, cfg, report)
        logger.info("index %s generation %d: %d items (%d encoded, %d reused, %d resumed, %d removed, %d skipped)",
                    out, gen, len(ids), report.encoded, report.reused, report.resumed, report.removed, len(skipped))
        return report


def _refresh_ann(out: Path, manifest: dict[str, Any], cfg: IndexConfig, report: IndexReport) -> None:
    """Build or rebuild the ANN indexes after a commit (`IndexConfig.ann`, or the recorded settings)."""
    if cfg.ann is None and not (cfg.refresh_ann and manifest.get("ann_config")):
        return
    try:
        _, report.ann = refresh_ann_locked(out, manifest, cfg.ann, progress=cfg.progress)
    except ImportError as e:  # the index itself is committed and fine; only its ANN index stays stale
        logger.warning("ANN index not rebuilt (%s); searches of %s are exact until it is", e, out)
        report.ann = {k: f"not rebuilt: {e}" for k in (manifest.get("galleries") or {})}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _describe(c: Composer) -> Any:
    try:
        return json.loads(json.dumps(c.describe()))
    except Exception:  # noqa: BLE001 - descriptions are informative only
        return {"method": c.name}


def _empty_manifest(model: str | None, primary: Composer, root: str) -> dict[str, Any]:
    """A manifest that loads as an empty store; `generation` 0 marks "no complete run yet"."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "count": 0, "dim": 1, "dtype": "float32",
            "model": model, "method": primary.name, "preprocessing": None, "created": _now(),
            "normalized": True, "embeddings_file": "embeddings-g0.npy", "items_file": "items-g0.jsonl",
            "generation": 0, "root": root, "gallery_key": primary.gallery_cache_key(),
            "method_config": _describe(primary), "galleries": {}, "skipped": [], "build": None}


def _dim_of(src: _Sources, ki: int, composer: Composer) -> int:
    for arrays in src.arrays.values():
        if arrays[ki].shape[0]:
            return int(arrays[ki].shape[1])
    return int(composer.encode_gallery([Image.new("RGB", (8, 8))]).shape[1])  # empty index: probe the width


def _start_build(out: Path, manifest: dict[str, Any]) -> None:
    """Commit the build record (and, on a first run, the empty generation it names), then drop orphans."""
    if manifest.get("generation", 0) == 0:
        with atomic_open(out / "embeddings-g0.npy", "wb") as f:
            np.save(f, np.zeros((0, 1), np.float32), allow_pickle=False)
        with atomic_open(out / "items-g0.jsonl", "wb"):
            pass
    atomic_write_json(out / MANIFEST_FILE, manifest, indent=None)
    _collect_garbage(out, manifest)  # unlisted segments and temp files of a killed run


def _encode_todo(todo, galleries, cfg, dtype, out: Path, manifest, src: _Sources, report: IndexReport) -> list[dict]:
    """Encode ``todo`` in batches; each batch becomes a committed segment (atomic file, then manifest)."""
    build = manifest["build"]
    skipped: list[dict] = []
    (out / SEGMENT_DIR).mkdir(exist_ok=True)
    bar = tqdm(total=len(todo), desc="index", unit="img", disable=not cfg.progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max(1, cfg.workers)) if cfg.workers > 0 else None

    def load(job: tuple[FileEntry, dict]) -> tuple[FileEntry, dict, Image.Image | ImageRejected]:
        e, sig = job
        try:
            return e, sig, load_image(e.path, cfg.limits)
        except ImageRejected as err:
            return e, sig, err

    def submit(start: int) -> list | None:
        # the next batch decodes in the pool while this one is encoded (PIL and torch release the GIL)
        if pool is None or start >= len(todo):
            return None
        return [pool.submit(load, j) for j in todo[start:start + cfg.batch_size]]

    try:
        pending = submit(0)
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            loaded = [f.result() for f in pending] if pending is not None else [load(j) for j in chunk]
            pending = submit(start + cfg.batch_size)
            images, recs, bad = [], [], []
            for e, sig, res in loaded:
                if isinstance(res, ImageRejected):
                    bad.append({"id": e.id, "path": e.path, "code": res.code, "reason": str(res), **sig})
                else:
                    images.append(res)
                    recs.append({"id": e.id, "path": e.path, **sig, "width": res.width, "height": res.height})
            arrays = {f"emb{ki}": composer.encode_gallery(images).float().cpu().numpy().astype(dtype) if images
                      else np.zeros((0, 1), dtype) for ki, composer in enumerate(galleries.values())}
            name = f"{build['id']}-{len(build['segments']):06d}.npz"
            payload = np.frombuffer(json.dumps(recs, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)
            with atomic_open(out / SEGMENT_DIR / name, "wb") as f:
                np.savez(f, items=payload, **arrays)
            build["segments"].append(name)
            build["skipped"].extend(bad)
            atomic_write_json(out / MANIFEST_FILE, manifest, indent=None)  # the commit point of this batch
            if recs:
                src.add_segment(name)
            skipped.extend(bad)
            report.encoded += len(recs)
            bar.update(len(chunk))
            bar.set_postfix(skipped=len(skipped), refresh=False)
            if cfg.throttle_s > 0:
                time.sleep(cfg.throttle_s)
    finally:
        bar.close()
        if pool:
            pool.shutdown(wait=False, cancel_futures=True)
    return skipped


def _collect_garbage(out: Path, manifest: dict[str, Any]) -> None:
    """Delete data files and segments the manifest does not reference (old generations, kill orphans)."""
    live = {manifest.get("embeddings_file"), manifest.get("items_file"), MANIFEST_FILE}
    live |= {g.get("file") for g in (manifest.get("galleries") or {}).values()}
    live |= {a.get("file") for a in (manifest.get("ann") or {}).values()}
    segs = set((manifest.get("build") or {}).get("segments", []))
    for p in out.iterdir():
        if p.is_file() and p.name not in live and _DATA_FILE.match(p.name):
            with contextlib.suppress(OSError):
                p.unlink()
    seg_dir = out / SEGMENT_DIR
    if seg_dir.is_dir():
        for p in seg_dir.iterdir():
            if p.name not in segs:
                with contextlib.suppress(OSError):
                    p.unlink()
        if not segs:
            with contextlib.suppress(OSError):
                seg_dir.rmdir()
    fsync_dir(out)
