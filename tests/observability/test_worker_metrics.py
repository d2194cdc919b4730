"""A real prefork worker (2 children, the real model) with PROMETHEUS_MULTIPROC_DIR: the exposition
parses with prometheus_client's parser and follows the naming conventions, the counts are right,
they stay right after a child is SIGKILLed (and its live gauges go), and the JSON log lines carry
the job id, tenant and request id from the sender to the worker's last line."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from maskq import logging as mlog
from maskq.local.embedded import free_port
from maskq.service.records import JobState
from tests.observability.conftest import samples, scrape, total
from tests.worker.conftest import make_client, needs_model, png_bytes

pytestmark = [needs_model]

STAGES = {"download", "decode", "inference", "upsample", "operation", "encode", "upload"}


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _wait(pred, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_prefork_metrics_survive_a_killed_child_and_logs_follow_the_job(redis_url, s3_server, start_worker,
                                                                        tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    mp_dir = tmp_path / "multiproc"
    mp_dir.mkdir()
    (mp_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's file: cleaned at start
    c = make_client(redis_url, s3_server, worker_metrics_port=port, worker_metrics_host="127.0.0.1")
    w = start_worker(c.settings, concurrency=2, env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir),
                                                     "MASKQ_LOG_FORMAT": "json"})
    assert not (mp_dir / "counter_999999.db").exists()

    # six jobs: five good, one bad image; the first one is sent inside a request's log context
    with mlog.bind(request_id="req-0123", tenant="t1"):
        traced = c.submit(png_bytes(64, 48, seed=1), "mask")
    ids = [traced] + [c.submit(png_bytes(64, 48, seed=i), "remove") for i in range(2, 6)]
    bad = c.submit(b"this is not an image", "mask", tenant="t2")
    jobs = c.wait(ids + [bad], timeout=90)
    assert all(jobs[i].state is JobState.SUCCEEDED for i in ids)
    code = jobs[bad].error_code
    assert jobs[bad].state is JobState.FAILED and code == "unsupported_format"

    text = _wait(lambda: (t := scrape(port)) and total(t, "maskq_jobs_finished_total") == 6 and t,
                 what="6 finished jobs in /metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # names and types after Prometheus' conventions (the parser strips _total from counter names)
    for name, typ in {"maskq_jobs_finished": "counter", "maskq_job_failures": "counter",
                      "maskq_tasks": "counter", "maskq_images": "counter",
                      "maskq_job_stage_seconds": "histogram", "maskq_job_queue_wait_seconds": "histogram",
                      "maskq_task_seconds": "histogram", "maskq_inference_batch_size": "histogram",
                      "maskq_worker_busy_processes": "gauge", "maskq_worker_processes": "gauge",
                      "maskq_model_info": "gauge", "maskq_mask_confidence": "histogram"}.items():
        assert name in families, f"{name} missing from the exposition"
        assert families[name].type == typ, (name, families[name].type)
    for fam in families.values():
        if fam.name.startswith("maskq_"):
            if fam.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in fam.samples), fam.name
            assert not any(u in fam.name for u in ("_ms", "milliseconds", "_minutes")), fam.name

    assert total(text, "maskq_jobs_finished_total", state="succeeded", queue="cpu") == 5
    assert total(text, "maskq_jobs_finished_total", state="failed", operation="mask") == 1
    assert total(text, "maskq_job_failures_total", code=code) == 1
    assert total(text, "maskq_job_queue_wait_seconds_count") == 6
    stages = {dict(ls)["stage"] for (n, ls), v in samples(text).items() if n == "maskq_job_stage_seconds_count" and v}
    assert stages == STAGES, stages
    assert total(text, "maskq_job_stage_seconds_count", stage="inference") == 5  # the bad image never got there
    assert total(text, "maskq_inference_batch_size_sum") == 6
    # every segmented result's mask confidence, by model, each in [0, 1]
    assert total(text, "maskq_mask_confidence_count", model="general") == 5
    assert 0 <= total(text, "maskq_mask_confidence_sum", model="general") <= 5
    assert total(text, "maskq_worker_processes") == 2
    assert total(text, "maskq_worker_busy_processes") == 0
    info = [dict(ls) for (n, ls), v in samples(text).items() if n == "maskq_model_info" and v == 1]
    assert {(i["model"], i["runtime"], i["precision"]) for i in info} == {("general", "onnxruntime-cpu", "fp32")}

    # SIGKILL one child: no hook runs in it; the pool replaces it; nothing it counted is lost
    before = w.children()
    assert len(before) == 2
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: victim not in w.children() and len(w.children()) == 2
          and w.log_text().count("model loaded") >= 3, what="a replacement child")
    text = _wait(lambda: (t := scrape(port)) and total(t, "maskq_worker_processes") == 2 and t,
                 what="the dead child's live gauge to go")
    assert total(text, "maskq_jobs_finished_total") == 6
    assert total(text, "maskq_job_stage_seconds_count", stage="download") == 6
    assert total(text, "maskq_inference_batch_size_sum") == 6
    assert not list(mp_dir.glob(f"*_{victim}.db")), "the dead child's files were not folded"
    assert list(mp_dir.glob("counter_archive.db")) or total(text, "maskq_jobs_finished_total") == 6

    more = [c.submit(png_bytes(48, 48, seed=10 + i), "mask") for i in range(4)]
    assert all(j.state is JobState.SUCCEEDED for j in c.wait(more, timeout=90).values())
    text = _wait(lambda: (t := scrape(port)) and total(t, "maskq_jobs_finished_total") == 10 and t,
                 what="10 finished jobs after the kill")
    assert total(text, "maskq_job_stage_seconds_count", stage="download") == 10
    assert total(text, "maskq_jobs_finished_total", state="succeeded") == 9
    assert total(text, "maskq_worker_busy_processes") == 0

    # logs: one JSON object a line; the traced job's lines carry request id, job id and tenant
    lines = _json_lines(w.log_text())
    assert lines, "no JSON log lines"
    mine = [entry for entry in lines if entry.get("job_id") == traced]
    assert [m["message"] for m in mine][-1] == "task done", [m["message"] for m in mine]
    assert {m["message"] for m in mine} >= {"task started", "job succeeded", "task done"}
    for m in mine:
        assert m["tenant"] == "t1" and m["request_id"] == "req-0123", m
    last = mine[-1]
    assert last["outcome"] == "succeeded" and last["duration_seconds"] > 0
    done = next(m for m in mine if m["message"] == "job succeeded")
    assert 0 <= done["confidence"] <= 1 and isinstance(done["review"], bool), done
    # a message sent without a context still gets its tenant (from the record) on every line
    for jid, tenant in [(ids[1], "t1"), (bad, "t2")]:
        theirs = [entry for entry in lines if entry.get("job_id") == jid]
        assert theirs and all(entry.get("tenant") == tenant for entry in theirs), theirs
        assert "request_id" not in theirs[-1]
    failed_line = next(entry for entry in lines if entry.get("job_id") == bad and entry["message"] == "job failed")
    assert failed_line["error_code"] == code
    c.close()


def test_threads_pool_reports_its_threads_as_slots(redis_url, s3_server, start_worker):
    """No multiprocess folder: the threads pool counts in its one process; slots = threads."""
    port = free_port()
    c = make_client(redis_url, s3_server, worker_queue="gpu", worker_batching=True, batch_wait_ms=20,
                    worker_metrics_port=port, worker_metrics_host="127.0.0.1")
    start_worker(c.settings, pool="threads", concurrency=3)
    ids = [c.submit(png_bytes(48, 40, seed=i), "mask") for i in range(5)]
    assert all(j.state is JobState.SUCCEEDED for j in c.wait(ids, timeout=90).values())
    text = _wait(lambda: (t := scrape(port)) and total(t, "maskq_jobs_finished_total") == 5 and t,
                 what="5 finished jobs")
    assert total(text, "maskq_worker_processes", queue="gpu") == 3
    assert total(text, "maskq_worker_busy_processes") == 0
    assert total(text, "maskq_jobs_finished_total", queue="gpu", state="succeeded") == 5
    assert total(text, "maskq_inference_batch_size_sum") == 5
    c.close()
