"""On-disk gallery embedding store.

Layout of a store folder (format ``zscir-index``, version 1)::

    embeddings.npy   float32 or float16, shape (count, dim); row i <-> item i
    items.jsonl      one JSON object per line: {"id": str, "path": str, ...metadata}
    manifest.json    {"format": "zscir-index", "format_version": 1, "count", "dim",
                      "dtype", "model", "method", "preprocessing", "created", ...}

Why this shape: ``.npy`` can be memory-mapped, so a multi-GB fp16 gallery
loads instantly and is upcast chunk by chunk during search; JSON lines keep
per-item metadata human-readable and appendable by other tools; the manifest
records *how* the embeddings were produced (model, method, preprocessing) so
queries embedded with a different model are not silently compared against
them.

The manifest is the single source of truth and is written last (and removed
first when a store is overwritten): every file is written atomically, so a
crash leaves either a complete store or a folder without a manifest, which
:meth:`EmbeddingStore.load` rejects as incomplete instead of serving a mix of
old and new files.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np
import torch

from zscir.index.atomic import atomic_open, atomic_write_json, fsync_dir
from zscir.index.search import ArrayLike, ExcludeLike, Searcher, make_searcher

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "StoreError",
    "SearchHit",
    "EmbeddingStore",
]

FORMAT = "zscir-index"
FORMAT_VERSION = 1
EMBEDDINGS_FILE = "embeddings.npy"
ITEMS_FILE = "items.jsonl"
MANIFEST_FILE = "manifest.json"
_SUPPORTED_DTYPES = ("float32", "float16")
_RESERVED = ("format", "format_version", "count", "dim", "dtype", "created")


def store_state(directory: Union[str, os.PathLike]) -> str | None:
    """``"complete"`` or ``"incomplete"`` (an interrupted save) when ``directory`` holds a zscir store
    manifest, None otherwise (no manifest, or a ``manifest.json`` that is someone else's)."""
    try:
        m = json.loads((Path(directory) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        return None
    return "incomplete" if m.get("incomplete") else "complete"


class StoreError(ValueError):
    """A store folder is missing, incomplete or inconsistent (message names the path)."""


@dataclass(frozen=True)
class SearchHit:
    """One search result: gallery row ``index``, its ``score`` and item record.

    ``rank`` starts at 1 (the best hit), as the CLI and the HTTP API show it; it was 0-based before.
    """

    rank: int
    index: int
    score: float
    item: Mapping[str, Any]

    @property
    def id(self) -> str:
        return str(self.item["id"])

    @property
    def path(self) -> str:
        return str(self.item["path"])


def _to_numpy_embeddings(embeddings: ArrayLike) -> np.ndarray:
    if isinstance(embeddings, torch.Tensor):
        t = embeddings.detach().cpu()
        if t.dtype not in (torch.float16, torch.float32):
            t = t.float()
        arr = t.numpy()
    else:
        arr = np.asarray(embeddings)
    if arr.ndim != 2:
        raise ValueError(f"embeddings: expected a 2-D array (count, dim), got shape {arr.shape}")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype.name not in _SUPPORTED_DTYPES:
        raise ValueError(f"embeddings: expected float32 or float16, got {arr.dtype}")
    return arr


def _normalize_items(items: Iterable[Mapping[str, Any]], count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, it in enumerate(items):
        if not isinstance(it, Mapping):
            raise ValueError(f"items[{i}]: expected a mapping with 'id' and 'path', got {type(it).__name__}")
        d = dict(it)
        for key in ("id", "path"):
            if key not in d or d[key] is None:
                raise ValueError(f"items[{i}]: missing required key {key!r}")
            d[key] = os.fspath(d[key]) if key == "path" and isinstance(d[key], os.PathLike) else d[key]
            if not isinstance(d[key], str):
                raise ValueError(f"items[{i}][{key!r}]: expected str, got {type(d[key]).__name__}")
        if d["id"] in seen:
            raise ValueError(f"items[{i}]: duplicate id {d['id']!r}")
        seen.add(d["id"])
        out.append(d)
    if len(out) != count:
        raise ValueError(f"got {len(out)} items for {count} embedding rows; they must match one to one")
    return out


def _encoded_lines(recs: list[dict[str, Any]]) -> list[bytes]:
    """items.jsonl lines as UTF-8 bytes, all encoded before anything is written.

    Why: ``os.fsdecode`` turns a file name with undecodable bytes into a string with lone surrogates
    (``'caf\\udce9.jpg'``), which JSON holds but UTF-8 cannot encode; found while writing, that left the
    store half written. Refused here with the offending id (``repr``) named; escape such names first
    (`zscir.index.names.escape_name`, as the indexer does)."""
    out = []
    for i, r in enumerate(recs):
        line = json.dumps(r, ensure_ascii=False)
        try:
            out.append(line.encode("utf-8"))
        except UnicodeEncodeError as e:
            bad = next((k for k, v in r.items() if _unencodable(k) or _unencodable(v)), None)
            what = f"id {r['id']!r}" + (f" (field {bad!r})" if bad not in (None, "id") else "")
            raise ValueError(f"items[{i}]: {what} contains text UTF-8 cannot encode ({e.reason}: "
                             f"{e.object[e.start:e.end]!r}), e.g. a surrogate-escaped file name; escape it "
                             f"first (zscir.index.names.escape_name)") from None
    return out


def _unencodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_normalized(arr: np.ndarray, tol: float = 1e-2, chunk: int = 65536) -> bool:
    """True if every row has unit L2 norm (checked chunk-wise in fp32)."""
    for s in range(0, arr.shape[0], chunk):
        n = np.linalg.norm(np.asarray(arr[s:s + chunk], dtype=np.float32), axis=1)
        if n.size and not np.all(np.abs(n - 1.0) <= tol):
            return False
    return True


@dataclass(eq=False)
class EmbeddingStore:
    """Gallery embeddings + item records + manifest, optionally backed by a folder.

    Build one with :meth:`save` (writes a folder) or :meth:`load` (reads one);
    the constructor validates that rows and items match.  ``search`` answers
    queries with :class:`SearchHit` lists; the underlying :class:`Searcher` is
    built lazily and cached per backend.
    """

    embeddings: np.ndarray
    items: list[dict[str, Any]]
    manifest: dict[str, Any]
    path: Path | None = None
    _searchers: dict[str, Searcher] = field(default_factory=dict, init=False, repr=False)
    _id_index: dict[str, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        where = f" in {self.path}" if self.path is not None else ""
        if self.embeddings.ndim != 2:
            raise StoreError(f"embeddings{where}: expected 2-D, got shape {self.embeddings.shape}")
        if len(self.items) != self.embeddings.shape[0]:
            raise StoreError(f"store{where}: {len(self.items)} items for {self.embeddings.shape[0]} embedding rows")

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def count(self) -> int:
        return len(self)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.items]

    def index_of(self, item_id: str) -> int:
        """Row index of the item with id ``item_id`` (KeyError if absent)."""
        if self._id_index is None:
            self._id_index = {it["id"]: i for i, it in enumerate(self.items)}
        return self._id_index[item_id]

    def __repr__(self) -> str:
        return (f"EmbeddingStore(path={str(self.path) if self.path else None!r}, count={self.count}, "
                f"dim={self.dim}, dtype={self.embeddings.dtype}, model={self.manifest.get('model')!r})")

    # ---------------------------------------------------------------- search
    def searcher(self, backend: str = "exact", **kw: Any) -> Searcher:
        """The :class:`Searcher` over this store's embeddings (cached when no kwargs)."""
        if kw:
            return make_searcher(self.embeddings, backend, **kw)
        if backend not in self._searchers:
            self._searchers[backend] = make_searcher(self.embeddings, backend)
        return self._searchers[backend]

    def search(self, queries: ArrayLike, k: int = 10, *, exclude: ExcludeLike = None,
               backend: str = "exact") -> list[list[SearchHit]]:
        """Top-``k`` items per query as :class:`SearchHit` lists (best first).

        ``queries`` is ``(Q, D)``; a single ``(D,)`` vector is treated as
        ``Q = 1``.  Padding slots (index ``-1``, see ``exact_topk``) are dropped,
        so a list can be shorter than ``k``.
        """
        if isinstance(queries, (np.ndarray, torch.Tensor)) and queries.ndim == 1:
            queries = queries[None, :]
        scores, indices = self.searcher(backend).search(queries, k, exclude=exclude)
        out: list[list[SearchHit]] = []
        for srow, irow in zip(scores.tolist(), indices.tolist()):
            out.append([SearchHit(rank=r, index=i, score=s, item=self.items[i])
                        for r, (s, i) in enumerate(zip(srow, irow), start=1) if i >= 0])
        return out

    # ------------------------------------------------------------------- I/O
    @classmethod
    def save(cls, directory: Union[str, os.PathLike], embeddings: ArrayLike,
             items: Iterable[Mapping[str, Any]], manifest_extra: Mapping[str, Any] | None = None, *,
             model: str | None = None, method: str | None = None, preprocessing: Any = None,
             overwrite: bool = True) -> "EmbeddingStore":
        """Write a store folder atomically and return the in-memory store.

        ``model``/``method``/``preprocessing`` may be given as keywords or in
        ``manifest_extra`` (keywords win); they default to ``None``.  Other
        ``manifest_extra`` keys are stored verbatim; the reserved keys
        ``format, format_version, count, dim, dtype, created`` cannot be
        overridden.  Before any data file is written the manifest is replaced
        by an *incomplete* marker, so an interrupted save reads as incomplete
        (and may be saved again), never as a mix of old and new files.

        Why the refusal: a folder zscir did not make is the user's, and the
        store's file names are common ones, so ``directory`` must be new,
        empty, or a zscir store; anything else is never written to
        (``FileExistsError``).  ``overwrite=False`` also keeps a complete store.
        """
        d = Path(directory)
        arr = _to_numpy_embeddings(embeddings)
        recs = _normalize_items(items, arr.shape[0])
        extra = dict(manifest_extra or {})
        clash = [k for k in _RESERVED if k in extra]
        if clash:
            raise ValueError(f"manifest_extra may not set reserved keys {clash}")
        for key, val in (("model", model), ("method", method), ("preprocessing", preprocessing)):
            if val is not None:
                extra[key] = val
            extra.setdefault(key, None)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "count": int(arr.shape[0]),
            "dim": int(arr.shape[1]),
            "dtype": arr.dtype.name,
            "model": extra.pop("model"),
            "method": extra.pop("method"),
            "preprocessing": extra.pop("preprocessing"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "normalized": _is_normalized(arr) if "normalized" not in extra else extra.pop("normalized"),
            "embeddings_file": EMBEDDINGS_FILE,
            "items_file": ITEMS_FILE,
        }
        manifest.update(extra)
        try:  # fail on unserialisable metadata before touching the disk (written as UTF-8 JSON)
            json.dumps(manifest, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            bad = next(k for k, v in manifest.items() if _unencodable(v))
            raise ValueError(f"manifest field {bad!r} ({manifest[bad]!r}) contains text UTF-8 cannot encode "
                             f"(a surrogate-escaped file name?)") from None
        lines = _encoded_lines(recs)  # same for items, including text UTF-8 cannot encode

        d.mkdir(parents=True, exist_ok=True)
        mpath = d / MANIFEST_FILE
        state = store_state(d)
        if state is None and any(d.iterdir()):
            raise FileExistsError(f"{d} is not empty and not a zscir store; refusing to write into it "
                                  f"(save into a new or empty folder)")
        elif state == "complete" and not overwrite:
            raise FileExistsError(f"{d} already contains a store (pass overwrite=True to replace it)")
        # from now on the folder reads as incomplete until the real manifest replaces this marker
        with atomic_open(mpath, "wb") as f:
            f.write(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "incomplete": True}).encode())
        fsync_dir(d)
        with atomic_open(d / EMBEDDINGS_FILE, "wb") as f:
            np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
        with atomic_open(d / ITEMS_FILE, "wb") as f:
            for line in lines:
                f.write(line + b"\n")
        atomic_write_json(mpath, manifest)
        logger.info("saved %d x %d %s embeddings to %s", arr.shape[0], arr.shape[1], arr.dtype, d)
        return cls(embeddings=arr, items=recs, manifest=manifest, path=d)

    @classmethod
    def load(cls, directory: Union[str, os.PathLike], mmap: bool = True) -> "EmbeddingStore":
        """Load and validate a store folder.

        With ``mmap=True`` (default) the embeddings are a read-only memory map:
        loading is O(items) and search touches the file chunk by chunk.
        Raises :class:`StoreError` (a ``ValueError``) naming the offending file
        and what was expected when the folder is incomplete or inconsistent.
        """
        d = Path(directory)
        if not d.is_dir():
            raise StoreError(f"{d}: not a directory (expected a zscir index folder)")
        mpath = d / MANIFEST_FILE
        if not mpath.is_file():
            raise StoreError(
                f"{mpath}: manifest missing; the store is incomplete (an interrupted save?) or "
                f"{d} is not a zscir index folder")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StoreError(f"{mpath}: not valid JSON ({e})") from None
        if not isinstance(manifest, dict):
            raise StoreError(f"{mpath}: expected a JSON object, got {type(manifest).__name__}")
        if manifest.get("format") != FORMAT:
            raise StoreError(f"{mpath}: expected format {FORMAT!r}, got {manifest.get('format')!r}")
        if manifest.get("incomplete"):
            raise StoreError(f"{mpath}: the store is incomplete (an interrupted save); save it again")
        ver = manifest.get("format_version")
        if not isinstance(ver, int) or isinstance(ver, bool):
            raise StoreError(f"{mpath}: expected integer format_version, got {ver!r}")
        if ver > FORMAT_VERSION:
            raise StoreError(f"{mpath}: format_version {ver} is newer than supported ({FORMAT_VERSION}); "
                             f"upgrade zscir")
        if ver < 1:
            raise StoreError(f"{mpath}: invalid format_version {ver} (expected {FORMAT_VERSION})")
        for key in ("count", "dim", "dtype"):
            if key not in manifest:
                raise StoreError(f"{mpath}: missing required field {key!r}")
        count, dim, dtype = manifest["count"], manifest["dim"], manifest["dtype"]
        if not isinstance(count, int) or count < 0 or not isinstance(dim, int) or dim < 1:
            raise StoreError(f"{mpath}: expected non-negative integer count and positive dim, "
                             f"got count={count!r} dim={dim!r}")
        if dtype not in _SUPPORTED_DTYPES:
            raise StoreError(f"{mpath}: expected dtype in {_SUPPORTED_DTYPES}, got {dtype!r}")

        epath = d / manifest.get("embeddings_file", EMBEDDINGS_FILE)
        if not epath.is_file():
            raise StoreError(f"{epath}: missing (manifest expects {count} x {dim} {dtype} embeddings)")
        try:
            emb = np.load(epath, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(f"{epath}: unreadable .npy file ({e})") from None
        if emb.shape != (count, dim):
            raise StoreError(f"{epath}: expected shape ({count}, {dim}) from manifest, got {emb.shape}")
        if emb.dtype.name != dtype:
            raise StoreError(f"{epath}: expected dtype {dtype} from manifest, got {emb.dtype}")

        ipath = d / manifest.get("items_file", ITEMS_FILE)
        if not ipath.is_file():
            raise StoreError(f"{ipath}: missing (manifest expects {count} items)")
        items: list[dict[str, Any]] = []
        with open(ipath, "r", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise StoreError(f"{ipath}:{lineno}: not valid JSON ({e})") from None
                if not isinstance(rec, dict) or not isinstance(rec.get("id"), str) \
                        or not isinstance(rec.get("path"), str):
                    raise StoreError(f"{ipath}:{lineno}: expected an object with string 'id' and 'path'")
                items.append(rec)
        if len(items) != count:
            raise StoreError(f"{ipath}: expected {count} items from manifest, found {len(items)}")
        logger.debug("loaded store %s (%d x %d %s, mmap=%s)", d, count, dim, dtype, mmap)
        return cls(embeddings=emb, items=items, manifest=manifest, path=d)
