"""``/healthz`` (the process answers), ``/readyz`` (Redis and S3 reachable), ``/metrics``,
``/v1/operations`` (each operation's parameter schema), ``/v1/models`` (the segmentation models).
No API key needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.schemas import Health
from api.services import services
from maskq.errors import MaskqError
from maskq.models import MODELS
from maskq.params import PARAMS_MODELS

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> dict[str, Any]:
    return {"status": "ok", "checks": {}}


@router.get("/readyz", response_model=Health, summary="Readiness: Redis and S3 reachable",
            responses={503: {"model": Health, "description": "a dependency is down"}})
def readyz(request: Request) -> Any:
    svc = services(request)
    checks: dict[str, str] = {}
    try:
        svc.jobs.ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    try:
        svc.storage.ping()
        checks["s3"] = "ok"
    except MaskqError as exc:
        checks["s3"] = f"unavailable: {exc.code}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/operations", summary="The operations and their parameters' JSON schemas")
async def operations() -> dict[str, Any]:
    return {name: model.model_json_schema() for name, model in sorted(PARAMS_MODELS.items())}


@router.get("/v1/models", summary="The segmentation models a job can name in its `model` parameter")
def models(request: Request) -> dict[str, Any]:
    default = services(request).settings.model
    return {"default": default, "models": [{**m.public(), "default": m.name == default} for m in MODELS.values()]}
