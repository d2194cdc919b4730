"""Limits checked before work is done: body size (413), content type (415), backlog (429).

* :class:`BodyLimitMiddleware` (pure ASGI): a ``Content-Length`` above the limit is answered 413 at
  once, before a byte of the body is read; a body without one (chunked) is counted as it streams and
  cut off with 413 as soon as it passes the limit — it is never read whole.
* :func:`check_image`: the format sniffed from the first bytes (415 for anything that is not an
  image maskq reads) and the header checked against the byte and pixel limits without decoding
  (413 ``image_too_large``, 422 ``invalid_image``).
* :func:`check_backlog`: 429 with ``Retry-After`` while the queue's backlog is past its limit.
"""

from __future__ import annotations

from typing import Any

from api.errors import error_response
from maskq.errors import BacklogFullError, ImageTooLargeError, UnsupportedFormatError
from maskq.imaging import open_image, sniff_format
from maskq.settings import Settings

# sniffed format -> stored extension and content type
FORMATS = {"JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"), "WEBP": ("webp", "image/webp"),
           "GIF": ("gif", "image/gif"), "BMP": ("bmp", "image/bmp"), "TIFF": ("tiff", "image/tiff"),
           "MPO": ("jpg", "image/jpeg"), "AVIF": ("avif", "image/avif")}
CONTENT_TYPE_EXT = {ct: ext for ext, ct in FORMATS.values()}
ACCEPTED = "JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF"


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


def check_image(data: bytes, settings: Settings) -> tuple[str, str]:
    """415/413/422 for bytes that cannot be a job's input; else ``(extension, content type)``."""
    if len(data) > settings.max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes, the limit is {settings.max_bytes}",
                                 limit_bytes=settings.max_bytes)
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormatError(f"the data is not an image in a format maskq reads; send {ACCEPTED}")
    img = open_image(data, max_pixels=settings.max_pixels, max_bytes=settings.max_bytes)  # header only
    return FORMATS.get(img.format or fmt, FORMATS[fmt])


def check_sniffed(head: bytes) -> tuple[str, str]:
    """The first bytes of an uploaded object: 415 unless they announce an image maskq reads."""
    fmt = sniff_format(head)
    if fmt is None:
        raise UnsupportedFormatError(f"the uploaded object is not an image in a format maskq reads; send {ACCEPTED}")
    return FORMATS[fmt]


def backlog_error(settings: Settings, backlog: int) -> BacklogFullError:
    return BacklogFullError(
        f"the queue holds {backlog} jobs (limit {settings.backlog_limit}); retry after "
        f"{settings.backlog_retry_after_seconds} s", retry_after=settings.backlog_retry_after_seconds,
        backlog=backlog, limit=settings.backlog_limit)
