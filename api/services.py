"""What the routes share, built once per app from the settings: the record store, storage, the
queue's publisher, the backlog guard, the key ring, metrics. Kept on ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from api.auth import KeyRing
from api.metrics import ApiMetrics
from maskq import defaults
from maskq.service.backlog import BacklogCollector, BacklogGuard
from maskq.service.queue import Publisher
from maskq.service.records import JobStore
from maskq.service.storage import Storage
from maskq.settings import Settings

API_THREADS = 40  # anyio's default thread limiter, which runs the blocking Redis and S3 calls


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    storage: Storage
    publisher: Publisher
    backlog: BacklogGuard
    keys: KeyRing
    metrics: ApiMetrics

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        jobs = JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds)
        # as many S3 connections as threads that may PUT at once (Starlette's pool: 40), so none is
        # discarded and reopened under load
        storage = Storage.from_settings(settings, pool_size=API_THREADS)
        queues = list(dict.fromkeys([*defaults.BACKLOG_QUEUES, settings.worker_queue]))
        return cls(settings=settings, jobs=jobs, storage=storage, publisher=Publisher.from_settings(settings),
                   backlog=BacklogGuard.from_url(settings.redis_url, settings.worker_queue, settings.backlog_limit,
                                                 cache_seconds=settings.backlog_cache_seconds),
                   keys=KeyRing(settings.api_key_map),
                   # the gauge reads Redis on a client of its own: one try per scrape, no backoff
                   metrics=ApiMetrics(BacklogCollector.from_url(settings.redis_url, queues), settings.worker_queue))

    def close(self) -> None:
        self.jobs.close()
        self.backlog.close()


def services(request: Request) -> Services:
    return request.app.state.services
