"""The one settings object, read from ``MASKQ_*`` environment variables and validated at start-up.

A bad value stops the process with a message that names the variable, not a traceback. Outside
``MASKQ_ENV=local`` it refuses the built-in local credentials and an empty API key list.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from maskq import defaults
from maskq.errors import ConfigurationError
from maskq.models import DEFAULT_MODEL, MODELS, ModelName

ENV_PREFIX = "MASKQ_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    env: Literal["local", "production"] = "local"

    # segmentation runtime
    models_dir: Path = defaults.MODELS_DIR
    model: ModelName = DEFAULT_MODEL  # for jobs that name none
    preload_models: str = ""  # comma-separated names a worker loads at start; empty: the default model
    precision: Literal["fp32", "int8"] = defaults.DEFAULT_PRECISION
    runtime: Literal["onnx", "tensorflow"] = "onnx"
    device: Literal["cpu", "gpu", "auto"] = "cpu"
    intra_op_threads: int = Field(defaults.INTRA_OP_THREADS, ge=0, le=256)
    max_batch: int = Field(defaults.MAX_BATCH, ge=1, le=256)
    # a result whose mask confidence is below this is marked review: true (a job's review_below overrides it)
    review_below: float = Field(defaults.REVIEW_BELOW, ge=0.0, le=1.0)

    # input limits
    max_pixels: int = Field(defaults.MAX_PIXELS, ge=1)
    max_bytes: int = Field(defaults.MAX_BYTES, ge=1)

    # encoders
    jpeg_quality: int = Field(defaults.JPEG_QUALITY, ge=1, le=100)
    webp_quality: int = Field(defaults.WEBP_QUALITY, ge=1, le=100)
    png_compress_level: int = Field(defaults.PNG_COMPRESS_LEVEL, ge=0, le=9)
    png_fast: bool = defaults.PNG_FAST

    # Redis and S3
    redis_url: str = defaults.REDIS_URL
    s3_endpoint: str = defaults.S3_ENDPOINT
    s3_access_key: str = defaults.LOCAL_S3_ACCESS_KEY
    s3_secret_key: str = defaults.LOCAL_S3_SECRET_KEY
    s3_secure: bool = False
    s3_region: str = defaults.S3_REGION
    input_bucket: str = defaults.INPUT_BUCKET
    result_bucket: str = defaults.RESULT_BUCKET
    presign_expiry_seconds: int = Field(defaults.PRESIGN_EXPIRY_SECONDS, ge=60, le=7 * 24 * 3600)
    retention_days: int = Field(defaults.RETENTION_DAYS, ge=1)
    job_ttl_seconds: int = Field(defaults.JOB_TTL_SECONDS, ge=60)

    # API keys as "key1:tenant1,key2:tenant2"
    api_keys: str = ""

    # --- queue, storage timeouts and worker (issue 6) ---
    s3_connect_timeout: float = Field(defaults.S3_CONNECT_TIMEOUT_SECONDS, gt=0)
    s3_read_timeout: float = Field(defaults.S3_READ_TIMEOUT_SECONDS, gt=0)
    s3_http_retries: int = Field(defaults.S3_HTTP_RETRIES, ge=0, le=10)
    presign_put_expiry_seconds: int = Field(defaults.PRESIGN_PUT_EXPIRY_SECONDS, ge=60, le=7 * 24 * 3600)
    max_batch_items: int = Field(defaults.MAX_BATCH_ITEMS, ge=1, le=1024)
    # the queue image tasks are sent to (API) and consumed from (worker): the CPU or the GPU pool
    worker_queue: Literal["cpu", "gpu"] = defaults.WORKER_QUEUE
    task_soft_time_limit: int = Field(defaults.TASK_SOFT_TIME_LIMIT_SECONDS, ge=1)
    task_time_limit: int = Field(defaults.TASK_TIME_LIMIT_SECONDS, ge=1)
    visibility_timeout: int = Field(defaults.VISIBILITY_TIMEOUT_SECONDS, ge=1)
    broker_restore_interval: int = Field(defaults.BROKER_RESTORE_INTERVAL_SECONDS, ge=1)
    broker_restore_lock_seconds: int = Field(defaults.BROKER_RESTORE_LOCK_SECONDS, ge=1)
    publish_retry_seconds: float = Field(defaults.PUBLISH_RETRY_SECONDS, ge=0)
    lost_sweep_seconds: float = Field(defaults.LOST_SWEEP_SECONDS, ge=0)
    lost_grace_seconds: float = Field(defaults.LOST_GRACE_SECONDS, gt=0)
    worker_heartbeat_seconds: float = Field(defaults.WORKER_HEARTBEAT_SECONDS, ge=0)
    worker_dead_after_seconds: float = Field(defaults.WORKER_DEAD_AFTER_SECONDS, gt=0)
    task_max_retries: int = Field(defaults.TASK_MAX_RETRIES, ge=0, le=50)
    retry_backoff_seconds: float = Field(defaults.RETRY_BACKOFF_SECONDS, gt=0)
    retry_backoff_max_seconds: float = Field(defaults.RETRY_BACKOFF_MAX_SECONDS, gt=0)
    max_lost_attempts: int = Field(defaults.MAX_LOST_ATTEMPTS, ge=1)
    attempt_lease_seconds: float = Field(defaults.ATTEMPT_LEASE_SECONDS, ge=3)
    worker_max_memory_per_child_kb: int = Field(defaults.WORKER_MAX_MEMORY_PER_CHILD_KB, ge=0)
    worker_max_tasks_per_child: int = Field(defaults.WORKER_MAX_TASKS_PER_CHILD, ge=0)
    # cross-job batching (GPU workers on the threads pool); max size is max_batch
    worker_batching: bool = False
    batch_wait_ms: int = Field(defaults.BATCH_WAIT_MS, ge=0, le=10_000)
    worker_metrics_port: int = Field(defaults.WORKER_METRICS_PORT, ge=0, le=65535)
    worker_metrics_host: str = defaults.WORKER_METRICS_HOST
    webhook_secret: str = defaults.LOCAL_WEBHOOK_SECRET
    webhook_timeout_seconds: float = Field(defaults.WEBHOOK_TIMEOUT_SECONDS, gt=0)
    webhook_max_retries: int = Field(defaults.WEBHOOK_MAX_RETRIES, ge=0, le=50)
    webhook_backoff_seconds: float = Field(defaults.WEBHOOK_BACKOFF_SECONDS, gt=0)
    webhook_backoff_max_seconds: float = Field(defaults.WEBHOOK_BACKOFF_MAX_SECONDS, gt=0)

    # --- the HTTP API (issue 7) ---
    # the largest request body accepted (413 above it, checked before the body is read whole)
    max_request_bytes: int = Field(defaults.MAX_REQUEST_BYTES, ge=1024)
    # queued + running jobs on the queue above which POST /v1/jobs and /v1/batches answer 429
    backlog_limit: int = Field(defaults.BACKLOG_LIMIT, ge=1)
    backlog_cache_seconds: float = Field(defaults.BACKLOG_CACHE_SECONDS, ge=0)
    backlog_retry_after_seconds: int = Field(defaults.BACKLOG_RETRY_AFTER_SECONDS, ge=1)
    # accept webhook URLs that resolve to private, loopback or link-local addresses (tests, laptops)
    webhook_allow_private: bool = defaults.WEBHOOK_ALLOW_PRIVATE
    # --- upload abuse (issue 19) ---
    # seconds the whole request body may take to arrive, from the API's first read of it (408 after)
    body_timeout_seconds: float = Field(defaults.BODY_TIMEOUT_SECONDS, gt=0)
    # request body bytes one API process receives at once (429 past it); 0 turns the budget off
    upload_budget_bytes: int = Field(defaults.UPLOAD_BUDGET_BYTES, ge=0)
    # --- observability (issue 8) ---
    log_format: Literal["json", "text"] = defaults.LOG_FORMAT
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = defaults.LOG_LEVEL
    backlog_exporter_port: int = Field(defaults.BACKLOG_EXPORTER_PORT, ge=0, le=65535)

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _case(cls, v: object, info) -> object:  # MASKQ_LOG_LEVEL=info and MASKQ_LOG_FORMAT=JSON both work
        if not isinstance(v, str):
            return v
        return v.upper() if info.field_name == "log_level" else v.lower()

    def model_path(self, model: str | None = None) -> Path:
        """The ONNX file of ``model`` (default: MASKQ_MODEL) at MASKQ_PRECISION."""
        return self.models_dir / MODELS[model or self.model].files[self.precision]

    @property
    def preload(self) -> list[str]:
        """The models a worker loads before its first job: MASKQ_PRELOAD_MODELS, else the default."""
        names = [n.strip() for n in self.preload_models.split(",") if n.strip()]
        return names or [self.model]

    @field_validator("preload_models")
    @classmethod
    def _known_models(cls, v: str) -> str:
        unknown = [n.strip() for n in v.split(",") if n.strip() and n.strip() not in MODELS]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
        return v

    @property
    def api_key_map(self) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in self.api_keys.split(","))):
            key, sep, tenant = item.partition(":")
            pairs[key.strip()] = tenant.strip()
        return pairs

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for item in filter(None, (p.strip() for p in self.api_keys.split(","))):
            key, sep, tenant = item.partition(":")
            if not sep or not key.strip() or not tenant.strip():
                raise ValueError(f"MASKQ_API_KEYS: expected 'key:tenant' pairs separated by commas, got {item!r}")
        if self.env != "local":
            insecure = []
            if self.s3_secret_key == defaults.LOCAL_S3_SECRET_KEY:
                insecure.append("MASKQ_S3_SECRET_KEY is the built-in local secret")
            if not self.api_keys:
                insecure.append("MASKQ_API_KEYS is empty")
            if any(len(k) < 16 for k in self.api_key_map):
                insecure.append("MASKQ_API_KEYS holds a key shorter than 16 characters")
            if insecure:
                raise ValueError("refusing to start with MASKQ_ENV=production: " + "; ".join(insecure))
        return self

    @model_validator(mode="after")
    def _check_worker(self) -> Settings:
        """Time limits and the broker's visibility timeout must nest, or healthy tasks run twice."""
        if self.task_soft_time_limit >= self.task_time_limit:
            raise ValueError("MASKQ_TASK_SOFT_TIME_LIMIT must be below MASKQ_TASK_TIME_LIMIT")
        if self.visibility_timeout <= self.task_time_limit:
            raise ValueError(
                "MASKQ_VISIBILITY_TIMEOUT must exceed MASKQ_TASK_TIME_LIMIT (else a slow task is redelivered)"
            )
        if max(self.retry_backoff_max_seconds, self.webhook_backoff_max_seconds) >= self.visibility_timeout:
            raise ValueError(
                "retry backoff maxima must stay below MASKQ_VISIBILITY_TIMEOUT (a waiting retry would be redelivered)"
            )
        if self.worker_heartbeat_seconds and self.worker_dead_after_seconds < 2 * self.worker_heartbeat_seconds:
            raise ValueError("MASKQ_WORKER_DEAD_AFTER_SECONDS must be at least twice MASKQ_WORKER_HEARTBEAT_SECONDS "
                             "(one late beat must not make a live worker's jobs run twice)")
        if not self.webhook_secret.startswith("whsec_"):
            raise ValueError("MASKQ_WEBHOOK_SECRET: expected the Standard Webhooks form 'whsec_<base64>'")
        return self

    @model_validator(mode="after")
    def _check_api(self) -> Settings:
        """A body at the size limit must fit in the upload budget, or it could never be received."""
        if 0 < self.upload_budget_bytes < self.max_request_bytes:
            raise ValueError("MASKQ_UPLOAD_BUDGET_BYTES must be 0 (off) or at least MASKQ_MAX_REQUEST_BYTES")
        return self


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        name = ENV_PREFIX + "_".join(str(p) for p in e["loc"]).upper() if e["loc"] else ""
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {msg}" if name else msg)
    return "invalid settings: " + "; ".join(lines)


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask: a container's cpuset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_settings(**overrides) -> Settings:
    """Read the environment; a bad variable raises ConfigurationError naming it."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigurationError(_describe(err)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
