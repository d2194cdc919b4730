"""``/v1/jobs``: create (multipart image or an uploaded key), read, result redirect, cancel, list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.acceptance import accept_job, admit, read_submission
from api.auth import require_tenant
from api.routes.common import errors
from api.schemas import JOB_EXAMPLE, JobDocument, JobPage, State, create_body
from api.services import Services, services
from maskq import defaults
from maskq.errors import ConflictError
from maskq.service.endings import job_ended
from maskq.service.records import CURSOR_PATTERN, JobState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Path(description="the job's id", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
IdempotencyKey = Header(None, alias="Idempotency-Key", min_length=1, max_length=255,
                        description="a retried POST with the same key returns the first job instead of a new one")

_CREATE_BODY = create_body(many=False)
_LOCATION = {"Location": {"schema": {"type": "string"}, "description": "/v1/jobs/{id}"},
             "Idempotent-Replayed": {"schema": {"type": "string"}, "description": "'true' on a replay"}}


@router.post("", status_code=202, summary="Create a job", response_model=JobDocument,
             openapi_extra=_CREATE_BODY,
             responses={202: {"description": "queued (or the first job for a repeated Idempotency-Key)",
                              "headers": _LOCATION, "content": {"application/json": {"example": JOB_EXAMPLE}}},
                        **errors(400, 401, 408, 409, 413, 415, 422, 429)})
async def create_job(request: Request, tenant: str = Depends(require_tenant),
                     idempotency_key: str | None = IdempotencyKey) -> JSONResponse:
    """Send an image as ``multipart/form-data`` (field ``image``), or JSON with the ``input_key`` of an
    object uploaded with ``POST /v1/uploads``. Answers ``202`` with the job and its ``Location``."""
    svc = services(request)
    await admit(svc)
    sub = await read_submission(request, many=False)
    job, replayed = await run_in_threadpool(accept_job, svc, tenant, sub, idempotency_key)
    request.state.job_id = job.id
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    # no I/O: a queued job has no result to presign, and presigning is local computation anyway
    return JSONResponse(job.document(svc.storage.presigned_result_url), status_code=202, headers=headers)


@router.get("", summary="List the tenant's jobs, newest first", response_model=JobPage,
            response_model_exclude_unset=True, responses=errors(401, 422))
def list_jobs(request: Request, tenant: str = Depends(require_tenant),
              state: Annotated[State | None, Query(description="only jobs in this state (filters each page)")] = None,
              review: Annotated[bool | None, Query(
                  description="true: only the jobs marked for review (confidence below review_below), from their "
                  "own index, so every page is full; false: only the others (filters each page)")] = None,
              limit: int = Query(defaults.JOB_PAGE_SIZE, ge=1, le=defaults.JOB_PAGE_MAX),
              cursor: str | None = Query(None, max_length=100, pattern=CURSOR_PATTERN,
                                         description="next_cursor of the previous page")) -> Any:
    """Cursor pagination. With ``state`` or ``review=false`` a page may hold fewer than ``limit``
    jobs; follow ``next_cursor`` until it is null."""
    svc = services(request)
    jobs, nxt = svc.jobs.list_for_tenant(tenant, limit=limit, cursor=cursor, review=bool(review))
    if state is not None:
        jobs = [j for j in jobs if j.state.value == state]
    if review is False:
        jobs = [j for j in jobs if not j.review]
    return {"jobs": [j.document(svc.storage.presigned_result_url) for j in jobs], "next_cursor": nxt}


@router.get("/{job_id}", summary="A job: state, timings, error, result URL", response_model=JobDocument,
            response_model_exclude_unset=True, responses=errors(401, 404, 422))
def get_job(request: Request, job_id: str = JobId, tenant: str = Depends(require_tenant)) -> Any:
    svc = services(request)
    request.state.job_id = job_id
    return svc.jobs.require(job_id, tenant).document(svc.storage.presigned_result_url)


@router.get("/{job_id}/result", summary="Redirect to the result", status_code=303, response_class=Response,
            responses={303: {"description": "to the presigned result URL (no body)",
                             "headers": {"Location": {"schema": {"type": "string"}}}, "content": {}},
                       **errors(401, 404, 409, 422)})
def get_result(request: Request, job_id: str = JobId, tenant: str = Depends(require_tenant)) -> Response:
    """``303 See Other`` to a presigned GET of the result; ``409`` (with the state) until it succeeded."""
    svc = services(request)
    request.state.job_id = job_id
    url = svc.storage.presigned_result_url(_result_key(svc, job_id, tenant))
    return Response(status_code=303, headers={"Location": url})


def _result_key(svc: Services, job_id: str, tenant: str) -> str:
    """The S3 key of a succeeded job's result: else 404 (no such job) or 409 (not done)."""
    job = svc.jobs.require(job_id, tenant)
    if job.state is not JobState.SUCCEEDED or not job.result_key:
        raise ConflictError(f"job {job_id} is {job.state.value}, no result yet", state=job.state.value)
    return job.result_key


_RESULT_TYPES = ("image/png", "image/jpeg", "image/webp")
_CHUNK = 256 * 1024


@router.get("/{job_id}/result/content", summary="The result's bytes, from this origin",
            response_class=Response,
            responses={200: {"description": "the result image",
                             "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _RESULT_TYPES}},
                       **errors(401, 404, 409, 422)})
def get_result_content(request: Request, job_id: str = JobId, tenant: str = Depends(require_tenant)) -> Response:
    """The result itself, streamed through the API, for clients that may talk to the API's origin only
    (the web page at ``/ui``: its Content-Security-Policy allows no S3 origin). Same key, same answers
    as ``/result``; other clients should prefer that redirect, which spares the API the bytes."""
    svc = services(request)
    request.state.job_id = job_id
    result = svc.storage.open_result(_result_key(svc, job_id, tenant))
    headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    if result.content_length:
        headers["Content-Length"] = result.content_length
    return StreamingResponse(result.chunks(_CHUNK), media_type=result.content_type, headers=headers)


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
    svc.publisher.revoke(job_id)
    job_ended(t, svc.publisher, svc.metrics.job_finished)
    return t.job.document(svc.storage.presigned_result_url)
