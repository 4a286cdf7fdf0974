"""The clip-retrieval / autofaiss folder layout, both ways: export a zscir index to it, search one in place.

Why: ``clip-retrieval inference`` (and the autofaiss / clip-back tools around it) is how the field stores
CLIP embeddings of big collections. Its output folder holds, per partition ``i``:

* ``img_emb/img_emb_{i}.npy`` — a 2-D float16 matrix of image embeddings (one row per image);
* ``metadata/metadata_{i}.parquet`` — one row per image, same order: ``image_path``, and where known
  ``caption``, ``url``, ``key`` and other metadata columns.

clip-retrieval zero-pads ``i`` to the digits of the partition count (``img_emb_00.npy``) and writes no
partition for an empty batch, so partitions are matched by their *number*, not their name, and taken in
increasing order. The layout records no model, so a folder exported by zscir carries ``zscir-export.json``
naming it (and which gallery it is); any other folder needs the model given (``zscir search --model``).

Reading is read-only: the matrices are memory-mapped, nothing (no cache, no lock) is written into the
folder. Each partition becomes one :class:`~zscir.index.store.EmbeddingStore`; several are searched as a
:class:`~zscir.index.shards.ShardSet` (rows numbered partition after partition, i.e. concatenated in
partition order). Item ids are the ``key`` column when there is one (a zscir export writes the zscir id
there, so ids round-trip), else ``image_path``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from zscir.extras import install_hint
from zscir.index.ann import gallery_files
from zscir.index.atomic import atomic_open, atomic_write_json
from zscir.index.folder import check_creatable
from zscir.index.names import item_path
from zscir.index.shards import ShardSet, open_index
from zscir.index.store import FORMAT, FORMAT_VERSION, MANIFEST_FILE, EmbeddingStore, StoreError

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_FILE", "DEFAULT_PARTITION_SIZE", "ExportReport", "export_clip_retrieval",
           "is_clip_retrieval_folder", "load_clip_retrieval", "exported_model", "set_gallery_key"]

EXPORT_FILE = "zscir-export.json"
DEFAULT_PARTITION_SIZE = 1_000_000
IMG_DIR, META_DIR = "img_emb", "metadata"
_IMG = re.compile(r"^img_emb_(\d+)\.npy$")
_META = re.compile(r"^metadata_(\d+)\.parquet$")
#: the plain image gallery (what clip-retrieval stores): the key prefix of the baselines' gallery
_PLAIN_PREFIX = "image-embedding:"


def _parquet():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError(f"the clip-retrieval layout needs pyarrow (metadata is parquet): {install_hint('data')}") \
            from None
    return pa, pq


def is_clip_retrieval_folder(folder: str | os.PathLike) -> bool:
    """A folder with ``img_emb/`` and ``metadata/`` and no zscir manifest."""
    d = Path(folder)
    return d.is_dir() and not (d / MANIFEST_FILE).exists() and (d / IMG_DIR).is_dir() and (d / META_DIR).is_dir()


def exported_model(folder: str | os.PathLike) -> str | None:
    """The model named by the folder's ``zscir-export.json`` (None without one)."""
    p = Path(folder) / EXPORT_FILE
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"{p}: unreadable ({e})") from None
    model = rec.get("model") if isinstance(rec, dict) else None
    return model if isinstance(model, str) and model else None


def _numbered(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if m:
            n = int(m.group(1))
            if n in out:
                raise StoreError(f"{folder}: partition {n} is there twice ({out[n].name}, {p.name})")
            out[n] = p
    return out


def _text_column(table: Any, name: str) -> list[str | None] | None:
    if name not in table.column_names:
        return None
    col = table.column(name).to_pylist()
    return [None if v is None else (v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v))
            for v in col]


