"""Accepting work: the one owner of everything between a parsed request and a queued job.

A route reads the request (:func:`read_submission`: multipart with images, or JSON naming uploads;
the one place that tells them apart), then calls :func:`accept_job` or :func:`accept_batch`, which:

1. validate the operation's parameters, the images they name (an upload of the same tenant that
   exists and is an image), the webhook (an http(s) URL whose host is public) and each input
   (image sniffing, byte and pixel limits from the header, without decoding);
2. apply backpressure (:func:`admit`: 429 while the queue's backlog is past its limit);
3. store the inputs, then write the record(s) with their task messages in one Redis call.

Nothing is stored or queued for a request refused at 1 or 2, and a batch is refused whole or taken
whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.errors import validation_error
from api.multipart import read_form
from api.schemas import (
    WEBHOOK_EVENTS,
    WEBHOOK_EVENTS_PATTERN,
    WEBHOOK_URL_MAX,
    WEBHOOK_URL_PATTERN,
    BatchCreate,
    JobCreate,
)
from api.services import Services
from maskq import logging as mlog
from maskq.errors import (
    BacklogFullError,
    ConflictError,
    ImageTooLargeError,
    InvalidParameterError,
    NotFoundError,
    UnsupportedFormatError,
)
from maskq.imaging import ACCEPTED_TEXT, open_image, sniff_format, stored_format
from maskq.params import parse_params, with_default_model
from maskq.service import webhook_address
from maskq.service.records import Batch, Job, new_job_id

_FORM_TEXT_FIELDS = ("operation", "params", "webhook_url", "webhook_events")
SNIFF_BYTES = 64  # enough for every signature sniff_format knows (AVIF's ftyp box is the longest)


@dataclass
class Submission:
    """What a create request carries, however it came (multipart or JSON)."""

    operation: str
    params: Any
    images: list[bytes] | None = None  # multipart: the files themselves
    input_keys: list[str] | None = None  # JSON: objects uploaded with POST /v1/uploads
    webhook_url: str | None = None
    webhook_events: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.images if self.images is not None else self.input_keys or [])


# ---- reading a request -------------------------------------------------------------------------------


async def read_submission(request: Request, *, many: bool, max_files: int = 1) -> Submission:
    """Multipart (field ``image``, or ``images`` for a batch) or JSON (``input_key`` / ``input_keys``);
    415 for any other body."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        name = "images" if many else "image"
        async with read_form(request, max_files=max_files, max_fields=8) as form:
            for key in form.keys():
                if key not in (name, *_FORM_TEXT_FIELDS):
                    raise InvalidParameterError(f"{key}: unknown field; send {name}, {', '.join(_FORM_TEXT_FIELDS)}",
                                                field=key)
            files = form.getlist(name)
            if not files or not all(isinstance(f, UploadFile) for f in files) or (not many and len(files) > 1):
                what = "one or more file fields are" if many else "a file field is"
                raise InvalidParameterError(f"{name}: {what} required", field=name)
            return Submission(operation=_form_text(form, "operation", required=True) or "",
                              params=_form_params(form), images=[await f.read() for f in files],
                              webhook_url=_form_text(form, "webhook_url"), webhook_events=_form_events(form))
    if ctype == "application/json":
        try:
            body: JobCreate | BatchCreate = (BatchCreate if many else JobCreate).model_validate_json(
                await request.body())
        except ValidationError as err:
            raise validation_error(list(err.errors())) from None
        keys = body.input_keys if isinstance(body, BatchCreate) else [body.input_key]
        return Submission(operation=body.operation, params=body.params, input_keys=keys,
                          webhook_url=body.webhook_url, webhook_events=list(body.webhook_events or []))
    wanted = "images" if many else "an image"
    raise UnsupportedFormatError(f"send multipart/form-data ({wanted}) or application/json (uploaded keys)",
                                 content_type=ctype or None)


def _form_text(form: Any, name: str, required: bool = False) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise InvalidParameterError(f"{name}: field required", field=name)
        return None
    if isinstance(value, UploadFile):
        raise InvalidParameterError(f"{name}: expected a text field, not a file", field=name)
    return str(value)


