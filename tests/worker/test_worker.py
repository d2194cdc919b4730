"""One real worker (2 prefork processes, the real model) serving real jobs: every operation, batch
jobs, cancel, duplicate delivery, a corpus of malformed inputs, the poison budget, and webhooks
verified by a real HTTP receiver."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from maskq.service.records import JobState
from tests.conftest import object_keys
from tests.worker.conftest import Client, WorkerProcess, make_client, needs_model, png_bytes
from worker import webhooks

pytestmark = [needs_model, pytest.mark.slow]

INPUT_CODES = {"invalid_image", "unsupported_format", "image_too_large", "invalid_parameter"}


@pytest.fixture(scope="module")
def svc(redis_server, s3_server, tmp_path_factory) -> Iterator[tuple[Client, WorkerProcess]]:
    """A client and one worker shared by the tests of this module (a worker start costs seconds)."""
    import redis

    url = redis_server.url_for_db(0)
    redis.Redis.from_url(url).flushdb()
    c = make_client(url, s3_server)
    w = WorkerProcess(c.settings, tmp_path_factory.mktemp("worker"))
    w.start()
    yield c, w
    w.stop()
    c.close()


def _image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("operation,params", [
    ("mask", {}), ("remove", {"format": "webp"}), ("blur", {"strength": 20}), ("crop", {}),
    ("swap", {"background_color": "#00ff00", "format": "jpeg"}),
])
def test_each_operation_produces_a_result(svc, operation, params):
    c, _ = svc
    jid = c.submit(png_bytes(80, 60), operation, params)
    job = c.wait([jid], timeout=60)[jid]
    assert job.state is JobState.SUCCEEDED, job.error_message
    assert job.attempts == 1 and job.result_key == f"t1/{jid}/result.{job.result_key.rsplit('.', 1)[1]}"
    obj = c.storage.get_result(job.result_key)
    img = _image(obj.data)
    assert obj.content_type == Image.MIME[img.format]
    if operation != "crop":
        assert img.size == (80, 60)
    assert {"read", "decode", "infer", "encode", "write"} <= set(job.timings)


def test_swap_with_a_background_image_from_the_tenants_uploads(svc):
    c, _ = svc
    bg_key = c.storage.put_input("t1", "bgupload", png_bytes(30, 30, seed=5), extension="png")
    jid = c.submit(png_bytes(64, 48), "swap", {"background_image": bg_key})
    other = c.storage.put_input("t2", "bgupload", png_bytes(30, 30, seed=5), extension="png")
    jid2 = c.submit(png_bytes(64, 48), "swap", {"background_image": other})
    jobs = c.wait([jid, jid2], timeout=60)
    assert jobs[jid].state is JobState.SUCCEEDED, jobs[jid].error_message
    assert jobs[jid2].state is JobState.FAILED and jobs[jid2].error_code == "invalid_parameter"


def test_a_broken_image_fails_its_job_alone(svc):
    c, _ = svc
    good, truncated = c.submit(png_bytes(50, 30, 3), "mask"), c.submit(png_bytes(40, 40, 2)[:60], "mask")
    empty, text = c.submit(b"", "mask"), c.submit(b"text", "mask")
    jobs = c.wait([good, truncated, empty, text], timeout=60)
    assert jobs[good].state is JobState.SUCCEEDED
    assert object_keys(c.storage, c.storage.result_bucket, f"t1/{good}/") == [f"t1/{good}/result.png"]
    assert jobs[truncated].state is JobState.FAILED and jobs[truncated].error_code == "invalid_image"
    assert all(jobs[j].state is JobState.FAILED and jobs[j].error_code in INPUT_CODES for j in (empty, text))


def test_the_record_carries_each_masks_confidence_and_the_review_flag(svc):
    c, _ = svc
    flagged = c.submit(png_bytes(80, 60), "remove", {"review_below": 1.0})
    clean = c.submit(png_bytes(80, 60), "remove", {"review_below": 0.0})
    faces = c.submit(png_bytes(80, 60), "faceblur", {})  # no matte: no confidence
    jobs = c.wait([flagged, clean, faces], timeout=90)
    assert all(j.state is JobState.SUCCEEDED for j in jobs.values()), {k: j.error_message for k, j in jobs.items()}
    doc = jobs[flagged].document(c.storage.presigned_result_url)  # API bodies and webhook payloads
    assert 0.0 <= doc["confidence"] <= 1.0 and doc["review"] is True
    assert jobs[clean].review is False and jobs[clean].confidence == doc["confidence"]  # same image, same mask
    assert jobs[faces].confidence is None and jobs[faces].review is None
    listed = {j.id for j in c.jobs.list_for_tenant("t1", review=True)[0]}
    assert flagged in listed and not {clean, faces} & listed


def test_bad_parameters_fail_the_job_not_the_worker(svc):
    c, w = svc
    ids = [c.submit(png_bytes(), "mask", {"threshold": 7}), c.submit(png_bytes(), "no-such-op"),
           c.submit(png_bytes(), "blur", {"strength": "max"})]
    jobs = c.wait(ids, timeout=60)
    assert {j.error_code for j in jobs.values()} == {"invalid_parameter"}
    assert all(j.attempts == 1 for j in jobs.values())  # a bad input is not retried
    assert w.alive


def test_canceled_while_queued_is_skipped(svc):
    c, _ = svc
    jid = "canceled0001"
    c.create(jid, c.put_input(jid, png_bytes()))
    assert c.jobs.cancel_queued(jid).applied
    c.enqueue(jid)
    # the queue is FIFO and each process holds one message: once one marker per process is done,
    # the messages sent before them have been handled
    markers = [c.submit(png_bytes(), "mask") for _ in range(2)]
    c.wait(markers, timeout=60)
    job = c.jobs.get(jid)
    assert job.state is JobState.CANCELED and job.attempts == 0
    assert object_keys(c.storage, c.storage.result_bucket, f"t1/{jid}/") == []


def test_duplicate_delivery_of_a_finished_job_does_nothing(svc):
    c, _ = svc
    jid = c.submit(png_bytes(), "mask")
    first = c.wait([jid], timeout=60)[jid]
    c.enqueue(jid)
    c.enqueue(jid)
    markers = [c.submit(png_bytes(), "mask") for _ in range(2)]
    c.wait(markers, timeout=60)
    again = c.jobs.get(jid)
    assert again.state is JobState.SUCCEEDED and again.attempts == first.attempts == 1
    assert again.finished_at == first.finished_at


def test_a_second_message_waits_for_the_live_attempt_instead_of_taking_over(svc):
    """A retry's copy, a redelivery or a resubmission while an attempt runs: the worker leaves the live
    attempt alone (no lost attempt, no second run) and the copy comes back once the lease is free."""
    c, _ = svc
    jid = "leased000001"
    c.create(jid, c.put_input(jid, png_bytes()))
    c.jobs.mark_running(jid)  # an attempt runs in another process, holding its lease
    c.jobs.hold_attempt(jid, "the-live-attempt", 4.0)
    c.enqueue(jid)
    time.sleep(2.0)
    job = c.jobs.get(jid)
    assert job.state is JobState.RUNNING and job.attempts == 1 and job.lost_attempts == 0
    assert object_keys(c.storage, c.storage.result_bucket, f"t1/{jid}/") == []
    c.jobs.mark_retrying(jid, "storage_unavailable", "S3 away")  # the live attempt hits a transient fault
    c.jobs.release_attempt(jid, "the-live-attempt")
    job = c.wait([jid], timeout=60)[jid]  # the waiting copy runs it
    assert job.state is JobState.SUCCEEDED and job.attempts == 2 and job.lost_attempts == 0
    assert len(object_keys(c.storage, c.storage.result_bucket, f"t1/{jid}/")) == 1


def test_a_job_that_keeps_killing_its_worker_is_failed(svc):
    """The poison budget: a record that shows max_lost_attempts - 1 lost runs already, still running."""
    c, _ = svc
    jid = "poison000001"
    c.create(jid, c.put_input(jid, png_bytes()))
    c.jobs.mark_running(jid)
    for _ in range(c.settings.max_lost_attempts - 1):
        c.jobs.mark_running(jid)  # as if a worker died mid-run, each time
    c.enqueue(jid)
    job = c.wait([jid], timeout=60)[jid]
    assert job.state is JobState.FAILED and job.error_code == "internal"
    assert job.lost_attempts == c.settings.max_lost_attempts


# ---- the malformed corpus -----------------------------------------------------------------------


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_header_only(w: int, h: int) -> bytes:
    """A valid PNG signature and IHDR claiming w x h, and a tiny IDAT: a header that lies."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + idat + _png_chunk(b"IEND", b"")


