"""The FastAPI app behind `zscir serve`: composed search over one index, a thumbnail route and a web page.

Why it looks like this: the app is a thin HTTP skin over `Retriever` (the same object the CLI and Python
API use), so results are identical everywhere. It is read-only by construction: the index is opened
memory-mapped, galleries computed on demand stay in memory, thumbnails are generated in memory, and items
are addressed by their id (the path relative to the indexed folder) looked up in the index; a client-sent
id is never joined to a file-system path, so there is nothing to traverse. Model calls run in FastAPI's
thread pool and are serialised inside the retriever (HF tokenizers are not safe for concurrent use);
decoding uploads and thumbnails happens outside that lock, but at most ``max_concurrent_decodes`` at once
(a decode may briefly need ~3 bytes per pixel, so unbounded concurrent decodes of large images are what
made the server's memory balloon), and freed decode buffers are handed back to the OS afterwards.
Decoded indexed references are kept in a small LRU, so an expensive item is decoded once, not per search.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from zscir.data.imageio import SOURCE_SIZE_KEY, ImageLimits, ImageRejected, load_image
from zscir.index.names import item_path
from zscir.index.query import MissingQueryInput, QueryPlan, given_text
from zscir.index.retriever import MethodUnavailable, Retriever, hit_records
from zscir.index.store import StoreError
from zscir.serve.limits import ApiError, BodySizeLimit, ServeLimits, error_body
from zscir.serve.page import render_page, summary_line

logger = logging.getLogger(__name__)

#: gallery items per page of the web page (app.js asks for the same number)
PAGE_SIZE = 60
#: HTTP status for each reason an image is refused
_IMAGE_STATUS = {"empty": 400, "corrupt": 400, "not_an_image": 415, "too_many_pixels": 413,
                 "file_too_large": 413, "unreadable": 400, "not_a_file": 400}


@dataclass
class ServeConfig:
    """Server settings: request limits plus thumbnail size and cache."""

    limits: ServeLimits = field(default_factory=ServeLimits)
    thumbnail_px: int = 192
    thumbnail_cache: int = 4096
    title: str = "zscir search"


class _AnyTextConvertor(Convertor):
    """Like starlette's ``path`` convertor, but also matches newlines: item ids are file names and may
    contain any character (an id with a newline got a 404 from its own thumbnail URL)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return str(value)


register_url_convertor("itemid", _AnyTextConvertor())


class _ThumbnailCache:
    """Bounded LRU (thread-safe): encoded JPEG thumbnails, or decoded indexed reference images."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


#: decodes of more pixels than this hand their freed buffers back to the OS afterwards (glibc keeps them)
_TRIM_PIXELS = 4_000_000


def _release_freed_memory() -> None:
    """``malloc_trim(0)``: return freed heap pages to the OS (glibc only; elsewhere a no-op).

    A decoded 40 MP image is ~120 MB in 16 MB blocks; after the first large free glibc raises its mmap
    threshold, so later blocks come from the heap and stay resident after being freed. Trimming after a
    large decode keeps the server's resident size near its working set.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


class DecodeSlots:
    """At most ``n`` image decodes at once (a bounded semaphore), memory trimmed after large ones."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"max_concurrent_decodes must be >= 1, got {n}")
        self._sem = threading.BoundedSemaphore(n)

    def load(self, source: str | Path | bytes, limits: ImageLimits) -> Image.Image:
        with self._sem:
            try:
                im = load_image(source, limits)
            except ImageRejected:
                _release_freed_memory()  # a decode may have failed half-way through a large image
                raise
            w, h = im.info.get(SOURCE_SIZE_KEY, im.size)
            if w * h > _TRIM_PIXELS:
                _release_freed_memory()
            return im


def static_dir() -> Path:
    return Path(str(resources.files("zscir.serve") / "static"))


def thumbnail_url(item_id: str) -> str:
    return f"/items/{quote(item_id, safe='')}/thumbnail"


def server_timing(timings: dict[str, float]) -> str:
    """A ``Server-Timing`` header value (milliseconds) from ``{name: seconds}``."""
    return ", ".join(f"{name};dur={sec * 1000:.2f}" for name, sec in timings.items())


def parse_server_timing(value: str) -> dict[str, float]:
    """``{name: milliseconds}`` from a ``Server-Timing`` header (the benchmark and tests read it)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, rest = part.strip().partition(";")
        for param in rest.split(";"):
            key, _, val = param.strip().partition("=")
            if key == "dur" and name:
                out[name] = float(val)
    return out


