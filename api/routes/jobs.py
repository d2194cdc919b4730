"""``/v1/jobs``: create (multipart image or an uploaded key), read, result redirect, cancel, list."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.auth import require_tenant
from api.errors import validation_error
from api.limits import check_image
from api.routes.common import (
    admit,
    check_uploaded,
    errors,
    form_events,
    form_params,
    form_text,
    job_document,
    services,
    validate_params,
    validate_webhook,
)
from api.schemas import JOB_EXAMPLE, JobCreate, JobDocument, JobPage, State
from api.services import Services
from maskq import defaults
from maskq import logging as mlog
from maskq.errors import ConflictError, InvalidParameterError, NotFoundError, UnsupportedFormatError
from maskq.params import PARAMS_MODELS
from maskq.service.records import Job, JobState
from maskq.service.storage import translated

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Path(description="the job's id", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
IdempotencyKey = Header(None, alias="Idempotency-Key", min_length=1, max_length=255,
                        description="a retried POST with the same key returns the first job instead of a new one")

_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["image", "operation"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF"},
        "operation": {"type": "string", "enum": sorted(PARAMS_MODELS)},
        "params": {"type": "string", "description": "the operation's parameters as a JSON object",
                   "example": '{"format": "png"}'},
        "webhook_url": {"type": "string", "description": "http(s) URL POSTed when the job ends"},
        "webhook_events": {"type": "string", "description": "comma-separated: job.succeeded, job.failed, "
                                                           "job.canceled (default: all)"},
    },
}
_CREATE_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
    "application/json": {"schema": JobCreate.model_json_schema()},
}}}
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"},
             "Idempotent-Replayed": {"schema": {"type": "string"}, "description": "'true' on a replay"}}


def _created(job: Job, doc: dict[str, Any], replayed: bool) -> JSONResponse:
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(doc, status_code=202, headers=headers)


def submit(svc: Services, tenant: str, operation: str, params: Any, *, data: bytes | None = None,
           input_key: str | None = None, webhook_url: str | None = None, webhook_events: list[str] | None = None,
           idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Validate, store the input, write the record, send the task. Returns ``(job, replayed)``."""
    params = validate_params(operation, params, svc.settings.model)
    webhook_url, events = validate_webhook(svc, webhook_url, webhook_events)
    if idempotency_key:
        existing = svc.jobs.find_by_idempotency_key(tenant, idempotency_key)
        if existing is not None:
            return _same_request(existing, operation, params), True
    job_id = svc.new_id()
    if data is not None:
        ext, content_type = check_image(data, svc.settings)
        key = svc.storage.put_input(tenant, job_id, data, extension=ext, content_type=content_type)
    else:
        key = check_uploaded(svc, tenant, input_key or "")
    with mlog.bind(job_id=job_id, tenant=tenant):
        job, created = svc.create_job(tenant, operation, params, key, job_id=job_id, webhook_url=webhook_url,
                                      idempotency_key=idempotency_key, webhook_events=events)
        if not created:  # the same key raced us: the other request's job is the answer
            return _same_request(job, operation, params), True
    return job, False


def _same_request(job: Job, operation: str, params: dict[str, Any]) -> Job:
    if job.operation != operation or job.params != params:
        raise ConflictError("this Idempotency-Key was used for a different request", job_id=job.id)
    return job


@router.post("", status_code=202, summary="Create a job", response_model=JobDocument,
             openapi_extra=_CREATE_BODY,
             responses={202: {"description": "queued (or the first job for a repeated Idempotency-Key)",
                              "headers": _LOCATION, "content": {"application/json": {"example": JOB_EXAMPLE}}},
                        **errors(400, 401, 409, 413, 415, 422, 429)})
async def create_job(request: Request, tenant: str = Depends(require_tenant),
                     idempotency_key: str | None = IdempotencyKey) -> JSONResponse:
    """Send an image as ``multipart/form-data`` (field ``image``), or JSON with the ``input_key`` of an
    object uploaded with ``POST /v1/uploads``. Answers ``202`` with the job and its ``Location``."""
    svc = services(request)
    await admit(svc)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise InvalidParameterError("image: a file field is required", field="image")
            data = await image.read()
            operation = form_text(form, "operation", required=True)
            kwargs: dict[str, Any] = {"data": data, "webhook_url": form_text(form, "webhook_url"),
                                      "webhook_events": form_events(form)}
            params = form_params(form)
    elif ctype == "application/json":
        try:
            body = JobCreate.model_validate_json(await request.body())
        except ValidationError as err:
            raise validation_error(list(err.errors())) from None
        operation, params = body.operation, body.params
        kwargs = {"input_key": body.input_key, "webhook_url": body.webhook_url,
                  "webhook_events": list(body.webhook_events or [])}
    else:
        raise UnsupportedFormatError("send multipart/form-data (an image) or application/json (an input_key)",
                                     content_type=ctype or None)
    job, replayed = await run_in_threadpool(submit, svc, tenant, operation, params,
                                            idempotency_key=idempotency_key, **kwargs)
    request.state.job_id = job.id
    doc = await run_in_threadpool(job_document, svc, job) if replayed else job.to_public()
    return _created(job, doc, replayed)