def load_clip_retrieval(folder: str | os.PathLike, model: str | None = None) -> EmbeddingStore | ShardSet:
    """Open a clip-retrieval output folder read-only as a store (one partition) or a shard set (several).

    Raises :class:`StoreError` (one line) for a missing/unmatched partition, a partition whose ``img_emb``
    and ``metadata`` row counts differ, an unreadable file, no ``image_path``/``key`` column, or an id twice.
    The gallery key is set later (:func:`set_gallery_key`), once the model is loaded.
    """
    _, pq = _parquet()
    d = Path(folder)
    imgs, metas = _numbered(d / IMG_DIR, _IMG), _numbered(d / META_DIR, _META)
    if not imgs:
        raise StoreError(f"{d / IMG_DIR}: no img_emb_<i>.npy partition (not a clip-retrieval output folder?)")
    for n in sorted(set(imgs) ^ set(metas)):
        has, lacks = (imgs[n], META_DIR) if n in imgs else (metas[n], IMG_DIR)
        raise StoreError(f"{d}: partition {n}: {has.relative_to(d)} has no matching file in {lacks}/")
    stores: list[EmbeddingStore] = []
    seen: dict[str, int] = {}
    dim = None
    for n in sorted(imgs):
        ip, mp = imgs[n], metas[n]
        try:
            emb = np.load(ip, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise StoreError(f"{ip}: unreadable .npy file ({e})") from None
        if emb.ndim != 2 or emb.dtype.name not in ("float16", "float32"):
            raise StoreError(f"{ip}: expected a 2-D float16/float32 matrix, got {emb.dtype} {emb.shape}")
        if dim is not None and emb.shape[1] != dim:
            raise StoreError(f"{ip}: {emb.shape[1]}-d embeddings, earlier partitions are {dim}-d")
        dim = emb.shape[1]
        try:
            table = pq.read_table(mp)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise StoreError(f"{mp}: unreadable parquet file ({str(e).splitlines()[0] if str(e) else e})") from None
        if table.num_rows != emb.shape[0]:
            raise StoreError(f"{d}: partition {n} is misaligned: {ip.relative_to(d)} has {emb.shape[0]} rows, "
                             f"{mp.relative_to(d)} has {table.num_rows}")
        paths, keys = _text_column(table, "image_path"), _text_column(table, "key")
        if paths is None and keys is None:
            raise StoreError(f"{mp}: no image_path or key column to name the items")
        extra = {c: _text_column(table, c) for c in ("caption", "url")}
        items = []
        for r in range(table.num_rows):
            ident = (keys[r] if keys is not None else None) or (paths[r] if paths is not None else None)
            if not ident:
                raise StoreError(f"{mp}: row {r} has no image_path or key")
            if ident in seen:
                raise StoreError(f"{mp}: item {ident!r} is also in partition {seen[ident]}; ids must be unique")
            seen[ident] = n
            it: dict[str, Any] = {"id": ident, "path": (paths[r] if paths is not None else None) or ""}
            for c, vals in extra.items():
                if vals is not None and vals[r] is not None:
                    it[c] = vals[r]
            items.append(it)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "count": int(emb.shape[0]),
                    "dim": int(emb.shape[1]), "dtype": emb.dtype.name, "model": model, "method": None,
                    "layout": "clip-retrieval", "partition": n, "embeddings_file": f"{IMG_DIR}/{ip.name}",
                    "gallery_key": None, "root": None}
        stores.append(EmbeddingStore(embeddings=emb, items=items, manifest=manifest, path=ip))
    logger.info("%s: clip-retrieval layout, %d partitions, %d items", d, len(stores), len(seen))
    return stores[0] if len(stores) == 1 else ShardSet(stores)


def set_gallery_key(store: EmbeddingStore | ShardSet, key: str) -> None:
    """Declare the matrices of an opened clip-retrieval folder to be the gallery ``key`` (the model's plain
    image embedding), so methods embedding the gallery that way search them instead of re-encoding."""
    for s in (store.stores if isinstance(store, ShardSet) else [store]):
        s.manifest["gallery_key"] = key
    store.manifest["gallery_key"] = key


class ExportReport(dict):
    """What :func:`export_clip_retrieval` wrote (the content of ``zscir-export.json``)."""


def _plain_gallery(store: EmbeddingStore) -> np.ndarray:
    files = gallery_files(store.manifest)
    key = next((k for k in files if k and k.startswith(_PLAIN_PREFIX)), None)
    if key is None:
        raise StoreError(f"{store.path}: the index stores no plain image-embedding gallery (methods "
                         f"{store.manifest.get('method')!r}); clip-retrieval's layout holds CLIP image embeddings: "
                         f"index with -m sum to export")
    file = files[key]
    if file == store.manifest.get("embeddings_file", "embeddings.npy"):
        return store.embeddings
    emb = np.load(Path(store.path) / file, mmap_mode="r", allow_pickle=False)
    if emb.shape[0] != len(store):
        raise StoreError(f"{Path(store.path) / file}: {emb.shape[0]} rows for {len(store)} items")
    return emb


