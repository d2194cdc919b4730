"""The Celery app: Redis broker, JSON only, at-least-once delivery, limits, queues, process hooks.

Start a CPU worker:   celery -A worker.app worker -Q cpu,webhooks -c 2
Start a GPU worker:   MASKQ_WORKER_QUEUE=gpu MASKQ_WORKER_BATCHING=1 celery -A worker.app worker -Q gpu -P threads -c 16
Why each setting has its value: worker/README.md.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals
from kombu import Queue

from maskq import defaults
from maskq.settings import Settings, get_settings

log = logging.getLogger(__name__)

PROCESS_TASK = "maskq.process_job"
WEBHOOK_TASK = "maskq.deliver_webhook"


def celery_config(s: Settings) -> dict[str, Any]:
    """The Celery configuration derived from maskq's settings (pure: tested without a broker)."""
    return {
        "broker_url": s.redis_url,
        # the job record in Redis is the result store; Celery's own backend would duplicate it
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # at-least-once: the message is acked after the task ends, a lost worker's message comes back
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # one message per process: nothing hides in a worker's buffer (queue length stays honest)
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": s.task_soft_time_limit,
        "task_time_limit": s.task_time_limit,
        "broker_transport_options": {
            "visibility_timeout": s.visibility_timeout,
            "unacked_restore_interval": s.broker_restore_interval,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "health_check_interval": 10,
            "retry_on_timeout": True,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # Redis restarts: keep trying for ever
        "broker_heartbeat": 0,
        "task_queues": [Queue(s.worker_queue), Queue(defaults.QUEUE_WEBHOOKS)],
        "task_default_queue": s.worker_queue,
        "task_create_missing_queues": True,
        "task_routes": {PROCESS_TASK: {"queue": s.worker_queue}, WEBHOOK_TASK: {"queue": defaults.QUEUE_WEBHOOKS}},
        "worker_max_memory_per_child": s.worker_max_memory_per_child_kb or None,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_deduplicate_successful_tasks": False,
    }


def create_app(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    app = Celery("maskq", include=["worker.tasks"])
    app.conf.update(celery_config(s))
    return app


app = create_app()

# log context into message headers, JSON logs, busy/model metrics: Celery signal hooks (issue 8)
from worker import observability  # noqa: E402,F401


def enqueue_job(job_id: str, queue: str | None = None, celery_app: Celery | None = None) -> str:
    """Send the image task for a job already written as ``queued`` (what the API calls); returns the
    Celery task id. By name, so the sender never imports the model code."""
    a = celery_app or app
    result = a.send_task(PROCESS_TASK, args=[job_id], queue=queue or a.conf.task_default_queue)
    return result.id


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
