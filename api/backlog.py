"""The 429 guard: the backlog (queued + running) of the API's queue, read with
:func:`maskq.service.backlog.read_backlog` (the same reading as the ``maskq_queue_backlog_jobs`` gauge) at
most every ``cache_seconds``, so that 200 requests/s cost one Redis read a second, not 200."""

from __future__ import annotations

import threading
import time
from typing import Any

from maskq import defaults
from maskq.errors import StorageUnavailableError
from maskq.service.backlog import read_backlog


class BacklogGuard:
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
