"""A task's Celery message, built the way Celery and kombu's Redis transport publish it, but handed
back instead of sent.

Why: the API writes a job's record and its message in one Lua call (``JobStore.create(message=)``).
That is atomic (never a queued record without a message, nor a message for a record that was not
written) and costs one Redis round trip, where ``send_task`` costs a second one plus a new redis-py
client per publish inside kombu (API CPU per request ~7.1 -> 5-6 ms with this path, measured by
``bench/api_enqueue.py``). The message is Celery's own protocol-2 message (``amqp.as_task_v2``),
``before_task_publish`` hooks run on it as on any publish, and ``tests/worker/test_publish.py``
checks it against what ``send_task`` LPUSHes with the installed Celery and kombu.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from kombu.serialization import dumps as serialize
from kombu.utils.json import dumps as envelope_json

DELIVERY_MODE_PERSISTENT = 2  # what kombu's Exchange defaults to; the Redis transport only carries it


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
