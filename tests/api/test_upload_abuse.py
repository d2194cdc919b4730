"""Upload abuse (issue 19) against a live API process over real Redis and S3, with raw sockets: each
abuse gets a clean 4xx (never a 5xx), nothing is stored (no input object, no job record) and the
process's memory stays bounded. The clients and payloads are ``bench/upload_abuse.py``'s, which runs
the same abuses at the issue's size (100 concurrent 50 MB uploads)."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.upload_abuse import (
    answered,
    cut_short,
    job_form,
    noise_png,
    open_request,
    png_declaring,
    png_iccp_bomb,
    png_inflating,
    proc_status,
    read_answer,
    slow_upload,
    upload,
    webp_declaring,
    without_closing_boundary,
)
from maskq import defaults
from maskq.imaging import decode
from maskq.service.storage import Storage
from tests.api.conftest import KEY_A, png_bytes

BODY_TIMEOUT = 2.0  # seconds, for the slow-upload test (the shipped default is 60)
BIG = 10_000_000  # bytes per upload in the budget tests (the bench sends 50 MB)


@pytest.fixture(scope="module")
def server(api_factory):
    """A short body timeout; every other limit as shipped."""
    return api_factory(body_timeout_seconds=BODY_TIMEOUT)


@pytest.fixture(scope="module")
def big_form() -> tuple[bytes, str]:
    return job_form(noise_png(BIG))


@pytest.fixture(scope="module")
def tight(api_factory, big_form):
    """Bodies up to one ``big_form``; a budget of two and a half of them in flight."""
    size = len(big_form[0])
    return api_factory(max_request_bytes=size + 64 * 1024, upload_budget_bytes=size * 5 // 2, body_timeout_seconds=30)


def stored(server) -> tuple[int, int]:
    """(input objects, job records) the server has written: its bucket and Redis database are its own."""
    storage = Storage.from_settings(server.settings)
    objects = sum(1 for _ in storage.client.list_objects(server.settings.input_bucket, recursive=True))
    r = redis.Redis.from_url(server.settings.redis_url)
    try:
        records = sum(1 for _ in r.scan_iter(f"{defaults.REDIS_KEY_PREFIX}:job:*"))
    finally:
        r.close()
    return objects, records


def metrics(server) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def create_statuses(server) -> Counter[str]:
    """How ``POST /v1/jobs`` was answered, by status, as the server counted (also the requests whose
    client left before any answer)."""
    return Counter({dict(labels)["status"]: int(v) for (name, labels), v in metrics(server).items()
                    if name == "maskq_http_requests_total" and dict(labels).get("route") == "/v1/jobs"
                    and dict(labels).get("method") == "POST"})


def wait_for(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def in_flight(server) -> float:
    return metrics(server)[("maskq_upload_bytes_in_flight", ())]


# ---- 1. decompression bombs ----------------------------------------------------------------------------


def test_decompression_bombs_are_refused_from_the_header(server) -> None:
    server.client().submit(png_bytes(), "mask")  # warm up: threads and arenas are counted before
    before = stored(server)
    peak_before = proc_status(server.proc.pid)["VmPeak"]
    for name, image in [("png 100000x100000", png_declaring(100_000, 100_000)),
                        ("animated webp 16383x16383", webp_declaring(16383, 16383)),
                        ("still webp 16383x16383", webp_declaring(16383, 16383, animated=False))]:
        answer = upload(server.port, KEY_A, *job_form(image))
        assert (answer.status, answer.code) == (413, "image_too_large"), (name, answer)
        assert "16383x16383" in answer.doc["error"]["message"] or "100000x100000" in answer.doc["error"]["message"]
    # libwebp's decoder, had it been created, would have reserved two 1 GB canvases (address space)
    assert proc_status(server.proc.pid)["VmPeak"] - peak_before < 1_000_000, "a WebP canvas was allocated"
    answer = upload(server.port, KEY_A, *job_form(png_iccp_bomb(512)))  # a profile inflating to 512 MB
    assert (answer.status, answer.code) == (422, "invalid_image"), answer
    assert stored(server) == before


def test_an_honest_header_over_a_huge_pixel_stream_costs_nothing(server) -> None:
    """64x64 declared, 2 GB of zeros in the pixel stream: the API reads the header only and takes it;
    the worker's decoder stops after the 64 rows the header declares."""
    image = png_inflating(64, 64, 2048)
    rss_before = proc_status(server.proc.pid)["VmRSS"]
    answer = upload(server.port, KEY_A, *job_form(image))
    assert answer.status == 202, answer
    assert proc_status(server.proc.pid)["VmRSS"] - rss_before < 50_000  # kB
    t0 = time.monotonic()
    assert decode(image).size == (64, 64)
    assert time.monotonic() - t0 < 2.0


# ---- 2. bodies cut short -----------------------------------------------------------------------------


