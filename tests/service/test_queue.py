"""The API writes the Celery message itself (maskq.service.queue): it must be the message Celery sends."""

from __future__ import annotations

import json
import threading
import time

import redis

from maskq import logging as mlog
from maskq.local.embedded import RedisServer
from maskq.service.queue import PROCESS_TASK, Publisher, create_celery, publish_retry_policy, task_message
from maskq.settings import Settings, load_settings


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


def test_the_publish_retry_policy_waits_at_least_as_long_as_asked():
    for seconds in (0, 0.6, 2, 20, 45):
        policy = publish_retry_policy(seconds)
        waits = [min(i * policy["interval_step"], policy["interval_max"]) for i in range(policy["max_retries"])]
        assert sum(waits) >= seconds
        assert not waits or sum(waits[:-1]) < seconds  # and no try more than that needs
    app = create_celery(load_settings(publish_retry_seconds=20))
    assert app.conf.task_publish_retry_policy == publish_retry_policy(20)


def test_a_message_sent_while_redis_restarts_goes_out_once_it_is_back(tmp_path):
    """Celery's own policy gives up within ~0.6 s, and a task's retry that cannot be sent is dropped
    (Reject, requeue=False): a job then waited 1.5-2 min for the lost-message sweep (seen in a chaos run)."""
    server = RedisServer(workdir=tmp_path / "redis").start()
    app = create_celery(load_settings(redis_url=server.url))
    client = redis.Redis.from_url(server.url)
    try:
        publisher = Publisher(app, "cpu")
        publisher.send_job("job-1")  # the producer's connection exists before the outage
        assert client.llen("cpu") == 1
        server.kill()
        sent_at: list[float] = []
        # the publish runs in a thread and the restart here: a server started from a thread that then
        # ends dies with it (PR_SET_PDEATHSIG follows the thread that forked it)
        sender = threading.Thread(target=lambda: (publisher.send_job("job-2"), sent_at.append(time.monotonic())))
        t0 = time.monotonic()
        sender.start()
        time.sleep(2.0)
        assert sender.is_alive()  # still waiting for Redis instead of having given up
        server.start()
        sender.join(timeout=30)
        assert sent_at, "the message was never sent"
        waited = sent_at[0] - t0
        assert 1.5 < waited < 15
        sent = client.lrange("cpu", 0, -1)  # the restarted server kept nothing: only job-2
        assert [json.loads(m)["headers"]["id"] for m in sent] == ["job-2"]
    finally:
        client.close()
        app.close()
        server.cleanup()
