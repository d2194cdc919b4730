"""Per-process state of a worker: settings, the job store, storage, and the model.

The model is loaded once per pool process, in ``worker_process_init`` (see ``app.py``), never per
task; solo and threads pools load it when the worker is ready. Heavy imports (ONNX Runtime, via
``maskq.pipeline``) happen only here, lazily: the worker's main process never loads a model.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from maskq.service.records import JobStore
from maskq.service.storage import Storage
from maskq.settings import Settings, available_cpus, get_settings
from worker.batcher import Batcher

if TYPE_CHECKING:
    from maskq.pipeline import Outcome, Pipeline, WorkItem

log = logging.getLogger(__name__)

# Set in the worker's main process once the pool size is known (celeryd_after_setup); forked
# children inherit it and size ONNX Runtime's thread pool from it.
POOL_CONCURRENCY: int | None = None


def intra_op_threads(settings: Settings, concurrency: int | None) -> int:
    """Threads per inference session: the setting when given, else cores / pool processes, so that
    N prefork children on C cores do not run N x C threads that fight over caches."""
    if settings.intra_op_threads:
        return settings.intra_op_threads
    return max(1, available_cpus() // max(1, concurrency or 1))


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs = JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds)
        self.storage = Storage.from_settings(settings)
        self._pipeline: Pipeline | None = None
        self._batcher: Batcher | None = None
        self._lock = threading.Lock()

    def load_pipeline(self, concurrency: int | None = None) -> Pipeline:
        """Load the preloaded models now (MASKQ_PRELOAD_MODELS); idempotent. Other models load at the
        first job that names them and stay."""
        with self._lock:
            if self._pipeline is None:
                from maskq.pipeline import Pipeline

                threads = intra_op_threads(self.settings, concurrency if concurrency is not None else POOL_CONCURRENCY)
                from worker.observability import record_model_loaded

                self._pipeline = Pipeline.load(self.settings.model_copy(update={"intra_op_threads": threads}))
                names = ", ".join(self.settings.preload)
                log.info("model loaded in pid %s: %s (%s intra-op threads)", os.getpid(), names, threads)
                for seg in self._pipeline.loaded_models:
                    record_model_loaded(seg, self.settings)
                self._pipeline.on_model_loaded = lambda seg: record_model_loaded(seg, self.settings)
            return self._pipeline

    @property
    def pipeline(self) -> Pipeline:
        return self._pipeline or self.load_pipeline()

    def _infer_many(self, items: list[WorkItem]) -> list[Outcome]:
        from worker.metrics import BATCH_SIZE

        BATCH_SIZE.observe(len(items))
        return self.pipeline.process_many(items)

    def process(self, item: WorkItem) -> Outcome:
        """Through the cross-job batcher when enabled (threads pool), else straight to the model."""
        if self.settings.worker_batching:
            with self._lock:
                if self._batcher is None:
                    self._batcher = Batcher(self._infer_many, self.settings.max_batch, self.settings.batch_wait_ms)
            return self._batcher.submit(item)
        return self._infer_many([item])[0]

    @property
    def batcher(self) -> Batcher[WorkItem, Outcome] | None:
        return self._batcher


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get() -> Runtime:
    """This process's runtime, made on first use (after fork, so no socket is shared with the parent)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime(get_settings())
            _runtime.pid = os.getpid()  # type: ignore[attr-defined]
        return _runtime


def reset() -> None:
    """Forget this process's runtime (a forked child must not reuse its parent's connections)."""
    global _runtime
    with _runtime_lock:
        _runtime = None
