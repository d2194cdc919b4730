"""The queue contract, in one place: task names, queues, the Celery configuration, the message format
and the publish path. The API (which never imports ``worker``) and the worker both build their Celery
app here; only the worker adds task bodies and process hooks (``worker.app``).

The one hop of an image job: the API writes the record and its task message in one Lua call
(:meth:`maskq.service.records.JobStore.create` with ``message=`` :meth:`Publisher.job_message`).
That is atomic (never a queued record without a message, nor a message for a record that was not
written) and costs one Redis round trip, where ``send_task`` costs a second one plus a new redis-py
client per publish inside kombu (``bench/api_enqueue.py``). The message is Celery's own protocol-2
message (``amqp.as_task_v2``), ``before_task_publish`` hooks run on it as on any publish, and
``tests/service/test_queue.py`` checks it against what ``send_task`` LPUSHes with the installed
Celery and kombu. Webhook tasks and revokes are rare and go through Celery itself.
"""

from __future__ import annotations

import base64
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from kombu import Queue
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as envelope_json

from maskq import defaults
from maskq import logging as mlog
from maskq.settings import Settings

log = logging.getLogger(__name__)

PROCESS_TASK = "maskq.process_job"  # one job: its only argument is the job id
WEBHOOK_TASK = "maskq.deliver_webhook"  # (job id, terminal state): POST the job document
DELIVERY_MODE_PERSISTENT = 2  # what kombu's Exchange defaults to; the Redis transport only carries it


# the publish retry's waits (kombu's fxrange): 0, 0.5, 1, 1.5, then every 2 s, tried at once after
# Redis is back, without hammering one that stays down
_PUBLISH_STEP_SECONDS, _PUBLISH_MAX_INTERVAL_SECONDS = 0.5, 2.0


def publish_retry_policy(seconds: float) -> dict[str, float | int]:
    """kombu's retry policy for publishing a task message, trying again for at least ``seconds``
    (0: one try only)."""
    waited, tries = 0.0, 0
    while waited < seconds:
        waited += min(tries * _PUBLISH_STEP_SECONDS, _PUBLISH_MAX_INTERVAL_SECONDS)
        tries += 1
    return {"max_retries": tries, "interval_start": 0, "interval_step": _PUBLISH_STEP_SECONDS,
            "interval_max": _PUBLISH_MAX_INTERVAL_SECONDS}


def celery_config(s: Settings) -> dict[str, Any]:
    """The Celery configuration derived from maskq's settings (pure: tested without a broker).
    Why each value: worker/README.md."""
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
            "unacked_mutex_expire": s.broker_restore_lock_seconds,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "health_check_interval": 10,
            "retry_on_timeout": True,
        },
        # a message a worker sends (a retry's copy above all) rides out a Redis restart: Celery drops a
        # retry it could not send, and the job would wait for the lost-message sweep
        "task_publish_retry": True,
        "task_publish_retry_policy": publish_retry_policy(s.publish_retry_seconds),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # Redis restarts: keep trying for ever
        "broker_heartbeat": 0,
        "task_queues": [Queue(s.worker_queue), Queue(defaults.QUEUE_WEBHOOKS)],
        "task_default_queue": s.worker_queue,
        "task_create_missing_queues": True,
        "task_routes": {PROCESS_TASK: {"queue": s.worker_queue}, WEBHOOK_TASK: {"queue": defaults.QUEUE_WEBHOOKS}},
        "worker_max_memory_per_child": s.worker_max_memory_per_child_kb or None,
        "worker_max_tasks_per_child": s.worker_max_tasks_per_child or None,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_deduplicate_successful_tasks": False,
    }


def create_celery(settings: Settings, include: list[str] | None = None) -> Celery:
    """A Celery app on maskq's configuration; the worker passes ``include=["worker.tasks"]``."""
    app = Celery("maskq", include=include or [])
    app.conf.update(celery_config(settings))
    return app


@signals.before_task_publish.connect
def _context_to_headers(headers: dict | None = None, **_: Any) -> None:
    """Whatever process sends (the API, a worker queuing a webhook), the log context (request id, job
    id, tenant; :mod:`maskq.logging`) travels in the message headers."""
    if headers is None:
        return
    for key, value in mlog.headers_from_context().items():
        headers.setdefault(key, value)


@dataclass(frozen=True)
class TaskMessage:
    """``payload`` is what a worker consuming ``queue`` expects to find LPUSHed on that Redis list."""

    queue: str
    payload: str


def task_message(app: Celery, name: str, task_id: str, args: list[Any], queue: str) -> TaskMessage:
    """The message ``app.send_task(name, args=args, task_id=task_id, queue=queue)`` would publish.

    Only what maskq sends is supported: positional arguments, no ETA, priority 0 (kombu's Redis
    transport then uses the queue's own list), the default exchange routed by queue name.
    """
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id, name, args=args, kwargs={}, reply_to=app.thread_oid,
        create_sent_event=app.conf.task_send_sent_event, ignore_result=None,
    )
    signals.before_task_publish.send(
        sender=name, body=body, exchange="", routing_key=queue, declare=[], headers=headers,
        properties=properties, retry_policy={},
    )
    content_type, content_encoding, data = serialize(body, serializer=app.conf.task_serializer)
    raw = data if isinstance(data, bytes) else data.encode(content_encoding or "utf-8")
    message = {
        "body": base64.b64encode(raw).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": DELIVERY_MODE_PERSISTENT,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return TaskMessage(queue=queue, payload=envelope_json(message))


class Publisher:
    """What senders do with the queue: an image job's message (written with its record), a webhook
    task, a revoke. Used by the API and by the worker's end of a job alike."""

    def __init__(self, app: Celery, queue: str) -> None:
        self.app = app
        self.queue = queue

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        return cls(create_celery(settings), settings.worker_queue)

    def job_message(self, job_id: str) -> TaskMessage:
        """The image task's message for ``JobStore.create(message=)``; its task id is the job id, so
        a cancel can revoke it."""
        return task_message(self.app, PROCESS_TASK, job_id, [job_id], self.queue)

    def send_job(self, job_id: str, countdown: float | None = None) -> None:
        """Through Celery's own publish: for tools and tests that enqueue a record written apart, and
        for a worker that sends a job's message again for later (``countdown`` seconds)."""
        self.app.send_task(PROCESS_TASK, args=[job_id], task_id=job_id, queue=self.queue, countdown=countdown)

    def send_webhook(self, job_id: str, state: str) -> None:
        """Best effort: the job's outcome is recorded whatever happens here."""
        try:
            self.app.send_task(WEBHOOK_TASK, args=[job_id, state])
        except Exception as exc:  # noqa: BLE001 - a broker fault must not undo the job's end
            log.error("job %s: could not queue its webhook: %s", job_id, exc)

    def revoke(self, job_id: str) -> None:
        """Best effort: a worker that takes the message anyway skips it (the record is canceled)."""
        try:
            self.app.control.revoke(job_id)
        except Exception:  # noqa: BLE001, S110 - the record's state is what counts
            pass