def _photo(w: int = 72, h: int = 54, seed: int = 0) -> Image.Image:
    return Image.open(io.BytesIO(png_bytes(w, h, seed))).convert("RGB")


def corpus() -> dict[str, tuple[bytes, str, str, tuple[int, int] | None]]:
    """name -> (bytes, extension it is stored under, expectation 'ok'|'fail'|'either', expected size)."""
    photo = _photo()
    png, jpg = _save(photo, "PNG"), _save(photo, "JPEG", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 72x54 file is a 54x72 picture
    frames = [_photo(seed=i) for i in range(3)]
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 10_000, dtype=np.uint8).tobytes()
    grey16 = Image.fromarray((np.arange(72 * 54).reshape(54, 72) * 16).astype(np.uint16))
    float32 = Image.fromarray(np.linspace(0, 1, 72 * 54, dtype=np.float32).reshape(54, 72))
    animated = {"save_all": True, "append_images": frames[1:], "duration": 50}
    S = (72, 54)
    c: dict[str, tuple[bytes, str, str, tuple[int, int] | None]] = {
        "zero-bytes": (b"", "png", "fail", None),
        "one-byte": (b"\x89", "png", "fail", None),
        "text": (b"hello, this is not an image\n" * 10, "jpg", "fail", None),
        "html": (b"<!doctype html><html><body>nope</body></html>", "png", "fail", None),
        "json": (json.dumps({"image": "no"}).encode(), "png", "fail", None),
        "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "png", "fail", None),
        "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "png", "fail", None),
        "psd": (b"8BPS\x00\x01" + b"\x00" * 40, "png", "fail", None),
        "zip": (b"PK\x03\x04" + bytes(40), "png", "fail", None),
        "gzip-png": (zlib.compress(png), "png", "fail", None),
        "random-10k": (noise, "jpg", "fail", None),
        "png-signature-only": (png[:8], "png", "fail", None),
        "png-truncated-half": (png[: len(png) // 2], "png", "fail", None),
        "png-corrupt-idat": (png[:60] + bytes(b ^ 0x5A for b in png[60:200]) + png[200:], "png", "fail", None),
        "jpeg-soi-only": (b"\xff\xd8\xff", "jpg", "fail", None),
        "jpeg-truncated-half": (jpg[: len(jpg) // 2], "jpg", "either", (72, 54)),
        "jpeg-garbage-middle": (jpg[:300] + noise[:500] + jpg[800:], "jpg", "either", S),
        "bomb-png-1bit-30kx30k": (_save(Image.new("1", (30_000, 30_000)), "PNG"), "png", "fail", None),
        "bomb-gif-12kx12k": (_save(Image.new("P", (12_000, 12_000)), "GIF"), "gif", "fail", None),
        "lying-header-100k": (_png_header_only(100_000, 100_000), "png", "fail", None),
        "lying-header-zero-size": (_png_header_only(0, 0), "png", "fail", None),
        "png-as-jpg-extension": (png, "jpg", "ok", (72, 54)),
        "jpeg-as-png-extension": (jpg, "png", "ok", (72, 54)),
        "no-extension": (png, "", "ok", (72, 54)),
        "cmyk-jpeg": (_save(photo.convert("CMYK"), "JPEG"), "jpg", "ok", (72, 54)),
        "16bit-grey-png": (_save(grey16, "PNG"), "png", "ok", S),
        "16bit-grey-tiff": (_save(grey16, "TIFF"), "tif", "ok", S),
        "float32-tiff": (_save(float32, "TIFF"), "tif", "either", S),
        "animated-gif": (_save(frames[0], "GIF", loop=0, **animated), "gif", "ok", S),
        "animated-png": (_save(frames[0], "PNG", **animated), "png", "ok", S),
        "animated-webp": (_save(frames[0], "WEBP", **animated), "webp", "ok", S),
        "palette-with-transparency": (
            _save(photo.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=0), "png", "ok", S),
        "grey-alpha-LA": (_save(photo.convert("LA"), "PNG"), "png", "ok", (72, 54)),
        "bilevel-1bit": (_save(photo.convert("1"), "PNG"), "png", "ok", (72, 54)),
        "one-pixel": (_save(Image.new("RGB", (1, 1), "red"), "PNG"), "png", "either", (1, 1)),
        "thin-4000x1": (_save(Image.new("RGB", (4000, 1), "red"), "PNG"), "png", "either", (4000, 1)),
        "exif-rotated-jpeg": (_save(photo, "JPEG", exif=exif), "jpg", "ok", (54, 72)),
        "progressive-jpeg": (_save(photo, "JPEG", progressive=True), "jpg", "ok", (72, 54)),
        "webp-lossless-alpha": (_save(photo.convert("RGBA"), "WEBP", lossless=True), "webp", "ok", (72, 54)),
        "bmp": (_save(photo, "BMP"), "bmp", "ok", (72, 54)),
        "multipage-tiff": (_save(frames[0], "TIFF", save_all=True, append_images=frames[1:]), "tif", "ok", (72, 54)),
        "ico": (_save(photo, "ICO"), "ico", "fail", None),
    }
    return c


def test_malformed_corpus_fails_cleanly_and_the_worker_goes_on(svc):
    c, w = svc
    cases = corpus()
    assert len(cases) >= 30
    ids = {}
    for name, (data, ext, _, _) in cases.items():
        ids[name] = c.submit(data, "remove", {"format": "png"}, extension=ext)
    jobs = c.wait(list(ids.values()), timeout=180)
    problems = []
    for name, (_data, _ext, expect, size) in cases.items():
        job = jobs[ids[name]]
        if job.state is JobState.FAILED:
            if expect == "ok" or job.error_code not in INPUT_CODES:
                problems.append(f"{name}: failed {job.error_code}: {job.error_message}")
            elif job.attempts != 1:
                problems.append(f"{name}: a bad input was retried ({job.attempts} attempts)")
        elif job.state is JobState.SUCCEEDED:
            if expect == "fail":
                problems.append(f"{name}: succeeded, expected a clean failure")
                continue
            img = _image(c.storage.get_result(job.result_key).data)
            if size and img.size != size:
                problems.append(f"{name}: result is {img.size}, expected {size}")
            if img.mode != "RGBA":
                problems.append(f"{name}: 'remove' gave mode {img.mode}")
        else:
            problems.append(f"{name}: ended {job.state}")
    assert not problems, "\n".join(problems)
    # the worker process is still the same one, and serves the next job
    assert w.alive and w.starts == 1
    nxt = c.submit(png_bytes(), "mask")
    assert c.wait([nxt], timeout=60)[nxt].state is JobState.SUCCEEDED


# ---- webhooks ---------------------------------------------------------------------------------


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that records each request and fails the first ``fail_first``."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.requests.append((dict(self.headers.items()), body))
                    status = 500 if len(outer.requests) <= outer.fail_first else 204
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/maskq"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_is_signed_and_retried_until_delivered(svc):
    import time

    c, _ = svc
    rx = Receiver(fail_first=2)
    try:
        jid = c.submit(png_bytes(), "mask", webhook_url=rx.url)
        assert c.wait([jid], timeout=60)[jid].state is JobState.SUCCEEDED
        deadline = time.monotonic() + 30
        while len(rx.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(rx.requests) == 3, "2 refused attempts and 1 delivery"
        secret = c.settings.webhook_secret
        ids = set()
        for headers, body in rx.requests:
            assert webhooks.verify(secret, headers, body)
            assert not webhooks.verify(secret, headers, body + b" ")
            assert not webhooks.verify("whsec_" + "QUJD" * 8, headers, body)
            ids.add(headers["webhook-id"])
        assert ids == {f"msg_{jid}_succeeded"}  # the same event id on every retry
        event = json.loads(rx.requests[-1][1])
        assert event["type"] == "job.succeeded" and event["data"]["id"] == jid
        assert event["data"]["state"] == "succeeded"
        import urllib.request

        with urllib.request.urlopen(event["data"]["result_url"], timeout=10) as resp:
            assert _image(resp.read()).size == (64, 48)
        failed = c.submit(b"not an image", "mask", webhook_url=rx.url)
        c.wait([failed], timeout=60)
        deadline = time.monotonic() + 30
        while len(rx.requests) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        event = json.loads(rx.requests[-1][1])
        assert event["type"] == "job.failed" and event["data"]["error"]["code"] in INPUT_CODES
    finally:
        rx.close()


def test_a_webhook_host_resolving_inside_is_not_called_by_a_production_worker(redis_url, s3_server, start_worker):
    """With the address policy on (``webhook_allow_private`` false, production), a job whose webhook
    names a host that resolves to loopback at delivery - as if its name was rebound after submit -
    finishes, its webhook is never POSTed, and the worker's log line names the job, host and address."""
    import time

    c = make_client(redis_url, s3_server, webhook_allow_private=False)
    w = start_worker(c.settings, concurrency=1)
    rx = Receiver()
    try:
        url = rx.url.replace("127.0.0.1", "localhost")  # a name (/etc/hosts) that answers loopback
        jid = c.submit(png_bytes(), "mask", webhook_url=url)
        assert c.wait([jid], timeout=60)[jid].state is JobState.SUCCEEDED
        deadline = time.monotonic() + 30
        while "webhook not sent" not in w.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = [json.loads(line) for line in w.log_text().splitlines() if line.startswith("{")]
        refused = [line for line in lines if line.get("webhook_host") == "localhost"]
        assert refused and refused[0]["job_id"] == jid, lines[-5:]
        assert refused[0]["refused_address"] in ("127.0.0.1", "::1")
        time.sleep(1)  # a retry, if there were one, would come within the test backoff (0.2-1 s)
        assert rx.requests == []
    finally:
        rx.close()
        c.close()


def test_a_model_named_by_a_job_is_loaded_on_first_use_and_kept(svc):
    """The worker preloads the default model; a job naming another loads it once, in the process
    that runs it, and the log says which model serves."""
    c, w = svc
    ids = [c.submit(png_bytes(80, 60, seed=s), "mask", {"model": "pets"}) for s in range(3)]
    done = c.wait(ids, timeout=90)
    assert all(j.state is JobState.SUCCEEDED for j in done.values()), [j.error_message for j in done.values()]
    assert done[ids[0]].model == "pets"
    log = w.log_text()
    assert "serving the general model" in log and "serving the pets model" in log
    assert log.count("serving the pets model") <= 2  # at most once per pool process
