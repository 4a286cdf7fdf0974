"""Request limits of `zscir serve` and the uniform JSON error they produce.

Why limits live in their own layer: the server is meant to be reachable by a browser, so everything a
client sends is untrusted. The body size is enforced while the request streams in (an ASGI middleware
counting bytes, so a chunked multi-GB upload is cut off early instead of being spooled to disk); pixel
count, text length and ``k`` are checked before any model runs. Every violation becomes a 4xx response
``{"error": {"code": ..., "message": ...}}`` that says which limit was hit and what it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on what one request may ask for; see docs/SEARCH.md ("Limits")."""

    max_upload_bytes: int = 10 * 2**20
    max_pixels: int = 40_000_000
    max_text_chars: int = 500
    max_k: int = 100
    max_page: int = 500  # items per GET /items page
    body_overhead_bytes: int = 64 * 1024  # multipart boundaries and the small form fields
    #: seconds to wait for the next part of a request body before answering 408 (a declared body that
    #: never comes would otherwise hold a connection and a worker forever)
    body_timeout_s: float = 30.0
    #: image decodes (uploads, indexed references, thumbnails) running at once; each may need
    #: ~3 bytes x max_pixels while it runs, so this bounds the server's memory under concurrent uploads
    max_concurrent_decodes: int = 2

    def __post_init__(self) -> None:
        """Every limit must admit something: ``max_k=0`` or ``max_text_chars=-1`` made a server that refused
        every request with 422, so such limits are refused here, when the server is configured."""
        for name in ("max_upload_bytes", "max_pixels", "max_text_chars", "max_k", "max_page",
                     "max_concurrent_decodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ServeLimits.{name} must be a positive integer, got {v!r}")
        v = self.body_overhead_bytes
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"ServeLimits.body_overhead_bytes must be an integer >= 0, got {v!r}")
        t = self.body_timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ValueError(f"ServeLimits.body_timeout_s must be a finite number > 0, got {t!r}")

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + self.body_overhead_bytes


class ApiError(HTTPException):
    """An HTTP error with a machine-readable ``code``; rendered as ``{"error": {"code", "message"}}``."""

    def __init__(self, status_code: int, code: str, message: str, **extra: Any):
        super().__init__(status_code=status_code, detail=message)
        self.code = code
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


class BodySizeLimit:
    """Pure ASGI middleware: 413 when Content-Length or the streamed body exceeds ``max_bytes``, 408 when
    the next part of the body does not arrive within ``timeout_s`` (uvicorn has no body-read timeout)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _error(self) -> ApiError:
        return ApiError(413, "body_too_large", f"request body exceeds the limit of {self.max_bytes} bytes",
                        limit=self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await _drain(receive, DRAIN_BYTES, self.timeout_s)
                    await _send_json(send, 413, error_body("body_too_large",
                                                           f"request body exceeds the limit of {self.max_bytes} "
                                                           f"bytes", limit=self.max_bytes))
                    return
        seen = 0
        body_done = False

        async def counting_receive() -> Message:
            nonlocal seen, body_done
            if body_done:  # later receives only wait for a disconnect: no timeout there
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(408, "body_timeout", f"the request body did not arrive within {self.timeout_s:g} "
                                                   "seconds", limit=self.timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_BYTES, self.timeout_s)
                    raise self._error()
            return message

        await self.app(scope, counting_receive, send)


#: how much of a refused body is read and discarded so that the client gets the 413 instead of a reset
DRAIN_BYTES = 64 * 2**20


async def _drain(receive: Receive, budget: int, timeout_s: float) -> None:
    """Read (a bounded part of) an unwanted body so the client sees the response, not a reset.

    Bounded in bytes and in waiting time: a body that stops arriving ends the drain after ``timeout_s``.
    """
    read = 0
    while read <= budget:
        try:
            message = await asyncio.wait_for(receive(), timeout_s)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    import json

    data = json.dumps(body).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})
