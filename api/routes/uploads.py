"""``POST /v1/uploads``: a presigned PUT URL, so that large images go straight to S3."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Request

from api.auth import require_tenant
from api.routes.common import errors
from api.schemas import UploadRequest, UploadTicket
from api.services import services
from maskq.imaging import EXTENSION_OF_TYPE
from maskq.service.records import new_job_id

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])


@router.post("", status_code=201, response_model=UploadTicket, summary="Get a presigned PUT URL",
             responses=errors(400, 401, 422))
def create_upload(request: Request, tenant: str = Depends(require_tenant),
                  body: Annotated[UploadRequest | None, Body()] = None) -> UploadTicket:
    """PUT the image's bytes to ``url`` (no Authorization header), then create a job with
    ``{"input_key": key, ...}``. The object is checked (size, type) when the job is created."""
    svc = services(request)
    content_type = (body or UploadRequest()).content_type
    key, url = svc.storage.presigned_upload_url(tenant, new_job_id(), extension=EXTENSION_OF_TYPE[content_type])
    return UploadTicket(key=key, url=url, expires_in=svc.settings.presign_put_expiry_seconds,
                        max_bytes=svc.settings.max_bytes)
