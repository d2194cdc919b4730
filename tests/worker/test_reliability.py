"""Failure tests with real processes: workers SIGKILLed mid-run, S3 stopped, Redis restarted."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from maskq.local.embedded import RedisServer, S3Server
from maskq.service.records import JobState
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY, object_keys
from tests.worker.conftest import make_client, needs_model, png_bytes

pytestmark = [needs_model, pytest.mark.slow]

# 200 as the issue asks; MASKQ_TEST_KILL_JOBS scales it down on a slow machine (the run takes ~1 min
# for 200 on 2 idle cores, most of it the visibility timeout that brings a killed worker's jobs back).
KILL_JOBS = int(os.environ.get("MASKQ_TEST_KILL_JOBS", "200"))


def _succeeded(c, ids) -> int:
    pipe = c.jobs.r.pipeline(transaction=False)
    for i in ids:
        pipe.hget(c.jobs.job_key(i), "state")
    return sum(1 for s in pipe.execute() if s == "succeeded")


def _wait_progress(c, ids, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _succeeded(c, ids) < target:
        if time.monotonic() > deadline:
            pytest.fail(f"no progress: {_succeeded(c, ids)} < {target} after {timeout} s")
        time.sleep(0.1)


def test_sigkilled_workers_lose_nothing_and_duplicate_nothing(redis_url, s3_server, start_worker):
    """KILL_JOBS jobs; one pool child SIGKILLed, then the whole worker SIGKILLed twice and restarted:
    every job succeeds, with exactly one result object each."""
    c = make_client(redis_url, s3_server, visibility_timeout=12, task_soft_time_limit=8, task_time_limit=10,
                    max_lost_attempts=10, lost_sweep_seconds=2, lost_grace_seconds=3)
    # The poison budget (tested in test_worker.py) is raised here: a restored job can be caught by the
    # next kill too, and that is not what this test is about.
    data = [png_bytes(48, 36, seed=i % 7) for i in range(KILL_JOBS)]
    ids = [c.submit(d, "mask") for d in data]
    w = start_worker(c.settings)
    step = max(5, KILL_JOBS // 8)

    _wait_progress(c, ids, step, timeout=120)
    children = w.children()
    assert children, "no pool children to kill"
    os.kill(children[0], signal.SIGKILL)  # 1: one pool process dies mid-task (OOM killer style)

    for _ in range(2):  # 2 and 3: the whole worker dies (node lost), and comes back
        _wait_progress(c, ids, _succeeded(c, ids) + step, timeout=120)
        w.kill()
        w.start()

    jobs = c.wait(ids, timeout=240, poll=0.5)
    states = Counter(j.state.value for j in jobs.values())
    assert states == {"succeeded": KILL_JOBS}, states
    keys = object_keys(c.storage, c.storage.result_bucket, "t1/")
    per_job = Counter(k.split("/")[1] for k in keys)
    assert len(keys) == KILL_JOBS and set(per_job) == set(ids) and set(per_job.values()) == {1}
    # the kills really interrupted work: some jobs ran more than once, and were recorded once
    attempts, lost = sum(j.attempts for j in jobs.values()), sum(j.lost_attempts for j in jobs.values())
    print(f"{KILL_JOBS} jobs: {attempts} attempts, {lost} lost to kills, worker started {w.starts} times")
    assert attempts > KILL_JOBS
    assert any(j.lost_attempts for j in jobs.values())
    c.close()


def test_a_job_whose_message_was_lost_is_sent_again(redis_url, s3_server, start_worker):
    """kombu's window: a worker took the message off the list and died before recording it as
    unacked. Here the record is written with no message at all: the sweep finds it and sends one."""
    c = make_client(redis_url, s3_server, lost_sweep_seconds=1, lost_grace_seconds=1)
    from maskq.service.records import new_job_id

    jid = new_job_id()
    c.create(jid, c.put_input(jid, png_bytes()))
    w = start_worker(c.settings)
    job = c.wait([jid], timeout=60)[jid]
    assert job.state is JobState.SUCCEEDED and job.attempts == 1
    assert "its task message was lost" in w.log_text()
    c.close()


def test_s3_outage_retries_then_storage_unavailable_and_recovers(redis_url, tmp_path, start_worker):
    s3 = S3Server(S3_ACCESS_KEY, S3_SECRET_KEY, workdir=tmp_path / "s3").start()
    try:
        c = make_client(redis_url, s3, task_max_retries=4, retry_backoff_seconds=0.5, retry_backoff_max_seconds=1.5)
        start_worker(c.settings)
        ok = c.submit(png_bytes(), "mask")
        assert c.wait([ok], timeout=60)[ok].state is JobState.SUCCEEDED

        # inputs are stored, then S3 goes away before the workers read them
        pending = []
        for _ in range(3):
            from maskq.service.records import new_job_id

            jid = new_job_id()
            pending.append((jid, c.put_input(jid, png_bytes())))
        s3.stop()
        t0 = time.monotonic()
        for jid, keys in pending:
            c.create(jid, keys)
            c.enqueue(jid)
        seen_retrying = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            jobs = [c.jobs.get(j) for j, _ in pending]
            seen_retrying |= any(j.state is JobState.QUEUED and j.error_code == "storage_unavailable"
                                 for j in jobs)
            if all(j.state.is_terminal for j in jobs):
                break
            time.sleep(0.05)
        jobs = [c.jobs.get(j) for j, _ in pending]
        assert seen_retrying, "the retry was never visible on the record"
        for job in jobs:
            assert job.state is JobState.FAILED and job.error_code == "storage_unavailable", job
            assert job.attempts == c.settings.task_max_retries + 1
        assert time.monotonic() - t0 < 60

        # S3 back on the same port: new jobs succeed with the same workers
        s3.start()
        jid = c.submit(png_bytes(), "mask")
        assert c.wait([jid], timeout=60)[jid].state is JobState.SUCCEEDED
        c.close()
    finally:
        s3.cleanup()


def test_s3_back_within_the_retry_budget_the_job_succeeds(redis_url, tmp_path, start_worker):
    s3 = S3Server(S3_ACCESS_KEY, S3_SECRET_KEY, workdir=tmp_path / "s3").start()
    try:
        c = make_client(redis_url, s3, task_max_retries=8, retry_backoff_seconds=1, retry_backoff_max_seconds=3)
        start_worker(c.settings)
        from maskq.service.records import new_job_id

        jid = new_job_id()
        keys = c.put_input(jid, png_bytes())
        s3.stop()
        c.create(jid, keys)
        c.enqueue(jid)
        deadline = time.monotonic() + 30
        while c.jobs.get(jid).error_code != "storage_unavailable":
            assert time.monotonic() < deadline, "no retry recorded"
            time.sleep(0.05)
        s3.start()
        job = c.wait([jid], timeout=90)[jid]
        assert job.state is JobState.SUCCEEDED and job.attempts >= 2
        c.close()
    finally:
        s3.cleanup()


def test_redis_restart_worker_reconnects(s3_server, tmp_path, start_worker):
    redis = RedisServer(workdir=tmp_path / "redis").start()
    try:
        c = make_client(redis.url, s3_server)
        w = start_worker(c.settings)
        first = c.submit(png_bytes(), "mask")
        assert c.wait([first], timeout=60)[first].state is JobState.SUCCEEDED

        redis.stop()
        time.sleep(2)
        redis.start()  # same port, empty (no persistence): the worker must reconnect by itself
        jid = c.submit(png_bytes(), "mask")
        job = c.wait([jid], timeout=90)[jid]
        assert job.state is JobState.SUCCEEDED
        assert w.alive and w.starts == 1
        c.close()
    finally:
        redis.cleanup()


def test_redis_killed_while_a_job_runs_the_worker_survives_and_the_job_ends(s3_server, tmp_path, start_worker):
    """Redis SIGKILLed (append-only file, as `maskq up` runs it) while an acks-late job runs: the worker
    reconnects instead of exiting (Celery 5.7.0's reconnect crashed it: worker/consumer.py), and the
    job, kept by Redis, ends succeeded."""
    redis = RedisServer(workdir=tmp_path / "redis", persistent=True).start()
    try:
        c = make_client(redis.url, s3_server, task_soft_time_limit=90, task_time_limit=100, visibility_timeout=120,
                        worker_heartbeat_seconds=1, worker_dead_after_seconds=3)
        w = start_worker(c.settings, concurrency=1)
        jid = c.submit(_slow_jpeg(), "blur", {"format": "png"}, extension="jpg")
        deadline = time.monotonic() + 60
        while c.jobs.get(jid).state is not JobState.RUNNING:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        redis.kill()
        time.sleep(1)
        redis.start()
        job = c.wait([jid], timeout=120)[jid]
        assert job.state is JobState.SUCCEEDED, job
        assert w.alive and w.starts == 1, w.log_text()[-3000:]
        nxt = c.submit(png_bytes(), "mask")
        assert c.wait([nxt], timeout=60)[nxt].state is JobState.SUCCEEDED
        c.close()
    finally:
        redis.cleanup()


def _slow_jpeg(width: int = 7000, height: int = 5000) -> bytes:
    """A smooth picture (the JPEG stays small) large enough to keep a worker busy for seconds."""
    import io

    import numpy as np
    from PIL import Image

    big = io.BytesIO()
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:height, None], np.float32(128)), -1).astype(np.uint8)
    Image.fromarray(pixels).save(big, "JPEG", quality=80)
    return big.getvalue()


def test_a_dead_workers_running_job_resumes_long_before_the_visibility_timeout(redis_url, s3_server, start_worker):
    """The whole worker is SIGKILLed while its job runs: its heartbeat lapses, and a new worker runs
    the job again within seconds, while kombu would give the message back only after 300 s."""
    c = make_client(redis_url, s3_server, visibility_timeout=300, task_soft_time_limit=90, task_time_limit=100,
                    lost_sweep_seconds=0, worker_heartbeat_seconds=1, worker_dead_after_seconds=3)
    w = start_worker(c.settings, concurrency=1)
    jid = c.submit(_slow_jpeg(), "blur", {"format": "png"}, extension="jpg")
    deadline = time.monotonic() + 60
    while c.jobs.get(jid).state is not JobState.RUNNING:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    w.kill()
    t0 = time.monotonic()
    w2 = start_worker(c.settings, concurrency=1)
    job = c.wait([jid], timeout=120)[jid]
    assert job.state is JobState.SUCCEEDED and job.attempts == 2 and job.lost_attempts == 1, job
    assert time.monotonic() - t0 < 120 and "stopped beating; sent again" in w2.log_text()
    c.close()


def test_soft_time_limit_fails_the_job_as_timeout_and_the_worker_goes_on(redis_url, s3_server, start_worker):
    """A 35 MP image with a 1 s soft limit: the job fails `timeout`, the next small one succeeds."""
    c = make_client(redis_url, s3_server, task_soft_time_limit=1, task_time_limit=20, visibility_timeout=30)
    w = start_worker(c.settings)
    slow = c.submit(_slow_jpeg(), "blur", {"format": "png"}, extension="jpg")  # 35 MP, under the 50 MP limit
    job = c.wait([slow], timeout=90)[slow]
    assert job.state is JobState.FAILED and job.error_code == "timeout", job
    nxt = c.submit(png_bytes(), "mask")
    assert c.wait([nxt], timeout=60)[nxt].state is JobState.SUCCEEDED
    assert w.alive
    c.close()
