"""Pure pieces of the worker, without servers: signatures, Celery config, the batcher, thread sizing."""

from __future__ import annotations

import threading
import time

import pytest

from maskq.errors import ConfigurationError, InvalidParameterError
from maskq.service.queue import PROCESS_TASK, WEBHOOK_TASK, celery_config
from maskq.settings import load_settings
from worker import webhooks
from worker.batcher import Batcher
from worker.runtime import intra_op_threads

# The reference vector of the Standard Webhooks libraries (their test suites use this exact case).
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TS = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_matches_the_standard_webhooks_reference():
    assert webhooks.sign(SW_SECRET, SW_ID, SW_TS, SW_BODY) == SW_SIG


def test_verify_checks_signature_timestamp_and_id():
    h = webhooks.headers_for(SW_SECRET, SW_ID, SW_BODY, timestamp=SW_TS)
    assert h["webhook-signature"] == SW_SIG
    assert webhooks.verify(SW_SECRET, h, SW_BODY, now=SW_TS + 10)
    assert not webhooks.verify(SW_SECRET, h, SW_BODY, now=SW_TS + 3600)  # replayed an hour later
    assert not webhooks.verify(SW_SECRET, h, SW_BODY + b"x", now=SW_TS)
    assert not webhooks.verify(SW_SECRET, {**h, "webhook-id": "msg_other"}, SW_BODY, now=SW_TS)
    rotated = {**h, "webhook-signature": "v1,AAAA " + SW_SIG}  # several signatures during key rotation
    assert webhooks.verify(SW_SECRET, rotated, SW_BODY, now=SW_TS)
    assert not webhooks.verify(SW_SECRET, {"webhook-id": SW_ID}, SW_BODY, now=SW_TS)


def test_bad_secret_and_url_are_refused():
    with pytest.raises(InvalidParameterError):
        webhooks.sign("whsec_not base64!", "id", 1, b"")
    for url in ("ftp://x/y", "file:///etc/passwd", "http://", "javascript:alert(1)"):
        with pytest.raises(InvalidParameterError):
            webhooks.check_url(url)


def test_payload_is_a_typed_event():
    body = webhooks.payload({"id": "j1", "state": "failed", "finished_at": "2026-01-01T00:00:00Z"})
    assert body.startswith(b'{"data":') and b'"type":"job.failed"' in body


def test_celery_config_keeps_the_delivery_guarantees():
    s = load_settings()
    conf = celery_config(s)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    visibility = conf["broker_transport_options"]["visibility_timeout"]
    assert visibility > conf["task_time_limit"] > conf["task_soft_time_limit"]
    assert conf["task_routes"][PROCESS_TASK]["queue"] == "cpu"
    assert conf["task_routes"][WEBHOOK_TASK]["queue"] == "webhooks"
    assert conf["worker_max_memory_per_child"] == s.worker_max_memory_per_child_kb
    assert conf["worker_max_tasks_per_child"] == s.worker_max_tasks_per_child > 0  # recycled by count too
    # a worker killed while restoring must not block restores for kombu's default 5 minutes
    assert conf["broker_transport_options"]["unacked_mutex_expire"] < visibility
    gpu = celery_config(load_settings(worker_queue="gpu"))
    assert gpu["task_routes"][PROCESS_TASK]["queue"] == "gpu" and gpu["task_default_queue"] == "gpu"


def test_settings_refuse_limits_that_would_run_a_task_twice():
    with pytest.raises(ConfigurationError, match="VISIBILITY_TIMEOUT"):
        load_settings(task_time_limit=300, task_soft_time_limit=200, visibility_timeout=300)
    with pytest.raises(ConfigurationError, match="SOFT_TIME_LIMIT"):
        load_settings(task_time_limit=100, task_soft_time_limit=100)
    with pytest.raises(ConfigurationError, match="WEBHOOK_SECRET"):
        load_settings(webhook_secret="plain")


def test_intra_op_threads_split_the_cores_between_processes():
    s = load_settings()
    import os

    cores = len(os.sched_getaffinity(0))
    assert intra_op_threads(s, 1) == cores
    assert intra_op_threads(s, cores * 4) == 1
    assert intra_op_threads(load_settings(intra_op_threads=3), 2) == 3


def test_batcher_gathers_items_of_many_callers_into_few_calls():
    calls: list[int] = []

    def process_many(items):
        calls.append(len(items))
        time.sleep(0.02)  # an inference call takes time; callers pile up meanwhile
        return [("done", item) for item in items]

    b = Batcher(process_many, max_batch=8, max_wait_ms=50)
    results: dict[int, list] = {}

    def caller(i: int) -> None:
        results[i] = [b.submit((i, 0)), b.submit((i, 1))]

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[i] == [("done", (i, 0)), ("done", (i, 1))] for i in range(24))  # each gets its own
    assert sum(calls) == 48 and max(calls) <= 8
    assert len(calls) <= 16  # 48 items in batches, not 48 calls


def test_batcher_hands_a_failure_to_every_waiting_caller():
    def boom(items):
        raise RuntimeError("device lost")

    b = Batcher(boom, max_batch=4, max_wait_ms=1)
    with pytest.raises(RuntimeError, match="device lost"):
        b.submit(1)


def test_import_boundaries():
    """The layers: the API never imports ``worker``; the worker's main process (worker.app) loads no
    model runtime; worker/ never imports FastAPI; the image core never imports Celery; and only the
    service adapters (maskq/service) and the local tooling (maskq/local) use the Redis client or the
    S3 SDK directly."""
    import re
    import subprocess
    import sys

    from maskq.defaults import REPO_ROOT

    code = (
        "import sys, worker.app, maskq.service.records, maskq.service.storage, maskq.local.embedded\n"
        "bad = [m for m in ('onnxruntime', 'fastapi', 'tensorflow', 'cv2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
    raw_use = re.compile(r"^\s*(from|import) (redis|minio)\b|\.r\.[a-z]+\(|"
                         r"\.client\.(get_object|stat_object|put_object|list_objects|remove_object)\(", re.M)
    celery = re.compile(r"^\s*(from|import) celery\b", re.M)
    for path in [*(REPO_ROOT / "api").rglob("*.py"), *(REPO_ROOT / "worker").rglob("*.py"),
                 *(REPO_ROOT / "maskq").rglob("*.py")]:
        text, layer = path.read_text(), path.relative_to(REPO_ROOT).parts
        if layer[0] == "api":
            assert not re.search(r"^\s*(from|import) worker\b", text, re.M), path
        if layer[0] == "worker":
            assert "fastapi" not in text, path
        if layer[0] == "maskq" and layer[1] not in ("service", "local"):
            assert not celery.search(text), path
        if layer[:2] not in (("maskq", "service"), ("maskq", "local")):
            assert not raw_use.search(text), (path, raw_use.search(text))
