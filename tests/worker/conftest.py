"""Real worker processes (``celery -A worker.app worker``) against the real servers, and helpers to
submit jobs the way the API does (input to S3, record to Redis, task by name)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from maskq import defaults
from maskq.models import DEFAULT_MODEL, MODELS
from maskq.service.records import Job, JobStore
from maskq.service.storage import Storage
from maskq.settings import Settings
from tests.conftest import settings_env, settings_for
from tests.imagecheck import png_bytes  # noqa: F401 - the worker tests import it from here

REPO = defaults.REPO_ROOT
MODEL = defaults.MODELS_DIR / MODELS[DEFAULT_MODEL].files["fp32"]
needs_model = pytest.mark.skipif(not MODEL.exists(), reason=f"{MODEL} is missing: train and export the U-Net first")
# A loaded machine (the U-Net may train beside the tests) needs slack: a worker start is ~3 s idle.
WORKER_START_TIMEOUT = 120.0
# Short limits for tests: a 64 px image takes ~0.2 s; the visibility timeout bounds how long a job
# held by a SIGKILLed worker waits before another worker gets it.
FAST = {
    "task_soft_time_limit": 20,
    "task_time_limit": 25,
    "visibility_timeout": 30,
    "broker_restore_interval": 1,
    "retry_backoff_seconds": 0.3,
    "retry_backoff_max_seconds": 2,
    "webhook_backoff_seconds": 0.2,
    "webhook_backoff_max_seconds": 1,
    "s3_connect_timeout": 1.0,
    "s3_read_timeout": 5.0,
    "s3_http_retries": 0,
    # the tests' webhook receivers listen on 127.0.0.1, which delivery refuses unless this is on
    "webhook_allow_private": True,
}
_names = itertools.count()


def _die_with_parent() -> None:  # pragma: no cover - runs between fork and exec
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
    except Exception:  # noqa: BLE001
        pass


class WorkerProcess:
    """One ``celery worker`` in its own process group (so a SIGKILL takes its pool children too)."""

    def __init__(self, settings: Settings, log_dir: Path, *, concurrency: int = 2, pool: str = "prefork",
                 queues: str | None = None, env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.concurrency = concurrency
        self.pool = pool
        self.queues = queues or f"{settings.worker_queue},{defaults.QUEUE_WEBHOOKS}"
        self.env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO), **(env or {})}
        self.name = f"w{next(_names)}-{os.getpid()}"
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = WORKER_START_TIMEOUT) -> WorkerProcess:
        self.starts += 1
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", self.queues,
                 "-c", str(self.concurrency), "-P", self.pool, "-n", f"{self.name}@127.0.0.1", "--loglevel=INFO",
                 "--without-mingle", "--without-gossip", "--without-heartbeat"],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + timeout
        need_models = self.concurrency if self.pool == "prefork" else 1
        while time.monotonic() < deadline:
            text = self.log_text(offset)
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{text[-3000:]}")
            if " ready." in text and text.count("model loaded") >= need_models:
                return self
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log_text(offset)[-3000:]}")

    def log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def children(self) -> list[int]:
        """The pool's child processes (prefork)."""
        assert self.proc is not None
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group: the main process and its pool children die at once."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for whatever is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers for one test; all of them are stopped at its end, whatever happened."""
    started: list[WorkerProcess] = []

    def start(settings: Settings, **kwargs) -> WorkerProcess:
        w = WorkerProcess(settings, tmp_path, **kwargs)
        started.append(w)
        return w.start()

    yield start
    for w in started:
        w.stop(timeout=10)


class Client:
    """Submits jobs the way the API does: input to S3 first, then the record, then the task."""

    def __init__(self, settings: Settings, jobs: JobStore, storage: Storage) -> None:
        from maskq.service.queue import Publisher

        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.publisher = Publisher.from_settings(settings)
        self.celery = self.publisher.app

    def put_input(self, job_id: str, data: bytes, tenant: str = "t1", extension: str = "png") -> str:
        return self.storage.put_input(tenant, job_id, data, extension=extension)

    def submit(self, data: bytes, operation: str = "mask", params: dict | None = None, *,
               tenant: str = "t1", extension: str = "png", webhook_url: str | None = None,
               input_key: str | None = None, job_id: str | None = None) -> str:
        from maskq.service.records import new_job_id

        job_id = job_id or new_job_id()
        key = input_key or self.put_input(job_id, data, tenant, extension)
        self.create(job_id, key, operation, params, tenant=tenant, webhook_url=webhook_url)
        self.publisher.send_job(job_id)
        return job_id

    def create(self, job_id: str, key: str, operation: str = "mask", params: dict | None = None, *,
               tenant: str = "t1", webhook_url: str | None = None) -> Job:
        return self.jobs.create(tenant, operation, params or {}, key, job_id=job_id, webhook_url=webhook_url)[0]

    def enqueue(self, job_id: str) -> None:
        self.publisher.send_job(job_id)

    def wait(self, ids: list[str], timeout: float = 120.0, poll: float = 0.2) -> dict[str, Job]:
        """Until every job is terminal; fails with the states seen when the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = {i: self.jobs.get(i) for i in ids}
            if all(j is not None and j.state.is_terminal for j in jobs.values()):
                return jobs  # type: ignore[return-value]
            if time.monotonic() > deadline:
                states = {i: (j.state.value if j else None) for i, j in jobs.items()}
                pytest.fail(f"jobs not finished after {timeout} s: {states}")
            time.sleep(poll)

    def close(self) -> None:
        self.celery.close()


def make_client(redis_url: str, s3, **overrides) -> Client:
    settings = settings_for(redis_url, s3, **{**FAST, **overrides})
    jobs = JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds)
    storage = Storage.from_settings(settings)
    storage.ensure_buckets()
    return Client(settings, jobs, storage)


@pytest.fixture
def client(redis_url: str, s3_server) -> Iterator[Client]:
    c = make_client(redis_url, s3_server)
    yield c
    c.close()
