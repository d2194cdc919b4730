"""Shared fixtures: the real servers (Redis, S3) the whole suite uses, started once per session by
:mod:`maskq.local.embedded` (the same code as `maskq up` and the demo), and clean state per test.

* ``redis_server`` / ``s3_server``: session-scoped, started on first use only (a test module that
  needs neither pays nothing).
* ``redis_url``: a database of its own per test, flushed first (rq's trick: no key of one test is
  seen by the next).
* ``settings``: Settings pointing at both servers with buckets unique to the test.
* ``job_store`` / ``storage``: the adapters over them.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from maskq.local.embedded import RedisServer, S3Server
from maskq.settings import Settings, load_settings

S3_ACCESS_KEY = "maskq-test"
S3_SECRET_KEY = "maskq-test-secret-0123456789"
_db_numbers = itertools.cycle(range(1, 64))  # db 0 stays free for whoever shares the server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(workdir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(S3_ACCESS_KEY, S3_SECRET_KEY, workdir=tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    url = redis_server.url_for_db(next(_db_numbers))
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def settings_for(redis_url: str, s3: S3Server, **overrides: object) -> Settings:
    """Settings for one test: the given servers, fresh bucket names, and any overrides."""
    suffix = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "redis_url": redis_url,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "input_bucket": f"in-{suffix}",
        "result_bucket": f"out-{suffix}",
    }
    values.update(overrides)
    return load_settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The MASKQ_* environment that makes a child process (a worker) load these same settings."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[f"MASKQ_{name.upper()}"] = str(value)
    return env


@pytest.fixture
def settings(redis_url: str, s3_server: S3Server) -> Settings:
    return settings_for(redis_url, s3_server)


@pytest.fixture
def job_store(settings: Settings):
    from maskq.service.records import JobStore

    store = JobStore.from_url(settings.redis_url, ttl_seconds=settings.job_ttl_seconds)
    yield store
    store.r.close()


@pytest.fixture
def storage(settings: Settings):
    from maskq.service.storage import Storage

    st = Storage.from_settings(settings)
    st.ensure_buckets()
    return st


def object_keys(storage: Any, bucket: str, prefix: str) -> list[str]:
    """The keys under ``prefix``, listed with the SDK (the service itself never lists)."""
    return sorted(o.object_name for o in storage.client.list_objects(bucket, prefix=prefix, recursive=True))
