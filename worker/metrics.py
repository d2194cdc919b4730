"""Prometheus metrics of the worker, fed by Celery signals and the task base classes (never from
task bodies); served by the Celery main process on ``MASKQ_WORKER_METRICS_PORT``.

Prefork: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder (an in-memory ``emptyDir``/tmpfs in
deploy/). Each pool child writes its samples to its own files there; the main process serves their
sum through :class:`PoolCollector`, which at every scrape

* finds the pids whose process is gone (a child that exited, was replaced after
  ``worker_max_memory_per_child``, or was SIGKILLed by the OOM killer - no hook runs in a SIGKILLed
  child, so this cannot wait for one),
* drops their ``live*`` gauges (``mark_process_dead``: a dead child is no longer busy),
* folds their counters and histograms into one ``*_archive.db`` file per type and deletes theirs,
  so totals never go back (no false counter reset) and the folder does not grow with every child.

The threads and solo pools run tasks in the main process: the same code works with or without the
folder. Names follow Prometheus' conventions: ``_total`` counters, ``_seconds`` histograms.
"""

from __future__ import annotations

import contextvars
import glob
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from maskq.pipeline import ProcessResult
    from maskq.service.records import Job

log = logging.getLogger(__name__)

# Stage latencies: 5 ms (a small image's decode) to 2 min (the soft time limit).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Queue wait: from a job's creation to the start of its (last) attempt; seconds to an hour of backlog.
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

JOBS_FINISHED = Counter("maskq_jobs_finished_total", "Jobs that reached a terminal state, by final state",
                        ["queue", "operation", "state"])
JOB_FAILURES = Counter("maskq_job_failures_total", "Failed jobs by stable error code",
                       ["queue", "operation", "code"])
STAGE_SECONDS = Histogram("maskq_job_stage_seconds",
                          "Time of one stage of a job: download, decode, inference, upsample, operation, "
                          "encode, upload (a batch job's images summed)", ["queue", "stage"], buckets=STAGE_BUCKETS)
QUEUE_WAIT_SECONDS = Histogram("maskq_job_queue_wait_seconds",
                               "From the job's creation to the start of its last attempt", ["queue"],
                               buckets=QUEUE_WAIT_BUCKETS)
TASKS = Counter("maskq_tasks_total", "Celery task runs by outcome (succeeded, failed, skipped, retry, ...)",
                ["task", "outcome"])
TASK_SECONDS = Histogram("maskq_task_seconds", "Wall time of one task run", ["task"],
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 150))
IMAGES = Counter("maskq_images_total", "Images through the pipeline, by outcome (ok or an error code)", ["outcome"])
BATCH_SIZE = Histogram("maskq_inference_batch_size", "Images per inference call (how full batches are)",
                       buckets=(1, 2, 4, 8, 16, 32, 64))
# live* modes: a dead process's value disappears (mark_process_dead), the others are summed
BUSY = Gauge("maskq_worker_busy_processes", "Pool processes (or threads) running a task now", ["queue"],
             multiprocess_mode="livesum")
PROCESSES = Gauge("maskq_worker_processes",
                  "Task slots with a loaded model (prefork: processes; threads pool: threads), by queue", ["queue"],
                  multiprocess_mode="livesum")
MODEL_IMAGES = Counter("maskq_model_images_total", "Images segmented, by model", ["model"])
# Mask confidence (maskq/confidence.py) of every matte-based result: a drift to the left after a
# model or traffic change is the first sign of worse cut-outs. Tenths, finer near the review band.
MASK_CONFIDENCE = Histogram("maskq_mask_confidence", "Mask confidence of each matte-based result, by model",
                            ["model"], buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))
# One webhook POST attempt's outcome (worker/webhooks.post, where it is known): delivered, failed
# (the receiver did not take it: retried), unresolved (no DNS answer: retried), refused_address (the
# name resolved to a private, loopback, link-local or metadata address at delivery: not called, not
# retried), invalid_url.
# reason: lost_message (the broker had lost it), dead_worker (its worker's heartbeat lapsed)
LOST_MESSAGES = Counter("maskq_lost_messages_requeued_total",
                        "Unfinished jobs sent again by the worker's sweeps, by reason", ["reason"])
WEBHOOK_DELIVERIES = Counter("maskq_webhook_deliveries_total", "Webhook POST attempts by outcome", ["outcome"])
MODEL_INFO = Gauge("maskq_model_info", "The model a worker serves (value 1)", ["model", "runtime", "precision"],
                   multiprocess_mode="livemax")

# the job record's timings -> stage label (the record keeps the pipeline's own names)
STAGE_NAMES = {"read": "download", "decode": "decode", "infer": "inference", "upsample": "upsample",
               "operation": "operation", "encode": "encode", "write": "upload"}

# the queue the current task came from (set in task_prerun from its delivery info)
_queue: contextvars.ContextVar[str | None] = contextvars.ContextVar("maskq_metrics_queue", default=None)
_started: dict[str, float] = {}


def _default_queue() -> str:
    from maskq.settings import get_settings

    return get_settings().worker_queue


def current_queue() -> str:
    return _queue.get() or _default_queue()


