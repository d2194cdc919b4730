"""The API's Prometheus metrics, on ``GET /metrics``, in a registry of the app's own (several apps in
one process, as in tests, never collide):

* ``maskq_http_requests_total{route, method, status}`` — ``route`` is the route template
  (``/v1/jobs/{job_id}``), never the raw path, so ids do not explode the series count;
* ``maskq_http_request_duration_seconds{route, method}`` — latency histogram;
* ``maskq_jobs_enqueued_total{operation}`` — jobs sent to the queue (idempotent replays excluded);
* ``maskq_http_rejections_total{reason}`` — ``408``, ``413``, ``415``, ``422``, ``429`` answers;
* ``maskq_upload_bytes_in_flight`` — the request body bytes this process is receiving now, as the
  upload budget counts them (:class:`api.limits.UploadBudgetMiddleware`; 429 past
  ``MASKQ_UPLOAD_BUDGET_BYTES``);
* ``maskq_jobs_finished_total{queue, operation, state}`` — the jobs that end in the API: canceled
  ones (the workers count the others under the same name; ``sum`` in PromQL);
* ``maskq_queue_backlog_jobs{queue}`` — queued + running jobs per queue, read from Redis at scrape
  time by :class:`maskq.service.backlog.BacklogCollector` (with its ``_waiting``/``_reserved`` parts and
  ``maskq_backlog_redis_up``): the signal the KEDA ScaledObjects in deploy/ scale on. ``max`` over
  API replicas in PromQL, since every replica exports the same number.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from api.errors import REJECTION_STATUSES
from maskq import defaults
from maskq import logging as mlog
from maskq.service.backlog import BacklogCollector
from maskq.service.records import Job

log = logging.getLogger("maskq.api")
access_log = logging.getLogger("maskq.api.access")

# 1 ms (a cached GET) to 10 s (a 50 MB multipart upload on a slow link)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_ID_HEADER = mlog.REQUEST_ID_HEADER
_MAX_REQUEST_ID = 128


class ApiMetrics:
    def __init__(self, backlog: BacklogCollector | None = None, queue: str = defaults.QUEUE_CPU) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("maskq_http_requests_total", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("maskq_http_request_duration_seconds", "HTTP request latency",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.enqueued = Counter("maskq_jobs_enqueued_total", "Jobs sent to the queue, by operation",
                                ["operation"], registry=self.registry)
        self.rejections = Counter("maskq_http_rejections_total", "Requests refused, by reason (HTTP status)",
                                  ["reason"], registry=self.registry)
        self.finished = Counter("maskq_jobs_finished_total", "Jobs that reached a terminal state here (cancels)",
                                ["queue", "operation", "state"], registry=self.registry)
        if backlog is not None:
            self.registry.register(backlog)
        self.queue = queue

    def watch_uploads(self, in_flight: Callable[[], float]) -> None:
        """Export the upload budget's level, read at scrape time."""
        gauge = Gauge("maskq_upload_bytes_in_flight", "Request body bytes this process is receiving now",
                      registry=self.registry)
        gauge.set_function(in_flight)

    def job_finished(self, job: Job) -> None:
        """The end-of-job count (:func:`maskq.service.endings.job_ended`), as the worker makes it."""
        self.finished.labels(self.queue, job.operation, job.state.value).inc()


def _request_id(scope: dict) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                rid = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if 0 < len(rid) <= _MAX_REQUEST_ID and all(c.isalnum() or c in "-_.:" for c in rid):
                return rid
            break
    return uuid.uuid4().hex


class ObservabilityMiddleware:
    """Pure ASGI (no per-request task or body copy): request id in and out, request metrics, one
    access log line per request carrying request id, tenant and job id."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = mlog.bind_fields(request_id=rid)
        status = 500
        t0 = time.perf_counter()
        header = (b"x-request-id", rid.encode())

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], header]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - t0
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            m = self.metrics
            m.requests.labels(template, method, str(status)).inc()
            m.latency.labels(template, method).observe(elapsed)
            if status in REJECTION_STATUSES:
                m.rejections.labels(str(status)).inc()
            state = scope.get("state", {})
            if access_log.isEnabledFor(logging.INFO):
                access_log.info("%s %s %s %.1f ms", method, scope.get("path", ""), status, elapsed * 1000,
                                extra={"request_id": rid, "tenant": state.get("tenant"),
                                       "job_id": state.get("job_id"), "method": method, "route": template,
                                       "status": status, "duration_ms": round(elapsed * 1000, 2)})
            mlog.reset(token)
