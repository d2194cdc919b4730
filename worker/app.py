"""The worker's Celery app: the queue contract's configuration (:mod:`maskq.service.queue`), the
task bodies (:mod:`worker.tasks`) and the process hooks below.

Start a CPU worker:   celery -A worker.app worker -Q cpu,webhooks -c 2
Start a GPU worker:   MASKQ_WORKER_QUEUE=gpu MASKQ_WORKER_BATCHING=1 celery -A worker.app worker -Q gpu -P threads -c 16
Why each setting has its value: worker/README.md.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from maskq.service.queue import create_celery
from maskq.settings import get_settings

log = logging.getLogger(__name__)

app = create_celery(get_settings(), include=["worker.tasks"])
# survives the broker connection dropping while jobs run (Celery 5.7.0 crashes: worker/consumer.py)
app.conf.worker_consumer = "worker.consumer:Consumer"

# log context, JSON logs, busy/model metrics: Celery signal hooks (worker.observability)
from worker import observability  # noqa: E402,F401

# ---- process lifecycle ---------------------------------------------------------------------------


@signals.celeryd_after_setup.connect
def _remember_concurrency(sender: Any = None, instance: Any = None, **_: Any) -> None:
    """The pool size, for sizing ONNX Runtime's threads in each child (inherited across fork)."""
    from worker import runtime

    runtime.POOL_CONCURRENCY = getattr(instance, "concurrency", None)


@signals.worker_init.connect
def _prepare_storage(**_: Any) -> None:
    """Buckets and lifecycle rules exist before the first task; an S3 outage here is logged, not
    fatal (tasks retry until S3 is back)."""
    from maskq.errors import MaskqError
    from worker import runtime

    try:
        runtime.get().storage.ensure_buckets(attempts=2)
    except MaskqError as exc:
        log.warning("could not prepare buckets at start-up: %s", exc)
    runtime.reset()  # children must open their own connections after fork


@signals.worker_process_init.connect
def _load_model_in_child(**_: Any) -> None:
    """Each prefork child loads the model once, before it takes a task."""
    from worker import runtime

    runtime.reset()
    runtime.get().load_pipeline()


@signals.worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    """Metrics endpoint; and solo/threads pools (no child processes) load the model here, in the
    process that runs the tasks."""
    from worker import metrics, runtime

    s = get_settings()
    metrics.serve(s.worker_metrics_port, s.worker_metrics_host)
    pool = getattr(sender, "pool", None)
    if pool is not None and not type(pool).__module__.endswith("prefork"):
        runtime.get().load_pipeline()


@signals.worker_init.connect
def _name_instance(**_: Any) -> None:
    """This worker instance's id, before the pool forks: its children name it in the records."""
    from worker import liveness

    liveness.instance_id()


@signals.task_received.connect
def _note_holder(request: Any = None, **_: Any) -> None:
    """The job's record names this worker as the holder of its message (prefetched, or a retry
    waiting for its countdown), so that the message is sent again if this worker dies."""
    from maskq.service.queue import PROCESS_TASK
    from worker import liveness

    if request is not None and request.name == PROCESS_TASK:
        liveness.hold(request.id)


@signals.worker_ready.connect
def _start_liveness(**_: Any) -> None:
    """The heartbeat, and the sweeps that re-send jobs of dead workers and lost messages."""
    from maskq.service.queue import Publisher
    from worker import liveness

    s = get_settings()
    liveness.start(s, Publisher(app, s.worker_queue))


@signals.worker_shutdown.connect
def _stop_liveness(**_: Any) -> None:
    from worker import liveness

    liveness.stop()