def task_started(task_id: str) -> None:
    _started[task_id] = time.perf_counter()


def task_busy(queue: str | None) -> None:
    """At task_prerun: this process (thread) is running a task taken from ``queue``."""
    _queue.set(queue or None)
    BUSY.labels(current_queue()).inc()


def task_ended(task_name: str, task_id: str, outcome: str) -> None:
    t0 = _started.pop(task_id, None)
    if t0 is not None:
        TASK_SECONDS.labels(task_name).observe(time.perf_counter() - t0)
    TASKS.labels(task_name, outcome).inc()


def task_released() -> None:
    """After the task's last hook (task_postrun): this process is free again."""
    BUSY.labels(current_queue()).dec()


def result_made(result: ProcessResult) -> None:
    """One image through the pipeline to a stored result."""
    IMAGES.labels("ok").inc()
    if result.model:
        MODEL_IMAGES.labels(result.model).inc()
    if result.confidence is not None:
        MASK_CONFIDENCE.labels(result.model or "unknown").observe(result.confidence)


def job_finished(job: Job, queue: str | None = None) -> None:
    """A job reached a terminal state (counted once: only the transition that applied calls this)."""
    q = queue or current_queue()
    JOBS_FINISHED.labels(q, job.operation, job.state.value).inc()
    if job.error_code and job.state.value == "failed":
        JOB_FAILURES.labels(q, job.operation, job.error_code).inc()
    for key, seconds in job.timings.items():
        stage = STAGE_NAMES.get(key)
        if stage is not None and seconds >= 0:
            STAGE_SECONDS.labels(q, stage).observe(seconds)
    if job.started_at is not None and job.state.value != "canceled":
        QUEUE_WAIT_SECONDS.labels(q).observe(max(0.0, job.started_at - job.created_at))


def model_loaded(model: str, runtime: str, precision: str, slots: int = 1) -> None:
    MODEL_INFO.labels(model, runtime, precision).set(1)
    PROCESSES.labels(_default_queue()).set(slots)


# ---- prefork: many processes, one exposition -------------------------------------------------------


def _pid_of(path: str) -> str:
    return os.path.basename(path)[:-3].rsplit("_", 1)[-1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def dead_pids(path: str) -> set[int]:
    pids = set()
    for f in glob.glob(os.path.join(path, "*.db")):
        pid = _pid_of(f)
        if pid.isdigit() and not _alive(int(pid)):
            pids.add(int(pid))
    return pids


def fold_dead(path: str, pids: Iterable[int]) -> None:
    """Forget dead processes: drop their live gauges, add their counters and histograms (and gauges
    of the summing modes) into ``<type>_archive.db`` and delete their files."""
    from prometheus_client.mmap_dict import MmapedDict
    from prometheus_client.multiprocess import mark_process_dead

    for pid in pids:
        mark_process_dead(pid, path)
        for f in glob.glob(os.path.join(path, f"*_{pid}.db")):
            parts = os.path.basename(f)[:-3].split("_")
            typ = parts[0]
            if typ == "gauge" and parts[1] not in ("sum", "mostrecent"):
                os.remove(f)  # all/min/max/live*: a dead process's value means nothing any more
                continue
            archive_name = f"{typ}_archive.db" if typ != "gauge" else f"gauge_{parts[1]}_archive.db"
            archive = MmapedDict(os.path.join(path, archive_name))
            try:
                for key, value, ts, _ in MmapedDict.read_all_values_from_file(f):
                    if typ == "gauge" and parts[1] == "mostrecent":
                        old, old_ts = archive.read_value(key)
                        if ts >= old_ts:
                            archive.write_value(key, value, ts)
                    else:
                        old, _ = archive.read_value(key)
                        archive.write_value(key, old + value, ts)
            finally:
                archive.close()
            os.remove(f)


def clean_dir(path: str) -> None:
    """At worker start: drop the files of processes that are gone (a previous run) and the archive."""
    for f in glob.glob(os.path.join(path, "*.db")):
        pid = _pid_of(f)
        if pid == "archive" or (pid.isdigit() and not _alive(int(pid))):
            try:
                os.remove(f)
            except FileNotFoundError:
                pass


class PoolCollector:
    """The sum of every process's samples in ``path``, with dead processes folded in first. One lock:
    the HTTP server answers scrapes on threads, and folding must not race a merge."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        with self._lock:
            try:
                fold_dead(self.path, dead_pids(self.path))
            except OSError as exc:  # never fail a scrape over bookkeeping
                log.warning("could not fold dead processes' metrics: %s", exc)
            files = glob.glob(os.path.join(self.path, "*.db"))
            return iter(list(MultiProcessCollector.merge(files, accumulate=True)))


def registry_for_dir(path: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PoolCollector(path))
    return registry


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics (off when ``port`` is 0). All interfaces by default: Prometheus scrapes the pod IP."""
    if not port:
        return
    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if mp_dir:
        start_http_server(port, addr=addr, registry=registry_for_dir(mp_dir))
    else:
        start_http_server(port, addr=addr)
    log.info("metrics on %s:%s (%s)", addr, port, f"multiprocess dir {mp_dir}" if mp_dir else "this process")
