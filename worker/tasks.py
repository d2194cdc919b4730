"""The tasks: glue between a Celery message and maskq's records, storage and pipeline.

The task body only does the happy path of one job. Everything around it lives in :class:`JobTask`
(the base class): retries of transient faults with exponential backoff and jitter, turning any
failure (typed errors, soft and hard time limits, an exhausted retry budget) into a failed record
with a stable code, webhooks at the end, metrics. Delivery is at least once, so every step is safe
to repeat: result keys are deterministic, and the record's transitions refuse to leave a terminal
state, so a duplicate delivery of a finished job does nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Task

from maskq.errors import InternalError, InvalidParameterError, MaskqError, NotFoundError, StorageUnavailableError
from maskq.params import OperationParams, parse_params
from maskq.service.endings import job_ended
from maskq.service.queue import PROCESS_TASK, WEBHOOK_TASK, Publisher
from maskq.service.records import Job, JobState, Transition
from maskq.settings import get_settings
from worker import liveness, metrics, runtime, webhooks
from worker.app import app
from worker.lease import AttemptLease

log = logging.getLogger(__name__)

_settings = get_settings()

# what the body returns: the job's outcome as this delivery saw it (for logs, tests and after_return)
SKIPPED = "skipped"
DEFERRED = "deferred"  # another attempt of the job was alive: this message was sent again for later
DEFER_MARGIN_SECONDS = 0.5  # past the live lease's end, so that the copy finds it renewed or lapsed


def error_of(exc: BaseException) -> MaskqError:
    """Any exception as a maskq error with a stable code."""
    if isinstance(exc, MaskqError):
        return exc
    if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
        from maskq.errors import JobTimeoutError

        return JobTimeoutError(f"the job took longer than its time limit ({exc})")
    return InternalError(f"unexpected {type(exc).__name__}: {exc}")


class JobTask(Task):
    """Base class of the image task: retry policy, failure recording, webhooks, metrics."""

    # transient faults only: StorageUnavailableError covers S3 and Redis (the adapters translate)
    autoretry_for = (StorageUnavailableError,)
    max_retries = _settings.task_max_retries
    retry_backoff = _settings.retry_backoff_seconds
    retry_backoff_max = _settings.retry_backoff_max_seconds
    retry_jitter = True  # full jitter: retries after an outage do not arrive in one wave
    acks_late = True
    reject_on_worker_lost = True

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        metrics.task_started(task_id)

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Back to ``queued`` with the fault visible, while the countdown runs."""
        err = error_of(exc)
        log.warning("job %s: %s, retry %s/%s", args[0], err.code, self.request.retries + 1, self.max_retries)
        try:
            runtime.get().jobs.mark_retrying(args[0], err.code, err.message, worker=liveness.instance_id())
        except MaskqError as exc2:  # Redis itself is down: the retry still comes
            log.warning("job %s: could not record the retry: %s", args[0], exc2)
        metrics.task_ended(self.name, task_id, "retry")

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """The job fails with the error's stable code. Runs in the pool process, or in the main
        process for a hard time limit (the child was killed)."""
        err = error_of(exc)
        if isinstance(exc, StorageUnavailableError):
            log.error("job %s: retry budget spent: %s", args[0], err.message)
        elif err.code == "internal":
            log.error("job %s failed", args[0], exc_info=exc)
        try:
            t = runtime.get().jobs.mark_failed(args[0], err.code, err.message)
            finished(t)
        except MaskqError as exc2:
            log.error("job %s: could not record failure %s: %s", args[0], err.code, exc2)
        metrics.task_ended(self.name, task_id, "failure")

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        metrics.task_ended(self.name, task_id, str(retval))


_publisher = Publisher(app, _settings.worker_queue)


def finished(t: Transition) -> None:
    """After a transition: a terminal one is counted, logged and notified (the same path as cancel)."""
    job_ended(t, _publisher, metrics.job_finished)


def _asset_inputs(job: Job, params: OperationParams) -> dict[str, bytes]:
    """Images the parameters name (background, logo). The API checked at submit that each is one of
    the tenant's uploads; checked again here (a record may come from elsewhere), and one may have
    expired since."""
    assets: dict[str, bytes] = {}
    for field, ref in params.asset_refs().items():
        if not ref.startswith(f"{job.tenant}/"):
            raise InvalidParameterError(f"{field}: {ref!r} is not one of this tenant's uploads", field=field)
        try:
            assets[ref] = runtime.get().storage.get_input(ref).data
        except NotFoundError:
            raise InvalidParameterError(f"{field}: upload {ref!r} was not found (expired?)", field=field) from None
    return assets


