"""``/v1/batches``: many images, one operation, one id. Each image is a job of its own (so the pool
spreads them over workers and one bad file fails alone); the batch counts their states."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from api.acceptance import accept_batch, admit, read_submission
from api.auth import require_tenant
from api.routes.common import errors
from api.schemas import BatchDocument, create_body
from api.services import Services, services

router = APIRouter(prefix="/v1/batches", tags=["batches"])

_BODY = create_body(many=True)


@router.post("", status_code=202, response_model=BatchDocument, summary="Create a batch", openapi_extra=_BODY,
             responses={202: {"description": "queued", "headers": {"Location": {"schema": {"type": "string"}}}},
                        **errors(400, 401, 408, 413, 415, 422, 429)})
async def create_batch(request: Request, tenant: str = Depends(require_tenant)) -> JSONResponse:
    """Multipart with several ``images`` files, or JSON with ``input_keys`` from ``POST /v1/uploads``
    (the way for large images: a request body holds at most ``MASKQ_MAX_REQUEST_BYTES``)."""
    svc = services(request)
    await admit(svc)
    sub = await read_submission(request, many=True, max_files=svc.settings.max_batch_items + 1)
    await admit(svc, max(sub.count, 1))
    batch = await run_in_threadpool(accept_batch, svc, tenant, sub)
    doc = await run_in_threadpool(batch_document, svc, batch.id, tenant)
    return JSONResponse(doc, status_code=202, headers={"Location": f"/v1/batches/{batch.id}"})


def batch_document(svc: Services, batch_id: str, tenant: str) -> dict[str, Any]:
    batch, states = svc.jobs.batch_states(batch_id, tenant)
    return batch.document(states)


@router.get("/{batch_id}", response_model=BatchDocument, summary="A batch: its jobs' states counted",
            responses=errors(401, 404, 422))
def get_batch(request: Request, tenant: str = Depends(require_tenant),
              batch_id: str = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")) -> Any:
    return batch_document(services(request), batch_id, tenant)
