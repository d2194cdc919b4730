"""The backlog signal: jobs queued plus jobs taken by a worker, per queue, read from Redis.

``maskq_queue_backlog_jobs{queue}`` is what KEDA (or an HPA on an external metric) scales the pools
on. It is the sum of two Redis structures of Celery's Redis transport (kombu):

* the queue's lists (``cpu``, and ``cpu\\x06\\x163`` ... for the priority steps): messages no worker
  has taken yet (``maskq_queue_waiting_jobs``);
* the ``unacked`` hash: messages a worker has taken and not yet acknowledged. With
  ``task_acks_late`` that is every task running now, every task a worker holds in its prefetch
  buffer, every retry waiting for its countdown, and the messages of a worker that died, until the
  restore sweep puts them back (``maskq_queue_reserved_jobs``).

Why the list length alone reacts late: a worker takes a message off the list the moment a process
is free (and one more per process with prefetch), so while the pool keeps up the list reads 0 even
when every process is busy: utilisation at 100 % and a queue that is about to grow look the same as
an idle pool. The list only grows after all processes are taken, i.e. once the backlog has already
formed, and it drops back to 0 when a big worker takes its prefetch, hiding work that is queued
inside that worker. Queued + in flight moves as soon as arrivals outrun completions, counts work a
scale-down would interrupt, and lets a scaler compute "replicas = backlog / per-replica
concurrency" directly.

Two ways to serve it (both are prometheus_client custom collectors reading Redis at scrape time,
so the value is never staler than the scrape):

* in the API: ``REGISTRY.register(BacklogCollector.from_settings(settings))`` (the deploy's
  Prometheus and KEDA read it from the API's ``/metrics``);
* standalone: ``python -m maskq.service.backlog --port 9465`` (an exporter next to Redis, for a cluster
  whose API replicas should not each report it, or for the tests).

No Celery import: the key layout is kombu's Redis transport's, read directly (the collector runs
in processes that never load Celery, such as the standalone exporter).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from maskq import defaults
from maskq.errors import StorageUnavailableError

log = logging.getLogger(__name__)

# kombu's Redis transport: priority lists are "<queue><SEP><step>", the default steps are 0,3,6,9
# (step 0 is the bare queue name); taken-but-unacked messages live in one hash.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"


@dataclass(frozen=True)
class Backlog:
    queue: str
    waiting: int
    reserved: int

    @property
    def total(self) -> int:
        return self.waiting + self.reserved


def queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def _routing_key(raw: Any) -> str | None:
    """The routing key (the queue for maskq's direct queues) of one ``unacked`` entry:
    the JSON ``[message, exchange, routing_key]``."""
    try:
        entry = json.loads(raw)
        return str(entry[2])
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def read_backlog(client: Any, queues: Sequence[str] = defaults.BACKLOG_QUEUES) -> list[Backlog]:
    """One round trip: every list length and the unacked entries, counted per queue."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        for key in queue_keys(q):
            pipe.llen(key)
    pipe.hvals(UNACKED_KEY)
    res = pipe.execute()
    reserved_by_queue: dict[str, int] = {}
    for raw in res[-1]:
        rk = _routing_key(raw)
        if rk is not None:
            reserved_by_queue[rk] = reserved_by_queue.get(rk, 0) + 1
    out = []
    n = len(PRIORITY_STEPS)
    for i, q in enumerate(queues):
        waiting = sum(int(x) for x in res[i * n:(i + 1) * n])
        out.append(Backlog(q, waiting, reserved_by_queue.get(q, 0)))
    return out


def _task_id(message: Any) -> str | None:
    """The task id (maskq's image tasks use the job id) of one kombu message dict."""
    try:
        return str(message["headers"]["id"])
    except (TypeError, KeyError):
        return None


def task_ids_in_broker(client: Any, queues: Sequence[str] = defaults.BACKLOG_QUEUES) -> set[str]:
    """The task ids of every message the broker holds for ``queues``: waiting on a list or taken and
    not yet acknowledged. Read in one MULTI, so that a message moving from a list to ``unacked``
    is seen in one of them (except in kombu's own window between the two, which the caller of a
    lost-message check has to allow for: :mod:`maskq.service.lost`)."""
    pipe = client.pipeline(transaction=True)
    for q in queues:
        for key in queue_keys(q):
            pipe.lrange(key, 0, -1)
    pipe.hvals(UNACKED_KEY)
    res = pipe.execute()
    ids: set[str] = set()
    for raw in (item for items in res[:-1] for item in items):
        try:
            tid = _task_id(json.loads(raw))
        except ValueError:
            tid = None
        if tid:
            ids.add(tid)
    for raw in res[-1]:
        try:
            tid = _task_id(json.loads(raw)[0])
        except (ValueError, TypeError, IndexError):
            tid = None
        if tid:
            ids.add(tid)
    return ids


class BacklogGuard:
    """The API's 429 guard: the backlog (queued + running) of the API's queue, read with
    :func:`read_backlog` (the same reading as the ``maskq_queue_backlog_jobs`` gauge) at most every
    ``cache_seconds``, so that 200 requests/s cost one Redis read a second, not 200."""

    def __init__(self, client: Any, queue: str, limit: int, *,
                 cache_seconds: float = defaults.BACKLOG_CACHE_SECONDS, clock=time.monotonic) -> None:
        self.client = client
        self.queue = queue
        self.limit = limit
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._value = 0
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, queue: str, limit: int, **kwargs: Any) -> BacklogGuard:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30,
                                      decode_responses=True)
        return cls(client, queue, limit, **kwargs)

    def close(self) -> None:
        self.client.close()

    def _read(self) -> int:
        import redis.exceptions as rex

        try:
            return read_backlog(self.client, [self.queue])[0].total
        except (rex.ConnectionError, rex.TimeoutError, rex.BusyLoadingError) as exc:
            raise StorageUnavailableError(f"Redis unavailable: {exc}", service="redis") from exc

    def current(self) -> int:
        if not self.fresh():
            with self._lock:
                if not self.fresh():
                    self._value = self._read()
                    self._read_at = self.clock()
        return self._value

    def fresh(self) -> bool:
        return self.clock() - self._read_at < self.cache_seconds

    def cached(self) -> int:
        return self._value

    def note_enqueued(self, n: int = 1) -> None:
        """Count what this process sent since the last read, so a burst inside one cache period is seen."""
        self._value += n


