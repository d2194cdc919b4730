"""Cross-job batching: many task threads, one inference call.

A GPU worker runs Celery's ``threads`` pool (``-P threads -c 16``): each thread holds one task
(prefetch multiplier 1, so Redis still shows every job that is not being worked on, which is what
queue-length autoscaling reads). Threads hand their images to the process's one :class:`Batcher`,
which gathers items until it has ``max_batch`` of them or ``max_wait_ms`` passed since the first,
runs ``process_many`` once, and gives each thread its own outcomes.

Chosen over celery-batches because that one needs a large prefetch to fill a batch: the messages it
holds are reserved by one worker, invisible in the queue length, so the autoscaler sees no backlog
and another worker cannot take them (see worker/README.md).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

Item = TypeVar("Item")  # maskq.pipeline.WorkItem in the worker; generic so this module needs no model code
Outcome = TypeVar("Outcome")


class Batcher(Generic[Item, Outcome]):
    """Not the ``/v1/batches`` kind: this one groups images of different jobs into one inference."""

    def __init__(self, process_many: Callable[[list[Item]], list[Outcome]], max_batch: int,
                 max_wait_ms: int) -> None:
        self._process_many = process_many
        self.max_batch = max(1, max_batch)
        self.max_wait = max_wait_ms / 1000.0
        self._q: queue.Queue[tuple[Item, Future]] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="maskq-batcher", daemon=True)
        self._thread.start()
        self.batches = 0  # how many inference calls were made (for tests and metrics)
        self.items = 0

    def submit(self, item: Item) -> Outcome:
        """Queue ``item`` and wait for its outcome (the calling task thread blocks meanwhile)."""
        f: Future = Future()
        self._q.put((item, f))
        return f.result()

    def _loop(self) -> None:
        while True:  # a daemon thread: it ends with the process
            batch = [self._q.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                batch.append(nxt)
            try:
                outcomes = self._process_many([item for item, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting thread
                for _, f in batch:
                    f.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, f), outcome in zip(batch, outcomes, strict=True):
                f.set_result(outcome)
