"""The request body's limits, enforced before any route reads it (the rest of what a job must pass is
:mod:`api.acceptance`'s). Three pure ASGI middlewares (no per-request task, no body copy), outermost
first as :func:`api.main.create_app` stacks them:

* :class:`BodyLimitMiddleware`, size: a ``Content-Length`` above the limit is answered 413 at once,
  before a byte of the body is read; a body without one (chunked) is counted as it streams and cut
  off with 413 as soon as it passes the limit. It is never read whole.
* :class:`UploadBudgetMiddleware`, bytes in flight: the bodies this process is receiving at once,
  counted from their ``Content-Length``, stay within a budget; a request that would pass it is
  answered 429 with ``Retry-After`` before its body is read (a chunked body is counted as it streams
  and cut off when it passes). A body is held in memory whole while its image is checked and stored,
  so this is what bounds the process's memory under a flood of large uploads.
* :class:`BodyTimeoutMiddleware`, time: the whole body must arrive within a deadline, else 408.

A middleware refuses either before calling the app, or by raising the error from the ``receive`` it
hands inward (the app's error handler renders it). :func:`_run_guarded` makes sure the answer is then
that error whatever an inner layer made of it, with ``Connection: close``: the rest of a refused body
is never read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from api.errors import error_response
from maskq import defaults
from maskq.errors import BodyTimeoutError, ImageTooLargeError, MaskqError, UploadBudgetFullError

Receive = Callable[[], Awaitable[dict]]
_CLOSE = {"Connection": "close"}
_NO_BODY_METHODS = ("GET", "HEAD", "OPTIONS", "DELETE")


def has_body(scope: dict) -> bool:
    """Whether the request may carry a body these limits apply to (HTTP, not GET/HEAD/OPTIONS/DELETE)."""
    return scope["type"] == "http" and scope.get("method") not in _NO_BODY_METHODS


def declared_length(scope: dict) -> int | None:
    """The ``Content-Length`` the client announced; None for a chunked body (or a header that is no
    number, which the HTTP server refuses before the app sees it anyway)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(err: MaskqError, scope: dict, receive: Receive, send: Any) -> None:
    await error_response(err, _CLOSE)(scope, receive, send)


async def _run_guarded(app: Any, scope: dict, receive: Receive, send: Any, guarded_receive: Receive,
                       refusal: Callable[[], MaskqError | None]) -> None:
    """Run ``app`` reading the body through ``guarded_receive``, which raises an error to refuse it.
    Once ``refusal()`` names that error, it is the answer, with ``Connection: close``: kept when the
    app's handler rendered it, put in place of whatever else an inner layer answered (a parser that
    turned it into a 400), sent here when nothing caught it."""
    started = False
    replaced = False

    async def guarded_send(message: dict) -> None:
        nonlocal started, replaced
        if replaced:
            return
        if message["type"] == "http.response.start":
            started = True
            err = refusal()
            if err is not None:
                if message["status"] != err.http_status:
                    replaced = True
                    await _refuse(err, scope, receive, send)
                    return
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
        await send(message)

    try:
        await app(scope, guarded_receive, guarded_send)
    except Exception:
        err = refusal()
        if err is None or started:
            raise
        await _refuse(err, scope, receive, send)


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes`` (``MASKQ_MAX_REQUEST_BYTES``)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> ImageTooLargeError:
        return ImageTooLargeError(f"request body larger than {self.max_bytes} bytes; upload large images with "
                                  "POST /v1/uploads", limit_bytes=self.max_bytes)

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if not has_body(scope):
            return await self.app(scope, receive, send)
        declared = declared_length(scope)
        if declared is not None and declared > self.max_bytes:
            return await _refuse(self._too_large(), scope, receive, send)
        seen = 0
        refused: MaskqError | None = None

        async def capped_receive() -> dict:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = self._too_large()
                    raise refused
            return message

        await _run_guarded(self.app, scope, receive, send, capped_receive, lambda: refused)


