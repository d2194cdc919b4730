"""Celery's worker consumer, minus a crash when the broker connection drops while jobs run.

Celery 5.7.0, on a lost broker connection, first ``collect()``s the connection (which detaches
kombu's Redis transport: its ``client`` becomes None) and then ``close()``s it. Closing the default
channel drops its Redis connection pool and tries to restore its unacked messages through a client
it can no longer build: ``AttributeError`` in ``_connparams``, "Unrecoverable error", the worker
exits. If the close happens to pass, the next ack of a job that was running (acks late) goes through
the same closed channel and raises the same way. Either way a Redis restart with jobs running kills
every worker. Found by ``bench/chaos.py``; ``tests/worker/test_reliability.py`` kills Redis while a
job runs.

This consumer does what Celery 5.6 did: collect, do not close. The old channel keeps its pool, so
the running jobs' acks reach the restarted Redis; the rest of Celery's reconnect runs as written.

And on that reconnect Celery drops the messages it had received but not started (prefetched, or
retries waiting for their countdown): their delivery tags belong to the old channel, and the broker
is expected to deliver them again, which kombu's Redis transport does only after the visibility
timeout. This worker is alive, so the orphan sweep would not send them either; :meth:`on_close`
hands their job ids to :func:`worker.liveness.abandon`, which marks them held by a worker that
never beats, and the sweep sends them again.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.state import active_requests, reserved_requests, scheduled_requests


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc: Exception) -> Any:
        if self.connection is not None:
            # shadows the method on this one connection object, which Celery drops right after
            self.connection.close = lambda: None
        return super().on_connection_error_after_connected(exc)

    def on_close(self) -> None:
        from maskq.service.queue import PROCESS_TASK
        from worker import liveness

        dropped = {r.id for r in (*reserved_requests, *scheduled_requests)
                   if r not in active_requests and r.name == PROCESS_TASK}
        super().on_close()
        if dropped:
            liveness.abandon(dropped)
