"""Request and response models: what the OpenAPI schema shows, with examples. Operation parameters
are :mod:`maskq.params`' models (the same the CLI and the worker validate with); their JSON
schemas are served by ``GET /v1/operations``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from maskq import defaults
from maskq.imaging import ACCEPTED_TEXT, EXTENSION_OF_TYPE
from maskq.params import PARAMS_MODELS

State = Literal["queued", "running", "succeeded", "failed", "canceled"]
WebhookEvent = Literal["job.succeeded", "job.failed", "job.canceled"]
WEBHOOK_EVENTS: tuple[str, ...] = ("job.succeeded", "job.failed", "job.canceled")
Operation = Annotated[Literal[tuple(sorted(PARAMS_MODELS))], Field(  # type: ignore[valid-type]
    description="the operation (each one's parameters: GET /v1/operations)")]
# the shape the API checks before the address: http(s), a host, no credentials (api.acceptance)
WEBHOOK_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$"
_EVENT = r"job\.(succeeded|failed|canceled)"
# a multipart field: comma-separated, or the JSON list the JSON body takes
WEBHOOK_EVENTS_PATTERN = rf'^({_EVENT}( *, *{_EVENT})*|\[ *("{_EVENT}"( *, *"{_EVENT}")*)? *\])$'
WEBHOOK_URL_MAX = 2048
WebhookUrl = Annotated[str, Field(max_length=WEBHOOK_URL_MAX, pattern=WEBHOOK_URL_PATTERN,
                                  description="http(s) URL POSTed when the job ends")]
UploadKey = Annotated[str, Field(min_length=1, max_length=512, description="a key returned by POST /v1/uploads")]

JOB_EXAMPLE = {
    "id": "3f2c5b6e0d5a4c1e9b7a8d6c5e4f3a2b", "tenant": "acme", "operation": "remove",
    "params": {"format": "png", "model": "general"}, "model": "general", "state": "succeeded",
    "created_at": "2026-01-05T10:00:00.120Z",
    "started_at": "2026-01-05T10:00:00.310Z", "finished_at": "2026-01-05T10:00:00.702Z", "attempts": 1,
    "timings": {"read": 0.004, "decode": 0.02, "infer": 0.05, "encode": 0.03, "write": 0.01}, "error": None,
    "confidence": 0.94, "review": False,
    "result_url": "http://127.0.0.1:8333/maskq-results/acme/3f2c.../result.png?X-Amz-Signature=...",
}


class ErrorInfo(BaseModel):
    code: str = Field(description="stable error code (invalid_image, unsupported_format, image_too_large, "
                                  "invalid_parameter, not_found, conflict, storage_unavailable, timeout, "
                                  "internal, ...)")
    message: str | None = None
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer, and the shape of a failed job's ``error``."""

    error: ErrorInfo
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"code": "invalid_parameter", "message": "params.strength: Input should be less than or "
                   "equal to 100", "details": {"field": "params.strength"}}}]})


class JobDocument(BaseModel):
    """A job as clients see it. ``result_url`` (a presigned GET) is present once it succeeded."""

    id: str
    tenant: str
    operation: str
    params: dict[str, Any]
    model: str | None = Field(None, description="the segmentation model behind the matte; null when none is used")
    state: State
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    attempts: int
    timings: dict[str, float]
    error: ErrorInfo | None
    confidence: float | None = Field(
        None, description="how much to trust the mask, in [0, 1] (an estimate of P(Dice >= 0.8)); null until it "
        "succeeded, and for operations without a matte (face blur alone)")
    review: bool | None = Field(
        None, description="true when the confidence is below review_below (params, else MASKQ_REVIEW_BELOW): "
        "the job still succeeded, but a person should look; GET /v1/jobs?review=true lists these")
    result_url: str | None = None
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})