class UploadBudget:
    """The request body bytes this process is receiving now, against a limit. Only the event loop's
    thread touches it (the middleware runs there), so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes if they fit; False (and nothing reserved) if they do not."""
        if self.in_flight + n > self.limit:
            return False
        self.in_flight += n
        return True

    def give_back(self, n: int) -> None:
        self.in_flight -= n


class UploadBudgetMiddleware:
    """429 ``upload_budget_full`` + ``Retry-After`` while the bodies in flight would pass the budget's
    limit (``MASKQ_UPLOAD_BUDGET_BYTES``, per process; 0 turns it off).

    A body with ``Content-Length`` reserves that many bytes before the app runs, or is refused then,
    without a byte of it read (the cheapest refusal: the client learns at once, and a client that sent
    ``Expect: 100-continue`` never sends the body). A chunked body reserves its bytes as they arrive
    and is cut off when they no longer fit. Whatever was reserved is given back when the request ends,
    answered or failed. What the budget cannot tell is who holds it: a slow client keeps its share
    until the body timeout (:class:`BodyTimeoutMiddleware`) ends its request.
    """

    def __init__(self, app: Any, budget: UploadBudget,
                 retry_after: int = defaults.UPLOAD_BUDGET_RETRY_AFTER_SECONDS) -> None:
        self.app = app
        self.budget = budget  # made by create_app, which also exports its level as a metric
        self.retry_after = retry_after

    def _full(self) -> UploadBudgetFullError:
        return UploadBudgetFullError(
            f"the server is receiving as many uploads as it takes at once ({self.budget.limit} bytes); "
            f"retry after {self.retry_after} s", retry_after=self.retry_after)

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if not self.budget.limit or not has_body(scope):
            return await self.app(scope, receive, send)
        declared = declared_length(scope)
        held = 0
        refused: MaskqError | None = None

        async def counted_receive() -> dict:
            nonlocal held, refused
            message = await receive()
            n = len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if n:
                if not self.budget.take(n):
                    refused = self._full()
                    raise refused
                held += n
            return message

        if declared is not None:
            if not self.budget.take(declared):
                return await _refuse(self._full(), scope, receive, send)
            held = declared
        try:
            if declared is not None:
                await self.app(scope, receive, send)
            else:
                await _run_guarded(self.app, scope, receive, send, counted_receive, lambda: refused)
        finally:
            self.budget.give_back(held)


class BodyTimeoutMiddleware:
    """408 ``request_timeout`` when the whole body has not arrived ``timeout`` seconds
    (``MASKQ_BODY_TIMEOUT_SECONDS``) after the app first asked for it.

    A deadline for the whole body, not an idle timeout between reads: a client that sends one byte a
    second never leaves a gap, and would hold its connection, a spooled file and its share of the
    upload budget for as long as it liked. The clock starts at the app's first read, so the time a
    route spends before reading (authentication, the backlog check) is not charged to the client.
    Once the body is whole, later reads (a streamed answer listening for a disconnect) are not timed.
    """

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    def _timed_out(self) -> BodyTimeoutError:
        return BodyTimeoutError(f"the request body did not arrive within {self.timeout:g} s; upload large images "
                                "with POST /v1/uploads", timeout_seconds=self.timeout)

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if not has_body(scope):
            return await self.app(scope, receive, send)
        deadline: float | None = None
        whole = False
        refused: MaskqError | None = None

        async def timed_receive() -> dict:
            nonlocal deadline, whole, refused
            if whole:
                return await receive()
            if refused is not None:
                raise refused
            now = anyio.current_time()
            if deadline is None:
                deadline = now + self.timeout
            try:
                with anyio.fail_after(max(0.0, deadline - now)):
                    message = await receive()
            except TimeoutError:
                refused = self._timed_out()
                raise refused from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                whole = True
            return message

        await _run_guarded(self.app, scope, receive, send, timed_receive, lambda: refused)
