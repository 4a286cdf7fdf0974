"""Shards: which shard an item belongs to, merging shard indexes, and searching them without merging.

``zscir index DIR --out S_i --shard i/n`` writes independent, complete indexes (one per machine or
process). They can be combined in two ways:

* :func:`zscir.index.merge.merge_indexes` (``zscir index merge``) streams them into one index folder (costs disk, not
  memory);
* :class:`ShardSet` (``zscir search S_0 S_1 ...``, ``zscir serve``, ``Retriever.load([...])``) searches
  them in place as one gallery. Rows are numbered shard after shard in the order given, exactly like the
  merged index, and :class:`ShardedSearcher` merges each shard's exact top-k into the global top-k: the
  best k of the union is always among the union of each shard's best k, so the result equals searching
  the merged index (same ids and order, ties by lower global row; scores up to float rounding). Shards
  may use their own ANN indexes (each is then approximate on its own, the merge stays exact).

Why searching in place: merging rewrites every shard (N × d × 2-4 bytes of I/O per update), while a shard
set lets each machine re-index its shard incrementally and the searcher pick the new generations up.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from zscir.index.searcher import ArrayLike, ExcludeLike, Searcher, normalize_exclude
from zscir.index.store import MANIFEST_FILE, EmbeddingStore, StoreError

logger = logging.getLogger(__name__)

__all__ = ["shard_of", "ShardSet", "ShardedSearcher", "resolve_index_paths", "open_index", "PLAN_FILE",
           "partition_name", "done_marker_name", "partition_done", "unfinished_partitions"]

PathArg = Union[str, os.PathLike]


def shard_of(item_id: str, n: int) -> int:
    """Shard (0..n-1) of an item: a hash of its relative path, so shards are independent of the file
    listing (each machine can scan on its own) and adding files never moves existing ones."""
    return int.from_bytes(hashlib.sha1(item_id.encode("utf-8")).digest()[:8], "big") % n


# ----------------------------------------------------------------------------------- shard search
def _gallery_key(m: dict[str, Any]) -> str | None:
    return m.get("gallery_key")


class ShardSet:
    """Several compatible index folders viewed as one gallery (rows numbered shard after shard).

    Offers what :class:`~zscir.index.retriever.Retriever` and the server read from a store: ``items``,
    ``index_of``, ``len``, ``dim``, a combined ``manifest`` (the first shard's, with the total ``count``,
    the ``galleries`` all shards have and a ``shards`` list) and ``stores`` (the shards themselves).
    Refuses, with the offending folders named: shards of another model / primary gallery key (which
    includes the backbone fingerprint) / dimension, an unfinished shard, the same folder or shard twice,
    and item ids present in two shards.
    """

    def __init__(self, stores: Sequence[EmbeddingStore]):
        if not stores:
            raise StoreError("a shard set needs at least one index folder")
        self.stores = list(stores)
        first = self.stores[0]
        paths = [str(Path(s.path).resolve()) if s.path is not None else f"<store {i}>"
                 for i, s in enumerate(self.stores)]
        if len(set(paths)) != len(paths):
            twice = sorted(p for p in paths if paths.count(p) > 1)[0]
            raise StoreError(f"the same index folder is given twice: {twice}")
        specs: dict[tuple, str] = {}
        for p, s in zip(paths, self.stores):
            m = s.manifest
            if m.get("build") and int(m.get("generation", 1)) == 0:
                raise StoreError(f"{p}: the first `zscir index` run into this folder did not finish; re-run it")
            for field_name, a, b in (("model", m.get("model"), first.manifest.get("model")),
                                     ("gallery key", _gallery_key(m), _gallery_key(first.manifest))):
                if a != b:
                    raise StoreError(f"{p}: {field_name} {a!r} differs from {paths[0]}'s {b!r}; shards searched "
                                     f"together must be indexed with the same model and method")
            if len(s) and len(first) and s.dim != first.dim:
                raise StoreError(f"{p}: {s.dim}-d embeddings, {paths[0]} has {first.dim}-d")
            if m.get("shard"):
                spec = tuple(m["shard"])
                if spec in specs:
                    raise StoreError(f"{p} and {specs[spec]} are both shard {spec[0]}/{spec[1]}")
                specs[spec] = p
        self.paths = paths
        self.offsets = np.cumsum([0] + [len(s) for s in self.stores])
        self.items: list[dict[str, Any]] = [it for s in self.stores for it in s.items]
        self._id_index: dict[str, int] = {}
        for row, it in enumerate(self.items):
            prev = self._id_index.setdefault(it["id"], row)
            if prev != row:
                a, b = paths[self.locate(prev)[0]], paths[self.locate(row)[0]]
                raise StoreError(f"item id {it['id']!r} is in both {a} and {b} (overlapping shards, or an index "
                                 f"and its merge given together); ids must be unique across shards")
        keys = [set((s.manifest.get("galleries") or {})) for s in self.stores]
        common = set.intersection(*keys) if keys else set()
        fm = first.manifest
        self.manifest: dict[str, Any] = {
            **{k: v for k, v in fm.items() if k not in ("ann", "ann_config")},
            "count": len(self.items), "generation": None, "shard": None,
            "galleries": {k: v for k, v in (fm.get("galleries") or {}).items() if k in common},
            "skipped": [x for s in self.stores for x in s.manifest.get("skipped") or []],
            "shards": [{"path": p, "count": len(s), "generation": s.manifest.get("generation"),
                        "shard": s.manifest.get("shard")} for p, s in zip(paths, self.stores)],
        }
        self.path = None
        logger.info("shard set of %d indexes, %d items", len(self.stores), len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    @property
    def count(self) -> int:
        return len(self)

    @property
    def dim(self) -> int:
        return next((s.dim for s in self.stores if len(s)), self.stores[0].dim)

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.items]

    def index_of(self, item_id: str) -> int:
        """Global row of the item with id ``item_id`` (KeyError if absent)."""
        return self._id_index[item_id]

    def locate(self, row: int) -> tuple[int, int]:
        """``(shard number, row inside that shard)`` of a global row."""
        s = int(np.searchsorted(self.offsets, row, side="right")) - 1
        return s, int(row - self.offsets[s])

    def __repr__(self) -> str:
        return f"ShardSet({len(self.stores)} shards, count={len(self)}, dim={self.dim})"

    @classmethod
    def load(cls, paths: Sequence[PathArg]) -> "ShardSet":
        return cls([EmbeddingStore.load(p) for p in paths])


def as_query_matrix(queries: Any, dim: int) -> ArrayLike:
    """Queries as a 2-D ``(Q, dim)`` array: numpy arrays and torch tensors as they are, nested lists / tuples
    of numbers converted to float32 (what `np.asarray` would do); anything else is a ``TypeError``, a wrong
    shape a ``ValueError``. Why: a list of vectors used to fail with ``'list' object has no attribute
    'shape'``."""
    import torch

    if isinstance(queries, (list, tuple)) and len(queries) == 0:
        queries = np.zeros((0, dim), np.float32)
    elif isinstance(queries, (list, tuple)):
        try:
            queries = np.asarray(queries, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise ValueError(f"queries: a list must hold {dim} numbers per query ({e})") from None
    elif not isinstance(queries, (np.ndarray, torch.Tensor)):
        raise TypeError(f"queries: expected a (Q, {dim}) numpy array, torch tensor or list of vectors, got "
                        f"{type(queries).__name__}")
    if queries.ndim != 2 or (queries.shape[1] != dim and queries.shape[0] > 0):
        raise ValueError(f"queries: expected shape (Q, {dim}), got {tuple(queries.shape)}")
    return queries


class ShardedSearcher(Searcher):
    """Per-shard searchers merged into one: global row = shard offset + row in the shard.

    Each shard returns its own top-k (excluded items removed); the merged list is sorted by score, ties
    by lower global row, and cut at k. With exact shard searchers this equals exact search over the
    concatenation (see the module docstring). ``queries`` may also be a list of vectors (`as_query_matrix`).
    """

    name = "sharded"

    def __init__(self, searchers: Sequence[Searcher]):
        if not searchers:
            raise ValueError("ShardedSearcher needs at least one searcher")
        dims = {s.dim for s in searchers if len(s)}
        if len(dims) > 1:
            raise ValueError(f"shard searchers disagree on the dimension: {sorted(dims)}")
        self.searchers = list(searchers)
        self.offsets = np.cumsum([0] + [len(s) for s in self.searchers])
        self._dim = dims.pop() if dims else self.searchers[0].dim

    def search(self, queries: ArrayLike, k: int, exclude: ExcludeLike = None) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        queries = as_query_matrix(queries, self._dim)
        n, n_q = int(self.offsets[-1]), int(queries.shape[0])
        k_out = min(int(k), n)
        if exclude is not None:
            ex_rows, ex_cols = normalize_exclude(exclude, n_q, n)
        else:
            ex_rows = ex_cols = np.zeros(0, np.int64)
        parts_s, parts_i = [], []
        for s, off in zip(self.searchers, self.offsets[:-1]):
            if len(s) == 0:
                continue
            local = None
            mine = (ex_cols >= off) & (ex_cols < off + len(s))
            if mine.any():
                local = [[] for _ in range(n_q)]
                for r, c in zip(ex_rows[mine].tolist(), (ex_cols[mine] - off).tolist()):
                    local[r].append(c)
            sc, ix = s.search(queries, min(int(k), len(s)), exclude=local)
            parts_s.append(np.where(ix < 0, np.float32(-np.inf), sc).astype(np.float32))
            parts_i.append(np.where(ix < 0, -1, ix + off).astype(np.int64))
        if not parts_s or n_q == 0:
            return np.zeros((n_q, k_out), np.float32), np.zeros((n_q, k_out), np.int64)
        scores, idx = np.concatenate(parts_s, axis=1), np.concatenate(parts_i, axis=1)
        tie = np.where(idx < 0, np.iinfo(np.int64).max, idx)
        order = np.lexsort((tie, -scores), axis=-1)[:, :k_out]
        scores, idx = np.take_along_axis(scores, order, axis=1), np.take_along_axis(idx, order, axis=1)
        if idx.shape[1] < k_out:  # only when every shard is tiny
            pad = k_out - idx.shape[1]
            scores = np.concatenate([scores, np.full((n_q, pad), -np.inf, np.float32)], axis=1)
            idx = np.concatenate([idx, np.full((n_q, pad), -1, np.int64)], axis=1)
        return np.ascontiguousarray(scores), np.ascontiguousarray(idx)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def dim(self) -> int:
        return self._dim

    def __repr__(self) -> str:
        return f"ShardedSearcher({[repr(s) for s in self.searchers]})"


# ------------------------------------------------------------------- the partitioned index layout
#: the plan of a partitioned index folder (`zscir.index.partitions`): how many partitions, of what source
PLAN_FILE = "zscir-partitions.json"


def partition_name(i: int) -> str:
    """The index folder of partition ``i`` inside a partitioned index folder."""
    return f"part-{int(i):05d}"


def done_marker_name(i: int) -> str:
    """The done marker of partition ``i``: written after its folder is renamed into place."""
    return f"{partition_name(i)}.done"


def unfinished_partitions(folder: PathArg) -> list[int] | None:
    """The partitions of a partitioned index folder without a done marker (None: not such a folder).

    Why here: a partitioned folder is searched as the shard set of its ``part-*`` indexes, and searching
    one whose run has not finished would silently miss pictures, so the opener asks this first.
    """
    d = Path(folder)
    try:
        plan = json.loads((d / PLAN_FILE).read_text(encoding="utf-8"))
        n = int(plan["partitions"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{d / PLAN_FILE}: unreadable partition plan ({e})") from None
    return [i for i in range(n) if not partition_done(d, i)]


def partition_done(folder: PathArg, i: int) -> bool:
    """Partition ``i`` has its done marker and its index folder (a folder deleted since is not done)."""
    d = Path(folder)
    return (d / done_marker_name(i)).is_file() and (d / partition_name(i) / MANIFEST_FILE).is_file()


# ----------------------------------------------------------------------------------------- opening
def _shard_order(folder: Path) -> tuple:
    try:
        m = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        spec = m.get("shard") or [1 << 30, 0]
    except (OSError, ValueError, AttributeError):
        spec = [1 << 30, 0]
    return (int(spec[0]), folder.name)


def resolve_index_paths(paths: PathArg | Sequence[PathArg]) -> list[Path]:
    """Index folders named by ``paths``: folders, quoted globs (``'idx/shard-*'``) and shard-set folders.

    A shard-set folder has no manifest itself but sub-folders that are indexes; they are taken in shard
    order (``--shard i/n``), then by name. The order fixes the global row numbers (which only matter for
    ties), and matches ``zscir index merge --from`` given in the same order.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise StoreError("no index folder given")
    out: list[Path] = []
    for p in items:
        s = os.fspath(p)
        if any(c in s for c in "*?[") and not os.path.exists(s):
            hits = sorted(Path(h) for h in glob.glob(s) if os.path.isdir(h))
            if not hits:
                raise StoreError(f"{s}: no index folder matches this pattern")
            out += hits
            continue
        d = Path(s)
        missing = unfinished_partitions(d) if d.is_dir() else None
        if missing:
            raise StoreError(f"{d}: {len(missing)} partition(s) not indexed yet (e.g. {missing[0]}); re-run the "
                             f"same `zscir index` command to finish them")
        if d.is_dir() and not (d / MANIFEST_FILE).exists():
            subs = sorted((c for c in d.iterdir() if c.is_dir() and (c / MANIFEST_FILE).is_file()), key=_shard_order)
            if subs:
                logger.info("%s: a folder of %d shard indexes", d, len(subs))
                out += subs
                continue
        out.append(d)
    return out


def open_index(paths: PathArg | Sequence[PathArg]) -> EmbeddingStore | ShardSet:
    """One index folder as an :class:`EmbeddingStore`, several (or a shard-set folder) as a :class:`ShardSet`."""
    dirs = resolve_index_paths(paths)
    return EmbeddingStore.load(dirs[0]) if len(dirs) == 1 else ShardSet.load(dirs)
