"""A job's end, one path for every terminal state: the worker's success or failure and the API's
cancel all call :func:`job_ended` after the transition that applied, so each end is counted once in
``maskq_jobs_finished_total`` (by whichever process made it), logged the same way, and notified
with the same webhook task (which POSTs the same document as ``GET /v1/jobs/{id}``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from maskq.service.queue import Publisher
from maskq.service.records import Job, Transition

log = logging.getLogger("maskq.jobs")


def job_ended(t: Transition, publisher: Publisher, count: Callable[[Job], None]) -> bool:
    """After a transition: if it applied and the job is now terminal, count it (``count``: the
    calling process's ``jobs finished`` metric), log it and queue its webhook when one is wanted.
    Returns whether the job ended here."""
    if not (t.applied and t.job.state.is_terminal):
        return False
    job = t.job
    count(job)
    log.info("job %s", job.state.value, extra={"job_id": job.id, "tenant": job.tenant, "state": job.state.value,
                                               "error_code": job.error_code, "attempts": job.attempts,
                                               "model": job.model, "timings": job.timings,
                                               "confidence": job.confidence, "review": job.review})
    if job.wants_webhook():
        publisher.send_webhook(job.id, job.state.value)
    return True
