"""One attempt of a job at a time, across pool processes and worker instances.

A job can have several messages at once: a retry's message beside a redelivery after a restart, a
resubmission after the API was killed, a copy the lost-message sweep sent. Without a guard each
becomes an attempt, running beside the live one: it counts the live attempt as lost
(``running -> running``), spends the poison budget of a job that never crashed, and stores a second
result. So the attempt running a job holds a lease in Redis (``JobStore.hold_attempt``), renewed by a
thread every third of its ttl while the attempt runs and let go when it ends; a message that finds
the lease held by another attempt is sent again for when that lease would lapse. A pool child
SIGKILLed mid-job renews nothing: its lease lapses within the ttl and its redelivered message takes
over then."""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType

from maskq.errors import MaskqError
from maskq.service.records import JobStore

log = logging.getLogger(__name__)


class AttemptLease:
    """The lease of one attempt; ``acquire`` first, then ``with lease:`` around the attempt's work."""

    def __init__(self, jobs: JobStore, job_id: str, ttl_seconds: float) -> None:
        self.jobs, self.job_id, self.ttl = jobs, job_id, float(ttl_seconds)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> float:
        """0.0 when this attempt holds the lease now, else the seconds until the live holder's lapses.
        Redis faults raise (StorageUnavailableError: the task's retry policy handles them)."""
        return self.jobs.hold_attempt(self.job_id, self.token, self.ttl)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                left = self.jobs.hold_attempt(self.job_id, self.token, self.ttl)
            except MaskqError as exc:  # Redis down: try again at the next beat; the work goes on
                log.warning("job %s: could not renew its attempt lease: %s", self.job_id, exc)
                continue
            if left:  # it lapsed (Redis was away longer than the ttl) and another attempt took it
                log.warning("job %s: another attempt took over the lease", self.job_id)

    def __enter__(self) -> AttemptLease:
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.job_id[:8]}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        try:
            self.jobs.release_attempt(self.job_id, self.token)
        except MaskqError as exc2:  # it lapses by itself within the ttl
            log.warning("job %s: could not release its attempt lease: %s", self.job_id, exc2)
