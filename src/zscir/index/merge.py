"""Merging finished shard indexes (``zscir index --shard i/n``) into one index folder (``zscir index merge``).

The merged index is an ordinary index folder: a new generation of ``out_dir`` switched in by one manifest
rename, written under the same claim, record and collect rules as `zscir.index.build.build_index`
(:mod:`zscir.index.folder`), so merging into an existing folder never deletes a file zscir did not write.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from zscir.index.atomic import atomic_open
from zscir.index.build import IndexReport, generation_files, refuse_replacement, replaced_source
from zscir.index.folder import now, open_index_folder, read_manifest
from zscir.index.names import printable
from zscir.index.store import StoreError

logger = logging.getLogger(__name__)

__all__ = ["merge_indexes"]

PathArg = Union[str, os.PathLike]


def _finished_shards(dirs: list[Path]) -> list[dict]:
    """The shards' manifests, after checking they are finished, compatible and distinct."""
    ms = []
    for d in dirs:
        m = read_manifest(d)
        if m is None or int(m.get("generation", 0)) < 1 or m.get("build"):
            raise StoreError(f"{d}: not a finished index (run or resume `zscir index` on it first)")
        ms.append(m)
    first = ms[0]
    keys = list(first.get("galleries") or {})
    for d, m in zip(dirs, ms):
        for f in ("model", "dtype", "root"):
            if m.get(f) != first.get(f):
                raise StoreError(f"{d}: {f} {printable(m.get(f))!r} differs from {dirs[0]}'s "
                                 f"{printable(first.get(f))!r}")
        if list(m.get("galleries") or {}) != keys:
            raise StoreError(f"{d}: gallery keys differ from {dirs[0]}'s")
    specs = [tuple(m["shard"]) for m in ms if m.get("shard")]
    if len(set(specs)) != len(specs):
        raise StoreError(f"the same shard is given twice: {sorted(specs)}")
    return ms


def merge_indexes(shards: Sequence[PathArg], out_dir: PathArg, *, overwrite: bool = False) -> IndexReport:
    """Concatenate complete shard indexes into one index at ``out_dir``.

    Embeddings are streamed block by block (never all in memory). Shards must agree on model, dtype and
    gallery keys, must be finished, and may not share item ids. ``out_dir`` must be new, empty or an index;
    an index of another model or folder is replaced only with ``overwrite``. The shards' ANN indexes are not
    carried over (they index the shards' rows): run ``zscir index ann OUT`` on the merged index.
    """
    out = Path(out_dir).resolve()
    dirs = [Path(d).resolve() for d in shards]
    if not dirs or out in dirs:
        raise ValueError("merge needs at least one shard folder, none of them the output folder")
    if any(out in d.parents for d in dirs):
        raise ValueError(f"{out}: the merged index cannot be a folder that contains a shard")
    ms = _finished_shards(dirs)
    first = ms[0]
    keys = list(first.get("galleries") or {})
    with open_index_folder(out) as ix:
        prev = ix.manifest
        fresh = refuse_replacement(out, replaced_source(prev, model=first.get("model"), root=first.get("root")),
                                   overwrite)
        gen = int((prev or {}).get("generation", 0) or 0) + 1
        items: list[dict] = []
        for d, m in zip(dirs, ms):
            with open(d / m["items_file"], encoding="utf-8") as f:
                items += [json.loads(line) for line in f if line.strip()]
        if len({r["id"] for r in items}) != len(items):
            raise StoreError("shards share item ids (overlapping shards or the same folder twice)")
        names = generation_files(gen, len(keys))
        ix.record(names)
        files, dims = {}, {}
        for ki, key in enumerate(keys):
            name = names[ki]
            arrs = [np.load(d / m["galleries"][key]["file"], mmap_mode="r", allow_pickle=False)
                    for d, m in zip(dirs, ms)]
            dims[key] = int(arrs[0].shape[1])
            with atomic_open(out / name, "wb") as f:
                np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(arrs[0].dtype),
                                                         "fortran_order": False,
                                                         "shape": (len(items), dims[key])})
                for a in arrs:
                    for b0 in range(0, a.shape[0], 65536):
                        f.write(np.ascontiguousarray(a[b0:b0 + 65536]).tobytes())
            files[key] = name
        with atomic_open(out / names[-1], "wb") as f:
            for rec in items:
                f.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
        skipped = [s for m in ms for s in m.get("skipped", [])]
        base = {k: v for k, v in first.items() if k not in ("ann", "ann_config", "recorded")}
        new = {**base, "count": len(items), "embeddings_file": files[keys[0]], "items_file": names[-1],
               "generation": gen, "updated": now(), "skipped": skipped, "build": None, "shard": None,
               "normalized": all(m.get("normalized", False) for m in ms),
               "merged_from": [printable(d) for d in dirs],
               "galleries": {k: {**first["galleries"][k], "file": files[k]} for k in keys}}
        if prev and not fresh and prev.get("created"):
            new["created"] = prev["created"]
        ix.finish_writes()
        ix.commit(new)
        ix.collect()
    logger.info("merged %d shards into %s: %d items (generation %d)", len(dirs), out, len(items), gen)
    return IndexReport(out_dir=str(out), indexed=len(items), generation=gen, skipped=skipped)
