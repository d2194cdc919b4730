"""The lost-message sweep (:mod:`maskq.service.lost`) on a timer thread of the worker's main process:
started when the worker is ready, stopped at shutdown. Lost messages are re-sent to the queue this
worker consumes, so a live worker is there to take them."""

from __future__ import annotations

import logging
import threading

from maskq.service.lost import LostMessageSweep
from maskq.service.queue import Publisher
from maskq.service.records import JobStore
from maskq.settings import Settings

log = logging.getLogger(__name__)

_stop = threading.Event()
_thread: threading.Thread | None = None


def _run(sweep: LostMessageSweep, interval: float) -> None:
    from worker import metrics

    while not _stop.wait(interval):
        try:
            requeued = sweep.sweep()
        except Exception as exc:  # noqa: BLE001 - Redis down for a while: the next sweep tries again
            log.warning("lost-message sweep failed: %s", exc)
            continue
        if requeued:
            metrics.LOST_MESSAGES.inc(len(requeued))


def start(settings: Settings, publisher: Publisher) -> None:
    """Idempotent; does nothing when ``lost_sweep_seconds`` is 0."""
    global _thread
    if settings.lost_sweep_seconds <= 0 or (_thread is not None and _thread.is_alive()):
        return
    jobs = JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds)
    sweep = LostMessageSweep(jobs, publisher.job_message, grace_seconds=settings.lost_grace_seconds,
                             interval_seconds=settings.lost_sweep_seconds)
    _stop.clear()
    _thread = threading.Thread(target=_run, args=(sweep, settings.lost_sweep_seconds), name="lost-sweep",
                               daemon=True)
    _thread.start()


def stop() -> None:
    _stop.set()
