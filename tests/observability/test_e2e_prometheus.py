"""End to end: a real Prometheus (Debian's package, 127.0.0.1, 1 s scrapes, the deploy's rules)
scrapes the API (uvicorn), the backlog exporter and a prefork worker while real jobs go through
`POST /v1/jobs`; PromQL through Prometheus' HTTP API sees the backlog rise with no worker, fall to
zero once one starts, and counts every job enqueued, finished and failed. The request id sent to
the API comes out on the worker's last log line for the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from maskq.local.embedded import free_port
from tests.conftest import settings_env
from tests.observability.conftest import REPO, RULES, needs_prometheus
from tests.worker.conftest import make_client, needs_model, png_bytes

pytestmark = [needs_prometheus, needs_model]

API_KEY = "obs-test-key-0123456789"
HAVE_API = (REPO / "api" / "main.py").exists()


def _multipart(fields: dict[str, str], image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="in.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class Api:
    """``uvicorn api.main:app`` on a free loopback port."""

    def __init__(self, env: dict[str, str], log_path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-access-log"],
            cwd=REPO, env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"API did not start:\n{log_path.read_text()[-3000:]}") from None
                time.sleep(0.2)

    def submit(self, image: bytes, operation: str, request_id: str | None = None) -> str:
        body, ctype = _multipart({"operation": operation}, image)
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": ctype}
        if request_id:
            headers["X-Request-ID"] = request_id
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/v1/jobs", data=body, headers=headers,
                                     method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
            if request_id:
                assert resp.headers.get("X-Request-ID") == request_id
            return json.loads(resp.read())["id"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def test_prometheus_sees_backlog_throughput_and_failures(redis_url, s3_server, start_worker, prometheus_factory,
                                                         tmp_path):
    wport, eport = free_port(), free_port()
    c = make_client(redis_url, s3_server, worker_metrics_port=wport, worker_metrics_host="127.0.0.1",
                    api_keys=f"{API_KEY}:t1", log_format="json")
    env = {**os.environ, **settings_env(c.settings), "PYTHONPATH": str(REPO)}

    exporter = subprocess.Popen([sys.executable, "-m", "maskq.service.backlog", "--port", str(eport),
                                 "--host", "127.0.0.1"],
                                cwd=REPO, env=env, stdout=open(tmp_path / "exporter.log", "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
    api = Api(env, tmp_path / "api.log") if HAVE_API else None
    try:
        targets = {"maskq-backlog": [f"127.0.0.1:{eport}"], "maskq-worker-cpu": [f"127.0.0.1:{wport}"]}
        if api:
            targets["maskq-api"] = [f"127.0.0.1:{api.port}"]
        prom = prometheus_factory(targets, [RULES])

        # 1. jobs arrive while no worker runs: the backlog is what Prometheus sees
        def submit(image: bytes, operation: str, request_id: str | None = None) -> str:
            return api.submit(image, operation, request_id) if api else c.submit(image, operation)

        good = [submit(png_bytes(56, 40, seed=i), "mask", request_id=f"req-e2e-{i}") for i in range(6)]
        truncated = png_bytes(56, 40, seed=99)
        truncated = truncated[: len(truncated) // 2]  # a valid header (the API's cheap check), no pixels
        bad = [submit(truncated, "remove") for _ in range(2)]
        if api:  # and one the API refuses at the door: counted as a rejection, never queued
            with pytest.raises(urllib.error.HTTPError) as refused:
                api.submit(b"plain text, not an image", "mask")
            reason = str(refused.value.code)
        backlog = 'max(maskq_queue_backlog_jobs{job="maskq-backlog", queue="cpu"})'
        assert prom.wait_value(backlog, 8) == 8
        assert prom.value('max(maskq_queue_backlog_jobs{job="maskq-backlog", queue="gpu"})') == 0
        assert prom.wait_value('up{job="maskq-worker-cpu"}', 0) == 0
        if api:  # the API exports the same signal (what the deploy's KEDA reads)
            assert prom.wait_value('max(maskq_queue_backlog_jobs{job="maskq-api", queue="cpu"})', 8) == 8
            assert prom.wait_value('sum(maskq_jobs_enqueued_total{job="maskq-api"})', 8) == 8
            assert prom.wait_value('sum(maskq_http_requests_total{route="/v1/jobs", method="POST", status="202"})',
                                   8) == 8
            assert prom.wait_value(f'sum(maskq_http_rejections_total{{reason="{reason}"}})', 1) == 1

        # 2. a prefork worker drains it
        mp_dir = tmp_path / "multiproc"
        mp_dir.mkdir()
        w = start_worker(c.settings, concurrency=2, env={"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)})
        jobs = c.wait(good + bad, timeout=90)
        assert all(jobs[j].state.value == "succeeded" for j in good)
        assert all(jobs[j].state.value == "failed" for j in bad)
        code = jobs[bad[0]].error_code

        assert prom.wait_value('sum(maskq_jobs_finished_total{job="maskq-worker-cpu"})', 8) == 8
        assert prom.value('sum(maskq_jobs_finished_total{state="succeeded", operation="mask"})') == 6
        assert prom.value(f'sum(maskq_job_failures_total{{code="{code}", operation="remove"}})') == 2
        assert prom.wait_value(backlog, 0) == 0
        assert prom.value('sum(maskq_worker_processes{queue="cpu"})') == 2
        assert prom.value('count(maskq_model_info{model="general", precision="fp32"})') == 1
        assert prom.value('sum(maskq_job_stage_seconds_count{stage="inference"})') == 6
        assert prom.value('sum(maskq_job_queue_wait_seconds_count)') == 8
        # the recording rules evaluate over the scraped data
        assert prom.wait_value('count(maskq:queue_backlog_jobs:max)', 2, timeout=40) == 2

        # 3. the request id given to the API is on the worker's lines for that job, to the last one
        if api:
            lines = [json.loads(x) for x in w.log_text().splitlines() if x.startswith("{")]
            for i, jid in enumerate(good):
                mine = [x for x in lines if x.get("job_id") == jid]
                assert mine and mine[-1]["message"] == "task done", mine
                assert all(x.get("request_id") == f"req-e2e-{i}" and x.get("tenant") == "t1" for x in mine), mine
            api_lines = [json.loads(x) for x in (tmp_path / "api.log").read_text().splitlines() if x.startswith("{")]
            assert any(x.get("request_id") == "req-e2e-0" and x.get("job_id") == good[0] for x in api_lines), \
                api_lines[-5:]
    finally:
        if api:
            api.stop()
        exporter.terminate()
        exporter.wait(10)
        c.close()
