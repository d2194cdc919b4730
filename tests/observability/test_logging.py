"""maskq.logging: one JSON object per line with the bound context, explicit extras win, the text
format, and the context <-> Celery header mapping."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from maskq import logging as mlog


@pytest.fixture
def capture():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    mlog.configure("json", "INFO", stream=buf)
    yield buf
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])
    mlog.clear()


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_carry_the_bound_context(capture):
    log = logging.getLogger("maskq.test")
    with mlog.bind(request_id="r-1", tenant="acme"):
        log.info("accepted %s", "job", extra={"job_id": "j-1", "size_bytes": 12})
        with mlog.bind(job_id="j-2"):
            log.warning("inner")
        try:
            raise ValueError("multi\nline")
        except ValueError:
            log.exception("failed")
    log.info("outside")
    a, b, c, d = _lines(capture)
    assert a["message"] == "accepted job" and a["level"] == "info" and a["logger"] == "maskq.test"
    assert (a["request_id"], a["tenant"], a["job_id"], a["size_bytes"]) == ("r-1", "acme", "j-1", 12)
    assert a["ts"].endswith("Z")
    assert (b["job_id"], b["tenant"]) == ("j-2", "acme")
    assert c["exc"].startswith("Traceback") and "ValueError: multi\nline" in c["exc"]
    assert "job_id" not in d and "tenant" not in d and "request_id" not in d
    assert len(capture.getvalue().splitlines()) == 4  # the traceback stayed inside its line


def test_context_is_per_thread(capture):
    log = logging.getLogger("maskq.test")
    barrier = threading.Barrier(2)

    def work(n: int) -> None:
        with mlog.bind(job_id=f"job-{n}"):
            barrier.wait()
            log.info("in thread %s", n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = {line["message"]: line["job_id"] for line in _lines(capture)}
    assert got == {"in thread 0": "job-0", "in thread 1": "job-1"}


def test_headers_round_trip():
    with mlog.bind(request_id="r-9", job_id="j-9", tenant="t-9", operation="mask"):
        headers = mlog.headers_from_context()
    assert headers == {"maskq_request_id": "r-9", "maskq_job_id": "j-9", "maskq_tenant": "t-9"}
    assert mlog.context_from_headers({**headers, "other": "x"}) == {"request_id": "r-9", "job_id": "j-9",
                                                                     "tenant": "t-9"}
    assert mlog.context_from_headers(None) == {}


def test_text_format_appends_the_ids():
    buf = io.StringIO()
    handler = mlog.make_handler("text", buf)
    log = logging.getLogger("maskq.test.text")
    log.addHandler(handler)
    log.propagate = False
    try:
        with mlog.bind(job_id="j-1", tenant="acme"):
            log.error("boom")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert buf.getvalue().rstrip().endswith("boom [job_id=j-1 tenant=acme]")


def test_settings_choose_the_format(monkeypatch):
    from maskq.settings import load_settings

    monkeypatch.setenv("MASKQ_LOG_FORMAT", "TEXT")
    monkeypatch.setenv("MASKQ_LOG_LEVEL", "debug")
    s = load_settings()
    assert (s.log_format, s.log_level) == ("text", "DEBUG")
    monkeypatch.setenv("MASKQ_LOG_FORMAT", "xml")
    from maskq.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="MASKQ_LOG_FORMAT"):
        load_settings()
