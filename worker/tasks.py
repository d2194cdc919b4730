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
from maskq.jobs import ItemOutcome, Job, JobState, Transition
from maskq.settings import get_settings
from worker import metrics, runtime, webhooks
from worker.app import PROCESS_TASK, WEBHOOK_TASK, app

log = logging.getLogger(__name__)

_settings = get_settings()

# what the body returns: the job's outcome as this delivery saw it (for logs, tests and after_return)
SKIPPED = "skipped"


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
            runtime.get().jobs.mark_retrying(args[0], err.code, err.message)
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


def wants_webhook(events: list[str], state: str) -> bool:
    """No events asked means every end state; otherwise only those named (``job.succeeded``...)."""
    return not events or f"job.{state}" in events


def finished(t: Transition) -> None:
    """After a transition into a terminal state: count it, and queue the webhook if one was asked."""
    if not (t.applied and t.job.state.is_terminal):
        return
    job = t.job
    metrics.job_finished(job)
    log.info("job %s", job.state.value, extra={"job_id": job.id, "tenant": job.tenant, "state": job.state.value,
                                               "error_code": job.error_code, "attempts": job.attempts,
                                               "model": job.model, "timings": job.timings,
                                               "confidence": job.confidence, "review": job.review})
    if job.webhook_url and wants_webhook(job.webhook_events, job.state.value):
        try:
            app.send_task(WEBHOOK_TASK, args=[job.id, job.state.value])
        except Exception as exc:  # noqa: BLE001 - the job's outcome is recorded; the hook is best effort
            log.error("job %s: could not queue its webhook: %s", job.id, exc)


def _asset_inputs(job: Job) -> dict[str, bytes]:
    """Images the parameters refer to (background, logo): input-bucket keys of the same tenant."""
    from maskq.ops import get_operation
    from maskq.params import parse_params

    refs = get_operation(job.operation).asset_refs(parse_params(job.operation, job.params))
    assets: dict[str, bytes] = {}
    for ref in refs:
        if not ref.startswith(f"{job.tenant}/"):
            raise InvalidParameterError(f"image {ref!r} is not one of this tenant's uploads", field=ref)
        try:
            assets[ref] = runtime.get().storage.get_input(ref).data
        except NotFoundError:
            raise InvalidParameterError(f"image {ref!r} was not found (expired upload?)", field=ref) from None
    return assets


@app.task(bind=True, base=JobTask, name=PROCESS_TASK)
def process_job(self: JobTask, job_id: str) -> str:
    """One job (one image, or a batch job's images through the network together)."""
    rt = runtime.get()
    try:
        start = rt.jobs.mark_running(job_id)
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

    t0 = time.perf_counter()
    inputs = [rt.storage.get_input(key).data for key in job.input_keys]
    assets = _asset_inputs(job)
    t_read = time.perf_counter() - t0
    outcomes = rt.process_many([(data, job.operation, job.params, assets) for data in inputs])

    t1 = time.perf_counter()
    items: list[ItemOutcome] = []
    result_keys: list[str] = []
    timings: dict[str, float] = {"read": t_read}
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, MaskqError):
            metrics.IMAGES.labels(outcome.code).inc()
            items.append(ItemOutcome(index, JobState.FAILED, error_code=outcome.code, error_message=outcome.message))
            continue
        key = rt.storage.put_result(job.tenant, job.id, outcome.data, index=index, extension=outcome.extension,
                                    content_type=outcome.content_type, metadata={"job": job.id})
        metrics.IMAGES.labels("ok").inc()
        if outcome.model:
            metrics.MODEL_IMAGES.labels(outcome.model).inc()
        if outcome.confidence is not None:
            metrics.MASK_CONFIDENCE.labels(outcome.model or "unknown").observe(outcome.confidence)
        result_keys.append(key)
        items.append(ItemOutcome(index, JobState.SUCCEEDED, key, outcome.content_type, outcome.width, outcome.height,
                                 confidence=outcome.confidence, review=outcome.review))
        for stage, seconds in outcome.timings.items():
            timings[stage] = timings.get(stage, 0.0) + seconds
    timings["write"] = time.perf_counter() - t1
    timings = {k: round(v, 4) for k, v in timings.items()}

    batch_items = items if job.is_batch else None
    if result_keys:
        # the job's confidence is its weakest result's; it is for review when any result is
        scored = [i for i in items if i.confidence is not None]
        confidence = min(i.confidence for i in scored) if scored else None  # type: ignore[type-var]
        review = any(i.review for i in scored) if scored else None
        t = rt.jobs.mark_succeeded(job_id, result_keys, batch_items, timings, confidence=confidence, review=review,
                                   tenant=job.tenant)
    else:
        first = items[0]
        t = rt.jobs.mark_failed(job_id, first.error_code or "internal", first.error_message or "", batch_items, timings)
    finished(t)
    return t.job.state.value if t.applied else SKIPPED


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
    doc = job.to_public()
    if job.result_key:
        doc["result_url"] = rt.storage.presigned_result_url(job.result_key)
    body = webhooks.payload(doc)
    headers = webhooks.headers_for(rt.settings.webhook_secret, webhooks.event_id(job_id, state), body)
    try:
        return webhooks.post(job.webhook_url, body, headers, rt.settings.webhook_timeout_seconds,
                             allow_private=rt.settings.webhook_allow_private)
    except InvalidParameterError as exc:  # a bad URL, or a refused address now: see webhooks.post
        log.error("job %s: webhook not sent: %s", job_id, exc)
        return SKIPPED