class JobCreate(BaseModel):
    """``POST /v1/jobs`` as JSON: the input is an object uploaded before with ``POST /v1/uploads``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"operation": "swap", "input_key": "acme/0b6f.../input.jpg",
         "params": {"background_color": "#ffffff", "canvas_width": 2000, "canvas_height": 2000, "format": "jpeg"},
         "webhook_url": "https://shop.example/hooks/maskq", "webhook_events": ["job.succeeded", "job.failed"]}]})

    operation: Operation
    input_key: UploadKey
    params: dict[str, Any] = Field(default_factory=dict, description="the operation's parameters "
                                   "(their schemas: GET /v1/operations)")
    webhook_url: WebhookUrl | None = None
    webhook_events: list[WebhookEvent] | None = Field(None, description="events to send; default: all")


class JobPage(BaseModel):
    jobs: list[JobDocument]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last one")


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"content_type": "image/jpeg"}]})

    content_type: Literal[tuple(EXTENSION_OF_TYPE)] = Field(  # type: ignore[valid-type]
        "image/jpeg", description="the image's type (sets the key's extension)")


class UploadTicket(BaseModel):
    key: str = Field(description="use as input_key in POST /v1/jobs or POST /v1/batches")
    url: str = Field(description="PUT the image's bytes here, with no Authorization header")
    method: Literal["PUT"] = "PUT"
    expires_in: int = Field(description="seconds the URL stays valid")
    max_bytes: int
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "key": "acme/0b6f2c.../input.jpg", "url": "http://127.0.0.1:8333/maskq-inputs/acme/...?X-Amz-Signature=...",
        "method": "PUT", "expires_in": 900, "max_bytes": 52428800}]})


class BatchCreate(BaseModel):
    """``POST /v1/batches`` as JSON: one operation over several uploaded objects."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"operation": "remove", "input_keys": ["acme/a1.../input.jpg", "acme/b2.../input.jpg"]}]})

    operation: Operation
    input_keys: list[UploadKey] = Field(min_length=1, max_length=defaults.MAX_BATCH_ITEMS,
                                        description="keys from POST /v1/uploads, one job each")
    params: dict[str, Any] = Field(default_factory=dict, description="the operation's parameters, for every "
                                   "image (their schemas: GET /v1/operations)")
    webhook_url: WebhookUrl | None = None
    webhook_events: list[WebhookEvent] | None = Field(None, description="events to send; default: all")


class BatchJob(BaseModel):
    id: str
    state: State | Literal["expired"]


class BatchDocument(BaseModel):
    """A batch: one id over one job per image, the jobs' states counted."""

    id: str
    tenant: str
    operation: str
    created_at: str | None
    total: int
    counts: dict[str, int] = Field(description="jobs per state (queued, running, succeeded, failed, canceled)")
    done: bool = Field(description="every job has finished")
    jobs: list[BatchJob]
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "9d1e...", "tenant": "acme", "operation": "remove", "created_at": "2026-01-05T10:00:00Z", "total": 3,
        "counts": {"queued": 0, "running": 1, "succeeded": 2, "failed": 0, "canceled": 0}, "done": False,
        "jobs": [{"id": "3f2c...", "state": "succeeded"}]}]})


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


def create_body(many: bool) -> dict[str, Any]:
    """The ``requestBody`` of ``POST /v1/jobs`` (one ``image``) or ``POST /v1/batches`` (``images``):
    multipart with the files themselves, or JSON naming uploads. As strict as ``api.acceptance``."""
    files: dict[str, Any] = {"type": "string", "format": "binary", "description": f"{ACCEPTED_TEXT}"}
    if many:
        files = {"type": "array", "items": files, "minItems": 1, "maxItems": defaults.MAX_BATCH_ITEMS}
    name = "images" if many else "image"
    multipart = {
        "type": "object",
        "additionalProperties": False,  # the fields api.acceptance reads, no others (at most 8)
        "required": [name, "operation"],
        "properties": {
            name: files,
            "operation": {"type": "string", "enum": sorted(PARAMS_MODELS)},
            "params": {"type": "string", "description": "the operation's parameters as a JSON object",
                       "example": '{"format": "png"}'},
            # an empty form field counts as not sent, as browsers send the fields of a form left blank
            "webhook_url": {"type": "string", "maxLength": WEBHOOK_URL_MAX, "pattern": f"^$|{WEBHOOK_URL_PATTERN}",
                            "description": "http(s) URL POSTed when the job ends (each job of a batch)"},
            "webhook_events": {"type": "string", "pattern": f"^$|{WEBHOOK_EVENTS_PATTERN}",
                               "description": "comma-separated: job.succeeded, job.failed, job.canceled "
                               "(default: all)"},
        },
    }
    json_body = (BatchCreate if many else JobCreate).model_json_schema()
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": multipart},
                                                          "application/json": {"schema": json_body}}}}
