"""The API writes the Celery message itself (maskq.service.queue): it must be the message Celery sends."""

from __future__ import annotations

import json

import redis

from maskq import logging as mlog
from maskq.service.queue import PROCESS_TASK, create_celery, task_message
from maskq.settings import Settings


def _without_delivery_tag(raw: str | bytes) -> dict:
    message = json.loads(raw)
    tag = message["properties"].pop("delivery_tag")
    assert len(tag) == 36  # a uuid, new for each message, as kombu makes it
    return message


def test_the_message_is_the_one_send_task_publishes(settings: Settings):
    app = create_celery(settings)
    client = redis.Redis.from_url(settings.redis_url)
    try:
        with mlog.bind(job_id="job-1", tenant="acme"):  # before_task_publish copies these into headers
            app.send_task(PROCESS_TASK, args=["job-1"], task_id="job-1", queue="cpu")
            ours = task_message(app, PROCESS_TASK, "job-1", ["job-1"], "cpu")
        assert ours.queue == "cpu"
        sent = client.lpop("cpu")
        assert sent is not None and client.llen("cpu") == 0
        expected = _without_delivery_tag(sent)
        assert expected["headers"]["maskq_tenant"] == "acme"
        assert _without_delivery_tag(ours.payload) == expected
    finally:
        client.close()
        app.close()
