"""Prometheus metrics of the worker, fed by Celery signals (never from task bodies).

With a prefork pool, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder: every child writes its
samples there and the main process serves their sum on ``MASKQ_WORKER_METRICS_PORT``.
"""

from __future__ import annotations

import logging
import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger(__name__)

JOBS_FINISHED = Counter("maskq_jobs_finished_total", "Jobs that reached a terminal state",
                        ["operation", "state", "code"])
TASKS = Counter("maskq_tasks_total", "Celery task outcomes", ["task", "outcome"])
TASK_SECONDS = Histogram("maskq_task_seconds", "Wall time of one task run", ["task"],
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 150))
IMAGES = Counter("maskq_images_total", "Images through the pipeline", ["outcome"])
BATCH_SIZE = Histogram("maskq_inference_batch_size", "Images per process_many call (how full batches are)",
                       buckets=(1, 2, 4, 8, 16, 32, 64))

_started: dict[str, float] = {}


def task_started(task_id: str) -> None:
    _started[task_id] = time.perf_counter()


def task_ended(task_name: str, task_id: str, outcome: str) -> None:
    t0 = _started.pop(task_id, None)
    if t0 is not None:
        TASK_SECONDS.labels(task_name).observe(time.perf_counter() - t0)
    TASKS.labels(task_name, outcome).inc()


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics (off when ``port`` is 0). All interfaces by default: Prometheus scrapes the pod IP."""
    if not port:
        return
    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if mp_dir:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, addr=addr, registry=registry)
    else:
        start_http_server(port, addr=addr)
    log.info("metrics on :%s", port)
