"""The backlog collector against a real Redis and real Celery messages: queued (the lists, every
priority) plus taken-but-unacked, per queue; Redis down gives maskq_backlog_redis_up 0 and no
backlog series; the standalone exporter (`python -m maskq.service.backlog`) serves the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import redis

from maskq.local.embedded import free_port
from maskq.service.backlog import PRIORITY_SEP, UNACKED_KEY, BacklogCollector, read_backlog
from tests.observability.conftest import REPO, samples, scrape, total


def _collect(collector: BacklogCollector) -> dict:
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry()
    reg.register(collector)
    return samples(generate_latest(reg).decode())


def test_backlog_counts_queued_and_taken_messages_per_queue(redis_url):
    from maskq.service.queue import Publisher
    from maskq.settings import load_settings

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    settings = load_settings(redis_url=redis_url)
    cpu = Publisher.from_settings(settings)
    gpu = Publisher(cpu.app, "gpu")
    app = cpu.app
    try:
        for i in range(5):
            cpu.send_job(f"job-cpu-{i}")  # real Celery messages
        for i in range(2):
            gpu.send_job(f"job-gpu-{i}")
        assert r.llen("cpu") == 5
        r.lpush(f"cpu{PRIORITY_SEP}6", "{}")  # a prioritised message counts too
        # a worker took two cpu messages and one gpu message (kombu's unacked hash), one webhook
        for tag, rk in [("t1", "cpu"), ("t2", "cpu"), ("t3", "gpu"), ("t4", "webhooks")]:
            r.hset(UNACKED_KEY, tag, json.dumps([{"body": "..."}, "", rk]))
        r.hset(UNACKED_KEY, "garbage", "not json")

        got = {b.queue: (b.waiting, b.reserved, b.total) for b in read_backlog(r, ["cpu", "gpu"])}
        assert got == {"cpu": (6, 2, 8), "gpu": (2, 1, 3)}

        s = _collect(BacklogCollector(r))
        assert s[("maskq_queue_backlog_jobs", (("queue", "cpu"),))] == 8
        assert s[("maskq_queue_backlog_jobs", (("queue", "gpu"),))] == 3
        assert s[("maskq_queue_waiting_jobs", (("queue", "cpu"),))] == 6
        assert s[("maskq_queue_reserved_jobs", (("queue", "gpu"),))] == 1
        assert s[("maskq_backlog_redis_up", ())] == 1
    finally:
        app.close()
        r.close()


def test_redis_down_means_no_backlog_series_not_zero():
    t0 = time.monotonic()
    s = _collect(BacklogCollector.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    assert time.monotonic() - t0 < 2, "a scrape with Redis down must answer fast"
    assert s[("maskq_backlog_redis_up", ())] == 0
    assert not any(name == "maskq_queue_backlog_jobs" for name, _ in s)


def test_the_standalone_exporter_serves_the_backlog(redis_url, tmp_path):
    r = redis.Redis.from_url(redis_url)
    r.rpush("gpu", *[b"{}"] * 4)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "MASKQ_REDIS_URL": redis_url, "MASKQ_LOG_FORMAT": "json"}
    log = open(tmp_path / "exporter.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "maskq.service.backlog", "--port", str(port), "--host", "127.0.0.1"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        text = None
        while time.monotonic() < deadline and text is None:
            try:
                text = scrape(port)
            except OSError:
                assert proc.poll() is None, (tmp_path / "exporter.log").read_text()
                time.sleep(0.2)
        assert text is not None
        assert total(text, "maskq_queue_backlog_jobs", queue="gpu") == 4
        assert total(text, "maskq_queue_backlog_jobs", queue="cpu") == 0
        r.rpush("cpu", b"{}")
        assert total(scrape(port), "maskq_queue_backlog_jobs", queue="cpu") == 1  # read at scrape time
    finally:
        proc.terminate()
        proc.wait(10)
        r.close()
    assert proc.returncode == 0
    first = (tmp_path / "exporter.log").read_text().splitlines()[0]
    assert json.loads(first)["message"].startswith("backlog exporter on 127.0.0.1")