def create_app(retriever: Retriever, config: ServeConfig | None = None) -> FastAPI:
    """Build the app serving ``retriever``; see docs/SEARCH.md for the HTTP API."""
    cfg = config or ServeConfig()
    lim = cfg.limits
    upload_limits = ImageLimits(max_bytes=lim.max_upload_bytes, max_pixels=lim.max_pixels)
    thumbs = _ThumbnailCache(cfg.thumbnail_cache)
    references = _ThumbnailCache(64)  # decoded indexed references (<= 512 px each)
    slots = DecodeSlots(lim.max_concurrent_decodes)
    app = FastAPI(title=cfg.title, version="1",
                  description="Composed image retrieval over an index: reference image + modification text.")
    app.add_middleware(BodySizeLimit, max_bytes=lim.max_body_bytes, timeout_s=lim.body_timeout_s)
    app.state.retriever = retriever
    app.state.config = cfg

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                                                   413: "body_too_large"}.get(exc.status_code, "error")
        return JSONResponse(error_body(code, str(exc.detail), **getattr(exc, "extra", {})), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = [{"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        msg = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errs) or "invalid request"
        return JSONResponse(error_body("invalid_request", msg, details=errs), 422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body("internal_error", f"{type(exc).__name__}"), 500)

    @app.get("/health", summary="Liveness and index summary")
    def health() -> dict[str, Any]:
        return {"status": "ok", **retriever.describe(), "limits": asdict(lim)}

    @app.get("/methods", summary="Methods selectable for this index")
    def methods() -> dict[str, Any]:
        return {"default": retriever.default_method, "methods": retriever.methods()}

    @app.get("/items", summary="A page of indexed items (ids and thumbnail URLs)")
    def items(offset: int = Query(0, ge=0), limit: int = Query(60, ge=1, le=lim.max_page)) -> dict[str, Any]:
        page = retriever.store.items[offset:offset + limit]
        return {"total": len(retriever.store), "offset": offset,
                "items": [{"id": it["id"], "path": it.get("path"), "thumbnail": thumbnail_url(it["id"])}
                          for it in page]}

    @app.get("/items/{item_id:itemid}/thumbnail", summary="JPEG thumbnail of an indexed item",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown item"}})
    def thumbnail(item_id: str) -> Response:
        try:
            idx = retriever.store.index_of(item_id)  # ids only: never a path built from client input
        except KeyError:
            raise ApiError(404, "unknown_item", "no such item in the index") from None
        data = thumbs.get(item_id)
        if data is None:
            try:
                im = slots.load(item_path(retriever.store.items[idx]), ImageLimits(max_side=max(cfg.thumbnail_px, 64)))
            except ImageRejected as e:
                raise ApiError(404, "item_file_unavailable", f"the item's file can no longer be read ({e.code})")
            im.thumbnail((cfg.thumbnail_px, cfg.thumbnail_px))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            data = buf.getvalue()
            thumbs.put(item_id, data)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    @app.post("/search", summary="Composed, text-only or image-only search",
              description="Multipart form: `text`, `k`, optional `method`, and at most one of `image` "
                          "(an uploaded reference image) or `item_id` (an indexed item as reference). A text "
                          "alone searches by the text, a reference alone by the picture (more like this).")
    def search(
        response: Response,  # injected by FastAPI: the Server-Timing header is set on it
        text: str = Form("", description="Modification text"),
        k: str = Form("10", description=f"Number of results (1..{lim.max_k})"),
        method: Optional[str] = Form(None, description="Method name (GET /methods); default: the index's"),
        item_id: Optional[str] = Form(None, description="Id of an indexed item to use as the reference"),
        image: Optional[UploadFile] = File(None, description="Reference image upload"),
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        if len(text) > lim.max_text_chars:
            raise ApiError(422, "text_too_long", f"text has {len(text)} characters; the limit is {lim.max_text_chars}",
                           limit=lim.max_text_chars)
        try:
            k_int = int(k)
        except ValueError:
            raise ApiError(422, "invalid_k", f"k must be an integer, got {k[:20]!r}") from None
        if not 1 <= k_int <= lim.max_k:
            raise ApiError(422, "k_out_of_range", f"k must be in 1..{lim.max_k}, got {k_int}", limit=lim.max_k)
        has_upload = image is not None and bool(image.filename or image.size)
        plan = _plan(has_upload, item_id, text, method)
        if item_id:
            try:
                row = retriever.store.index_of(item_id)
            except KeyError:
                raise ApiError(404, "unknown_item", "no such item in the index") from None
            t_dec = time.perf_counter()  # a cached decoded reference counts as (a very fast) decode
            ref = references.get(item_id)
            if ref is None:
                try:
                    ref = slots.load(item_path(retriever.store.items[row]), retriever.config.limits)
                except ImageRejected as e:
                    raise ApiError(404, "item_file_unavailable", f"the item's file can no longer be read ({e.code})")
                references.put(item_id, ref)
            timings["decode"] = time.perf_counter() - t_dec
            indexed = retriever.references.find(item_id, paths=False)  # an id only: never a client path
        elif has_upload:
            data = image.file.read(lim.max_upload_bytes + 1)
            t_dec = time.perf_counter()
            try:
                ref = slots.load(data, upload_limits)
            except ImageRejected as e:
                raise ApiError(_IMAGE_STATUS.get(e.code, 400), e.code, str(e)) from None
            timings["decode"] = time.perf_counter() - t_dec
            indexed = retriever.references.find(data)  # an upload of an indexed photo: by content
        else:  # a text alone
            ref, indexed, timings["decode"] = None, None, 0.0
        try:
            hits = retriever.search_image(ref, text, k_int, method=method or None,
                                          exclude=indexed.rows if indexed else None, timings=timings)
            search_note = retriever.search_note(plan.method)
        except MethodUnavailable as e:
            raise ApiError(400, "method_unavailable", str(e)) from None
        except StoreError as e:
            raise ApiError(409, "index_incompatible", str(e)) from None
        timings["app"] = time.perf_counter() - t0
        # where a request's time goes (decode / encode / search / the whole handler), cheap and always on:
        # the rest of a client's latency is HTTP + framework (docs/PERFORMANCE.md, table 8)
        response.headers["Server-Timing"] = server_timing(timings)
        return {
            "method": plan.method, "mode": plan.mode, "k": k_int, "text": text,
            "note": "; ".join(n for n in (plan.note, search_note) if n) or None,
            "reference": None if ref is None else {
                **({"item_id": item_id} if item_id else {"upload": True, "width": ref.width, "height": ref.height}),
                "indexed": indexed.to_json() if indexed else None,
                "note": indexed.describe() if indexed else None},
            "results": [{**rec, "thumbnail": thumbnail_url(rec["id"])} for rec in hit_records(hits)],
            "took_ms": round((time.perf_counter() - t0) * 1000, 1),
        }

    def _plan(has_upload: bool, item_id: str | None, text: str, method: str | None) -> QueryPlan:
        """The query's plan (zscir.index.query), or a 400: two references, an empty query, or a named method
        that needs the side the query lacks."""
        if has_upload and item_id:
            raise ApiError(400, "reference_required", "give at most one reference: an `image` upload or an `item_id`")
        has_ref = has_upload or bool(item_id)
        try:
            return retriever.plan(has_ref, text, method or None)
        except MethodUnavailable as e:
            raise ApiError(400, "method_unavailable", str(e)) from None
        except MissingQueryInput as e:
            empty = not has_ref and given_text(text) is None
            raise ApiError(400, "reference_required" if empty else "query_incomplete", str(e)) from None

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        # the first screen (summary + first gallery page) is rendered here, not left blank for app.js
        first = retriever.store.items[:PAGE_SIZE]
        html = render_page((static_dir() / "index.html").read_text(encoding="utf-8"),
                           summary_line(retriever.describe()), first, [thumbnail_url(it["id"]) for it in first],
                           len(retriever.store))
        return HTMLResponse(html)

    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    return app
