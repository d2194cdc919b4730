"""What the routes share, built once per app from the settings: the record store, storage, the
queue's publisher, the backlog guard, the key ring, metrics. Kept on ``app.state.services``."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request

from api.auth import KeyRing
from api.metrics import ApiMetrics
from maskq import defaults
from maskq.errors import InvalidParameterError
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


def check_webhook_url(url: str, allow_private: bool) -> str:
    """http(s) with a host; unless ``allow_private``, every address the host resolves to must be
    public (no loopback, private, link-local — cloud metadata at 169.254.169.254 —, multicast,
    reserved or unspecified ones): a webhook must not reach the cluster's inside (SSRF)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidParameterError(f"webhook_url is not a valid URL: {url!r}", field="webhook_url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameterError("webhook_url must be an http(s) URL with a host", field="webhook_url")
    if parts.username or parts.password:
        raise InvalidParameterError("webhook_url must not carry credentials", field="webhook_url")
    if allow_private:
        return url
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise InvalidParameterError(f"webhook_url host {host!r} cannot be resolved", field="webhook_url") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        if not addr.is_global or addr.is_multicast:
            raise InvalidParameterError(
                f"webhook_url resolves to a non-public address ({addr}); refused", field="webhook_url")
    return url
