"""The FastAPI app behind `zscir serve`: composed search over one index, a thumbnail route and a web page.

Why it looks like this: the app is a thin HTTP skin over `Retriever` (the same object the CLI and Python
API use), so results are identical everywhere. It is read-only by construction: the index is opened
memory-mapped, galleries computed on demand stay in memory, thumbnails are generated in memory, and items
are addressed by their id (the path relative to the indexed folder) looked up in the index; a client-sent
id is never joined to a file-system path, so there is nothing to traverse. Model calls run in FastAPI's
thread pool and are serialised inside the retriever (HF tokenizers are not safe for concurrent use);
decoding uploads and thumbnails happens outside that lock.
"""

from __future__ import annotations

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
from starlette.exceptions import HTTPException as StarletteHTTPException

from zscir.index.imageio import ImageLimits, ImageRejected, load_image
from zscir.index.names import item_path
from zscir.index.retriever import MethodUnavailable, Retriever
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


class _ThumbnailCache:
    """Bounded LRU of encoded JPEG thumbnails (thread-safe)."""

    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def static_dir() -> Path:
    return Path(str(resources.files("zscir.serve") / "static"))


def thumbnail_url(item_id: str) -> str:
    return f"/items/{quote(item_id, safe='')}/thumbnail"


def create_app(retriever: Retriever, config: ServeConfig | None = None) -> FastAPI:
    """Build the app serving ``retriever``; see docs/SEARCH.md for the HTTP API."""
    cfg = config or ServeConfig()
    lim = cfg.limits
    upload_limits = ImageLimits(max_bytes=lim.max_upload_bytes, max_pixels=lim.max_pixels)
    thumbs = _ThumbnailCache(cfg.thumbnail_cache)
    app = FastAPI(title=cfg.title, version="1",
                  description="Composed image retrieval over an index: reference image + modification text.")
    app.add_middleware(BodySizeLimit, max_bytes=lim.max_body_bytes)
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

    @app.get("/items/{item_id:path}/thumbnail", summary="JPEG thumbnail of an indexed item",
             responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "unknown item"}})
    def thumbnail(item_id: str) -> Response:
        try:
            idx = retriever.store.index_of(item_id)  # ids only: never a path built from client input
        except KeyError:
            raise ApiError(404, "unknown_item", "no such item in the index") from None
        data = thumbs.get(item_id)
        if data is None:
            try:
                im = load_image(item_path(retriever.store.items[idx]),
                                ImageLimits(max_side=max(cfg.thumbnail_px, 64)))
            except ImageRejected as e:
                raise ApiError(404, "item_file_unavailable", f"the item's file can no longer be read ({e.code})")
            im.thumbnail((cfg.thumbnail_px, cfg.thumbnail_px))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            data = buf.getvalue()
            thumbs.put(item_id, data)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=3600"})

    @app.post("/search", summary="Composed search",
              description="Multipart form: `text`, `k`, optional `method`, and exactly one of `image` "
                          "(an uploaded reference image) or `item_id` (an indexed item as reference).")
    def search(
        text: str = Form("", description="Modification text"),
        k: str = Form("10", description=f"Number of results (1..{lim.max_k})"),
        method: Optional[str] = Form(None, description="Method name (GET /methods); default: the index's"),
        item_id: Optional[str] = Form(None, description="Id of an indexed item to use as the reference"),
        image: Optional[UploadFile] = File(None, description="Reference image upload"),
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
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
        if has_upload == bool(item_id):
            raise ApiError(400, "reference_required", "give exactly one reference: an `image` upload or an `item_id`")
        if item_id:
            try:
                row = retriever.store.index_of(item_id)
            except KeyError:
                raise ApiError(404, "unknown_item", "no such item in the index") from None
            try:
                ref = load_image(item_path(retriever.store.items[row]), retriever.config.limits)
            except ImageRejected as e:
                raise ApiError(404, "item_file_unavailable", f"the item's file can no longer be read ({e.code})")
            indexed = retriever.references.find(item_id, paths=False)  # an id only: never a client path
        else:
            data = image.file.read(lim.max_upload_bytes + 1)
            try:
                ref = load_image(data, upload_limits)
            except ImageRejected as e:
                raise ApiError(_IMAGE_STATUS.get(e.code, 400), e.code, str(e)) from None
            indexed = retriever.references.find(data)  # an upload of an indexed photo: by content
        try:
            hits = retriever.search_image(ref, text, k_int, method=method or None,
                                          exclude=indexed.rows if indexed else None)
        except MethodUnavailable as e:
            raise ApiError(400, "method_unavailable", str(e)) from None
        except StoreError as e:
            raise ApiError(409, "index_incompatible", str(e)) from None
        return {
            "method": method or retriever.default_method, "k": k_int, "text": text,
            "reference": {**({"item_id": item_id} if item_id else {"upload": True, "width": ref.width,
                                                                    "height": ref.height}),
                          "indexed": indexed.to_json() if indexed else None,
                          "note": indexed.describe() if indexed else None},
            "results": [{"rank": h.rank + 1, "id": h.id, "path": h.path, "score": round(h.score, 6),
                         "thumbnail": thumbnail_url(h.id)} for h in hits],
            "took_ms": round((time.perf_counter() - t0) * 1000, 1),
        }

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