def test_a_body_cut_short_by_its_client_is_a_400_not_a_500(server) -> None:
    body, ctype = job_form(noise_png(2_000_000))
    before, statuses = stored(server), create_statuses(server)
    cut_short(server.port, KEY_A, body, ctype)  # Content-Length says 2 MB, 1 MB comes, then the client closes
    cut_short(server.port, KEY_A, body, ctype, chunked=True)  # chunked, without its last chunk
    wait_for(lambda: sum((create_statuses(server) - statuses).values()) == 2)
    assert create_statuses(server) - statuses == Counter({"400": 2})
    assert "Traceback" not in server.log() and "unhandled error" not in server.log()
    assert stored(server) == before


def test_a_multipart_body_without_its_closing_boundary_is_refused(server) -> None:
    before = stored(server)
    body, ctype = job_form(png_bytes(), params='{"format": "webp"}')
    # every part whole but the last one's end: a lax parser drops `params` and takes the job
    answer = upload(server.port, KEY_A, without_closing_boundary(body, ctype), ctype)
    assert (answer.status, answer.code) == (400, "incomplete_body"), answer
    # cut inside the image's bytes, Content-Length matching what is sent
    answer = upload(server.port, KEY_A, body[: len(body) // 2], ctype)
    assert (answer.status, answer.code) == (400, "incomplete_body"), answer
    assert stored(server) == before


# ---- 3. a slow body ------------------------------------------------------------------------------------


def test_a_slow_body_gets_408_after_the_body_timeout(server) -> None:
    before = stored(server)
    body, ctype = job_form(png_bytes())
    answer = slow_upload(server.port, KEY_A, body, ctype, give_up=BODY_TIMEOUT + 10)
    # a byte every second never leaves an idle gap: only a deadline for the whole body ends it
    assert (answer.status, answer.code) == (408, "request_timeout"), answer
    assert answer.headers.get("connection") == "close"
    assert BODY_TIMEOUT - 0.5 <= answer.seconds < BODY_TIMEOUT + 5 and answer.sent < len(body)
    assert stored(server) == before
    assert metrics(server)[("maskq_http_rejections_total", (("reason", "408"),))] >= 1
    assert server.client().submit(png_bytes(), "mask")["state"] == "queued"  # a body on time still works


# ---- 4. the upload budget ----------------------------------------------------------------------------


def test_the_budget_refuses_before_reading_counts_chunked_bodies_and_is_given_back(tight, big_form) -> None:
    body, ctype = big_form
    before = stored(tight)
    # two uploads that announce their size and then send nothing: each holds its size of the budget
    holders = [open_request(tight.port, KEY_A, {"Content-Type": ctype, "Content-Length": str(len(body))})
               for _ in range(2)]
    try:
        wait_for(lambda: in_flight(tight) == 2 * len(body))
        # a third announced one is refused at once: no byte of its body sent
        sock = open_request(tight.port, KEY_A, {"Content-Type": ctype, "Content-Length": str(len(body))})
        try:
            assert answered(sock, 10.0)
            answer = read_answer(sock)
        finally:
            sock.close()
        assert (answer.status, answer.code) == (429, "upload_budget_full"), answer
        assert int(answer.headers["retry-after"]) == defaults.UPLOAD_BUDGET_RETRY_AFTER_SECONDS
        # a chunked one (no size announced) is counted as it streams and cut off when it no longer fits
        answer = upload(tight.port, KEY_A, body, ctype, chunked=True)
        assert (answer.status, answer.code) == (429, "upload_budget_full"), answer
    finally:
        for h in holders:
            h.close()
    wait_for(lambda: in_flight(tight) == 0)  # the holders' requests ended (400: their client left)
    answer = upload(tight.port, KEY_A, body, ctype)
    assert answer.status == 202, answer
    assert stored(tight) == (before[0] + 1, before[1] + 1)


def test_concurrent_large_uploads_get_429_and_memory_stays_bounded(tight, big_form) -> None:
    body, ctype = big_form
    before = stored(tight)
    rss_before = proc_status(tight.proc.pid)["VmRSS"]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: upload(tight.port, KEY_A, body, ctype), range(20)))
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {202, 429} and statuses[429] >= 10 and statuses[202] >= 1, statuses
    assert all(a.code == "upload_budget_full" and a.headers.get("retry-after") for a in answers if a.status == 429)
    assert stored(tight) == (before[0] + statuses[202], before[1] + statuses[202])
    # two bodies at most in flight (~2x each: the bytes read, the S3 part, the allocator's slack); without
    # the budget all 20 are taken at once (+400 MB here) and S3 puts fail with 503
    budget_kb = tight.settings.upload_budget_bytes // 1024
    assert proc_status(tight.proc.pid)["VmHWM"] - rss_before < 3 * budget_kb
    assert urllib.request.urlopen(tight.url + "/healthz", timeout=10).status == 200
