"""``POST /v1/uploads``: a presigned PUT URL, so that large images go straight to S3."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from api.auth import require_tenant
from api.errors import validation_error
from api.routes.common import errors
from api.schemas import UploadRequest, UploadTicket
from api.services import services
from maskq.imaging import EXTENSION_OF_TYPE
from maskq.service.records import new_job_id

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": UploadRequest.model_json_schema()}}}}


@router.post("", status_code=201, response_model=UploadTicket, summary="Get a presigned PUT URL",
             openapi_extra=_BODY, responses=errors(400, 401, 408, 413, 422, 429))
async def create_upload(request: Request, tenant: str = Depends(require_tenant)) -> UploadTicket:
    """PUT the image's bytes to ``url`` (no Authorization header), then create a job with
    ``{"input_key": key, ...}``. The object is checked (size, type) when the job is created. The
    body says what will be uploaded (``{}`` means a JPEG)."""
    svc = services(request)
    try:
        body = UploadRequest.model_validate_json(await request.body())
    except ValidationError as err:
        raise validation_error(list(err.errors())) from None
    content_type = body.content_type
    key, url = svc.storage.presigned_upload_url(tenant, new_job_id(), extension=EXTENSION_OF_TYPE[content_type])
    return UploadTicket(key=key, url=url, expires_in=svc.settings.presign_put_expiry_seconds,
                        max_bytes=svc.settings.max_bytes)
