"""The worker's liveness thread, in its main process: started when the worker is ready, stopped at
shutdown. Every ``worker_heartbeat_seconds`` it refreshes this worker's heartbeat and re-sends the
jobs held by workers whose heartbeat has lapsed; every ``lost_sweep_seconds`` it re-sends jobs
whose message the broker lost (:mod:`maskq.service.lost`). Jobs go to the queue this worker
consumes, so a live worker is there to take them."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from maskq.service.lost import Heartbeat, LostMessageSweep
from maskq.service.queue import Publisher
from maskq.service.records import JobStore
from maskq.settings import Settings

log = logging.getLogger(__name__)

# The worker instance's id: made in the main process before the pool forks (worker_init), inherited
# by every child through the environment, so that a record names the instance running it; a
# restarted worker with the same host name is a new instance.
INSTANCE_ENV = "MASKQ_WORKER_INSTANCE"

_stop = threading.Event()
_thread: threading.Thread | None = None
# jobs whose message this worker received and then dropped (a broker reconnect), to be marked as
# held by a worker that never beats once Redis answers again (abandon)
_abandoned: set[str] = set()
_abandoned_lock = threading.Lock()


def instance_id() -> str:
    """This worker instance's id (made on first use in a process that has none)."""
    value = os.environ.get(INSTANCE_ENV)
    if not value:
        value = os.environ[INSTANCE_ENV] = uuid.uuid4().hex[:16]
    return value


def hold(job_id: str) -> None:
    """Record this instance as the holder of a queued job's message (main process, on receipt)."""
    from maskq.errors import MaskqError
    from worker import runtime

    try:
        runtime.get().jobs.mark_held(job_id, instance_id())
    except MaskqError as exc:  # Redis down: the job waits for the visibility timeout if we die
        log.warning("job %s: could not record its holder: %s", job_id, exc)


def abandon(job_ids: set[str]) -> None:
    """This worker dropped these jobs' messages without running them (Celery clears what it holds on
    a broker reconnect): the orphan sweep is to send them again, as it does for a dead worker's."""
    with _abandoned_lock:
        _abandoned.update(job_ids)
    log.warning("%d received job(s) dropped on a broker reconnect; they will be sent again", len(job_ids))


def _mark_abandoned(jobs: JobStore) -> None:
    with _abandoned_lock:
        pending = list(_abandoned)
    for jid in pending:
        jobs.mark_held(jid, f"{instance_id()}.dropped")  # no such instance ever beats
        with _abandoned_lock:
            _abandoned.discard(jid)


def _run(sweep: LostMessageSweep, heartbeat: Heartbeat | None, settings: Settings) -> None:
    from worker import metrics

    tick = min(t for t in (settings.worker_heartbeat_seconds, settings.lost_sweep_seconds) if t > 0)
    next_lost = time.monotonic() + settings.lost_sweep_seconds
    while True:
        try:
            if heartbeat is not None:
                heartbeat.beat()
                _mark_abandoned(sweep.jobs)
                requeued = sweep.sweep_orphans(heartbeat, settings.worker_heartbeat_seconds)
                metrics.LOST_MESSAGES.labels("dead_worker").inc(len(requeued))
            if settings.lost_sweep_seconds > 0 and time.monotonic() >= next_lost:
                next_lost = time.monotonic() + settings.lost_sweep_seconds
                metrics.LOST_MESSAGES.labels("lost_message").inc(len(sweep.sweep()))
        except Exception as exc:  # noqa: BLE001 - Redis down for a while: the next tick tries again
            log.warning("liveness sweep failed: %s", exc)
        if _stop.wait(tick):
            break
    if heartbeat is not None:
        try:
            heartbeat.stop()
        except Exception as exc:  # noqa: BLE001 - Redis down at shutdown: the key lapses by itself
            log.warning("could not clear the heartbeat: %s", exc)


def start(settings: Settings, publisher: Publisher) -> None:
    """Idempotent; does nothing when both the heartbeat and the lost sweep are off (0)."""
    global _thread
    if (settings.lost_sweep_seconds <= 0 and settings.worker_heartbeat_seconds <= 0) or (
            _thread is not None and _thread.is_alive()):
        return
    jobs = JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds)
    sweep = LostMessageSweep(jobs, publisher.job_message, grace_seconds=settings.lost_grace_seconds,
                             interval_seconds=settings.lost_sweep_seconds or settings.worker_heartbeat_seconds)
    heartbeat = None
    if settings.worker_heartbeat_seconds > 0:
        heartbeat = Heartbeat(jobs.r, jobs.prefix, instance_id(), settings.worker_dead_after_seconds)
    _stop.clear()
    _thread = threading.Thread(target=_run, args=(sweep, heartbeat, settings), name="liveness", daemon=True)
    _thread.start()


def stop(timeout: float = 2.0) -> None:
    _stop.set()
    if _thread is not None:
        _thread.join(timeout)
