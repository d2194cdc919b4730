"""``/v1/batches``: many images, one operation, one id. Each image is a job of its own (so the pool
spreads them over workers and one bad file fails alone); the batch counts their states."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
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
    services,
    validate_params,
    validate_webhook,
)
from api.schemas import BatchCreate, BatchDocument
from api.services import Services
from maskq import logging as mlog
from maskq.errors import InvalidParameterError, UnsupportedFormatError
from maskq.params import PARAMS_MODELS

router = APIRouter(prefix="/v1/batches", tags=["batches"])

_STATES = ("queued", "running", "succeeded", "failed", "canceled")
_MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["images", "operation"],
    "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "operation": {"type": "string", "enum": sorted(PARAMS_MODELS)},
        "params": {"type": "string", "description": "JSON object"},
        "webhook_url": {"type": "string"},
        "webhook_events": {"type": "string"},
    },
}
_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
    "application/json": {"schema": BatchCreate.model_json_schema()},
}}}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def batch_document(svc: Services, batch_id: str, tenant: str) -> dict[str, Any]:
    h, jobs = svc.load_batch(batch_id, tenant)
    counts = {s: 0 for s in _STATES}
    for _, state in jobs:
        counts[state] = counts.get(state, 0) + 1
    live = counts["queued"] + counts["running"]
    return {"id": batch_id, "tenant": tenant, "operation": h["operation"], "created_at": _iso(float(h["created_at"])),
            "total": len(jobs), "counts": counts, "done": live == 0,
            "jobs": [{"id": j, "state": s} for j, s in jobs]}


def submit_batch(svc: Services, tenant: str, operation: str, params: Any, *, images: list[bytes] | None = None,
                 input_keys: list[str] | None = None, webhook_url: str | None = None,
                 webhook_events: list[str] | None = None) -> str:
    params = validate_params(operation, params, svc.settings.model)
    webhook_url, events = validate_webhook(svc, webhook_url, webhook_events)
    n = len(images if images is not None else input_keys or [])
    if not 1 <= n <= svc.settings.max_batch_items:
        field = "images" if images is not None else "input_keys"
        raise InvalidParameterError(f"{field}: a batch holds 1 to {svc.settings.max_batch_items} images, got {n}",
                                    field=field)
    # every input is checked before anything is stored or queued: a batch is refused whole or taken whole
    if images is not None:
        checked = [check_image(d, svc.settings) for d in images]
    else:
        keys = [check_uploaded(svc, tenant, k, field=f"input_keys.{i}") for i, k in enumerate(input_keys or [])]
    batch_id = svc.new_id()
    job_ids = []
    with mlog.bind(tenant=tenant, batch_id=batch_id):
        for i in range(n):
            job_id = svc.new_id()
            if images is not None:
                ext, ctype = checked[i]
                key = svc.storage.put_input(tenant, job_id, images[i], extension=ext, content_type=ctype)
            else:
                key = keys[i]
            job_ids.append(job_id)
            if i == 0:  # the record exists before its first job can be seen running
                svc.save_batch(batch_id, tenant, operation, job_ids)
            svc.create_job(tenant, operation, params, key, job_id=job_id, webhook_url=webhook_url,
                           webhook_events=events)
        svc.save_batch(batch_id, tenant, operation, job_ids)
    return batch_id


@router.post("", status_code=202, response_model=BatchDocument, summary="Create a batch", openapi_extra=_BODY,
             responses={202: {"description": "queued", "headers": {"Location": {"schema": {"type": "string"}}}},
                        **errors(400, 401, 413, 415, 422, 429)})
async def create_batch(request: Request, tenant: str = Depends(require_tenant)) -> JSONResponse:
    """Multipart with several ``images`` files, or JSON with ``input_keys`` from ``POST /v1/uploads``
    (the way for large images: a request body holds at most ``MASKQ_MAX_REQUEST_BYTES``)."""
    svc = services(request)
    await admit(svc)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype == "multipart/form-data":
        async with request.form(max_files=svc.settings.max_batch_items + 1, max_fields=8) as form:
            files = form.getlist("images")
            if not files or not all(isinstance(f, UploadFile) for f in files):
                raise InvalidParameterError("images: one or more file fields are required", field="images")
            images = [await f.read() for f in files]
            operation = form_text(form, "operation", required=True)
            kwargs: dict[str, Any] = {"images": images, "webhook_url": form_text(form, "webhook_url"),
                                      "webhook_events": form_events(form)}
            params = form_params(form)
    elif ctype == "application/json":
        try:
            body = BatchCreate.model_validate_json(await request.body())
        except ValidationError as err:
            raise validation_error(list(err.errors())) from None
        operation, params = body.operation, body.params
        kwargs = {"input_keys": body.input_keys, "webhook_url": body.webhook_url,
                  "webhook_events": list(body.webhook_events or [])}
    else:
        raise UnsupportedFormatError("send multipart/form-data (images) or application/json (input_keys)")
    n = len(kwargs.get("images") or kwargs.get("input_keys") or [])
    await admit(svc, max(n, 1))
    batch_id = await run_in_threadpool(submit_batch, svc, tenant, operation, params, **kwargs)
    doc = await run_in_threadpool(batch_document, svc, batch_id, tenant)
    return JSONResponse(doc, status_code=202, headers={"Location": f"/v1/batches/{batch_id}"})


@router.get("/{batch_id}", response_model=BatchDocument, summary="A batch: its jobs' states counted",
            responses=errors(401, 404, 422))
def get_batch(request: Request, tenant: str = Depends(require_tenant),
              batch_id: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")) -> Any:
    return batch_document(services(request), batch_id, tenant)
