"""Pure pieces of the API, and the import rule: the API never loads ONNX Runtime or TensorFlow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from api.errors import validation_error
from maskq import defaults
from maskq.errors import BacklogFullError, InvalidParameterError, NotFoundError
from maskq.local.client import error_from
from maskq.service.webhook_address import check_url as check_webhook_url

_IMPORTS = ("import sys, json, api.main; "
            "print(json.dumps(sorted(m for m in ('onnxruntime', 'tensorflow', 'cv2', 'fastapi') if m in sys.modules)))")


def _loaded_by_api() -> list[str]:
    out = subprocess.run([sys.executable, "-c", _IMPORTS], cwd=defaults.REPO_ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(defaults.REPO_ROOT)}, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_api_never_imports_onnxruntime_or_tensorflow() -> None:
    loaded = _loaded_by_api()
    assert "fastapi" in loaded
    assert "onnxruntime" not in loaded and "tensorflow" not in loaded


def test_api_never_imports_cv2() -> None:
    # the API image has no OpenCV: importing it must not need it (maskq.params is pydantic only)
    loaded = _loaded_by_api()
    assert "cv2" not in loaded and "maskq.ops" not in loaded and "fpng" not in loaded


def test_webhook_url_rules() -> None:
    assert check_webhook_url("https://8.8.8.8/hook", allow_private=False)  # a literal: no DNS query, no traffic
    with pytest.raises(InvalidParameterError):  # documentation range (TEST-NET-3): not global
        check_webhook_url("https://203.0.113.7/hook", allow_private=False)
    for url in ("http://127.0.0.1/h", "http://[::ffff:127.0.0.1]/h", "http://0.0.0.0/h", "http://10.0.0.1/h"):
        with pytest.raises(InvalidParameterError):
            check_webhook_url(url, allow_private=False)
    assert check_webhook_url("http://127.0.0.1:9/h", allow_private=True)
    for url in ("ftp://x/y", "javascript:alert(1)", "http:///nohost", "http://[bad/"):
        with pytest.raises(InvalidParameterError):
            check_webhook_url(url, allow_private=True)


def test_validation_error_names_the_field() -> None:
    err = validation_error([{"loc": ("body", "params", "strength"), "msg": "Value error, too big"}])
    assert err.field == "params.strength" and err.message == "params.strength: too big"
    assert validation_error([{"loc": ("query", "limit"), "msg": "bad"}]).field == "limit"


def test_client_maps_error_bodies_to_classes() -> None:
    e = error_from(404, b'{"error": {"code": "not_found", "message": "job x not found"}}')
    assert isinstance(e, NotFoundError) and e.status == 404
    e = error_from(429, b'{"error": {"code": "backlog_full", "message": "m", "details": {"retry_after": 30}}}',
                   {"Retry-After": "30"})
    assert isinstance(e, BacklogFullError) and e.retry_after == 30
    e = error_from(422, b'{"error": {"code": "invalid_parameter", "message": "m", "details": {"field": "x"}}}')
    assert isinstance(e, InvalidParameterError) and e.field == "x"
    e = error_from(418, b'{"error": {"code": "teapot", "message": "short and stout"}}')
    assert e.code == "teapot" and e.status == 418
    assert error_from(502, b"<html>bad gateway</html>").code == "internal"


def test_backlog_guard_caches_and_counts_what_it_sent(redis_url) -> None:
    import redis

    from maskq.service.backlog import BacklogGuard

    r = redis.Redis.from_url(redis_url, decode_responses=True)
    now = [100.0]
    guard = BacklogGuard(r, "cpu", limit=5, cache_seconds=1.0, clock=lambda: now[0])
    r.rpush("cpu", "m1", "m2")
    r.hset("unacked", mapping={"t1": json.dumps([{}, "", "cpu"]), "t2": json.dumps([{}, "", "webhooks"])})
    assert guard.current() == 3
    r.rpush("cpu", "m3")
    assert guard.current() == 3 and guard.fresh()  # cached within the period
    guard.note_enqueued(2)
    assert guard.current() == 5
    now[0] += 1.5
    assert not guard.fresh() and guard.current() == 4  # re-read from Redis
    r.close()


def test_cancel_queued_is_refused_once_running_and_events_round_trip(job_store) -> None:
    from maskq.service.records import Job, JobState

    job, _ = job_store.create("t", "mask", {}, "t/a/input.png", webhook_url="http://h/x",
                              webhook_events=["job.canceled"])
    assert Job.from_hash(job.to_hash()).webhook_events == ["job.canceled"]
    assert job_store.get(job.id).webhook_events == ["job.canceled"]
    running, _ = job_store.create("t", "mask", {}, "t/b/input.png")
    job_store.mark_running(running.id)
    t = job_store.cancel_queued(running.id)
    assert not t.applied and t.previous is JobState.RUNNING and job_store.get(running.id).state is JobState.RUNNING
    t = job_store.cancel_queued(job.id)
    assert t.applied and t.job.state is JobState.CANCELED and t.job.finished_at is not None
    assert not job_store.cancel_queued(job.id).applied