def _form_params(form: Any) -> Any:
    raw = _form_text(form, "params")
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidParameterError("params: not valid JSON", field="params") from None


def _form_events(form: Any) -> list[str]:
    """Comma-separated, or a JSON list (what the JSON body takes)."""
    raw = _form_text(form, "webhook_events")
    if raw is None:
        return []
    if not re.fullmatch(WEBHOOK_EVENTS_PATTERN, raw):
        raise InvalidParameterError(f"webhook_events: expected a comma-separated list of {', '.join(WEBHOOK_EVENTS)}",
                                    field="webhook_events")
    if raw.startswith("["):  # the pattern admits only a JSON list of event names here
        return json.loads(raw)
    return [e.strip() for e in raw.split(",")]


# ---- backpressure ------------------------------------------------------------------------------------


async def admit(svc: Services, n: int = 1) -> None:
    """429 while the queue's backlog (plus these n jobs) is past its limit."""
    guard = svc.backlog
    # the cached value needs no thread hop; a refresh (a Redis read) runs off the event loop
    backlog = guard.cached() if guard.fresh() else await run_in_threadpool(guard.current)
    s = svc.settings
    if backlog + n > s.backlog_limit:
        raise BacklogFullError(
            f"the queue holds {backlog} jobs (limit {s.backlog_limit}); retry after {s.backlog_retry_after_seconds} s",
            retry_after=s.backlog_retry_after_seconds, backlog=backlog, limit=s.backlog_limit)


# ---- validation --------------------------------------------------------------------------------------


def check_params(svc: Services, tenant: str, operation: str, params: Any) -> dict[str, Any]:
    """The params as the record keeps them: valid, every image they name one of this tenant's
    uploads, and the model named where one is used."""
    if not isinstance(params, dict):
        raise InvalidParameterError("params must be a JSON object", field="params")
    try:
        parsed = parse_params(operation, params)
    except InvalidParameterError as err:
        field_ = err.field if err.field in (None, "operation") else f"params.{err.field}"
        raise InvalidParameterError(err.message, field=field_) from None
    for name, ref in parsed.asset_refs().items():
        check_upload(svc, tenant, ref, f"params.{name}")
    return with_default_model(operation, params, svc.settings.model)


def check_webhook(svc: Services, url: str | None, events: list[str]) -> tuple[str | None, list[str]]:
    """The event names were checked as read (the JSON body's enum, the form field's pattern)."""
    events = list(dict.fromkeys(events))
    if not url:
        if events:
            raise InvalidParameterError("webhook_events given without webhook_url", field="webhook_url")
        return None, []
    if len(url) > WEBHOOK_URL_MAX or not re.fullmatch(WEBHOOK_URL_PATTERN, url):
        raise InvalidParameterError("webhook_url must be an http(s) URL with a host (and no credentials)",
                                    field="webhook_url")
    return webhook_address.check_url(url, svc.settings.webhook_allow_private), events


def check_image(svc: Services, data: bytes, field_: str) -> tuple[str, str]:
    """415/413/422 for bytes that cannot be a job's input; else ``(extension, content type)``."""
    limit = svc.settings.max_bytes
    if len(data) > limit:
        raise ImageTooLargeError(f"{field_}: the image is {len(data)} bytes, the limit is {limit}", limit_bytes=limit,
                                 field=field_)
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormatError(f"{field_}: not an image in a format maskq reads; send {ACCEPTED_TEXT}",
                                     field=field_)
    img = open_image(data, max_pixels=svc.settings.max_pixels, max_bytes=limit)  # the header only
    return stored_format(img.format or fmt)


def check_upload(svc: Services, tenant: str, key: str, field_: str) -> str:
    """An object this tenant uploaded, within the byte limit, announcing an image: else 422 (naming
    ``field_``), 413 or 415. Another tenant's key is answered as a missing one."""
    if not key.startswith(f"{tenant}/") or ".." in key:
        raise InvalidParameterError(f"{field_}: no upload {key!r} of yours", field=field_)
    try:
        size, head = svc.storage.inspect_input(key, SNIFF_BYTES)
    except NotFoundError:
        raise InvalidParameterError(f"{field_}: no upload {key!r} (expired, or never PUT?)", field=field_) from None
    limit = svc.settings.max_bytes
    if size > limit:
        raise ImageTooLargeError(f"{field_}: the upload is {size} bytes, the limit is {limit}", limit_bytes=limit,
                                 field=field_)
    if sniff_format(head) is None:
        raise UnsupportedFormatError(f"{field_}: the upload is not an image in a format maskq reads; send "
                                     f"{ACCEPTED_TEXT}", field=field_)
    return key


