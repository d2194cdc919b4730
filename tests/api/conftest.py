"""The API as a real uvicorn process on a free loopback port, over the session's real Redis and S3
(tests/conftest.py), with two tenants; and real worker processes (tests/worker/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from maskq import defaults
from maskq.local.client import Client
from maskq.local.embedded import free_port
from maskq.settings import Settings
from tests.conftest import _db_numbers, settings_env, settings_for
from tests.imagecheck import png_bytes  # noqa: F401 - the API tests import it from here
from tests.worker.conftest import FAST, WorkerProcess

REPO = defaults.REPO_ROOT
KEY_A, TENANT_A = "key-acme-0123456789", "acme"
KEY_B, TENANT_B = "key-globex-0123456789", "globex"
API_KEYS = f"{KEY_A}:{TENANT_A},{KEY_B}:{TENANT_B}"
# a loaded machine (the U-Net may train beside the tests): imports take seconds, not milliseconds
API_START_TIMEOUT = 90.0


class ApiServer:
    """``uvicorn api.main:app`` in its own process group, configured through MASKQ_* variables."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"api-{self.port}.log"
        self.env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO), "MASKQ_LOG_FORMAT": "text"}
        self.proc: subprocess.Popen | None = None

    def start(self) -> ApiServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning", "--no-access-log"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + API_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"API not up after {API_START_TIMEOUT} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def client(self, key: str = KEY_A) -> Client:
        return Client(self.url, key, timeout=30)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def api_settings(redis_server, s3_server, **overrides) -> Settings:
    """Settings on a Redis database of their own (flushed), fresh buckets, the two test keys."""
    import redis

    url = overrides.pop("redis_url", None)
    if url is None:
        url = redis_server.url_for_db(next(_db_numbers))
        r = redis.Redis.from_url(url)
        r.flushdb()
        r.close()
    values = {**FAST, "api_keys": API_KEYS, "webhook_allow_private": True, **overrides}
    return settings_for(url, s3_server, **values)


@pytest.fixture(scope="module")
def api_factory(redis_server, s3_server, tmp_path_factory) -> Iterator[Callable[..., ApiServer]]:
    """Start API servers for a module (each on its own Redis database); all stopped at its end."""
    started: list[ApiServer] = []
    log_dir = tmp_path_factory.mktemp("api")

    def start(**overrides) -> ApiServer:
        server = ApiServer(api_settings(redis_server, s3_server, **overrides), log_dir)
        started.append(server)
        return server.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def api(api_factory) -> ApiServer:
    """The module's default server (no worker: jobs stay queued unless a test starts one)."""
    return api_factory()


@pytest.fixture
def worker_for(tmp_path) -> Iterator[Callable[[ApiServer], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(server: ApiServer, **kwargs) -> WorkerProcess:
        w = WorkerProcess(server.settings, tmp_path, **kwargs)
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.stop(timeout=10)
