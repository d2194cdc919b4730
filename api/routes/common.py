"""Helpers the routers share: the services, the job document, documented error answers, input checks."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.limits import backlog_error, check_sniffed
from api.schemas import WEBHOOK_EVENTS, ErrorBody
from api.services import Services, check_webhook_url
from maskq.errors import ImageTooLargeError, InvalidParameterError, NotFoundError, UnsupportedFormatError
from maskq.params import parse_params, with_default_model
from maskq.service.records import Job
from maskq.service.storage import translated

_ERROR_TEXT = {
    400: "malformed request", 401: "missing or unknown API key", 404: "not found (or another tenant's)",
    409: "conflict with the job's state", 413: "body or image too large", 415: "not a supported image or body type",
    422: "invalid parameter (the field is named in details.field)", 429: "backlog full; see Retry-After",
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


def services(request: Request) -> Services:
    return request.app.state.services


def job_document(svc: Services, job: Job) -> dict[str, Any]:
    doc = job.to_public()
    if job.items:
        by_index = dict(enumerate(job.result_keys))
        keys = {i.index: i.result_key for i in job.items if i.result_key}
        for item in doc.get("items", []):
            key = keys.get(item["index"]) or (by_index.get(item["index"]) if not keys else None)
            if key and item["state"] == "succeeded":
                item["result_url"] = svc.storage.presigned_result_url(key)
    if job.state.value == "succeeded" and job.result_key:
        doc["result_url"] = svc.storage.presigned_result_url(job.result_key)
    return doc


async def admit(svc: Services, n: int = 1) -> None:
    """429 while the queue's backlog (plus these n jobs) is past its limit."""
    guard = svc.backlog
    # the cached value needs no thread hop; a refresh (a Redis read) runs off the event loop
    backlog = guard.cached() if guard.fresh() else await run_in_threadpool(guard.current)
    if backlog + n > svc.settings.backlog_limit:
        raise backlog_error(svc.settings, backlog)


def validate_params(operation: str, params: Any, default_model: str) -> dict[str, Any]:
    """The params as the record keeps them: checked, with the model named where one is used."""
    if not isinstance(params, dict):
        raise InvalidParameterError("params must be a JSON object", field="params")
    try:
        parse_params(operation, params)
    except InvalidParameterError as err:
        field = err.field if err.field in (None, "operation") else f"params.{err.field}"
        raise InvalidParameterError(err.message, field=field) from None
    return with_default_model(operation, params, default_model)


def validate_webhook(svc: Services, url: str | None, events: list[str] | None) -> tuple[str | None, list[str]]:
    events = list(dict.fromkeys(events or []))
    for e in events:
        if e not in WEBHOOK_EVENTS:
            raise InvalidParameterError(f"unknown webhook event {e!r}; choose from {', '.join(WEBHOOK_EVENTS)}",
                                        field="webhook_events")
    if not url:
        if events:
            raise InvalidParameterError("webhook_events given without webhook_url", field="webhook_url")
        return None, []
    return check_webhook_url(url, svc.settings.webhook_allow_private), events


def form_text(form: Any, name: str, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise InvalidParameterError(f"{name}: field required", field=name)
        return None
    if isinstance(value, UploadFile):
        raise InvalidParameterError(f"{name}: expected a text field, not a file", field=name)
    return str(value)


def form_params(form: Any) -> Any:
    raw = form_text(form, "params")
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidParameterError("params: not valid JSON", field="params") from None


def form_events(form: Any) -> list[str] | None:
    raw = form_text(form, "webhook_events")
    if raw is None:
        return None
    if raw.lstrip().startswith("["):
        try:
            value = json.loads(raw)
        except ValueError:
            raise InvalidParameterError("webhook_events: not valid JSON", field="webhook_events") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidParameterError("webhook_events: expected a list of strings", field="webhook_events")
        return value
    return [e.strip() for e in raw.split(",") if e.strip()]


def check_uploaded(svc: Services, tenant: str, key: str, field: str = "input_key") -> str:
    """An object uploaded by this tenant, within the byte limit, announcing an image: else 404/413/415/422."""
    if not key.startswith(f"{tenant}/") or ".." in key:
        raise InvalidParameterError(f"{field}: no uploaded object {key!r}", field=field)
    st = svc.storage
    try:
        with translated():
            stat = st.client.stat_object(st.input_bucket, key)
            if (stat.size or 0) > svc.settings.max_bytes:
                raise ImageTooLargeError(f"{field}: the object is {stat.size} bytes, the limit is "
                                         f"{svc.settings.max_bytes}", limit_bytes=svc.settings.max_bytes)
            resp = st.client.get_object(st.input_bucket, key, offset=0, length=64)
            try:
                head = resp.read()
            finally:
                resp.close()
                resp.release_conn()
    except NotFoundError:
        raise InvalidParameterError(f"{field}: no uploaded object {key!r} (expired or never PUT?)",
                                    field=field) from None
    try:
        check_sniffed(head)
    except UnsupportedFormatError as err:
        raise UnsupportedFormatError(err.message, field=field) from None
    return key
