"""`Retriever`: load an index and answer composed queries — the Python API behind CLI and server.

    from zscir.index import Retriever
    r = Retriever.load("my-index")
    for hit in r.search("photo.jpg", "the same but at night", k=5):
        print(hit.path, hit.score)

Why one object serves several methods: an index is expensive to build, the backbone is the biggest thing
in memory, and a web page wants a method selector. The retriever keeps one backbone (the index's model) and
creates composers for any registered method on it lazily. Each method embeds the gallery under its
``gallery_cache_key()``; image/text/sum/Pic2Word/TSCIR share the plain image embedding, Fusion-Diff has its
own fused one. Gallery matrices found in the index (``zscir index --method sum --method fusiondiff``) are
memory-mapped; a missing one is computed on demand from the indexed files, kept in memory only (a
retriever never writes to the index), and refused above ``max_ondemand_items`` so that a web request
cannot trigger an hour of encoding.

An indexed gallery with an up-to-date ANN index (``zscir index ann``) is searched approximately by
default (``RetrieverConfig.ann``: None = when present, False = always exact, True = required); a stale one
is ignored with a warning. Several index folders (shards) are searched as one gallery through
:class:`~zscir.index.shards.ShardSet`: every shard is searched on its own and the top-k lists merged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from zscir.data.imageio import ImageLimits, ImageRejected, load_image
from zscir.index.ann import ann_fallback_note, gallery_files, open_ann_searcher
from zscir.index.clip_layout import exported_model, is_clip_retrieval_folder, load_clip_retrieval, set_gallery_key
from zscir.index.names import item_path
from zscir.index.query import MissingQueryInput, QueryPlan, given_text, plan_query, query_inputs
from zscir.index.reference import IndexedReference, ReferenceFinder
from zscir.index.search import Searcher, make_searcher
from zscir.index.shards import ShardedSearcher, ShardSet, open_index
from zscir.index.store import EmbeddingStore, SearchHit, StoreError
from zscir.methods.base import Composer
from zscir.threads import query_threads

logger = logging.getLogger(__name__)

__all__ = ["Retriever", "RetrieverConfig", "MethodUnavailable", "MissingQueryInput", "QueryPlan", "SearchHit",
           "IndexedReference"]


class MethodUnavailable(ValueError):
    """The method cannot be used with this index (unknown, no checkpoint for the model, gallery too big)."""


@dataclass
class RetrieverConfig:
    """Query-time settings.

    ``ann``: None (default) uses a gallery's up-to-date ANN index when the index has one, False always
    searches exactly, True requires one (error otherwise). ``nprobe`` / ``k_factor`` override the ANN
    index's recorded search defaults. ``backend`` ("exact" or "faiss" flat) is the exact search used
    without ANN. ``single_query`` ("fast" or "exact"): how the exact backend answers one query
    ("fast": through FAISS when installed, :mod:`zscir.index.single_query`; the batched path's ids except
    where scores tie within float rounding).
    ``threads``: torch threads for one query (None: `zscir.threads.query_threads` chooses, i.e. one unless
    ``--threads`` or ``OMP_NUM_THREADS`` said otherwise); the caller's setting is restored afterwards.
    """

    backend: str = "exact"
    single_query: str = "fast"
    ann: bool | None = None
    nprobe: int | None = None
    k_factor: int | None = None
    max_ondemand_items: int = 20_000
    batch_size: int = 64
    limits: ImageLimits = ImageLimits()
    progress: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        """Refuse settings that would be ignored (``nprobe=0`` fell back to the index's default silently) or
        fail at the first query."""
        for name, lowest in (("nprobe", 1), ("k_factor", 1), ("batch_size", 1), ("max_ondemand_items", 0)):
            v = getattr(self, name)
            if v is None and name in ("nprobe", "k_factor"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lowest:
                raise ValueError(f"RetrieverConfig.{name} must be an integer >= {lowest}, got {v!r}")
        if self.single_query not in ("fast", "exact"):
            raise ValueError(f"RetrieverConfig.single_query must be 'fast' or 'exact', got {self.single_query!r}")
        if self.ann not in (None, True, False):
            raise ValueError(f"RetrieverConfig.ann must be None, True or False, got {self.ann!r}")


class Retriever:
    """An index plus the composers that query it. Thread-safe: model calls are serialised by a lock."""

    def __init__(self, store: EmbeddingStore | ShardSet, composer: Composer, config: RetrieverConfig | None = None,
                 checkpoints: dict[str, str] | None = None, options: dict[str, dict[str, Any]] | None = None):
        self.store = store
        self.shards: list[EmbeddingStore] = list(store.stores) if isinstance(store, ShardSet) else [store]
        self.config = config or RetrieverConfig()
        self.default_method = composer.name
        self.backbone = getattr(composer, "backbone", None)
        self._composers: dict[str, Composer] = {composer.name: composer}
        self._failed: dict[str, str] = {}
        self._checkpoints = dict(checkpoints or {})
        self._options = dict(options or {})
        self._galleries: dict[str, Searcher] = {}  # gallery key -> Searcher
        self._search_modes: dict[str, str] = {}  # gallery key -> "ann" / "exact" / "ann+exact" / "exact (on demand)"
        self._search_notes: dict[str, list[str]] = {}  # gallery key -> why it is searched otherwise than asked
        self._model_lock = threading.RLock()
        self._gallery_lock = threading.Lock()
        self.references = ReferenceFinder(self.store.items, self.store.index_of,
                                          [s.manifest.get("root") for s in self.shards])
        for s in self.shards:
            if s.manifest.get("build") and int(s.manifest.get("generation", 1)) == 0:
                raise StoreError(f"{s.path}: the first `zscir index` run into this folder did not finish; "
                                 f"re-run it to resume")

    # ----------------------------------------------------------------------------------- construction
    @classmethod
    def load(cls, index_dir: str | Path | Sequence[str | Path], method: str | None = None, model: str | None = None,
             checkpoint: str | None = None, device: str = "cpu", config: RetrieverConfig | None = None,
             checkpoints: dict[str, str] | None = None, **options: Any) -> "Retriever":
        """Open ``index_dir`` with the index's model; ``method`` defaults to the one the index was built with.

        ``index_dir`` may also be several index folders, a quoted glob or a folder of shard indexes
        (:func:`~zscir.index.shards.resolve_index_paths`): they are searched as one gallery.
        ``checkpoint``/``options`` configure ``method`` (an option it does not read is a ``ValueError`` listing
        the ones it does); ``checkpoints`` maps other method names to the
        checkpoint folders they should load when selected later (e.g. ``{"tscir": "runs/tscir"}``).
        """
        from zscir.methods import check_method_options, create_composer

        layout = single_clip_folder(index_dir)
        if layout is not None:  # clip-retrieval / autofaiss output, read in place (read-only)
            model = model or exported_model(layout)
            if not model:
                raise StoreError(f"{layout}: a clip-retrieval folder records no model; give the CLIP model its "
                                 f"embeddings were made with (--model)")
            if config is not None and config.ann:
                raise StoreError(f"{layout}: a clip-retrieval folder has no zscir ANN index; search it without "
                                 f"--ann (exact), or export it to a zscir index first")
            store = load_clip_retrieval(layout, model=model)
        else:
            store = open_index(index_dir)
            if model and store.manifest.get("model") and model != store.manifest.get("model"):
                raise StoreError(f"--model {model!r}: the index was made with {store.manifest.get('model')!r}; "
                                 f"its embeddings only match that model")
        method = method or store.manifest.get("method") or "sum"
        check_method_options(method, options)  # a misspelt option is refused, not ignored (before the model loads)
        checkpoints = dict(checkpoints or {})
        if checkpoint:
            checkpoints[method] = checkpoint
        composer = create_composer(method, model=model or store.manifest.get("model"),
                                   checkpoint=checkpoints.get(method), device=device, **options)
        if layout is not None:  # its matrices are the model's plain image gallery (what the baselines search)
            set_gallery_key(store, create_composer("image", model=model, backbone=composer.backbone)
                            .gallery_cache_key())
        return cls(store, composer, config, checkpoints=checkpoints, options={method: options})

    @property
    def model(self) -> str | None:
        return self.store.manifest.get("model")

    def __len__(self) -> int:
        return len(self.store)

    # --------------------------------------------------------------------------------------- methods
    def composer(self, method: str | None = None) -> Composer:
        """The composer for ``method`` on this index's backbone (created once; failures are remembered)."""
        from zscir.methods import create_composer

        method = method or self.default_method
        if method in self._composers:
            return self._composers[method]
        if method in self._failed:
            raise MethodUnavailable(self._failed[method])
        with self._model_lock:
            if method in self._composers:
                return self._composers[method]
            try:
                c = create_composer(method, model=self.model, backbone=self.backbone,
                                    checkpoint=self._checkpoints.get(method), **self._options.get(method, {}))
            except Exception as e:  # noqa: BLE001 - unknown method, no checkpoint for this model, ...
                self._failed[method] = f"method {method!r} is not available for this index: {e}"
                raise MethodUnavailable(self._failed[method]) from None
            self._composers[method] = c
            return c

    def methods(self) -> list[dict[str, Any]]:
        """Every registered method with whether it can query this index now (for selectors and /methods)."""
        from zscir.methods import list_methods

        out = []
        for spec in list_methods():
            info = {"name": spec.name, "description": spec.description, "default": spec.name == self.default_method}
            try:
                key = self.composer(spec.name).gallery_cache_key()
                info["available"] = True
                info["gallery"] = "indexed" if key in self._indexed_keys() else "on-demand"
                if info["gallery"] == "on-demand" and len(self.store) > self.config.max_ondemand_items:
                    info.update(available=False, reason="gallery not in the index; re-index with --method")
            except MethodUnavailable as e:
                info.update(available=False, reason=str(e))
            out.append(info)
        return out

    def _indexed_keys(self) -> set[str]:
        """Gallery keys every shard has a stored matrix for."""
        return set.intersection(*(set(gallery_files(s.manifest)) for s in self.shards))

    def searcher_for(self, composer: Composer) -> Searcher:
        """The gallery searcher matching ``composer``'s gallery embedding (indexed, or computed on demand)."""
        key = composer.gallery_cache_key()
        if key in self._galleries:
            return self._galleries[key]
        with self._gallery_lock:
            if key in self._galleries:
                return self._galleries[key]
            if key in self._indexed_keys():
                parts = [self._shard_searcher(s, key) for s in self.shards]
                modes = sorted({"ann" if p.name == "ann" else "exact" for p in parts})
                self._search_modes[key] = "+".join(modes)
                searcher = parts[0] if len(parts) == 1 else ShardedSearcher(parts)
            else:
                if self.config.ann:
                    raise StoreError(f"method {composer.name!r}: its gallery is not in the index, so it has no ANN "
                                     f"index; index it with --method {composer.name}")
                searcher = make_searcher(self._encode_gallery(composer), self.config.backend, **self._exact_kw())
                self._search_modes[key] = "exact (on demand)"
            self._galleries[key] = searcher
            return searcher

    def _shard_searcher(self, store: EmbeddingStore, key: str) -> Searcher:
        """ANN search of one index folder's gallery ``key`` when allowed and up to date, else exact."""
        file = gallery_files(store.manifest)[key]
        if file == store.manifest.get("embeddings_file", "embeddings.npy"):
            emb = store.embeddings
        else:
            emb = np.load(store.path / file, mmap_mode="r", allow_pickle=False)
            if emb.shape[0] != len(store):
                raise StoreError(f"{store.path / file}: {emb.shape[0]} rows for {len(store)} items")
        if self.config.ann is not False and store.path is not None:
            if self.config.ann and (why := ann_fallback_note(store.path, store.manifest, key)) is not None:
                self._search_notes.setdefault(key, []).append(why)  # too small for one: as `zscir index ann` says
                return make_searcher(emb, self.config.backend, **self._exact_kw())
            ann = open_ann_searcher(store.path, store.manifest, key, emb, nprobe=self.config.nprobe,
                                    k_factor=self.config.k_factor, required=bool(self.config.ann))
            if ann is not None:
                return ann
        return make_searcher(emb, self.config.backend, **self._exact_kw())

    def _exact_kw(self) -> dict[str, Any]:
        return {"single_query": self.config.single_query} if self.config.backend == "exact" else {}

    def _encode_gallery(self, composer: Composer) -> np.ndarray:
        n = len(self.store)
        if n > self.config.max_ondemand_items:
            raise MethodUnavailable(
                f"method {composer.name!r} embeds the gallery differently from this index and the index has {n} "
                f"items (> {self.config.max_ondemand_items} computed on demand); run `zscir index ... --method "
                f"{self.default_method} --method {composer.name}`")
        logger.info("computing the %s gallery of %d items on demand (in memory)", composer.name, n)
        rows: list[np.ndarray] = []
        bs = self.config.batch_size
        for s in tqdm(range(0, n, bs), desc=f"gallery:{composer.name}", disable=not self.config.progress):
            imgs, ok = [], []
            for i, item in enumerate(self.store.items[s:s + bs]):
                try:
                    imgs.append(load_image(item_path(item), self.config.limits))
                    ok.append(i)
                except ImageRejected as e:  # vanished or changed since indexing: the row can never match
                    logger.warning("item %s: %s; it gets a zero gallery row", item["id"], e)
            block = None
            if imgs:
                with self._model_lock, torch.no_grad():
                    enc = composer.encode_gallery(imgs).float().cpu().numpy()
                block = np.zeros((min(bs, n - s), enc.shape[1]), np.float32)
                block[ok] = enc
            rows.append(block if block is not None else None)
        dim = next((r.shape[1] for r in rows if r is not None), int(self.store.dim))
        return np.concatenate([r if r is not None else np.zeros((min(bs, n - i * bs), dim), np.float32)
                               for i, r in enumerate(rows)]) if rows else np.zeros((0, dim), np.float32)

    # ---------------------------------------------------------------------------------------- search
    def resolve_reference(self, image: Image.Image | np.ndarray | str | Path | bytes
                          ) -> tuple[Image.Image, IndexedReference | None]:
        """A PIL image, an ``(H, W[, C])`` uint8 array, raw bytes, an indexed item id or a file path →
        (RGB image, the indexed item it is).

        The reference is recognised by id, by path or by content (`zscir.index.reference`); the
        `IndexedReference` lists the rows a search leaves out (``exclude=ref.rows``). Arrays are taken as
        pixels (`image_from_array`); an image without pixels is refused (`ImageRejected`, a ValueError),
        any other type is a ``TypeError``.
        """
        if isinstance(image, np.ndarray):
            image = image_from_array(image, self.config.limits)
        if isinstance(image, Image.Image):
            return check_pixels(image, self.config.limits).convert("RGB"), None
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            return load_image(data, self.config.limits), self.references.find(data)
        if not isinstance(image, (str, os.PathLike)):
            raise TypeError(f"reference image: expected a PIL image, a uint8 numpy array, encoded bytes, a file "
                            f"path or an indexed item id, got {type(image).__name__}")
        key = str(image)
        ref = self.references.find(key)
        if ref is not None and ref.matched_by == "id":
            return load_image(item_path(self.store.items[ref.rows[0]]), self.config.limits), ref
        path = Path(key).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{key}: neither an indexed item id nor an image file")
        return load_image(path, self.config.limits), ref

    def resolve_image(self, image: Image.Image | str | Path | bytes) -> tuple[Image.Image, int | None]:
        """Like `resolve_reference`, with the recognised item's row (or None) instead of the record."""
        img, ref = self.resolve_reference(image)
        return img, (ref.rows[0] if ref is not None else None)

    def search(self, image: Image.Image | np.ndarray | str | Path | bytes | None = None, text: str | None = None,
               k: int = 10, method: str | None = None, exclude_reference: bool = True) -> list[SearchHit]:
        """Top-``k`` gallery items for (reference image, modification text), best first; ranks start at 1.

        ``image`` may be a PIL image, a uint8 pixel array (`image_from_array`), encoded bytes, a file path or
        the id of an indexed item. A reference
        that is an indexed item — named by id, by its path, or a byte-identical copy — is left out of the
        results together with identical copies of it, unless ``exclude_reference=False`` (logged at INFO;
        `resolve_reference` tells it to callers). Each hit has ``path``, ``score``, ``id``, ``rank`` and
        the item record; ``[(h.path, h.score) for h in hits]`` gives plain pairs.

        Either side may be left out: ``search(text="a red car")`` searches by the text alone,
        ``search("beach.jpg")`` by the picture alone ("more like this"). Without ``method`` the method that
        reads the side given answers (`plan`; logged at INFO); a ``method`` that needs the missing side
        raises `MissingQueryInput`.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        plan = self.plan(image is not None, text, method)  # an empty query fails before any decoding
        if plan.note:
            logger.info("%s", plan.note)
        img, ref = self.resolve_reference(image) if image is not None else (None, None)
        if ref is not None and exclude_reference:
            logger.info("%s", ref.describe())
        return self.search_image(img, text, k, method=method,
                                 exclude=ref.rows if (ref is not None and exclude_reference) else None)

    def plan(self, has_image: bool, text: str | None, method: str | None = None) -> QueryPlan:
        """Which method answers a query with (or without) a reference image and ``text``, and why.

        See :mod:`zscir.index.query`: without ``method`` a query of one side alone goes to the ``text`` or
        ``image`` method (with a note); a named method that needs the missing side raises
        `MissingQueryInput`, and so does an empty query. Builds the composers it asks about.
        """
        return plan_query(bool(has_image), given_text(text) is not None, method or None, self.default_method,
                          lambda m: query_inputs(self.composer(m)))

    def search_image(self, image: Image.Image | None, text: str | None, k: int = 10, method: str | None = None,
                     exclude: int | Sequence[int] | None = None,
                     timings: dict[str, float] | None = None) -> list[SearchHit]:
        """Like :meth:`search` for an already decoded image (or None); ``exclude`` is a row or rows to leave out.

        ``timings``: a dict that receives ``encode`` (waiting for the model lock included) and ``search``
        seconds (the server's ``Server-Timing`` header).
        """
        if image is not None:
            if not isinstance(image, Image.Image):
                raise TypeError(f"search_image: expected a decoded PIL image, got {type(image).__name__} (use "
                                "search() for paths, ids, bytes and arrays)")
            check_pixels(image, self.config.limits)
        composer = self.composer(self.plan(image is not None, text, method).method)
        if len(self.store) == 0:
            return []
        searcher = self.searcher_for(composer)
        t0 = time.perf_counter()
        with self._model_lock, query_threads(self.config.threads), torch.no_grad():  # an unread side is never looked at
            q = composer.encode_queries([image], [given_text(text) or ""]).float().cpu().numpy()
        t1 = time.perf_counter()
        if q.shape[1] != searcher.dim:
            raise StoreError(f"method {composer.name!r} gives {q.shape[1]}-d queries but the gallery is "
                             f"{searcher.dim}-d: the index was built with another model")
        rows = [] if exclude is None else [int(exclude)] if isinstance(exclude, (int, np.integer)) else list(exclude)
        with query_threads(self.config.threads):  # one query scan is memory-bound: more threads only wait
            scores, indices = searcher.search(q, min(k, max(len(self.store), 1)), exclude=[rows or -1])
        if timings is not None:
            timings["encode"] = t1 - t0
            timings["search"] = time.perf_counter() - t1
        return [SearchHit(rank=r, index=int(i), score=float(s), item=self.store.items[int(i)])
                for r, (s, i) in enumerate(zip(scores[0].tolist(), indices[0].tolist()), start=1) if i >= 0]

    def search_note(self, method: str | None = None) -> str | None:
        """Why ``method``'s gallery is searched otherwise than asked (e.g. ``--ann`` on an index too small
        for an ANN index: exact), or None. Known once that gallery was searched (or `searcher_for`)."""
        notes = self._search_notes.get(self.composer(method).gallery_cache_key())
        return "; ".join(dict.fromkeys(notes)) if notes else None

    def describe(self) -> dict[str, Any]:
        m = self.store.manifest
        out = {"index": str(self.store.path) if self.store.path is not None else [str(s.path) for s in self.shards],
               "items": len(self.store), "model": m.get("model"), "method": self.default_method,
               "generation": m.get("generation"), "dtype": m.get("dtype"), "skipped": len(m.get("skipped") or []),
               "backend": self.config.backend, "search": dict(self._search_modes),
               "model_info": model_card(m.get("model"))}
        if len(self.shards) > 1:
            out["shards"] = len(self.shards)
        return out


def single_clip_folder(index_dir: str | Path | Sequence[str | Path]) -> Path | None:
    """The clip-retrieval output folder ``index_dir`` names (one folder with img_emb/ + metadata/), else None."""
    dirs = [index_dir] if isinstance(index_dir, (str, os.PathLike)) else list(index_dir)
    if len(dirs) == 1 and is_clip_retrieval_folder(dirs[0]):
        return Path(dirs[0])
    return None


def check_pixels(image: Image.Image, limits: ImageLimits) -> Image.Image:
    """``image`` unless it has no pixels (a 0×0 or 0×N image reached the model and failed there with a
    shape error) or more than ``limits.max_pixels``; `ImageRejected` otherwise."""
    w, h = image.size
    if w < 1 or h < 1:
        raise ImageRejected("empty", f"the reference image has no pixels ({w}x{h})")
    if w * h > limits.max_pixels:
        raise ImageRejected("too_many_pixels", f"the reference image has {w}x{h} pixels, more than the limit "
                                               f"of {limits.max_pixels}")
    return image


def image_from_array(array: np.ndarray, limits: ImageLimits) -> Image.Image:
    """A PIL image from pixels: ``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, dtype
    uint8 (as ``np.asarray(pil_image)`` gives). Why only that: every other layout is ambiguous (CHW tensors,
    floats in 0..1 or 0..255), and guessing gives a silently wrong query; the error says how to convert."""
    a = array
    if a.dtype != np.uint8:
        raise TypeError(f"reference image array: expected dtype uint8 (H, W, 3) pixels, got {a.dtype}; convert "
                        "floats in [0, 1] with (a * 255).round().astype(np.uint8)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ValueError(f"reference image array: expected shape (H, W), (H, W, 3) or (H, W, 4), got "
                         f"{tuple(array.shape)} (channels last, like np.asarray(pil_image))")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageRejected("empty", f"the reference image array has no pixels (shape {tuple(array.shape)})")
    if a.shape[0] * a.shape[1] > limits.max_pixels:
        raise ImageRejected("too_many_pixels", f"the reference image array has {a.shape[1]}x{a.shape[0]} pixels, "
                                               f"more than the limit of {limits.max_pixels}")
    return Image.fromarray(np.ascontiguousarray(a))


def model_card(model: str | None) -> dict[str, Any]:
    """The index model's name and purpose for people (``/health``, the web page): a built-in that does not
    know real pictures says so, with how to choose one that does."""
    from zscir.backbones.registry import REAL_MODEL_HINT, model_info, model_version

    info = model_info(model)
    if info is None:
        return {"name": model, "purpose": None, "real_images": None, "hint": None, "version": None}
    return {"name": model, "purpose": info.purpose, "real_images": info.real_images,
            "hint": None if info.real_images else REAL_MODEL_HINT, "version": model_version(model)}


def hit_records(hits: list[SearchHit]) -> list[dict[str, Any]]:
    """Rank (from 1), id, path and score per hit: one record for `zscir search --json`, its batch output
    and the server."""
    return [{"rank": h.rank, "id": h.id, "path": h.path, "score": round(h.score, 6)} for h in hits]


def hits_to_json(hits: list[SearchHit]) -> str:
    """The `zscir search --json` output: rank (1-based), id, path and score per hit."""
    return json.dumps(hit_records(hits), indent=2)
