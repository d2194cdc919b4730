"""`maskq up` end to end: it comes up, serves a job over HTTP, and leaves nothing behind."""

from __future__ import annotations

import re
import signal
import socket
import time
import urllib.request

import pytest

from maskq.local.embedded import port_is_free
from tests.e2e.conftest import REPO, descendants, needs_stack, still_alive

pytestmark = pytest.mark.slow


def _gone(tree: dict[int, int], timeout: float = 15.0) -> list[str]:
    """What of ``tree`` is still alive after ``timeout`` s (an orphan would stay)."""
    deadline = time.monotonic() + timeout
    while (alive := still_alive(tree)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def test_a_taken_port_is_refused_by_number_and_nothing_starts(start_up):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = start_up(port=port)
        assert up.finish(None, timeout=60) == 3
    assert f"port {port}" in up.output and "already in use" in up.output
    assert not re.search(r"ready in \d", up.output)  # refused before any server started
    assert not (up.state_dir / "redis").exists()


def test_keys_come_from_the_environment_or_a_local_key_kept_in_the_state_dir(tmp_path, monkeypatch):
    from maskq.local.up import Stack, local_api_key

    key = local_api_key(tmp_path)
    assert key.startswith("mq_local_") and len(key) >= 40
    assert local_api_key(tmp_path) == key  # a restart keeps it
    assert (tmp_path / "api-key").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("MASKQ_API_KEYS", "k1-0123456789abcdef:acme,k2-0123456789abcdef:beta")
    assert Stack(tmp_path, api_port=0).api_key == "k1-0123456789abcdef"


@needs_stack
def test_up_serves_a_job_and_ctrl_c_leaves_no_process_and_no_port(start_up):
    from maskq.local.client import Client

    up = start_up().wait_up()
    tree = descendants(up.proc.pid)
    names = " ".join(still_alive(tree))
    for part in ("redis", "weed", "celery", "uvicorn"):
        assert part in names, f"{part} not among the children: {names}"
    assert len(tree) >= 5  # redis, weed, worker + its pool process, uvicorn

    with urllib.request.urlopen(f"{up.url}/readyz", timeout=10) as resp:
        assert resp.status == 200
    assert f"curl -s -H 'Authorization: Bearer {up.api_key}'" in up.output
    # the web page's URL comes first, and the API serves the page there (/ redirects to it)
    first = up.output[up.output.index("maskq is up:"):].splitlines()[0]
    assert first.startswith(f"maskq is up: {up.url}/ui "), first
    with urllib.request.urlopen(f"{up.url}/", timeout=10) as resp:
        assert resp.url == f"{up.url}/ui" and "default-src 'self'" in resp.headers["Content-Security-Policy"]

    client = Client(up.url, up.api_key)
    job = client.submit(REPO / "samples" / "coffee.jpg", "mask", {})
    done = client.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded", done
    ports = [up.port, *up.server_ports()]
    assert len(ports) == 3

    assert up.finish(signal.SIGINT) == 0, up.output
    assert "maskq up: stopped" in up.output
    assert _gone(tree) == []
    assert [p for p in ports if not port_is_free(p)] == []


@needs_stack
def test_a_killed_maskq_up_takes_its_children_with_it(start_up):
    """SIGKILL gives `maskq up` no chance to clean up: PR_SET_PDEATHSIG must."""
    up = start_up().wait_up()
    tree = descendants(up.proc.pid)
    ports = [up.port, *up.server_ports()]
    up.proc.kill()
    up.proc.wait()
    assert _gone(tree, timeout=30) == []
    assert [p for p in ports if not port_is_free(p)] == []