@app.task(bind=True, base=JobTask, name=PROCESS_TASK)
def process_job(self: JobTask, job_id: str) -> str:
    """One job: its image through the pipeline, its result stored, its record finished; one attempt
    at a time (worker.lease): a message that finds another attempt alive comes back when its lease
    would lapse, and then finds the job finished, retrying, or left by a dead attempt."""
    rt = runtime.get()
    lease = AttemptLease(rt.jobs, job_id, rt.settings.attempt_lease_seconds)
    if busy := lease.acquire():
        _publisher.send_job(job_id, countdown=busy + DEFER_MARGIN_SECONDS)
        log.info("job %s: another attempt is running it; this message comes back in %.1f s", job_id, busy)
        return DEFERRED
    with lease:
        return _attempt(rt, job_id)


def _attempt(rt: runtime.Runtime, job_id: str) -> str:
    try:
        start = rt.jobs.mark_running(job_id, worker=liveness.instance_id())
    except NotFoundError:
        log.warning("job %s: no record (expired or never written), message dropped", job_id)
        return SKIPPED
    if not start.applied:  # canceled while queued, or a duplicate delivery of a finished job
        return SKIPPED
    job = start.job
    if job.lost_attempts >= rt.settings.max_lost_attempts:
        finished(rt.jobs.mark_failed(job_id, "internal",
                                     f"the worker process died {job.lost_attempts} times while running this job"))
        return JobState.FAILED.value

    from maskq.pipeline import WorkItem  # the model code: loaded in pool processes, not the main one

    t0 = time.perf_counter()
    data = rt.storage.get_input(job.input_key).data
    params = parse_params(job.operation, job.params)  # once: the pipeline takes the parsed params
    assets = _asset_inputs(job, params)
    timings: dict[str, float] = {"read": time.perf_counter() - t0}
    outcome = rt.process(WorkItem(data, job.operation, params, assets))
    if isinstance(outcome, MaskqError):
        metrics.IMAGES.labels(outcome.code).inc()
        finished(t := rt.jobs.mark_failed(job_id, outcome.code, outcome.message, _rounded(timings)))
        return t.job.state.value if t.applied else SKIPPED

    t1 = time.perf_counter()
    key = rt.storage.put_result(job.tenant, job.id, outcome.data, extension=outcome.extension,
                                content_type=outcome.content_type, metadata={"job": job.id})
    metrics.result_made(outcome)
    timings.update(outcome.timings)
    timings["write"] = time.perf_counter() - t1
    t = rt.jobs.mark_succeeded(job_id, key, _rounded(timings), confidence=outcome.confidence, review=outcome.review,
                               tenant=job.tenant)
    finished(t)
    return t.job.state.value if t.applied else SKIPPED


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in timings.items()}


class WebhookTask(Task):
    """Retries failed deliveries with exponential backoff and jitter, on the ``webhooks`` queue."""

    autoretry_for = (webhooks.WebhookDeliveryError, StorageUnavailableError)
    max_retries = _settings.webhook_max_retries
    retry_backoff = _settings.webhook_backoff_seconds
    retry_backoff_max = _settings.webhook_backoff_max_seconds
    retry_jitter = True
    acks_late = True
    soft_time_limit = int(_settings.webhook_timeout_seconds * 2 + 5)
    time_limit = int(_settings.webhook_timeout_seconds * 2 + 15)

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        log.error("webhook for job %s given up: %s", args[0] if args else "?", exc)
        metrics.task_ended(self.name, task_id, "failure")

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        metrics.task_ended(self.name, task_id, "success")


@app.task(bind=True, base=WebhookTask, name=WEBHOOK_TASK)
def deliver_webhook(self: WebhookTask, job_id: str, state: str) -> int | str:
    """POST the job document to the job's webhook URL, signed; the record is re-read at each attempt
    so the receiver gets a fresh presigned result URL."""
    rt = runtime.get()
    job = rt.jobs.get(job_id)
    if job is None or not job.webhook_url:
        return SKIPPED
    body = webhooks.payload(job.document(rt.storage.presigned_result_url))
    headers = webhooks.headers_for(rt.settings.webhook_secret, webhooks.event_id(job_id, state), body)
    try:
        return webhooks.post(job.webhook_url, body, headers, rt.settings.webhook_timeout_seconds,
                             allow_private=rt.settings.webhook_allow_private)
    except InvalidParameterError as exc:  # a bad URL, or a refused address now: see webhooks.post
        log.error("job %s: webhook not sent: %s", job_id, exc)
        return SKIPPED
