"""The one place where errors meet HTTP. Every error body has one shape, the same as a failed job's
``error`` field: ``{"error": {"code": ..., "message": ..., "details": {...}?}}``.

* :class:`maskq.errors.MaskqError` -> its ``http_status`` and stable ``code``;
* request validation (FastAPI/pydantic) -> 422 ``invalid_parameter`` with the field named;
* a client that left before its body was whole (Starlette's ``ClientDisconnect``) -> 400
  ``incomplete_body``: nobody reads that answer, but the metrics and logs count a refusal, not a bug;
* Starlette's HTTP errors (unknown route, wrong method, a malformed multipart body) -> their status
  with a code derived from it;
* anything else -> 500 ``internal`` (logged with its traceback, never shown to the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route

from maskq.errors import (
    BacklogFullError,
    IncompleteBodyError,
    InternalError,
    InvalidParameterError,
    MaskqError,
    UnauthorizedError,
    UploadBudgetFullError,
    first_error,
)

log = logging.getLogger("maskq.api")

# HTTP-level failures that no maskq error class stands for
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout", 409: "conflict",
               413: "image_too_large", 415: "unsupported_format", 422: "invalid_parameter", 429: "backlog_full"}
# statuses counted in maskq_http_rejections_total{reason}
REJECTION_STATUSES = frozenset({408, 413, 415, 422, 429})


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"error": err}


def error_response(err: MaskqError, headers: dict[str, str] | None = None) -> JSONResponse:
    extra = dict(headers or {})
    if isinstance(err, BacklogFullError | UploadBudgetFullError):
        extra["Retry-After"] = str(err.details.get("retry_after", 30))
    if isinstance(err, UnauthorizedError):
        extra["WWW-Authenticate"] = 'Bearer realm="maskq"'
    return JSONResponse({"error": err.to_dict()}, status_code=err.http_status, headers=extra or None)


def validation_error(errors: list[dict[str, Any]]) -> InvalidParameterError:
    """FastAPI's or pydantic's validation errors as the one 422 a client gets, naming the field."""
    field, msg = first_error(errors, skip_loc=("body", "query", "path", "header", "cookie"))
    return InvalidParameterError(f"{field}: {msg}" if field else msg, field=field)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (a path with GET and DELETE routes has both)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})  # any method: path match only
        if match is not Match.NONE and isinstance(route, APIRoute | Route):
            methods |= set(route.methods or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(MaskqError)
    async def _maskq(request: Request, exc: MaskqError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("request failed: %s %s", exc.code, exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(exc.errors())))

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return error_response(IncompleteBodyError("the client closed the connection before its body was whole"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "bad_request" if exc.status_code < 500 else "internal")
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette lists the first matching route's methods only
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(code, detail), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return error_response(InternalError("internal error; the request id names it in the logs"))
