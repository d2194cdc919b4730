"""The documented error answers the routers share (OpenAPI ``responses``)."""

from __future__ import annotations

from typing import Any

from api.schemas import ErrorBody

_ERROR_TEXT = {
    400: "malformed request", 401: "missing or unknown API key", 404: "not found (or another tenant's)",
    408: "the body did not arrive within MASKQ_BODY_TIMEOUT_SECONDS", 409: "conflict with the job's state",
    413: "body or image too large", 415: "not a supported image or body type",
    422: "invalid parameter (the field is named in details.field)",
    429: "backlog full, or the server's upload budget full; see Retry-After",
    503: "Redis or S3 unavailable",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error answers (503 always), all with the one error body."""
    out: dict[int | str, dict[str, Any]] = {}
    for s in (*statuses, 503):
        out[s] = {"model": ErrorBody, "description": _ERROR_TEXT[s]}
    if 429 in out:
        out[429]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    if 401 in out:
        out[401]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out