@router.get("", summary="List the tenant's jobs, newest first", response_model=JobPage,
            response_model_exclude_unset=True, responses=errors(401, 422))
def list_jobs(request: Request, tenant: str = Depends(require_tenant),
              state: Annotated[State | None, Query(description="only jobs in this state (filters each page)")] = None,
              review: Annotated[bool | None, Query(
                  description="true: only the jobs marked for review (confidence below review_below), from their "
                  "own index, so every page is full; false: only the others (filters each page)")] = None,
              limit: int = Query(defaults.JOB_PAGE_SIZE, ge=1, le=defaults.JOB_PAGE_MAX),
              cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page")) -> Any:
    """Cursor pagination. With ``state`` or ``review=false`` a page may hold fewer than ``limit``
    jobs; follow ``next_cursor`` until it is null."""
    svc = services(request)
    jobs, nxt = svc.jobs.list_for_tenant(tenant, limit=limit, cursor=cursor, review=bool(review))
    if state is not None:
        jobs = [j for j in jobs if j.state.value == state]
    if review is False:
        jobs = [j for j in jobs if not j.review]
    return {"jobs": [job_document(svc, j) for j in jobs], "next_cursor": nxt}


@router.get("/{job_id}", summary="A job: state, timings, error, result URL", response_model=JobDocument,
            response_model_exclude_unset=True, responses=errors(401, 404, 422))
def get_job(request: Request, job_id: str = JobId, tenant: str = Depends(require_tenant)) -> Any:
    svc = services(request)
    request.state.job_id = job_id
    return job_document(svc, svc.jobs.require(job_id, tenant))


@router.get("/{job_id}/result", summary="Redirect to the result", status_code=303,
            responses={303: {"description": "to the presigned result URL",
                             "headers": {"Location": {"schema": {"type": "string"}}}},
                       **errors(401, 404, 409, 422)})
def get_result(request: Request, job_id: str = JobId, tenant: str = Depends(require_tenant),
               index: int = Query(0, ge=0, le=1024, description="which image of a batch job")) -> RedirectResponse:
    """``303 See Other`` to a presigned GET of the result; ``409`` (with the state) until it succeeded."""
    svc = services(request)
    request.state.job_id = job_id
    return RedirectResponse(svc.storage.presigned_result_url(_result_key(svc, job_id, tenant, index)), status_code=303)


def _result_key(svc: Services, job_id: str, tenant: str, index: int) -> str:
    """The S3 key of a succeeded job's result ``index``: else 404 (no such job or index) or 409 (not done)."""
    job = svc.jobs.require(job_id, tenant)
    if job.state is not JobState.SUCCEEDED:
        raise ConflictError(f"job {job_id} is {job.state.value}, no result yet", state=job.state.value)
    keys = {i.index: i.result_key for i in job.items if i.result_key} if job.items else dict(
        enumerate(job.result_keys))
    key = keys.get(index)
    if key is None:
        raise NotFoundError(f"job {job_id} has no result at index {index}", job_id=job_id, index=index)
    return key


_RESULT_TYPES = ("image/png", "image/jpeg", "image/webp")
_CHUNK = 256 * 1024


@router.get("/{job_id}/result/content", summary="The result's bytes, from this origin",
            response_class=Response,
            responses={200: {"description": "the result image",
                             "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _RESULT_TYPES}},
                       **errors(401, 404, 409, 422)})
def get_result_content(request: Request, job_id: str = JobId, tenant: str = Depends(require_tenant),
                       index: int = Query(0, ge=0, le=1024, description="which image of a batch job")) -> Response:
    """The result itself, streamed through the API, for clients that may talk to the API's origin only
    (the web page at ``/ui``: its Content-Security-Policy allows no S3 origin). Same key, same answers
    as ``/result``; other clients should prefer that redirect, which spares the API the bytes."""
    svc = services(request)
    request.state.job_id = job_id
    key = _result_key(svc, job_id, tenant, index)
    st = svc.storage
    with translated():
        resp = st.client.get_object(st.result_bucket, key)

    def body() -> Iterator[bytes]:
        try:
            yield from resp.stream(_CHUNK)
        finally:
            resp.close()
            resp.release_conn()

    headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    if length := resp.headers.get("Content-Length"):
        headers["Content-Length"] = length
    media_type = resp.headers.get("Content-Type", "application/octet-stream")
    return StreamingResponse(body(), media_type=media_type, headers=headers)


@router.delete("/{job_id}", summary="Cancel a queued job", response_model=JobDocument,
               response_model_exclude_unset=True, responses=errors(401, 404, 409, 422))
def cancel_job(request: Request, job_id: str = JobId, tenant: str = Depends(require_tenant)) -> Any:
    """A queued job becomes ``canceled`` (and its task is revoked); a running or finished one answers
    ``409`` with its state in ``details.state``."""
    svc = services(request)
    request.state.job_id = job_id
    svc.jobs.require(job_id, tenant)
    t = svc.jobs.cancel_queued(job_id)
    if not t.applied:
        raise ConflictError(f"job {job_id} is {t.job.state.value}: only a queued job can be canceled",
                            state=t.job.state.value)
    svc.revoke(job_id)
    svc.send_webhook(t.job)
    return job_document(svc, t.job)