@dataclass
class _Checked:
    operation: str
    params: dict[str, Any]
    webhook_url: str | None
    webhook_events: list[str]


def _check(svc: Services, tenant: str, sub: Submission) -> _Checked:
    params = check_params(svc, tenant, sub.operation, sub.params)
    url, events = check_webhook(svc, sub.webhook_url, sub.webhook_events)
    return _Checked(sub.operation, params, url, events)


def _store_inputs(svc: Services, tenant: str, sub: Submission, job_ids: list[str], field_: str) -> list[str]:
    """Every input checked first, then stored: the input keys, one per job."""
    if sub.images is not None:
        formats = [check_image(svc, d, f"{field_}.{i}" if len(sub.images) > 1 else field_)
                   for i, d in enumerate(sub.images)]
        return [svc.storage.put_input(tenant, jid, data, extension=ext, content_type=ctype)
                for jid, data, (ext, ctype) in zip(job_ids, sub.images, formats, strict=True)]
    keys = sub.input_keys or []
    return [check_upload(svc, tenant, k, f"{field_}.{i}" if len(keys) > 1 or field_ == "input_keys" else field_)
            for i, k in enumerate(keys)]


# ---- accepting -----------------------------------------------------------------------------------------


def accept_job(svc: Services, tenant: str, sub: Submission, idempotency_key: str | None = None) -> tuple[Job, bool]:
    """One image, one job. Returns ``(job, replayed)``: a repeated Idempotency-Key answers the first
    job (409 if it was made for a different request)."""
    checked = _check(svc, tenant, sub)
    if idempotency_key:
        existing = svc.jobs.find_by_idempotency_key(tenant, idempotency_key)
        if existing is not None:
            return _same_request(existing, checked), True
    job_id = new_job_id()
    (key,) = _store_inputs(svc, tenant, sub, [job_id], "image" if sub.images is not None else "input_key")
    with mlog.bind(job_id=job_id, tenant=tenant):
        job, created = svc.jobs.create(tenant, checked.operation, checked.params, key, job_id=job_id,
                                       webhook_url=checked.webhook_url, webhook_events=checked.webhook_events,
                                       idempotency_key=idempotency_key, message=svc.publisher.job_message)
    if not created:  # the same key raced us: the other request's job is the answer
        return _same_request(job, checked), True
    _enqueued(svc, checked.operation, 1)
    return job, False


def accept_batch(svc: Services, tenant: str, sub: Submission) -> Batch:
    """Many images, one operation: one job each, all written at once with the batch record."""
    n, most = sub.count, svc.settings.max_batch_items
    field_ = "images" if sub.images is not None else "input_keys"
    if not 1 <= n <= most:
        raise InvalidParameterError(f"{field_}: a batch holds 1 to {most} images, got {n}", field=field_)
    checked = _check(svc, tenant, sub)
    job_ids = [new_job_id() for _ in range(n)]
    keys = _store_inputs(svc, tenant, sub, job_ids, field_)
    batch_id = new_job_id()
    with mlog.bind(tenant=tenant, batch_id=batch_id):
        batch = svc.jobs.create_batch(tenant, checked.operation, checked.params, list(zip(job_ids, keys, strict=True)),
                                      batch_id=batch_id, webhook_url=checked.webhook_url,
                                      webhook_events=checked.webhook_events, message=svc.publisher.job_message)
    _enqueued(svc, checked.operation, n)
    return batch


def _same_request(job: Job, checked: _Checked) -> Job:
    if job.operation != checked.operation or job.params != checked.params:
        raise ConflictError("this Idempotency-Key was used for a different request", job_id=job.id)
    return job


def _enqueued(svc: Services, operation: str, n: int) -> None:
    svc.backlog.note_enqueued(n)
    svc.metrics.enqueued.labels(operation).inc(n)

