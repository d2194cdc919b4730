"""Inputs and results in S3 (MinIO in production, `weed mini` in tests), over the minio SDK.

Objects live under ``{tenant}/{job_id}/input/{n}{ext}`` and ``{tenant}/{job_id}/result/{n}{ext}``:
one prefix per job, so a job's objects can be listed or deleted together and a tenant's data is
separable. Result keys are deterministic, so a job redelivered after a lost worker overwrites its
own result instead of adding a second one.

Errors are sorted once, here: connection failures, timeouts and 5xx answers become
:class:`StorageUnavailableError` (transient: the worker retries), a missing object becomes
:class:`NotFoundError`, refused credentials :class:`ConfigurationError` (an operator's problem).
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from maskq import defaults
from maskq.errors import (
    ConfigurationError,
    InternalError,
    InvalidParameterError,
    MaskqError,
    NotFoundError,
    StorageUnavailableError,
)
from maskq.settings import Settings

log = logging.getLogger(__name__)

# S3 error codes that mean "try again later" rather than "this request is wrong".
_TRANSIENT_S3_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                                 "OperationAborted", "XMinioServerNotInitialized"})
_MISSING_S3_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchUpload"})
_AUTH_S3_CODES = frozenset({"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId"})
# tenants and job ids become path segments: no slashes, dots-only names or odd characters
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

T = TypeVar("T")


def classify(exc: BaseException) -> MaskqError:
    """Map an SDK or transport exception to maskq's error tree (transient vs permanent)."""
    if isinstance(exc, MaskqError):
        return exc
    if isinstance(exc, S3Error):
        code = exc.code or ""
        if code in _MISSING_S3_CODES:
            return NotFoundError(f"object not found: {exc.bucket_name}/{exc.object_name}", s3_code=code)
        if code in _TRANSIENT_S3_CODES or exc.response.status >= 500:
            return StorageUnavailableError(f"S3 unavailable: {code} {exc.message}", service="s3")
        if code in _AUTH_S3_CODES:
            return ConfigurationError(f"S3 refused the credentials: {code}", s3_code=code)
        return InternalError(f"S3 error {code}: {exc.message}", s3_code=code)
    if isinstance(exc, ServerError | InvalidResponseError):
        return StorageUnavailableError(f"S3 unavailable: {exc}", service="s3")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return StorageUnavailableError(f"S3 unreachable: {type(exc).__name__}: {exc}", service="s3")
    if isinstance(exc, MinioException):
        return InternalError(f"S3 client error: {exc}")
    raise exc


def _s3_call(fn: Callable[..., T]) -> Callable[..., T]:
    """Run an S3 call and translate its failures with :func:`classify`."""

    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except MaskqError:
            raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise classify(exc) from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def object_key(tenant: str, job_id: str, kind: str, extension: str) -> str:
    """``tenant/job-id/kind.ext``; refuses segments that could escape their prefix."""
    for name, value in (("tenant", tenant), ("job_id", job_id)):
        if not _SEGMENT.match(value) or ".." in value:
            raise InvalidParameterError(f"{name} {value!r} is not a safe key segment", field=name)
    if kind not in ("input", "result"):
        raise ValueError(kind)
    ext = extension if not extension or extension.startswith(".") else "." + extension
    if not re.fullmatch(r"(\.[a-z0-9]{1,8})?", ext):
        raise InvalidParameterError(f"bad extension {extension!r}", field="extension")
    return f"{tenant}/{job_id}/{kind}{ext}"


@dataclass(frozen=True)
class StreamedObject:
    """An object being read: iterate :meth:`chunks` once; it closes the connection at the end."""

    response: Any
    content_type: str
    content_length: str | None

    def chunks(self, size: int) -> Iterator[bytes]:
        try:
            yield from self.response.stream(size)
        finally:
            self.response.close()
            self.response.release_conn()


@dataclass(frozen=True)
class StoredObject:
    key: str
    data: bytes
    content_type: str
    metadata: dict[str, str]