def _check_new_folder(out: Path) -> None:
    if out.is_symlink() and not out.exists():
        raise StoreError(f"{out}: a dangling symbolic link; give a new or empty folder for the export")
    if out.exists():
        if not out.is_dir():
            raise StoreError(f"{out}: exists and is not a folder; give a new or empty folder for the export")
        names = sorted(os.listdir(out))
        if names:
            raise StoreError(f"{out}: the folder is not empty ({len(names)} entries, e.g. {names[0]!r}); zscir "
                             f"exports only into a new or empty folder")
    else:
        check_creatable(out)


def export_clip_retrieval(index: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
                          partition_size: int = DEFAULT_PARTITION_SIZE) -> ExportReport:
    """Write index ``index`` (a folder, shards, ...) to the new or empty folder ``out`` in clip-retrieval's
    layout: float16 ``img_emb_{i}.npy`` of the plain image gallery (as clip-retrieval writes them, whatever
    the index's dtype), ``metadata_{i}.parquet`` (``image_path``, ``key`` = the zscir id, ``caption``/``url``
    where items carry them), then ``zscir-export.json`` (model, gallery key, counts) last.

    A failed export removes the files and folders it created (the folder was new or empty), so it can be
    run again; a user's folder is never written into.
    """
    if not isinstance(partition_size, int) or isinstance(partition_size, bool) or partition_size < 1:
        raise StoreError(f"--partition-size {partition_size!r}: give a positive number of items per partition")
    pa, pq = _parquet()
    src = open_index(index)
    out = Path(out)
    _check_new_folder(out)
    shards = src.stores if isinstance(src, ShardSet) else [src]
    galleries = [_plain_gallery(s) for s in shards]
    items = [it for s in shards for it in s.items]
    n, dim = len(items), int(src.dim)
    parts = max(1, -(-n // partition_size))
    digits = len(str(parts))  # clip-retrieval pads to the digits of the partition count
    created_dirs = [p for p in [out, out / IMG_DIR, out / META_DIR] if not p.exists()]
    written: list[Path] = []
    offsets = np.cumsum([0] + [len(g) for g in galleries])

    def rows(a: int, b: int) -> np.ndarray:
        blocks = [g[max(a - o, 0):min(b - o, len(g))] for g, o in zip(galleries, offsets[:-1])
                  if o < b and o + len(g) > a]
        return np.concatenate([np.asarray(x, dtype=np.float16) for x in blocks]) if blocks \
            else np.zeros((0, dim), np.float16)

    has = {c: any(c in it for it in items) for c in ("caption", "url")}
    try:
        for p in created_dirs:
            p.mkdir()
        for i in range(parts):
            a, b = i * partition_size, min(n, (i + 1) * partition_size)
            tag = str(i).zfill(digits)
            ip, mp = out / IMG_DIR / f"img_emb_{tag}.npy", out / META_DIR / f"metadata_{tag}.parquet"
            written.append(ip)
            with atomic_open(ip, "wb") as f:
                np.save(f, np.ascontiguousarray(rows(a, b)), allow_pickle=False)
            cols = {"image_path": [item_path(it) for it in items[a:b]], "key": [it["id"] for it in items[a:b]]}
            for c, present in has.items():
                if present:
                    cols[c] = [None if it.get(c) is None else str(it[c]) for it in items[a:b]]
            written.append(mp)
            with atomic_open(mp, "wb") as f:
                pq.write_table(pa.table({c: pa.array(v, pa.string()) for c, v in cols.items()}), f)
        report = ExportReport({
            "format": "zscir-clip-retrieval-export", "format_version": 1, "model": src.manifest.get("model"),
            "gallery_key": next(k for k in gallery_files(shards[0].manifest) if k.startswith(_PLAIN_PREFIX)),
            "count": n, "dim": dim, "dtype": "float16", "partitions": parts, "partition_size": partition_size,
            "source": [str(s.path) for s in shards],
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        written.append(out / EXPORT_FILE)
        atomic_write_json(out / EXPORT_FILE, dict(report))
    except BaseException:
        for p in written:
            with contextlib.suppress(OSError):
                p.unlink()
        for p in reversed(created_dirs):
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    logger.info("exported %d items in %d partitions to %s", n, parts, out)
    return report
