"""Lost messages: jobs whose record is unfinished but whose task message is nowhere in the broker.

kombu's Redis transport has a window in which a message exists nowhere: BRPOP has taken it off the
queue's list and the worker has not yet written it to the ``unacked`` hash. A worker SIGKILLed in
that window (milliseconds; longer on a loaded node) loses the message, and the visibility timeout
cannot bring back what never reached ``unacked``. A Redis run with ``appendfsync everysec`` can lose
its last writes on a restart, a message among them. The record survives (it is written with the
message, in one Lua call), so without this sweep the job would stay ``queued`` or ``running`` for ever.

A worker that dies whole (SIGKILL, a lost node) leaves its running jobs' messages in ``unacked``,
(and those it had prefetched, and retries waiting for their countdown), where kombu restores them
only after the visibility timeout (5 minutes by default). Each worker therefore writes a heartbeat
key with a short TTL, and a job's record names the worker instance that holds it (received its
message, or runs it): an unfinished job whose worker's heartbeat has lapsed is an orphan and is
sent again at once
(:meth:`LostMessageSweep.sweep_orphans`); the stale message that comes back later finds the job
finished and does nothing.

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


def orphaned(owners: Mapping[str, tuple[str, int]], alive: set[str]) -> dict[str, int]:
    """Held jobs (id -> (worker, version)) whose worker is not among the ``alive`` ones."""
    return {jid: version for jid, (worker, version) in owners.items() if worker not in alive}


def confirmed_lost(quiet: Mapping[str, int], present: set[str],
                   suspects: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``(lost, new suspects)``: a quiet job missing from the broker is lost when the previous sweep
    missed it too at the same version; otherwise it is a suspect for the next sweep."""
    missing = {jid: v for jid, v in quiet.items() if jid not in present}
    lost = {jid: v for jid, v in missing.items() if suspects.get(jid) == v}
    return lost, {jid: v for jid, v in missing.items() if jid not in lost}


class Heartbeat:
    """One worker instance's liveness key: ``{prefix}:worker:{instance}``, refreshed with a TTL."""

    def __init__(self, r: Any, prefix: str, instance: str, ttl_seconds: float) -> None:
        self.r = r
        self.prefix = prefix
        self.instance = instance
        self.ttl_ms = max(1000, int(ttl_seconds * 1000))

    def key(self, instance: str) -> str:
        return f"{self.prefix}:worker:{instance}"

    def beat(self) -> None:
        self.r.set(self.key(self.instance), "1", px=self.ttl_ms)

    def stop(self) -> None:
        """A clean shutdown: its jobs (none should be left running) need not wait for the TTL."""
        self.r.delete(self.key(self.instance))

    def alive(self, instances: set[str]) -> set[str]:
        ordered = sorted(instances)
        pipe = self.r.pipeline(transaction=False)
        for i in ordered:
            pipe.exists(self.key(i))
        return {i for i, n in zip(ordered, pipe.execute(), strict=True) if n}


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

    def _take_turn(self, key: str | None = None, interval: float | None = None) -> bool:
        """This sweep's turn across the cluster; the lock lapses just before the next sweep is due."""
        ttl_ms = max(100, int((interval or self.interval) * 900))
        return bool(self.r.set(key or self.lock_key, self._token, nx=True, px=ttl_ms))

    def sweep_orphans(self, heartbeat: Heartbeat, interval: float) -> list[str]:
        """Unfinished jobs whose worker's heartbeat has lapsed get a new message (one sweeper at a
        time). Only jobs untouched for longer than the heartbeat's TTL: a younger one's worker cannot
        have been missed yet."""
        if not self._take_turn(f"{self.jobs.prefix}:orphans:lock", interval):
            return []
        owners = self.jobs.owners(heartbeat.ttl_ms / 1000)
        if not owners:
            return []
        dead = orphaned(owners, heartbeat.alive({w for w, _ in owners.values()}))
        requeued = []
        for jid, version in dead.items():
            if self.jobs.requeue(jid, version, self.message(jid)) == "requeued":
                log.warning("job %s: its worker %s stopped beating; sent again", jid, owners[jid][0])
                requeued.append(jid)
        return requeued

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