def make_http_client(connect_timeout: float, read_timeout: float, retries: int,
                     pool_size: int = 10) -> urllib3.PoolManager:
    """A pool with timeouts (the SDK's default waits for ever on a dead server) and a few quick
    retries for dropped connections and 5xx; longer outages are the task's retry loop's business."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=pool_size,  # connections kept per host: one per thread that may call S3 at once
        retries=urllib3.Retry(total=retries, backoff_factor=0.2,
                              status_forcelist=(500, 502, 503, 504), allowed_methods=None,
                              raise_on_status=False),
    )


class Storage:
    """The buckets of one deployment: inputs (uploads, API-stored images) and results."""

    def __init__(self, client: Minio, input_bucket: str, result_bucket: str, *, retention_days: int,
                 presign_expiry_seconds: int, presign_put_expiry_seconds: int = defaults.PRESIGN_PUT_EXPIRY_SECONDS,
                 presign_client: Minio | None = None) -> None:
        self.client = client
        self.presign_client = presign_client or client
        self.input_bucket = input_bucket
        self.result_bucket = result_bucket
        self.retention_days = retention_days
        self.presign_expiry = timedelta(seconds=presign_expiry_seconds)
        self.presign_put_expiry = timedelta(seconds=presign_put_expiry_seconds)

    @classmethod
    def from_settings(cls, settings: Settings, *, connect_timeout: float | None = None,
                      read_timeout: float | None = None, retries: int | None = None,
                      pool_size: int = 10) -> Storage:
        http = make_http_client(
            settings.s3_connect_timeout if connect_timeout is None else connect_timeout,
            settings.s3_read_timeout if read_timeout is None else read_timeout,
            settings.s3_http_retries if retries is None else retries,
            pool_size,
        )
        # the region is given so that the SDK never asks the server for it (one round trip less)
        client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                       secure=settings.s3_secure, region=settings.s3_region, http_client=http)
        return cls(client, settings.input_bucket, settings.result_bucket, retention_days=settings.retention_days,
                   presign_expiry_seconds=settings.presign_expiry_seconds,
                   presign_put_expiry_seconds=settings.presign_put_expiry_seconds)

    # start-up
    def ensure_buckets(self, attempts: int = 5) -> None:
        """Create both buckets if missing and set their lifecycle expiry (retention_days). Several
        processes start at once (API, workers) and race to create them, which some servers answer
        with a 5xx: transient errors are retried a few times. A server without lifecycle support
        (some S3 clones) is logged, not fatal: retention is then the operator's job."""
        for attempt in range(attempts):
            try:
                return self._ensure_buckets()
            except StorageUnavailableError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.2 * 2**attempt)

    @_s3_call
    def _ensure_buckets(self) -> None:
        for bucket in (self.input_bucket, self.result_bucket):
            if not self.client.bucket_exists(bucket):
                try:
                    self.client.make_bucket(bucket)
                except S3Error as exc:  # another process made it first
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            rule = Rule(ENABLED, rule_filter=Filter(prefix=""), rule_id="maskq-retention",
                        expiration=Expiration(days=self.retention_days))
            try:
                self.client.set_bucket_lifecycle(bucket, LifecycleConfig([rule]))
            except S3Error as exc:
                if exc.code in _TRANSIENT_S3_CODES or exc.response.status >= 500 and exc.code != "NotImplemented":
                    raise
                log.warning("bucket %s: lifecycle expiry not set (%s: %s)", bucket, exc.code, exc.message)

    @_s3_call
    def ping(self) -> None:
        """Cheap health check: one authenticated request."""
        self.client.bucket_exists(self.result_bucket)

    # objects
    @_s3_call
    def _put(self, bucket: str, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None) -> str:
        self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type,
                               metadata=metadata or None)
        return key

    @_s3_call
    def _get(self, bucket: str, key: str) -> StoredObject:
        resp = self.client.get_object(bucket, key)
        try:
            data = resp.read()
            headers = resp.headers
        finally:
            resp.close()
            resp.release_conn()
        meta = {k[len("x-amz-meta-"):].lower(): v for k, v in headers.items() if k.lower().startswith("x-amz-meta-")}
        return StoredObject(key, data, headers.get("Content-Type", "application/octet-stream"), meta)

    def put_input(self, tenant: str, job_id: str, data: bytes, *, extension: str = "",
                  content_type: str = "application/octet-stream", metadata: dict[str, str] | None = None) -> str:
        """Store an input image; returns its key (what the job record keeps)."""
        return self._put(self.input_bucket, object_key(tenant, job_id, "input", extension), data,
                         content_type, metadata)

    def put_result(self, tenant: str, job_id: str, data: bytes, *, extension: str,
                   content_type: str, metadata: dict[str, str] | None = None) -> str:
        """Store a result under its deterministic key (a redelivered job overwrites, never adds)."""
        return self._put(self.result_bucket, object_key(tenant, job_id, "result", extension), data,
                         content_type, metadata)

    @_s3_call
    def inspect_input(self, key: str, head_bytes: int) -> tuple[int, bytes]:
        """``(size, first bytes)`` of an uploaded input: what the API checks before it takes a job
        that names it, without reading the whole object."""
        size = self.client.stat_object(self.input_bucket, key).size or 0
        resp = self.client.get_object(self.input_bucket, key, offset=0, length=head_bytes)
        try:
            return size, resp.read()
        finally:
            resp.close()
            resp.release_conn()

    @_s3_call
    def open_result(self, key: str) -> StreamedObject:
        """A result's bytes as a stream (the API relays them without holding them whole)."""
        resp = self.client.get_object(self.result_bucket, key)
        return StreamedObject(resp, resp.headers.get("Content-Type", "application/octet-stream"),
                              resp.headers.get("Content-Length"))

    def get_input(self, key: str) -> StoredObject:
        return self._get(self.input_bucket, key)

    def get_result(self, key: str) -> StoredObject:
        return self._get(self.result_bucket, key)

    # presigned URLs: computed locally (no request), so they never fail on an outage
    @_s3_call
    def presigned_result_url(self, key: str, expiry_seconds: int | None = None) -> str:
        exp = timedelta(seconds=expiry_seconds) if expiry_seconds else self.presign_expiry
        return self.presign_client.presigned_get_object(self.result_bucket, key, expires=exp)

    @_s3_call
    def presigned_upload_url(self, tenant: str, upload_id: str, *, extension: str = "",
                             expiry_seconds: int | None = None) -> tuple[str, str]:
        """A presigned PUT for a client upload of one input; returns ``(key, url)``."""
        key = object_key(tenant, upload_id, "input", extension)
        exp = timedelta(seconds=expiry_seconds) if expiry_seconds else self.presign_put_expiry
        return key, self.presign_client.presigned_put_object(self.input_bucket, key, expires=exp)


@contextmanager
def translated() -> Iterator[None]:
    """For callers using the SDK directly: the same error translation as Storage's methods."""
    try:
        yield
    except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise classify(exc) from exc
