"""The request body's size limit, before any route reads it (the rest of what a job must pass is
:mod:`api.acceptance`'s).

:class:`BodyLimitMiddleware` (pure ASGI): a ``Content-Length`` above the limit is answered 413 at
once, before a byte of the body is read; a body without one (chunked) is counted as it streams and
cut off with 413 as soon as it passes the limit — it is never read whole.
"""

from __future__ import annotations

from typing import Any

from api.errors import error_response
from maskq.errors import ImageTooLargeError


class BodyTooLarge(ImageTooLargeError):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body larger than {self.max_bytes} bytes; upload large images with "
                            "POST /v1/uploads", limit_bytes=self.max_bytes)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.max_bytes:
                    return await error_response(self._too_large(), {"Connection": "close"})(scope, receive, send)
                break
        seen = 0
        overflowed = False
        started = False

        async def capped_receive() -> dict:
            nonlocal seen, overflowed
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    overflowed = True
                    raise self._too_large()
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # whatever an inner layer made of the exception (a parser's 400), the answer is 413
                if overflowed and message["status"] != 413:
                    response = error_response(self._too_large(), {"Connection": "close"})
                    await response(scope, receive, send)
                    started = None  # type: ignore[assignment]
                    return
            if started is None:
                return
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await error_response(self._too_large(), {"Connection": "close"})(scope, receive, send)