class BacklogCollector:
    """A prometheus_client custom collector: reads Redis at each scrape.

    Exposes ``maskq_queue_backlog_jobs{queue}`` (queued + taken), its two parts
    ``maskq_queue_waiting_jobs`` and ``maskq_queue_reserved_jobs``, ``maskq_backlog_redis_up``
    (0 when Redis did not answer: the backlog series are then absent, not 0, so a scaler falls back
    to its own default instead of scaling to zero on a blind spot) and the read's duration.
    """

    def __init__(self, client: Any, queues: Iterable[str] = defaults.BACKLOG_QUEUES) -> None:
        self.client = client
        self.queues = tuple(queues)
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, queues: Iterable[str] = defaults.BACKLOG_QUEUES) -> BacklogCollector:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # one try per scrape: the next scrape is the retry (redis-py's default backoff would hold a
        # scrape for seconds while Redis is down, past Prometheus' scrape timeout)
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True,
                                      retry=Retry(NoBackoff(), 0))
        return cls(client, queues)

    @classmethod
    def from_settings(cls, settings: Any = None) -> BacklogCollector:
        if settings is None:
            from maskq.settings import get_settings

            settings = get_settings()
        return cls.from_url(settings.redis_url)

    def describe(self) -> list:
        return []  # no describe-time Redis call when registering (the API starts without Redis)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("maskq_backlog_redis_up", "1 when the backlog could be read from Redis")
        took = GaugeMetricFamily("maskq_backlog_read_seconds", "How long reading the backlog from Redis took")
        t0 = time.perf_counter()
        try:
            with self._lock:
                backlog = read_backlog(self.client, self.queues)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when Redis does not
            log.warning("backlog: Redis unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        took.add_metric([], time.perf_counter() - t0)
        total = GaugeMetricFamily("maskq_queue_backlog_jobs",
                                  "Jobs queued plus jobs taken by a worker (running, prefetched, retrying)",
                                  labels=["queue"])
        waiting = GaugeMetricFamily("maskq_queue_waiting_jobs", "Messages in the queue's Redis lists (not taken)",
                                    labels=["queue"])
        reserved = GaugeMetricFamily("maskq_queue_reserved_jobs",
                                     "Messages taken by a worker and not acknowledged (running or held)",
                                     labels=["queue"])
        for b in backlog:
            total.add_metric([b.queue], b.total)
            waiting.add_metric([b.queue], b.waiting)
            reserved.add_metric([b.queue], b.reserved)
        up.add_metric([], 1)
        yield from (total, waiting, reserved, up, took)


def serve(url: str, port: int, addr: str = "127.0.0.1", queues: Iterable[str] = defaults.BACKLOG_QUEUES):
    """Start the exporter's HTTP server (a daemon thread); returns (server, thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(BacklogCollector.from_url(url, queues))
    return start_http_server(port, addr=addr, registry=registry)


def main(argv: Sequence[str] | None = None) -> int:
    from maskq import logging as mlog
    from maskq.settings import get_settings

    s = get_settings()
    p = argparse.ArgumentParser(prog="python -m maskq.service.backlog",
                                description="Prometheus exporter of maskq's backlog")
    p.add_argument("--redis-url", default=s.redis_url)
    p.add_argument("--port", type=int, default=s.backlog_exporter_port)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all, for a pod)")
    p.add_argument("--queues", default=",".join(defaults.BACKLOG_QUEUES))
    a = p.parse_args(argv)
    mlog.configure()
    queues = [q for q in a.queues.split(",") if q]
    serve(a.redis_url, a.port, a.host, queues)
    log.info("backlog exporter on %s:%s for queues %s", a.host, a.port, ",".join(queues))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
