"""Lost messages: jobs whose record is unfinished but whose task message is nowhere in the broker.

kombu's Redis transport has a window in which a message exists nowhere: BRPOP has taken it off the
queue's list and the worker has not yet written it to the ``unacked`` hash. A worker SIGKILLed in
that window (milliseconds; longer on a loaded node) loses the message, and the visibility timeout
cannot bring back what never reached ``unacked``. A Redis that restarts and loses its last second
of writes can lose one too. The record survives (it is written with the message, in one Lua call),
so without this sweep the job would stay ``queued`` or ``running`` for ever.

The sweep: the records' live index gives the unfinished jobs untouched for ``grace`` seconds; a job
whose task id is on no queue's list and not in ``unacked``, twice in a row (one sweep apart) with
the same version, gets a fresh message, pushed by a Lua call that first checks the record has not
moved. A false positive costs one duplicate message, which the records make harmless (a finished
job's duplicate does nothing; a running job's becomes a new attempt). One sweeper at a time across
the cluster (a lock that expires), so that N workers do not scan N times.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from maskq import defaults
from maskq.service.backlog import task_ids_in_broker
from maskq.service.records import JobStore, QueuedMessage

log = logging.getLogger(__name__)


def confirmed_lost(quiet: Mapping[str, int], present: set[str],
                   suspects: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``(lost, new suspects)``: a quiet job missing from the broker is lost when the previous sweep
    missed it too at the same version; otherwise it is a suspect for the next sweep."""
    missing = {jid: v for jid, v in quiet.items() if jid not in present}
    lost = {jid: v for jid, v in missing.items() if suspects.get(jid) == v}
    return lost, {jid: v for jid, v in missing.items() if jid not in lost}


class LostMessageSweep:
    """The Redis side: reads the live index and the broker, re-sends what is lost."""

    def __init__(self, jobs: JobStore, message: Callable[[str], QueuedMessage], *,
                 grace_seconds: float = defaults.LOST_GRACE_SECONDS,
                 interval_seconds: float = defaults.LOST_SWEEP_SECONDS,
                 queues: Sequence[str] = defaults.BACKLOG_QUEUES) -> None:
        self.jobs = jobs
        self.r: Any = jobs.r
        self.message = message
        self.grace = grace_seconds
        self.interval = interval_seconds
        self.queues = tuple(queues)
        self.lock_key = f"{jobs.prefix}:lost:lock"
        self.suspects_key = f"{jobs.prefix}:lost:suspects"
        self._token = secrets.token_hex(8)

    def _take_turn(self) -> bool:
        """This sweep's turn across the cluster; the lock lapses just before the next sweep is due."""
        ttl_ms = max(100, int(self.interval * 900))
        return bool(self.r.set(self.lock_key, self._token, nx=True, px=ttl_ms))

    def sweep(self) -> list[str]:
        """One pass; returns the ids of the jobs whose message was re-sent."""
        if not self._take_turn():
            return []
        quiet = self.jobs.quiet_live_jobs(self.grace)
        present = task_ids_in_broker(self.r, self.queues) if quiet else set()
        previous = {k: int(v) for k, v in (self.r.hgetall(self.suspects_key) or {}).items()}
        lost, suspects = confirmed_lost(quiet, present, previous)
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self.suspects_key)
        if suspects:
            pipe.hset(self.suspects_key, mapping={k: str(v) for k, v in suspects.items()})
            pipe.pexpire(self.suspects_key, int(self.interval * 3000))
        pipe.execute()
        requeued = []
        for jid, version in lost.items():
            outcome = self.jobs.requeue(jid, version, self.message(jid))
            if outcome == "requeued":
                log.warning("job %s: its task message was lost (a worker died while taking it?); sent again", jid)
                requeued.append(jid)
        return requeued
