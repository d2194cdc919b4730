"""What the routes share, built once per app from the settings: job store, storage, Celery sender,
backlog guard, key ring, metrics. Kept on ``app.state.services``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from api.auth import KeyRing
from api.backlog import BacklogGuard
from api.metrics import ApiMetrics
from maskq import defaults, webhook_address
from maskq.backlog import BacklogCollector
from maskq.errors import NotFoundError
from maskq.jobs import Job, JobStore, new_job_id
from maskq.settings import Settings
from maskq.storage import Storage
from worker.publish import TaskMessage, task_message

PROCESS_TASK = "maskq.process_job"  # worker.app.PROCESS_TASK: sent by name
WEBHOOK_TASK = "maskq.deliver_webhook"
API_THREADS = 40  # anyio's default thread limiter, which runs the blocking Redis and S3 calls


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    storage: Storage
    celery: Any
    backlog: BacklogGuard
    keys: KeyRing
    metrics: ApiMetrics

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        from worker.app import create_app as create_celery  # Celery config only: no model code

        jobs = JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds)
        # as many S3 connections as threads that may PUT at once (Starlette's pool: 40), so none is
        # discarded and reopened under load
        storage = Storage.from_settings(settings, pool_size=API_THREADS)
        queues = list(dict.fromkeys([*defaults.BACKLOG_QUEUES, settings.worker_queue]))
        return cls(settings=settings, jobs=jobs, storage=storage, celery=create_celery(settings),
                   backlog=BacklogGuard(jobs.r, settings.worker_queue, settings.backlog_limit,
                                        cache_seconds=settings.backlog_cache_seconds),
                   keys=KeyRing(settings.api_key_map),
                   # the gauge reads Redis on a client of its own: one try per scrape, no backoff
                   metrics=ApiMetrics(BacklogCollector.from_url(settings.redis_url, queues)))

    # ---- sending ------------------------------------------------------------------------------
    def task_message(self, job_id: str) -> TaskMessage:
        """The image task's message for ``JobStore.create(message=)``: the record and the message are
        written in one Lua call (its id is the job id, so DELETE can revoke it)."""
        return task_message(self.celery, PROCESS_TASK, job_id, [job_id], self.settings.worker_queue)

    def create_job(self, tenant: str, operation: str, params: dict[str, Any], input_key: str, **kwargs: Any,
                   ) -> tuple[Job, bool]:
        """Write the queued record and its task message at once; ``(job, created)`` as ``JobStore.create``."""
        job, created = self.jobs.create(tenant, operation, params, [input_key], message=self.task_message, **kwargs)
        if created:
            self.backlog.note_enqueued()
            self.metrics.enqueued.labels(job.operation).inc()
        return job, created

    def revoke(self, job_id: str) -> None:
        """Best effort: a worker that takes the message anyway skips it (the record is canceled)."""
        try:
            self.celery.control.revoke(job_id)
        except Exception:  # noqa: BLE001, S110 - the record's state is what counts
            pass

    def send_webhook(self, job: Job) -> None:
        if job.webhook_url and wants_event(job, job.state.value):
            try:
                self.celery.send_task(WEBHOOK_TASK, args=[job.id, job.state.value])
            except Exception:  # noqa: BLE001, S110 - best effort, like the worker's
                pass

    # ---- batches: one hash naming the jobs ---------------------------------------------------------
    def batch_key(self, batch_id: str) -> str:
        return f"{self.jobs.prefix}:batch:{batch_id}"

    def save_batch(self, batch_id: str, tenant: str, operation: str, job_ids: list[str]) -> None:
        key = self.batch_key(batch_id)
        pipe = self.jobs.r.pipeline(transaction=True)
        pipe.hset(key, mapping={"id": batch_id, "tenant": tenant, "operation": operation,
                                "created_at": repr(time.time()), "job_ids": json.dumps(job_ids)})
        pipe.expire(key, self.jobs.ttl)
        pipe.execute()

    def load_batch(self, batch_id: str, tenant: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """The batch record and ``(job id, state)`` of each of its jobs; another tenant's is 404."""
        h = self.jobs.r.hgetall(self.batch_key(batch_id))
        if not h or h.get("tenant") != tenant:
            raise NotFoundError(f"batch {batch_id} not found", batch_id=batch_id)
        ids = json.loads(h["job_ids"])
        pipe = self.jobs.r.pipeline(transaction=False)
        for jid in ids:
            pipe.hget(self.jobs.job_key(jid), "state")
        return h, [(jid, st or "expired") for jid, st in zip(ids, pipe.execute(), strict=True)]

    def new_id(self) -> str:
        return new_job_id()


def wants_event(job: Job, state: str) -> bool:
    return not job.webhook_events or f"job.{state}" in job.webhook_events


def check_webhook_url(url: str, allow_private: bool) -> str:
    """http(s) with a host and no credentials; unless ``allow_private``, every address the host
    resolves to must be public (SSRF). The rules are :mod:`maskq.webhook_address`'s, which the
    worker applies again at every delivery (the answer may have changed: DNS rebinding)."""
    target = webhook_address.parse(url)
    if not allow_private:  # a laptop's receiver name need not resolve here; delivery resolves it
        webhook_address.checked_addresses(target, allow_private=False)
    return url
